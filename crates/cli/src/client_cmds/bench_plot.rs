//! `bench --plot FILE`: a PNG of what the steps of a bench did, latency percentiles (left)
//! and throughput (right) against the concurrency or rate of each step.
//!
//! Both axes of the latency panel are logarithmic: steps usually grow by factors (1, 16, 64)
//! and latency spans microseconds to the budget. Text uses the font embedded in the binary
//! (DejaVu Sans, `assets/`), drawn by plotters' pure-Rust `ab_glyph`, so the plot needs no
//! installed font.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Result, anyhow, ensure};
use plotters::coord::CoordTranslate;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::tally::BenchReport;

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
/// plotters' default family for axis labels and legends, so registering it covers them.
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (1500, 640);

/// Registers the embedded font once per process; the result is kept so that a failure is
/// reported by every plot, not only the first.
fn font() -> Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            [FontStyle::Normal, FontStyle::Bold]
                .into_iter()
                .try_for_each(|style| register_font(FAMILY, style, FONT))
                .map_err(|_| "the embedded font does not parse".to_string())
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// plotters' errors carry the backend's error type; keep their text.
fn plot_error(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow!("cannot draw the bench plot: {e:?}")
}

/// Reads one latency percentile of a step, in microseconds.
type Percentile = fn(&BenchReport) -> u64;

/// The x value of a step and what the axis says it is.
fn x_of(report: &BenchReport) -> f64 {
    report
        .concurrency
        .map(|c| c as f64)
        .or(report.rate)
        .unwrap_or(1.0)
}

/// A log axis range around `values` with some room on both sides (a single value too).
fn log_range(values: impl Iterator<Item = f64>, room: f64) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.1..10.0;
    }
    lo / room..hi * room
}

/// Draws `reports` (one point per step) into `path` as PNG.
pub fn draw(path: &Path, reports: &[BenchReport]) -> Result<()> {
    ensure!(!reports.is_empty(), "nothing to plot: no step ran");
    font()?;
    let first = &reports[0];
    let open = first.rate.is_some();
    let x_desc = if open {
        "offered rate (requests/s)"
    } else {
        "concurrency (workers)"
    };
    let mut steps: Vec<&BenchReport> = reports.iter().collect();
    steps.sort_by(|a, b| x_of(a).total_cmp(&x_of(b)));
    let xs = log_range(steps.iter().map(|r| x_of(r)), 1.4);

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let title = format!("bench {} {}", first.protocol, first.addr);
    let root = root.titled(&title, (FAMILY, 26)).map_err(plot_error)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);

    // Latency: p50, p90, p99 in milliseconds.
    let ms = |us: u64| (us.max(1)) as f64 / 1e3;
    let ys = log_range(
        steps
            .iter()
            .flat_map(|r| [ms(r.latency_us.p50), ms(r.latency_us.p99)]),
        2.0,
    );
    let mut chart = ChartBuilder::on(&left)
        .caption("latency seen by the client", (FAMILY, 20))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(xs.clone().log_scale(), ys.log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("latency (ms)")
        .label_style((FAMILY, 15))
        .x_label_formatter(&|x| format!("{x}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(plot_error)?;
    let percentiles: [(&str, RGBColor, Percentile); 3] = [
        ("p50", RGBColor(31, 119, 180), |r| r.latency_us.p50),
        ("p90", RGBColor(255, 127, 14), |r| r.latency_us.p90),
        ("p99", RGBColor(214, 39, 40), |r| r.latency_us.p99),
    ];
    for (name, color, value) in percentiles {
        let points = steps.iter().map(|r| (x_of(r), ms(value(r)))).collect();
        curve(&mut chart, name, color, 2, points)?;
    }
    legend(&mut chart)?;

    // Throughput: answers per second, with the offered rate for an open loop.
    let top = steps
        .iter()
        .map(|r| r.throughput_rps.max(r.rate.unwrap_or(0.0)))
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&right)
        .caption("throughput", (FAMILY, 20))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(xs.log_scale(), 0.0..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("answers per second")
        .label_style((FAMILY, 15))
        .x_label_formatter(&|x| format!("{x}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(plot_error)?;
    let points = steps.iter().map(|r| (x_of(r), r.throughput_rps)).collect();
    curve(&mut chart, "answered", RGBColor(44, 160, 44), 2, points)?;
    if open {
        let offered = steps.iter().map(|r| (x_of(r), x_of(r))).collect();
        curve(&mut chart, "offered", RGBColor(127, 127, 127), 1, offered)?;
    }
    legend(&mut chart)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// A line through `points`, a dot on each, named in the legend.
fn curve<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    name: &str,
    color: RGBColor,
    width: u32,
    points: Vec<(f64, f64)>,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate<From = (f64, f64)>,
{
    let style = color.stroke_width(width);
    chart
        .draw_series(LineSeries::new(points.clone(), style))
        .map_err(plot_error)?
        .label(name)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], style));
    chart
        .draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, color.filled())),
        )
        .map_err(plot_error)?;
    Ok(())
}

/// The legend, upper left, where the curves start low (small steps are fast and light).
fn legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>) -> Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate<From = (f64, f64)>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)
}

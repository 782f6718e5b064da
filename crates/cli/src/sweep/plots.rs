//! The sweep's plots, as PNG: accuracy against the share offloaded to the cloud (one curve per
//! link profile, points labelled with their threshold), and the latency CDF of each profile at
//! one threshold (log time axis, the budget marked).
//!
//! Text is drawn with a font embedded in the binary (DejaVu Sans, see `assets/`), through
//! plotters' pure-Rust `ab_glyph` renderer, so the plots look the same on every machine and
//! need neither fontconfig nor any installed font.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::Sweep;

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (1200, 800);
const CDF_SIZE: (u32, u32) = (1600, 760);

/// Distinct colours for up to eight profiles (then they repeat).
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [
            FontStyle::Normal,
            FontStyle::Bold,
            FontStyle::Italic,
            FontStyle::Oblique,
        ] {
            // The font is part of the binary and tested: it cannot fail to parse at run time.
            let _ = register_font(FAMILY, style, FONT);
        }
    });
}

/// plotters' errors borrow the backend; turn them into owned ones.
fn err<E: std::fmt::Debug>(what: &'static str) -> impl FnOnce(E) -> anyhow::Error {
    move |e| anyhow!("{what}: {e:?}")
}

/// The profiles in the order they were swept.
fn profiles(sweep: &Sweep) -> Vec<&str> {
    let mut seen = Vec::new();
    for row in &sweep.rows {
        if !seen.contains(&row.profile.as_str()) {
            seen.push(row.profile.as_str());
        }
    }
    seen
}

/// Places short text labels next to points without overlapping each other or the points.
struct LabelPlacer {
    /// Pixel rectangles taken so far: (left, top, right, bottom).
    taken: Vec<(i32, i32, i32, i32)>,
    /// The plotting area in pixels: labels stay inside it.
    bounds: (i32, i32, i32, i32),
}

impl LabelPlacer {
    fn new((xs, ys): (std::ops::Range<i32>, std::ops::Range<i32>)) -> Self {
        Self {
            taken: Vec::new(),
            bounds: (xs.start, ys.start, xs.end, ys.end),
        }
    }

    /// Text height and average glyph width at the labels' 15 px size, in pixels.
    const HEIGHT: i32 = 15;
    const CHAR_WIDTH: i32 = 9;

    fn occupy_point(&mut self, (x, y): (i32, i32)) {
        self.taken.push((x - 6, y - 6, x + 6, y + 6));
    }

    /// An offset from `anchor` where `text` fits, tried right-above, right-below, left-above,
    /// left-below and farther out; None when every candidate overlaps something.
    fn place(&mut self, anchor: (i32, i32), text: &str) -> Option<(i32, i32)> {
        let width = Self::CHAR_WIDTH * text.len() as i32;
        let h = Self::HEIGHT;
        let candidates = [
            (7, -h - 4),
            (7, 4),
            (-width - 7, -h - 4),
            (-width - 7, 4),
            (7, -2 * h - 6),
            (7, h + 6),
            (-width / 2, -2 * h - 6),
            (-width / 2, h + 6),
        ];
        for (dx, dy) in candidates {
            let rect = (
                anchor.0 + dx,
                anchor.1 + dy,
                anchor.0 + dx + width,
                anchor.1 + dy + h,
            );
            let b = self.bounds;
            let inside = rect.0 >= b.0 && rect.1 >= b.1 && rect.2 <= b.2 && rect.3 <= b.3;
            let overlaps = self
                .taken
                .iter()
                .any(|t| rect.0 < t.2 && t.0 < rect.2 && rect.1 < t.3 && t.1 < rect.3);
            if inside && !overlaps {
                self.taken.push(rect);
                return Some((dx, dy));
            }
        }
        None
    }
}

/// The corner of the plotting area where the legend (about 190 by 26 pixels per entry) hides
/// the fewest points.
fn legend_corner(
    (xs, ys): &(std::ops::Range<i32>, std::ops::Range<i32>),
    points: &[(i32, i32)],
    entries: usize,
) -> SeriesLabelPosition {
    let (w, h) = (190 + 16, 26 * entries as i32 + 16 + 16);
    let corners = [
        (SeriesLabelPosition::LowerRight, xs.end - w, ys.end - h),
        (SeriesLabelPosition::UpperRight, xs.end - w, ys.start),
        (SeriesLabelPosition::LowerLeft, xs.start, ys.end - h),
        (SeriesLabelPosition::UpperLeft, xs.start, ys.start),
    ];
    corners
        .into_iter()
        .min_by_key(|&(_, x, y)| {
            points
                .iter()
                .filter(|p| p.0 >= x - 8 && p.0 <= x + w + 8 && p.1 >= y - 8 && p.1 <= y + h + 8)
                .count()
        })
        .map(|(position, _, _)| position)
        .unwrap_or(SeriesLabelPosition::LowerRight)
}

/// Accuracy (y) against the share of answers given by the cloud (x), one curve per profile.
pub fn accuracy_vs_offload(path: &Path, sweep: &Sweep) -> Result<()> {
    register_fonts();
    let points = |profile: &str| -> Vec<(f64, f64, f32)> {
        let mut pts: Vec<_> = sweep
            .rows
            .iter()
            .filter(|r| r.profile == profile)
            .map(|r| (100.0 * r.offloaded_share, 100.0 * r.accuracy, r.threshold))
            .collect();
        pts.sort_by(|a, b| a.2.total_cmp(&b.2));
        pts
    };
    let xs = sweep.rows.iter().map(|r| 100.0 * r.offloaded_share);
    let ys = sweep.rows.iter().map(|r| 100.0 * r.accuracy);
    let x_max = xs.fold(0.0f64, f64::max);
    let x_range = 0.0..(x_max * 1.15).max(1.0);
    let (y_lo, y_hi) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let pad = ((y_hi - y_lo) * 0.15).max(0.1);
    let y_range = (y_lo - pad).max(0.0)..(y_hi + pad).min(100.0);

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err("fill"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Accuracy against share offloaded to the cloud (budget {} ms)",
                sweep.budget_ms
            ),
            (FAMILY, 28),
        )
        .margin(24)
        .x_label_area_size(64)
        .y_label_area_size(84)
        .build_cartesian_2d(x_range, y_range)
        .map_err(err("chart"))?;
    chart
        .configure_mesh()
        .x_desc("answers given by the cloud (%)")
        .y_desc("accuracy: answers matching the MNIST label (%)")
        .axis_desc_style((FAMILY, 20))
        .label_style((FAMILY, 16))
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err("mesh"))?;

    let pixels: Vec<(i32, i32)> = sweep
        .rows
        .iter()
        .map(|r| chart.backend_coord(&(100.0 * r.offloaded_share, 100.0 * r.accuracy)))
        .collect();
    let area = chart.plotting_area().get_pixel_range();
    let legend = legend_corner(&area, &pixels, profiles(sweep).len());
    let mut labels = LabelPlacer::new(area);
    // Every point is an obstacle for labels, whichever curve it belongs to.
    for &p in &pixels {
        labels.occupy_point(p);
    }
    let names = profiles(sweep);
    for (i, profile) in names.iter().copied().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts = points(profile);
        // Profiles often give the same figures (fast links offload alike), and a curve drawn
        // over another would hide it: earlier curves are drawn wider, with bigger points, so
        // coinciding ones show as nested rings.
        let under = (names.len() - 1 - i) as u32;
        let width = 2 + 2 * under;
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.1)),
                color.stroke_width(width),
            ))
            .map_err(err("curve"))?
            .label(profile)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(width.max(3)))
            });
        chart
            .draw_series(
                pts.iter()
                    .map(|p| Circle::new((p.0, p.1), 5 + 2 * under, color.filled())),
            )
            .map_err(err("points"))?;
        // Threshold labels beside each point, placed where they overlap no label already
        // drawn (curves of different profiles often run close), else left out.
        let style = TextStyle::from((FAMILY, 15).into_font()).color(&color);
        for p in &pts {
            let text = format!("{}", p.2);
            let anchor = chart.backend_coord(&(p.0, p.1));
            if let Some(offset) = labels.place(anchor, &text) {
                chart
                    .draw_series(std::iter::once(
                        EmptyElement::at((p.0, p.1)) + Text::new(text, offset, style.clone()),
                    ))
                    .map_err(err("labels"))?;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(legend)
        .margin(16)
        .label_font((FAMILY, 18))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err("legend"))?;
    root.draw(&Text::new(
        "point labels: the edge's confidence threshold",
        (90, SIZE.1 as i32 - 24),
        (FAMILY, 15).into_font().color(&RGBColor(90, 90, 90)),
    ))
    .map_err(err("note"))?;
    root.present().map_err(err("write PNG"))?;
    Ok(())
}

/// The latency CDF of each profile at the sweep's CDF threshold, on a log time axis.
pub fn latency_cdf(path: &Path, sweep: &Sweep) -> Result<()> {
    register_fonts();
    // (profile, points of (latency ms, % of answers at or below it)).
    let mut curves: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
    for profile in profiles(sweep) {
        let Some(k) = sweep
            .rows
            .iter()
            .position(|r| r.profile == profile && r.threshold == sweep.cdf_threshold)
        else {
            continue;
        };
        let h = &sweep.latencies[k];
        if h.is_empty() {
            continue;
        }
        let total = h.len() as f64;
        let mut cumulative = 0u64;
        let mut pts = Vec::new();
        let mut by_value = BTreeMap::new();
        for v in h.iter_recorded() {
            *by_value
                .entry(h.highest_equivalent(v.value_iterated_to()))
                .or_insert(0) += v.count_at_value();
        }
        for (value, count) in by_value {
            cumulative += count;
            pts.push((value as f64 / 1000.0, 100.0 * cumulative as f64 / total));
        }
        curves.push((profile, pts));
    }
    anyhow::ensure!(
        !curves.is_empty(),
        "no latencies recorded at threshold {}",
        sweep.cdf_threshold
    );

    let budget = f64::from(sweep.budget_ms);
    let lo = curves
        .iter()
        .flat_map(|c| c.1.first())
        .map(|p| p.0)
        .fold(f64::MAX, f64::min);
    let hi = curves
        .iter()
        .flat_map(|c| c.1.last())
        .map(|p| p.0)
        .fold(0.0f64, f64::max)
        .max(budget);
    // Whole decades, so the log axis has round labels.
    let x_lo = 10f64.powf((lo.max(0.001)).log10().floor());
    let x_hi = 10f64.powf(hi.log10().ceil());

    let root = BitMapBackend::new(path, CDF_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err("fill"))?;
    let root = root
        .titled(
            &format!(
                "Latency CDF by link profile at threshold {} (budget {} ms)",
                sweep.cdf_threshold, sweep.budget_ms
            ),
            (FAMILY, 28),
        )
        .map_err(err("title"))?;
    // The whole distribution, and its tail magnified: on a linear axis the few answers that
    // crossed the link (the part that differs between profiles) are a sliver at the top.
    let (left, right) = root.split_horizontally(CDF_SIZE.0 / 2);
    let order = profiles(sweep);
    let panel = |area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
                 caption: &str,
                 y_lo: f64|
     -> Result<()> {
        let mut chart = ChartBuilder::on(area)
            .caption(caption, (FAMILY, 20))
            .margin(20)
            .x_label_area_size(64)
            .y_label_area_size(72)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), y_lo..100.0)
            .map_err(err("chart"))?;
        chart
            .configure_mesh()
            .x_desc("latency seen by the client (ms, log scale)")
            .y_desc("answers within that latency (%)")
            .axis_desc_style((FAMILY, 18))
            .label_style((FAMILY, 15))
            .x_label_formatter(&|v| {
                if *v >= 1.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v}")
                }
            })
            .y_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err("mesh"))?;
        for (profile, pts) in &curves {
            let i = order.iter().position(|p| p == profile).unwrap_or(0);
            let color = PALETTE[i % PALETTE.len()];
            // In the magnified panel a curve starts where it crosses the panel's floor.
            let first = pts.iter().position(|p| p.1 >= y_lo).unwrap_or(pts.len());
            let entry = first.checked_sub(1).map(|k| (pts[k].0, y_lo));
            chart
                .draw_series(LineSeries::new(
                    entry.into_iter().chain(pts[first..].iter().copied()),
                    color.stroke_width(3),
                ))
                .map_err(err("curve"))?
                .label(*profile)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
                });
        }
        chart
            .draw_series(DashedLineSeries::new(
                vec![(budget, y_lo), (budget, 100.0)],
                8,
                6,
                BLACK.stroke_width(2),
            ))
            .map_err(err("budget line"))?
            .label(format!("budget {} ms", sweep.budget_ms))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], BLACK.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .margin(12)
            .label_font((FAMILY, 16))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(err("legend"))?;
        Ok(())
    };
    panel(&left, "all answers", 0.0)?;
    panel(&right, "the tail: slowest 10 % of answers", 90.0)?;
    root.present().map_err(err("write PNG"))?;
    Ok(())
}

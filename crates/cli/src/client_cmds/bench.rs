//! `edgeinfer bench`: load from the MNIST test set, one run or a range of concurrencies or
//! rates ("steps"), each after an uncounted warm-up, reported as text or JSON, optionally as
//! CSV rows and a plot, and judged against stated targets (exit status 3 when one is missed).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use edgeinfer_model::mnist::Dataset;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::exit::Failure;
use super::load::{self, LoadSpec, Pacing, Stop};
use super::request::{OipDtype, Protocol, RoutingArgs};
use super::schedule::Arrivals;
use super::tally::{BenchReport, ReportContext, fmt_us};
use super::target::{CallHeaders, ServerArgs};
use super::{DEFAULT_BUDGET_MS, DEFAULT_TIMEOUT_MS, bench_plot};

/// A run finished but missed `--max-p99-ms` or `--max-error-rate`.
pub const EXIT_TARGET_MISSED: u8 = 3;
/// Workers of the closed loop when neither `--concurrency` nor `--rate` is given.
const DEFAULT_CONCURRENCY: usize = 16;
/// Requests per step when neither `--requests` nor `--duration` is given.
const DEFAULT_REQUESTS: u64 = 1000;

/// Arguments of `edgeinfer bench`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Exit status:
  0  every step ran and met the stated targets
  1  the run could not be made (bad flags, no server, no MNIST files) or no request succeeded
  2  usage error of the flags (clap)
  3  a stated target (--max-p99-ms, --max-error-rate) was missed in some step; the report is
     printed in full first, and the missed targets are named on stderr")]
pub struct BenchArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// API to load: the native `Infer` or the Open Inference Protocol's `ModelInfer`.
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    pub protocol: Protocol,
    /// Number of requests to send in each step [default: 1000 unless --duration is given].
    #[arg(long, conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Send requests for this many seconds in each step instead of a fixed count.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Send requests for this many seconds before each step, at its pacing, and count none of
    /// them (connections, caches and the server's estimators warm up).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub warmup: f64,
    /// Closed loop: this many workers, each sending its next request when the previous answer
    /// arrives; a comma-separated list (1,16,64) runs one step per value [default: 16 unless
    /// --rate is given].
    #[arg(long, conflicts_with = "rate", value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Open loop: send this many requests per second whatever the answers do; latency is
    /// measured from each request's scheduled send time (no coordinated omission). A
    /// comma-separated list (100,1000) runs one step per value.
    #[arg(long, value_name = "REQ_PER_S", value_delimiter = ',')]
    pub rate: Vec<f64>,
    /// Open loop only: how sends are spaced: evenly, or as a Poisson process (independent
    /// clients; exponential gaps with the same mean rate).
    #[arg(long, value_enum, default_value_t = Arrivals::Uniform)]
    pub arrivals: Arrivals,
    /// Seed of the Poisson arrivals, so that a run can be repeated exactly.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Open loop only: the most requests in flight before sending waits (their latency still
    /// counts from the scheduled time).
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    #[command(flatten)]
    pub routing: RoutingArgs,
    /// OIP only: the datatype of the `input` tensor.
    #[arg(long, value_enum, default_value_t = OipDtype::Uint8)]
    pub oip_dtype: OipDtype,
    /// HTTP/2 connections to spread requests over [default: min(largest concurrency, 4)].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Client-side limit on each request, in milliseconds; a request over it counts as
    /// DEADLINE_EXCEEDED. It is also sent as the gRPC deadline.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_MS)]
    pub timeout_ms: u64,
    /// Print exactly one JSON object instead of the text: requests, ok, errors by code,
    /// throughput_rps, latency_us (p50, p90, p99, p999, max), accuracy, served_by, reasons,
    /// degraded, within_budget, timing_us (the server's breakdown: queue, edge_compute,
    /// uplink, cloud, downlink, total, each with n and percentiles), and what was measured.
    /// With several steps the object is {"steps": [one such object per step]}.
    #[arg(long)]
    pub json: bool,
    /// Also write FILE as CSV: a header and one summary row per step (not one per request).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Also draw FILE (PNG): latency percentiles and throughput against the steps.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Target: exit 3 when a step's p99 latency is above this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub max_p99_ms: Option<f64>,
    /// Target: exit 3 when a step's share of failed requests (0 to 1) is above this.
    #[arg(long, value_name = "FRACTION")]
    pub max_error_rate: Option<f64>,
}

/// One step of a bench: a closed loop at one concurrency or an open loop at one rate.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    Concurrency(usize),
    Rate(f64),
}

/// What the targets say about one step.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Verdict {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// One sentence per missed target; empty when every target was met.
    pub missed: Vec<String>,
}

/// The targets of `--max-p99-ms` and `--max-error-rate`, checked before any load.
#[derive(Clone, Copy, Debug, Default)]
struct Targets {
    max_p99_ms: Option<f64>,
    max_error_rate: Option<f64>,
}

impl Targets {
    fn from_args(args: &BenchArgs) -> Result<Self> {
        if let Some(ms) = args.max_p99_ms {
            ensure!(
                ms.is_finite() && ms > 0.0,
                "--max-p99-ms must be a positive number of milliseconds, not {ms}"
            );
        }
        if let Some(rate) = args.max_error_rate {
            ensure!(
                (0.0..=1.0).contains(&rate),
                "--max-error-rate must be a fraction from 0 to 1, not {rate}"
            );
        }
        Ok(Self {
            max_p99_ms: args.max_p99_ms,
            max_error_rate: args.max_error_rate,
        })
    }

    fn stated(&self) -> bool {
        self.max_p99_ms.is_some() || self.max_error_rate.is_some()
    }

    fn judge(&self, report: &BenchReport) -> Verdict {
        let mut missed = Vec::new();
        if let Some(ms) = self.max_p99_ms {
            let p99_ms = report.latency_us.p99 as f64 / 1e3;
            if p99_ms > ms {
                missed.push(format!(
                    "p99 latency {p99_ms} ms is above --max-p99-ms {ms}"
                ));
            }
        }
        if let Some(max) = self.max_error_rate {
            let rate = error_rate(report);
            if rate > max {
                missed.push(format!(
                    "error rate {rate:.4} ({} of {}) is above --max-error-rate {max}",
                    report.requests - report.ok,
                    report.requests
                ));
            }
        }
        Verdict {
            max_p99_ms: self.max_p99_ms,
            max_error_rate: self.max_error_rate,
            missed,
        }
    }
}

fn error_rate(report: &BenchReport) -> f64 {
    if report.requests == 0 {
        0.0
    } else {
        (report.requests - report.ok) as f64 / report.requests as f64
    }
}

/// The steps the flags ask for, each value checked.
fn steps(args: &BenchArgs) -> Result<Vec<Step>> {
    if !args.rate.is_empty() {
        return args
            .rate
            .iter()
            .map(|&rate| {
                ensure!(
                    rate.is_finite() && rate > 0.0,
                    "--rate must be a positive number of requests per second, not {rate}"
                );
                Ok(Step::Rate(rate))
            })
            .collect();
    }
    if args.concurrency.is_empty() {
        return Ok(vec![Step::Concurrency(DEFAULT_CONCURRENCY)]);
    }
    args.concurrency
        .iter()
        .map(|&c| {
            ensure!(c > 0, "--concurrency must be at least 1, not {c}");
            Ok(Step::Concurrency(c))
        })
        .collect()
}

fn stop(args: &BenchArgs) -> Result<Stop> {
    Ok(match (args.requests, args.duration) {
        (_, Some(seconds)) if !(seconds.is_finite() && seconds > 0.0) => {
            bail!("--duration must be a positive number of seconds, not {seconds}")
        }
        (_, Some(seconds)) => Stop::Duration(Duration::from_secs_f64(seconds)),
        (Some(0), None) => bail!("--requests must be at least 1"),
        (Some(n), None) => Stop::Requests(n),
        (None, None) => Stop::Requests(DEFAULT_REQUESTS),
    })
}

/// Loads a server with MNIST test images and prints what it measured.
pub async fn run_bench(args: &BenchArgs) -> Result<()> {
    // Flags are checked before the data set is read, so a typo is reported at once.
    check(args)?;
    let inputs = load::mnist_test_set()?;
    bench(args, &inputs, &mut std::io::stdout().lock()).await
}

/// Every flag that can be wrong, checked before any work.
fn check(args: &BenchArgs) -> Result<()> {
    steps(args)?;
    stop(args)?;
    Targets::from_args(args)?;
    CallHeaders::parse(&args.server.headers)?;
    ensure!(
        args.warmup.is_finite() && args.warmup >= 0.0,
        "--warmup must be zero or a positive number of seconds, not {}",
        args.warmup
    );
    Ok(())
}

/// The bench over `inputs`, its report written to `out`.
async fn bench(args: &BenchArgs, inputs: &Dataset, out: &mut impl Write) -> Result<()> {
    check(args)?;
    let steps = steps(args)?;
    let stop = stop(args)?;
    let targets = Targets::from_args(args)?;
    let connections = args
        .connections
        .unwrap_or_else(|| {
            steps
                .iter()
                .map(|s| match s {
                    Step::Concurrency(c) => (*c).min(4),
                    Step::Rate(_) => 4,
                })
                .max()
                .unwrap_or(1)
        })
        .max(1);
    let target = args.server.connect(connections).await?;
    // Without --budget-ms the server's default applies, so `within_budget` is measured
    // against what the edge reports, or the design's default for other servers.
    let budget_ms = match args.routing.budget_ms {
        Some(ms) => ms,
        None => target
            .default_budget_ms()
            .await
            .unwrap_or(DEFAULT_BUDGET_MS),
    };
    let warmup = Duration::from_secs_f64(args.warmup);
    let context = ReportContext {
        addr: &args.server.addr,
        connections,
        budget_ms,
        arrivals: args.arrivals,
        warmup,
    };

    let mut reports = Vec::with_capacity(steps.len());
    for &step in &steps {
        let spec = LoadSpec {
            protocol: args.protocol,
            stop,
            pacing: match step {
                Step::Concurrency(concurrency) => Pacing::Closed { concurrency },
                Step::Rate(rate) => Pacing::Open {
                    rate,
                    max_in_flight: args.max_in_flight.max(1),
                },
            },
            options: args.routing.options(
                args.oip_dtype,
                Duration::from_millis(args.timeout_ms.max(1)),
            ),
            within_budget: Duration::from_millis(u64::from(budget_ms)),
            first_index: 0,
        };
        if !warmup.is_zero() {
            // Warm-up images come from the second half of the test set, so the measured
            // requests are the same images with or without a warm-up.
            let warm = LoadSpec {
                stop: Stop::Duration(warmup),
                first_index: inputs.len() / 2,
                ..spec.clone()
            };
            let hidden = ProgressBar::hidden();
            load::run_with_arrivals(&target, inputs, &warm, args.arrivals, args.seed, &hidden)
                .await?;
        }
        let progress = progress_bar(&stop);
        let tally =
            load::run_with_arrivals(&target, inputs, &spec, args.arrivals, args.seed, &progress)
                .await?;
        progress.finish_and_clear();
        let mut report = tally.report(&spec, &context);
        if targets.stated() {
            report.targets = Some(targets.judge(&report));
        }
        reports.push(report);
    }

    print_reports(args, &reports, out)?;
    if let Some(path) = &args.csv {
        write_csv(path, &reports)?;
    }
    if let Some(path) = &args.plot {
        bench_plot::draw(path, &reports)?;
    }

    if let Some(failed) = reports.iter().find(|r| r.ok == 0) {
        bail!(
            "{}: no request succeeded ({} errors); is a server listening at {}?",
            step_name(failed),
            failed.requests,
            args.server.addr
        );
    }
    let missed: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.targets
                .iter()
                .flat_map(|v| &v.missed)
                .map(move |m| format!("{}: {m}", step_name(r)))
        })
        .collect();
    if !missed.is_empty() {
        return Err(Failure::new(
            EXIT_TARGET_MISSED,
            anyhow::anyhow!("target missed: {}", missed.join("; ")),
        )
        .into());
    }
    Ok(())
}

/// "concurrency 16" or "rate 1000 req/s": a step as the messages and the table name it.
fn step_name(report: &BenchReport) -> String {
    match (report.concurrency, report.rate) {
        (Some(c), _) => format!("concurrency {c}"),
        (_, Some(r)) => format!("rate {r} req/s"),
        _ => "the run".to_string(),
    }
}

/// Text or JSON on `out`: one step as the full summary (or the contract's single object),
/// several as a table (or `{"steps": [...]}`).
fn print_reports(args: &BenchArgs, reports: &[BenchReport], out: &mut impl Write) -> Result<()> {
    match (args.json, reports) {
        (true, [one]) => writeln!(out, "{}", serde_json::to_string(one)?)?,
        (true, steps) => writeln!(out, "{}", serde_json::json!({ "steps": steps }))?,
        (false, [one]) => write!(out, "{}", one.summary())?,
        (false, steps) => write!(out, "{}", steps_table(steps))?,
    }
    Ok(())
}

/// One row per step: what a range of loads did to latency, throughput and routing.
fn steps_table(reports: &[BenchReport]) -> String {
    let mut s = String::new();
    if let Some(first) = reports.first() {
        s.push_str(&format!(
            "bench {} {} ({} connection{})\n",
            first.protocol,
            first.addr,
            first.connections,
            if first.connections == 1 { "" } else { "s" }
        ));
    }
    let header = [
        "step", "requests", "errors", "req/s", "p50", "p90", "p99", "max", "cloud", "budget",
    ];
    let rows: Vec<[String; 10]> = reports
        .iter()
        .map(|r| {
            [
                step_name(r),
                r.requests.to_string(),
                (r.requests - r.ok).to_string(),
                format!("{:.1}", r.throughput_rps),
                fmt_us(r.latency_us.p50),
                fmt_us(r.latency_us.p90),
                fmt_us(r.latency_us.p99),
                fmt_us(r.latency_us.max),
                format!("{:.1}%", 100.0 * share(r.served_by.cloud, r.ok)),
                format!("{:.1}%", 100.0 * r.within_budget),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let mut l = String::from(" ");
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // The step name reads left-aligned, the numbers right-aligned.
            if i == 0 {
                l.push_str(&format!(" {cell:<w$}"));
            } else {
                l.push_str(&format!("  {cell:>w$}"));
            }
        }
        l.push('\n');
        l
    };
    s.push_str(&line(&header));
    for row in &rows {
        s.push_str(&line(&row.each_ref().map(String::as_str)));
    }
    s
}

fn share(n: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

/// The CSV columns, one summary row per step.
const CSV_COLUMNS: &str = "mode,concurrency,rate,arrivals,requests,ok,errors,error_rate,\
throughput_rps,p50_us,p90_us,p99_us,p999_us,max_us,mean_us,accuracy,served_edge,served_cloud,\
degraded,within_budget,budget_ms";

fn write_csv(path: &Path, reports: &[BenchReport]) -> Result<()> {
    let mut csv = String::from(CSV_COLUMNS);
    let stages = [
        "queue",
        "edge_compute",
        "uplink",
        "cloud",
        "downlink",
        "total",
    ];
    for stage in stages {
        csv.push_str(&format!(",{stage}_n,{stage}_p50_us,{stage}_p99_us"));
    }
    csv.push('\n');
    let opt = |v: Option<String>| v.unwrap_or_default();
    for r in reports {
        let l = &r.latency_us;
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{:.3},{},{},{},{},{},{:.1},{},{},{},{},{:.6},{}",
            r.mode,
            opt(r.concurrency.map(|c| c.to_string())),
            opt(r.rate.map(|x| x.to_string())),
            opt(r.arrivals.map(str::to_string)),
            r.requests,
            r.ok,
            r.requests - r.ok,
            error_rate(r),
            r.throughput_rps,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            l.mean,
            opt(r.accuracy.map(|a| format!("{a:.6}"))),
            r.served_by.edge,
            r.served_by.cloud,
            r.degraded,
            r.within_budget,
            r.budget_ms
        ));
        match &r.timing_us {
            Some(timing) => {
                for (_, stats) in timing.stages() {
                    let p = &stats.percentiles;
                    csv.push_str(&format!(",{},{},{}", stats.n, p.p50, p.p99));
                }
            }
            // A server without a timing breakdown: the columns stay, empty.
            None => csv.push_str(&",,,".repeat(stages.len())),
        }
        csv.push('\n');
    }
    std::fs::write(path, csv).with_context(|| format!("cannot write --csv {}", path.display()))
}

/// A progress bar on stderr when stderr is a terminal, else a hidden one, so that logs and
/// pipes get no control characters.
fn progress_bar(stop: &Stop) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match stop {
        Stop::Requests(n) => ProgressBar::new(*n).with_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {pos}/{len} requests, {per_sec}, eta {eta}",
            )
            .expect("static template"),
        ),
        Stop::Duration(d) => ProgressBar::new_spinner()
            .with_style(
                ProgressStyle::with_template("{spinner} {elapsed}/{msg} {pos} requests, {per_sec}")
                    .expect("static template"),
            )
            .with_message(format!("{}s", d.as_secs_f64())),
    }
}

#[cfg(test)]
mod tests {
    //! `bench` end to end against the fake server (see `fake_server`: 1 request in 100
    //! refused, 25 answered by the "cloud", timing a function of the answer).

    use std::sync::atomic::Ordering;

    use clap::Parser;
    use serde_json::Value;

    use super::super::exit::exit_code;
    use super::super::fake_server::{self, GOOD_TOKEN, dataset};
    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(addr: &str, flags: &[&str]) -> BenchArgs {
        parse_with(addr, flags, &[])
    }

    /// Common flags of a test and the ones of one case.
    fn parse_with(addr: &str, base: &[&str], extra: &[&str]) -> BenchArgs {
        let head = ["bench", "--addr", addr];
        let argv = head.iter().chain(base).chain(extra);
        Cli::try_parse_from(argv).unwrap().bench
    }

    /// Runs the bench; returns its exit status, stdout, and the error text.
    async fn run(args: &BenchArgs) -> (u8, String, String) {
        let mut out = Vec::new();
        let result = bench(args, &dataset(), &mut out).await;
        let out = String::from_utf8(out).unwrap();
        match result {
            Ok(()) => (0, out, String::new()),
            Err(e) => (exit_code(&e), out, format!("{e:#}")),
        }
    }

    fn json(out: &str) -> Value {
        assert_eq!(out.lines().count(), 1, "one JSON object on one line: {out}");
        serde_json::from_str(out).unwrap()
    }

    #[tokio::test]
    async fn one_step_keeps_the_contract_fields_and_adds_the_timing() {
        let addr = fake_server::start().await;
        for protocol in ["native", "oip"] {
            let args = parse(
                &addr,
                &[
                    "--requests",
                    "200",
                    "--concurrency",
                    "4",
                    "--json",
                    "--protocol",
                    protocol,
                ],
            );
            let (code, out, err) = run(&args).await;
            assert_eq!(code, 0, "{err}");
            let r = json(&out);
            for field in [
                "requests",
                "ok",
                "errors",
                "throughput_rps",
                "latency_us",
                "accuracy",
                "served_by",
                "reasons",
                "degraded",
                "within_budget",
            ] {
                assert!(r.get(field).is_some(), "{protocol}: no {field} in {r}");
            }
            for p in ["p50", "p90", "p99", "p999", "max"] {
                assert!(r["latency_us"][p].as_u64().unwrap() > 0, "{r}");
            }
            assert_eq!(r["requests"], 200);
            assert_eq!(r["ok"], 198);
            assert_eq!(r["errors"]["RESOURCE_EXHAUSTED"], 2);
            assert_eq!(r["served_by"]["cloud"], 50);
            let t = &r["timing_us"];
            assert_eq!(t["queue"]["n"], 198, "{protocol}: {t}");
            assert_eq!(t["edge_compute"]["p99"], 20);
            assert_eq!(t["uplink"]["n"], 50);
            assert_eq!(t["cloud"]["p50"], 2000);
            assert_eq!(t["downlink"]["max"], 500);
            // Queue is 10 + class µs: classes 0 to 9, so p50 lies within.
            let q = t["queue"]["p50"].as_u64().unwrap();
            assert!((10..=19).contains(&q), "{t}");
            assert!(r.get("targets").is_none(), "no targets stated");
        }
    }

    #[tokio::test]
    async fn the_text_summary_shows_the_timing_breakdown() {
        let addr = fake_server::start().await;
        let args = parse(&addr, &["--requests", "100", "--concurrency", "2"]);
        let (code, out, err) = run(&args).await;
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("server timing"), "{out}");
        let uplink = out
            .lines()
            .find(|l| l.trim_start().starts_with("uplink"))
            .unwrap();
        assert!(uplink.contains("1000 us"), "{uplink}");

        let flags = [
            "--requests",
            "100",
            "--warmup",
            "0.05",
            "--max-error-rate",
            "0",
        ];
        let (code, out, _) = run(&parse(&addr, &flags)).await;
        assert_eq!(code, EXIT_TARGET_MISSED);
        assert!(out.contains("after 0.05 s of uncounted warm-up"), "{out}");
        let targets = out
            .lines()
            .find(|l| l.trim_start().starts_with("targets"))
            .unwrap();
        assert!(targets.contains("MISSED: error rate 0.0100"), "{targets}");
    }

    #[tokio::test]
    async fn the_warm_up_is_sent_but_not_counted() {
        let (addr, calls) = fake_server::start_counted().await;
        let args = parse(
            &addr,
            &[
                "--requests",
                "100",
                "--concurrency",
                "2",
                "--warmup",
                "0.2",
                "--json",
            ],
        );
        let (code, out, err) = run(&args).await;
        assert_eq!(code, 0, "{err}");
        let r = json(&out);
        assert_eq!(r["requests"], 100, "only the measured requests are counted");
        assert_eq!(r["warmup_s"], 0.2);
        let served = calls.load(Ordering::Relaxed);
        assert!(served > 100, "the warm-up sent requests too: {served}");
    }

    #[tokio::test]
    async fn ranges_make_one_step_each_with_table_csv_and_plot() {
        let addr = fake_server::start().await;
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("bench.csv");
        let plot = dir.path().join("bench.png");
        let (csv_s, plot_s) = (csv.to_str().unwrap(), plot.to_str().unwrap());
        let flags = [
            "--requests",
            "100",
            "--concurrency",
            "1,4,8",
            "--csv",
            csv_s,
            "--plot",
            plot_s,
        ];
        let (code, out, err) = run(&parse(&addr, &flags)).await;
        assert_eq!(code, 0, "{err}");
        let rows: Vec<&str> = out.lines().collect();
        assert_eq!(rows.len(), 1 + 1 + 3, "title, header, three steps: {out}");
        assert!(rows[2].trim_start().starts_with("concurrency 1"), "{out}");
        assert!(rows[4].trim_start().starts_with("concurrency 8"), "{out}");

        let text = std::fs::read_to_string(&csv).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let header: Vec<&str> = lines[0].split(',').collect();
        for line in &lines[1..] {
            assert_eq!(line.split(',').count(), header.len(), "{line}");
        }
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let row: Vec<&str> = lines[2].split(',').collect();
        assert_eq!(row[col("concurrency")], "4");
        assert_eq!(row[col("requests")], "100");
        assert_eq!(row[col("errors")], "1");
        assert_eq!(row[col("cloud_p50_us")], "2000");

        let png = std::fs::read(&plot).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(
            png.len() > 10_000,
            "the plot has content: {} bytes",
            png.len()
        );

        let mut args = parse(&addr, &["--requests", "50", "--rate", "500,1000", "--json"]);
        args.arrivals = Arrivals::Poisson;
        let (code, out, err) = run(&args).await;
        assert_eq!(code, 0, "{err}");
        let steps = json(&out)["steps"].as_array().unwrap().clone();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[1]["rate"], 1000.0);
        assert_eq!(steps[1]["arrivals"], "poisson");
        assert_eq!(steps[0]["requests"], 50);
    }

    #[tokio::test]
    async fn a_missed_target_exits_3_after_the_report() {
        let addr = fake_server::start().await;
        let base = ["--requests", "200", "--concurrency", "4", "--json"];
        let with = |extra: &[&str]| parse_with(&addr, &base, extra);

        // 1 % of the fake's requests are refused.
        let (code, out, err) = run(&with(&["--max-error-rate", "0.005"])).await;
        assert_eq!(code, EXIT_TARGET_MISSED, "{err}");
        assert!(err.contains("error rate 0.0100 (2 of 200)"), "{err}");
        let r = json(&out);
        assert_eq!(r["targets"]["max_error_rate"], 0.005);
        assert_eq!(r["targets"]["missed"].as_array().unwrap().len(), 1);

        let (code, out, err) = run(&with(&["--max-error-rate", "0.02"])).await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(json(&out)["targets"]["missed"], serde_json::json!([]));

        // No gRPC round trip over loopback takes a microsecond; none takes a minute here.
        let (code, _, err) = run(&with(&["--max-p99-ms", "0.001"])).await;
        assert_eq!(code, EXIT_TARGET_MISSED, "{err}");
        assert!(err.contains("above --max-p99-ms 0.001"), "{err}");
        let (code, _, err) = run(&with(&["--max-p99-ms", "60000"])).await;
        assert_eq!(code, 0, "{err}");
    }

    #[tokio::test]
    async fn token_and_headers_reach_the_server() {
        let addr = fake_server::start().await;
        let base = ["--requests", "20", "--concurrency", "2", "--json"];
        let with = |extra: &[&str]| parse_with(&addr, &base, extra);
        let (code, out, err) =
            run(&with(&["--token", GOOD_TOKEN, "--header", "x-tenant:blue"])).await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(json(&out)["ok"], 20);

        let (code, out, err) = run(&with(&["--token", "wrong"])).await;
        assert_eq!(code, 1, "nothing succeeded: {err}");
        assert_eq!(json(&out)["errors"]["UNAUTHENTICATED"], 20);
        assert!(err.contains("no request succeeded"), "{err}");

        let (code, out, _) = run(&with(&[
            "--header",
            "X-Tenant: red",
            "--header",
            "x-other:1",
        ]))
        .await;
        assert_eq!(code, 1);
        assert_eq!(json(&out)["errors"]["PERMISSION_DENIED"], 20);
    }

    #[tokio::test]
    async fn bad_flags_are_named_before_any_load() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = listener.local_addr().unwrap().to_string();
        drop(listener);
        for (flags, want) in [
            (vec!["--rate", "100,-1"], "--rate must be a positive number"),
            (
                vec!["--concurrency", "4,0"],
                "--concurrency must be at least 1",
            ),
            (
                vec!["--max-error-rate", "1.5"],
                "--max-error-rate must be a fraction",
            ),
            (vec!["--max-p99-ms", "0"], "--max-p99-ms must be a positive"),
            (vec!["--warmup=-1"], "--warmup must be zero or a positive"),
            (vec!["--header", "nocolon"], "has no `:`"),
            (vec!["--duration", "0"], "--duration must be a positive"),
        ] {
            let (code, out, err) = run(&parse(&closed, &flags)).await;
            assert_eq!(code, 1, "{flags:?}");
            assert!(out.is_empty());
            assert!(err.contains(want), "{flags:?}: {err}");
            assert!(
                !err.contains("is the server running"),
                "checked before connecting: {err}"
            );
        }
        // clap itself refuses a concurrency that is not a number, and both paces at once.
        assert!(Cli::try_parse_from(["bench", "--concurrency", "1,x"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--concurrency", "1", "--rate", "5"]).is_err());
    }
}

//! What a load run counts, and the `bench` report made from it.
//!
//! Latency goes into an HDR histogram (1 µs to 60 s, three significant digits), so every
//! percentile is computed over every answer, not over a sorted sample of some of them. So does
//! each stage of the server's timing breakdown, which says where the latency went.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::bench::Verdict;
use super::load::{LoadSpec, Pacing};
use super::request::{Answer, Stage, StageTimes, code_name};
use super::schedule::Arrivals;

/// Highest latency the histograms hold, in microseconds; longer ones are recorded as this.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Everything counted during one run.
#[derive(Clone, Debug)]
pub struct Tally {
    /// Requests sent (answered or failed).
    pub requests: u64,
    /// Requests answered.
    pub ok: u64,
    /// Failed requests by gRPC code name.
    pub errors: BTreeMap<String, u64>,
    /// Latency of answered requests, in microseconds.
    pub latency: Histogram<u64>,
    /// Answers whose class matched the test label.
    pub correct: u64,
    pub served_edge: u64,
    pub served_cloud: u64,
    /// Answers by reason name; answers that gave no reason are not counted here.
    pub reasons: BTreeMap<String, u64>,
    pub degraded: u64,
    /// Requests answered within their budget (failed requests never are).
    pub within_budget: u64,
    /// Wall time of the run, first send to last answer.
    pub elapsed: Duration,
    /// Open loop only: how late each request left against its schedule, in microseconds.
    pub schedule_lag: Option<Histogram<u64>>,
    /// The server's timing breakdown by [`Stage`], in microseconds (see [`Tally::timing`]).
    stages: [Histogram<u64>; Stage::ALL.len()],
    /// Answers by the model that produced them ("name@version"): a hot swap shows here.
    pub models: BTreeMap<String, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

impl Tally {
    pub fn new() -> Self {
        Self {
            requests: 0,
            ok: 0,
            errors: BTreeMap::new(),
            latency: new_histogram(),
            correct: 0,
            served_edge: 0,
            served_cloud: 0,
            reasons: BTreeMap::new(),
            degraded: 0,
            within_budget: 0,
            elapsed: Duration::ZERO,
            schedule_lag: None,
            stages: std::array::from_fn(|_| new_histogram()),
            models: BTreeMap::new(),
        }
    }

    /// Counts one request's outcome; `truth` is the test label of its input.
    pub fn record(
        &mut self,
        latency: Duration,
        result: Result<Answer, tonic::Status>,
        truth: u8,
        budget: Duration,
    ) {
        self.requests += 1;
        let answer = match result {
            Ok(answer) => answer,
            Err(status) => {
                *self
                    .errors
                    .entry(code_name(status.code()).to_string())
                    .or_default() += 1;
                return;
            }
        };
        self.ok += 1;
        self.latency
            .saturating_record((latency.as_micros() as u64).max(1));
        if latency <= budget {
            self.within_budget += 1;
        }
        if answer.class_index == usize::from(truth) {
            self.correct += 1;
        }
        match answer.served_by {
            Some("edge") => self.served_edge += 1,
            Some("cloud") => self.served_cloud += 1,
            _ => {}
        }
        if let Some(reason) = answer.reason {
            *self.reasons.entry(reason).or_default() += 1;
        }
        if answer.degraded {
            self.degraded += 1;
        }
        if let Some(times) = answer.timing {
            self.record_stages(&times);
        }
        if let Some(model) = answer.model {
            *self.models.entry(model).or_default() += 1;
        }
    }

    /// Queue and total count for every answer (a zero queue is no wait); the other stages
    /// only for answers that went through them, since the server reports a skipped stage as
    /// zero (an edge answer spends nothing on the uplink) and a zero would drag the
    /// percentiles of those who did down.
    fn record_stages(&mut self, times: &StageTimes) {
        for stage in Stage::ALL {
            let us = times.get(stage);
            if us > 0 || matches!(stage, Stage::Queue | Stage::Total) {
                self.stages[stage as usize].saturating_record(us);
            }
        }
    }

    /// The histogram of one stage of the server's timing, in microseconds.
    pub fn timing(&self, stage: Stage) -> &Histogram<u64> {
        &self.stages[stage as usize]
    }

    /// The timing breakdown's percentiles by stage; None when no answer carried a timing (a
    /// server other than edgeinfer's).
    pub fn timing_report(&self) -> Option<TimingReport> {
        if self.timing(Stage::Total).is_empty() {
            return None;
        }
        let of = |stage| StageStats {
            n: self.timing(stage).len(),
            percentiles: Percentiles::of(self.timing(stage)),
        };
        Some(TimingReport {
            queue: of(Stage::Queue),
            edge_compute: of(Stage::EdgeCompute),
            uplink: of(Stage::Uplink),
            cloud: of(Stage::Cloud),
            downlink: of(Stage::Downlink),
            total: of(Stage::Total),
        })
    }

    /// Accuracy over answered requests; None when nothing was answered.
    pub fn accuracy(&self) -> Option<f64> {
        ratio(self.correct, self.ok)
    }

    /// Latency percentiles of answered requests, in microseconds.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.latency)
    }

    /// Answers per second of wall time.
    pub fn throughput_rps(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.ok as f64 / seconds
        } else {
            0.0
        }
    }

    /// The `bench` report of this run (design.md section 8, plus context fields).
    pub fn report(&self, spec: &LoadSpec, context: &ReportContext<'_>) -> BenchReport {
        let (mode, concurrency, rate, arrivals) = match spec.pacing {
            Pacing::Closed { concurrency } => ("closed", Some(concurrency), None, None),
            Pacing::Open { rate, .. } => ("open", None, Some(rate), Some(context.arrivals.name())),
        };
        BenchReport {
            requests: self.requests,
            ok: self.ok,
            errors: self.errors.clone(),
            throughput_rps: self.throughput_rps(),
            latency_us: self.percentiles(),
            accuracy: self.accuracy(),
            served_by: ServedBy {
                edge: self.served_edge,
                cloud: self.served_cloud,
            },
            reasons: self.reasons.clone(),
            degraded: self.degraded,
            within_budget: ratio(self.within_budget, self.requests).unwrap_or(0.0),
            budget_ms: context.budget_ms,
            addr: context.addr.to_string(),
            protocol: spec.protocol.name(),
            mode,
            concurrency,
            rate,
            arrivals,
            connections: context.connections,
            duration_s: self.elapsed.as_secs_f64(),
            warmup_s: context.warmup.as_secs_f64(),
            schedule_lag_us: self.schedule_lag.as_ref().map(Percentiles::of),
            timing_us: self.timing_report(),
            targets: None,
            models: self.models.clone(),
        }
    }
}

/// What a report says about how its run was made, beyond the [`LoadSpec`].
#[derive(Clone, Copy, Debug)]
pub struct ReportContext<'a> {
    pub addr: &'a str,
    pub connections: usize,
    /// The budget `within_budget` is measured against.
    pub budget_ms: u32,
    /// How an open loop spaced its sends.
    pub arrivals: Arrivals,
    /// Uncounted load sent before the run.
    pub warmup: Duration,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// One stage of the timing breakdown over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StageStats {
    /// Answers counted (see [`TimingReport`]).
    pub n: u64,
    #[serde(flatten)]
    pub percentiles: Percentiles,
}

/// The server's timing breakdown, stage by stage, in microseconds. `queue` and `total` count
/// every answer; `edge_compute`, `uplink`, `cloud` and `downlink` the answers that went
/// through that stage (for example `uplink` only the requests sent to the cloud).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TimingReport {
    pub queue: StageStats,
    pub edge_compute: StageStats,
    pub uplink: StageStats,
    pub cloud: StageStats,
    pub downlink: StageStats,
    pub total: StageStats,
}

impl TimingReport {
    /// The stages in the order a request passes them, with their JSON names.
    pub fn stages(&self) -> [(&'static str, &StageStats); 6] {
        [
            (Stage::Queue.name(), &self.queue),
            (Stage::EdgeCompute.name(), &self.edge_compute),
            (Stage::Uplink.name(), &self.uplink),
            (Stage::Cloud.name(), &self.cloud),
            (Stage::Downlink.name(), &self.downlink),
            (Stage::Total.name(), &self.total),
        ]
    }

    /// The breakdown as rows of the summary, one stage a row.
    pub fn table(&self) -> String {
        let mut s = format!(
            "  {:<14} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
            "server timing", "answers", "p50", "p90", "p99", "max"
        );
        for (name, stats) in self.stages() {
            let p = &stats.percentiles;
            let _ = writeln!(
                s,
                "    {name:<12} {:>8} {:>9} {:>9} {:>9} {:>9}",
                stats.n,
                fmt_us(p.p50),
                fmt_us(p.p90),
                fmt_us(p.p99),
                fmt_us(p.max)
            );
        }
        s
    }
}

/// Answers by tier.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ServedBy {
    pub edge: u64,
    pub cloud: u64,
}

/// The JSON object `edgeinfer bench --json` prints. The first fields are the contract of
/// design.md section 8; the rest say what was measured, so a saved report explains itself.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub requests: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub throughput_rps: f64,
    pub latency_us: Percentiles,
    /// Over answered requests; null when none was answered.
    pub accuracy: Option<f64>,
    pub served_by: ServedBy,
    pub reasons: BTreeMap<String, u64>,
    /// Answers the edge gave although it wanted the cloud (a count, like `served_by`).
    pub degraded: u64,
    /// Share of all requests answered within `budget_ms`, as seen by this client.
    pub within_budget: f64,
    pub budget_ms: u32,
    pub addr: String,
    pub protocol: &'static str,
    /// "closed" (fixed concurrency) or "open" (fixed rate).
    pub mode: &'static str,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    /// Open loop: "uniform" or "poisson".
    pub arrivals: Option<&'static str>,
    pub connections: usize,
    /// Wall time of the counted requests (the warm-up excluded).
    pub duration_s: f64,
    /// Seconds of uncounted load before the counted requests.
    pub warmup_s: f64,
    /// Open loop: how late requests left against their schedule (already part of latency).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_lag_us: Option<Percentiles>,
    /// The server's own account of where the time went; null when its answers carry none.
    pub timing_us: Option<TimingReport>,
    /// The stated targets and what was missed; absent when none was stated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Verdict>,
    /// Answers by the model that produced them ("name@version").
    pub models: BTreeMap<String, u64>,
}

impl BenchReport {
    /// The human summary table.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let pacing = match (self.concurrency, self.rate) {
            (Some(1), _) => "closed loop, 1 worker".to_string(),
            (Some(c), _) => format!("closed loop, {c} workers"),
            (_, Some(r)) => format!(
                "open loop, {r} req/s, {} arrivals",
                self.arrivals.unwrap_or("uniform")
            ),
            _ => String::new(),
        };
        let pct = |n: u64, of: u64| {
            if of == 0 {
                "-".to_string()
            } else {
                format!("{:.1}%", 100.0 * n as f64 / of as f64)
            }
        };
        let warmup = if self.warmup_s > 0.0 {
            format!(", after {} s of uncounted warm-up", self.warmup_s)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "bench {} {} ({pacing}, {} connection{}{warmup})",
            self.protocol,
            self.addr,
            self.connections,
            if self.connections == 1 { "" } else { "s" }
        );
        let errors = if self.errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", join_counts(&self.errors))
        };
        let rows: Vec<(&str, String)> = vec![
            (
                "requests",
                format!(
                    "{}  ok {}  errors {}{errors}",
                    self.requests,
                    self.ok,
                    self.requests - self.ok
                ),
            ),
            (
                "throughput",
                format!(
                    "{:.1} req/s over {:.2} s",
                    self.throughput_rps, self.duration_s
                ),
            ),
            (
                "latency",
                format!(
                    "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})",
                    fmt_us(self.latency_us.p50),
                    fmt_us(self.latency_us.p90),
                    fmt_us(self.latency_us.p99),
                    fmt_us(self.latency_us.p999),
                    fmt_us(self.latency_us.max),
                    fmt_us(self.latency_us.mean.round() as u64)
                ),
            ),
            (
                "accuracy",
                match self.accuracy {
                    Some(a) => format!("{:.2}% of answers match the MNIST label", 100.0 * a),
                    None => "-".to_string(),
                },
            ),
            (
                "served by",
                format!(
                    "edge {} ({})  cloud {} ({})",
                    self.served_by.edge,
                    pct(self.served_by.edge, self.ok),
                    self.served_by.cloud,
                    pct(self.served_by.cloud, self.ok)
                ),
            ),
            ("reasons", join_counts(&self.reasons)),
            (
                "degraded",
                format!("{} ({})", self.degraded, pct(self.degraded, self.ok)),
            ),
            (
                "within budget",
                format!(
                    "{:.2}% of requests answered within {} ms",
                    100.0 * self.within_budget,
                    self.budget_ms
                ),
            ),
        ];
        for (name, value) in rows {
            let _ = writeln!(s, "  {name:<14} {value}");
        }
        if let Some(lag) = &self.schedule_lag_us {
            let _ = writeln!(
                s,
                "  {:<14} p50 {}  p99 {}  max {} (included in latency)",
                "send lag",
                fmt_us(lag.p50),
                fmt_us(lag.p99),
                fmt_us(lag.max)
            );
        }
        if let Some(timing) = &self.timing_us {
            s.push_str(&timing.table());
        }
        if let Some(verdict) = &self.targets {
            let said = if verdict.missed.is_empty() {
                "met".to_string()
            } else {
                format!("MISSED: {}", verdict.missed.join("; "))
            };
            let _ = writeln!(s, "  {:<14} {said}", "targets");
        }
        s
    }
}

fn join_counts(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "-".to_string();
    }
    let mut sorted: Vec<_> = counts.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    sorted
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Microseconds for a person: "850 us", "12.3 ms", "1.20 s".
pub fn fmt_us(us: u64) -> String {
    match us {
        0..=9_999 => format!("{us} us"),
        10_000..=999_999 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(class_index: usize, served_by: &'static str, reason: &str, degraded: bool) -> Answer {
        Answer {
            class_index,
            served_by: Some(served_by),
            reason: Some(reason.to_string()),
            degraded,
            timing: None,
            model: None,
        }
    }

    #[test]
    fn counts_outcomes_provenance_accuracy_and_budget() {
        let budget = Duration::from_millis(100);
        let mut t = Tally::new();
        t.record(
            Duration::from_micros(500),
            Ok(answer(7, "edge", "CONFIDENT", false)),
            7,
            budget,
        );
        t.record(
            Duration::from_millis(40),
            Ok(answer(3, "cloud", "LOW_CONFIDENCE", false)),
            5,
            budget,
        );
        t.record(
            Duration::from_millis(150),
            Ok(answer(1, "edge", "CLOUD_TIMEOUT", true)),
            1,
            budget,
        );
        t.record(
            Duration::from_millis(5),
            Err(tonic::Status::unavailable("down")),
            2,
            budget,
        );
        assert_eq!((t.requests, t.ok, t.correct), (4, 3, 2));
        assert_eq!(t.errors.get("UNAVAILABLE"), Some(&1));
        assert_eq!((t.served_edge, t.served_cloud, t.degraded), (2, 1, 1));
        assert_eq!(t.reasons.get("CLOUD_TIMEOUT"), Some(&1));
        assert_eq!(
            t.within_budget, 2,
            "the 150 ms answer and the error are out of budget"
        );
        assert_eq!(t.accuracy(), Some(2.0 / 3.0));
        let p = t.percentiles();
        assert!(p.p50 >= 39_900 && p.p50 <= 40_100, "{p:?}");
        assert!(p.max >= 149_000, "{p:?}");
    }

    #[test]
    fn timing_stages_count_the_answers_that_went_through_them() {
        let mut t = Tally::new();
        let mut edge = StageTimes::default();
        edge.set(Stage::EdgeCompute, 25);
        edge.set(Stage::Total, 30);
        let mut cloud = edge;
        cloud.set(Stage::Queue, 7);
        cloud.set(Stage::Uplink, 4_000);
        cloud.set(Stage::Cloud, 900);
        cloud.set(Stage::Downlink, 3_000);
        cloud.set(Stage::Total, 8_000);
        for (times, n) in [(edge, 3), (cloud, 1)] {
            for _ in 0..n {
                let mut a = answer(0, "edge", "CONFIDENT", false);
                a.timing = Some(times);
                t.record(Duration::from_millis(1), Ok(a), 0, Duration::from_secs(1));
            }
        }
        // An answer without timing (another OIP server) is counted nowhere in the breakdown.
        t.record(
            Duration::from_millis(1),
            Ok(answer(0, "edge", "CONFIDENT", false)),
            0,
            Duration::from_secs(1),
        );
        let r = t.timing_report().unwrap();
        assert_eq!((r.queue.n, r.total.n, r.edge_compute.n), (4, 4, 4));
        assert_eq!(r.queue.percentiles.p50, 0, "three of four did not wait");
        assert_eq!(r.queue.percentiles.max, 7);
        assert_eq!((r.uplink.n, r.cloud.n, r.downlink.n), (1, 1, 1));
        // 4000 is reported within the histogram's resolution (3 significant digits).
        let uplink = r.uplink.percentiles.p50;
        assert!(
            uplink.abs_diff(4_000) <= 4,
            "edge answers do not drag it to 0: {uplink}"
        );
        assert!(r.total.percentiles.max.abs_diff(8_000) <= 8);
        let table = r.table();
        assert!(table.contains("uplink"), "{table}");
        assert!(table.contains(&format!("{uplink} us")), "{table}");
        let json = serde_json::to_value(r).unwrap();
        assert!(json["downlink"]["p99"].as_u64().unwrap().abs_diff(3_000) <= 3);
        assert_eq!(json["queue"]["n"], 4);
    }

    #[test]
    fn a_run_without_timing_reports_none() {
        let mut t = Tally::new();
        t.record(
            Duration::from_millis(1),
            Ok(answer(0, "edge", "CONFIDENT", false)),
            0,
            Duration::from_secs(1),
        );
        assert_eq!(t.timing_report(), None);
    }

    #[test]
    fn empty_tally_has_no_accuracy_and_zero_percentiles() {
        let t = Tally::new();
        assert_eq!(t.accuracy(), None);
        assert_eq!(t.percentiles(), Percentiles::default());
        assert_eq!(t.throughput_rps(), 0.0);
    }

    #[test]
    fn percentiles_cover_every_recorded_value() {
        let mut t = Tally::new();
        for us in 1..=10_000u64 {
            t.record(
                Duration::from_micros(us),
                Ok(answer(0, "edge", "CONFIDENT", false)),
                0,
                Duration::from_secs(1),
            );
        }
        let p = t.percentiles();
        // Three significant digits: within 0.1 % of the exact order statistics.
        for (got, want) in [
            (p.p50, 5_000),
            (p.p90, 9_000),
            (p.p99, 9_900),
            (p.p999, 9_990),
        ] {
            assert!(got.abs_diff(want) <= want / 1000 + 1, "{got} vs {want}");
        }
        assert!(p.max.abs_diff(10_000) <= 10);
    }

    #[test]
    fn microseconds_read_well() {
        assert_eq!(fmt_us(850), "850 us");
        assert_eq!(fmt_us(12_345), "12.3 ms");
        assert_eq!(fmt_us(1_200_000), "1.20 s");
    }
}

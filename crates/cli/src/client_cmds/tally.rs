//! What a load run counts, and the `bench` report made from it.
//!
//! Latency goes into an HDR histogram (1 µs to 60 s, three significant digits), so every
//! percentile is computed over every answer, not over a sorted sample of some of them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::load::{Answer, LoadSpec, Pacing, code_name};

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
    pub fn report(
        &self,
        spec: &LoadSpec,
        addr: &str,
        connections: usize,
        budget_ms: u32,
    ) -> BenchReport {
        let (mode, concurrency, rate) = match spec.pacing {
            Pacing::Closed { concurrency } => ("closed", Some(concurrency), None),
            Pacing::Open { rate, .. } => ("open", None, Some(rate)),
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
            budget_ms,
            addr: addr.to_string(),
            protocol: spec.protocol.name(),
            mode,
            concurrency,
            rate,
            connections,
            duration_s: self.elapsed.as_secs_f64(),
            schedule_lag_us: self.schedule_lag.as_ref().map(Percentiles::of),
        }
    }
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
    pub connections: usize,
    pub duration_s: f64,
    /// Open loop: how late requests left against their schedule (already part of latency).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_lag_us: Option<Percentiles>,
}

impl BenchReport {
    /// The human summary table.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let pacing = match (self.concurrency, self.rate) {
            (Some(1), _) => "closed loop, 1 worker".to_string(),
            (Some(c), _) => format!("closed loop, {c} workers"),
            (_, Some(r)) => format!("open loop, {r} req/s"),
            _ => String::new(),
        };
        let pct = |n: u64, of: u64| {
            if of == 0 {
                "-".to_string()
            } else {
                format!("{:.1}%", 100.0 * n as f64 / of as f64)
            }
        };
        let _ = writeln!(
            s,
            "bench {} {} ({pacing}, {} connection{})",
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

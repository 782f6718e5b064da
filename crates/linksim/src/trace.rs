//! Mahimahi capacity traces.
//!
//! The format of Mahimahi's `mm-link`: one integer per line, a time in milliseconds from the
//! start of the trace, non-decreasing; each line is one opportunity to deliver a packet of up to
//! 1500 bytes (several lines with the same value are several packets in that millisecond). The
//! trace loops, its period being the last line's value. An opportunity nobody uses is wasted, as
//! on the radio: a trace is capacity, not a queue.
//!
//! Traces can come from a document received over the network, so parsing is bounded (at most
//! [`MAX_OPPORTUNITIES`] lines, each at most [`MAX_TRACE_MS`]) and its errors give line numbers,
//! never the text of a line.

use std::path::Path;
use std::time::Duration;

use crate::files::{self, MAX_TRACE_BYTES, ReadError};
use crate::profile::ProfileError;

/// Bytes one delivery opportunity carries.
pub const PACKET_BYTES: usize = 1500;

/// Most opportunities in one period (32 MiB of memory): an hour at 14 Gbit/s.
pub const MAX_OPPORTUNITIES: usize = 1 << 22;

/// Latest opportunity time (a trace's longest period), in ms: 30 days, so that simulated times
/// of thousands of loops stay far from `Duration`'s limits.
pub const MAX_TRACE_MS: u64 = 30 * 24 * 3_600_000;

const NANOS_PER_MS: u64 = 1_000_000;

/// A loaded trace: the opportunity times of one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Opportunity times within one period, in milliseconds, non-decreasing.
    ms: Vec<u64>,
    /// Length of one period in milliseconds (the last line's value), > 0.
    period_ms: u64,
}

impl Trace {
    /// Parses the text of a trace file. The error says which line is wrong and why, without
    /// quoting it.
    pub fn parse(text: &str) -> Result<Trace, String> {
        let mut ms = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if ms.len() == MAX_OPPORTUNITIES {
                return Err(format!(
                    "more than {MAX_OPPORTUNITIES} opportunities (line {})",
                    i + 1
                ));
            }
            let v: u64 = line
                .parse()
                .map_err(|_| format!("line {} is not a whole number of milliseconds", i + 1))?;
            check(&ms, v).map_err(|why| format!("line {}: {why}", i + 1))?;
            ms.push(v);
        }
        Trace::finish(ms)
    }

    /// A trace from its opportunity times in ms (what a profile's `trace_ms` carries).
    pub fn from_ms(ms: Vec<u64>) -> Result<Trace, String> {
        if ms.len() > MAX_OPPORTUNITIES {
            return Err(format!("more than {MAX_OPPORTUNITIES} opportunities"));
        }
        for (i, &v) in ms.iter().enumerate() {
            check(&ms[..i], v).map_err(|why| format!("entry {}: {why}", i + 1))?;
        }
        Trace::finish(ms)
    }

    fn finish(ms: Vec<u64>) -> Result<Trace, String> {
        let period_ms = *ms.last().ok_or("the trace has no opportunities")?;
        if period_ms == 0 {
            return Err("the last opportunity must be after 0 ms: it is the trace's period".into());
        }
        Ok(Trace { ms, period_ms })
    }

    /// Reads and parses a trace file, at most [`MAX_TRACE_BYTES`], a regular file only.
    pub fn load(path: &Path) -> Result<Trace, ProfileError> {
        let trace_error = |reason: String| ProfileError::Trace {
            path: path.to_owned(),
            reason,
        };
        let text = files::read_bounded(path, MAX_TRACE_BYTES).map_err(|e| match e {
            ReadError::Io(e) => trace_error(e.to_string()),
            ReadError::TooLarge => ProfileError::TooLarge {
                what: "link trace",
                path: path.to_owned(),
                limit: MAX_TRACE_BYTES,
            },
        })?;
        Trace::parse(&text).map_err(trace_error)
    }

    /// Opportunities per period.
    pub fn len(&self) -> usize {
        self.ms.len()
    }

    /// Never true: a trace has at least one line.
    pub fn is_empty(&self) -> bool {
        self.ms.is_empty()
    }

    /// Length of one period.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms)
    }

    /// Average capacity over a period, in Mbit/s.
    pub fn mean_rate_mbps(&self) -> f64 {
        (self.ms.len() * PACKET_BYTES * 8) as f64 / (self.period_ms as f64 * 1000.0)
    }

    /// Time of the `n`-th opportunity since the trace started (counting across loops).
    pub fn opportunity_time(&self, n: u64) -> Duration {
        let len = self.ms.len() as u64;
        let (round, i) = (n / len, (n % len) as usize);
        let ms = round
            .saturating_mul(self.period_ms)
            .saturating_add(self.ms[i]);
        Duration::from_nanos(ms.saturating_mul(NANOS_PER_MS))
    }

    /// Index of the first opportunity at or after `t` (since the trace started).
    pub fn first_at_or_after(&self, t: Duration) -> u64 {
        let t = t.as_nanos() as u64;
        let period = self.period_ms * NANOS_PER_MS;
        let len = self.ms.len() as u64;
        // A round's last opportunity is at the same instant as the next round's start, so look
        // from the round before.
        let mut round = (t / period).saturating_sub(1);
        let mut within = t - round * period;
        loop {
            let i = self.ms.partition_point(|&m| m * NANOS_PER_MS < within) as u64;
            if i < len {
                return round * len + i;
            }
            round += 1;
            within -= period;
        }
    }
}

/// Whether `v` may follow `before`.
fn check(before: &[u64], v: u64) -> Result<(), String> {
    if v > MAX_TRACE_MS {
        return Err(format!(
            "{v} ms is later than the limit of {MAX_TRACE_MS} ms"
        ));
    }
    if before.last().is_some_and(|&last| v < last) {
        return Err(format!("{v} is earlier than the one before"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_loops() {
        let t = Trace::parse("1\n1\n3\n\n4\n").unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t.period(), Duration::from_millis(4));
        let times: Vec<u64> = (0..6)
            .map(|n| t.opportunity_time(n).as_millis() as u64)
            .collect();
        assert_eq!(times, [1, 1, 3, 4, 5, 5]);
        assert_eq!(t.first_at_or_after(Duration::ZERO), 0);
        assert_eq!(t.first_at_or_after(Duration::from_micros(1500)), 2);
        assert_eq!(t.first_at_or_after(Duration::from_millis(4)), 3);
        assert_eq!(t.first_at_or_after(Duration::from_micros(4001)), 4);
        assert_eq!(t.first_at_or_after(Duration::from_millis(9)), 8);
    }

    #[test]
    fn rate_of_one_packet_per_ms_is_12_mbps() {
        let text: String = (1..=1000).map(|i| format!("{i}\n")).collect();
        let t = Trace::parse(&text).unwrap();
        assert!((t.mean_rate_mbps() - 12.0).abs() < 1e-9);
    }

    #[test]
    fn rejects_bad_traces() {
        assert!(Trace::parse("").unwrap_err().contains("no opportunities"));
        assert!(Trace::parse("0\n").unwrap_err().contains("period"));
        assert!(Trace::parse("5\n3\n").unwrap_err().contains("line 2"));
        let err = Trace::parse("1\nroot:x:0:0\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("root"), "quotes the line: {err}");
        assert!(
            Trace::parse("99999999999999\n")
                .unwrap_err()
                .contains("limit")
        );
        assert!(Trace::from_ms(vec![3, 2]).unwrap_err().contains("entry 2"));
        assert_eq!(
            Trace::from_ms(vec![1, 1, 3, 4]),
            Trace::parse("1\n1\n3\n4\n")
        );
    }
}

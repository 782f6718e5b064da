//! Mahimahi capacity traces.
//!
//! The format of Mahimahi's `mm-link`: one integer per line, a time in milliseconds from the
//! start of the trace, non-decreasing; each line is one opportunity to deliver a packet of up to
//! 1500 bytes (several lines with the same value are several packets in that millisecond). The
//! trace loops, its period being the last line's value. An opportunity nobody uses is wasted, as
//! on the radio: a trace is capacity, not a queue.

use std::path::Path;
use std::time::Duration;

use crate::profile::ProfileError;

/// Bytes one delivery opportunity carries.
pub const PACKET_BYTES: usize = 1500;

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
    /// Parses the text of a trace file.
    pub fn parse(text: &str) -> Result<Trace, String> {
        let mut ms = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let v: u64 = line.parse().map_err(|_| {
                format!(
                    "line {}: `{line}` is not a whole number of milliseconds",
                    i + 1
                )
            })?;
            if ms.last().is_some_and(|&last| v < last) {
                return Err(format!(
                    "line {}: {v} is earlier than the line before",
                    i + 1
                ));
            }
            ms.push(v);
        }
        let period_ms = *ms.last().ok_or("the trace has no lines")?;
        if period_ms == 0 {
            return Err("the last line must be after 0 ms: it is the trace's period".to_owned());
        }
        Ok(Trace { ms, period_ms })
    }

    /// Reads and parses a trace file.
    pub fn load(path: &Path) -> Result<Trace, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError::Trace {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Trace::parse(&text).map_err(|reason| ProfileError::Trace {
            path: path.to_owned(),
            reason,
        })
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
        Duration::from_nanos((round * self.period_ms + self.ms[i]) * NANOS_PER_MS)
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
        assert!(Trace::parse("").unwrap_err().contains("no lines"));
        assert!(Trace::parse("0\n").unwrap_err().contains("period"));
        assert!(Trace::parse("5\n3\n").unwrap_err().contains("line 2"));
        assert!(Trace::parse("1\nx\n").unwrap_err().contains("line 2"));
    }
}

//! Handover interruptions: when the radio is between cells, neither direction carries anything.
//!
//! Handovers start as a Poisson process (exponential gaps between starts, of the profile's mean)
//! and last a log-normal time (the profile's median and p99). The schedule is drawn lazily as
//! simulated time advances, from its own random stream, so it does not depend on the traffic.
//!
//! What an outage does to a message: a transmission cannot start during one, one that is being
//! serialized when an outage starts pauses until it ends, and nothing arrives during one (the
//! simulator moves an arrival that falls inside to its end, or loses the message, as the
//! profile's `in_flight` says). By default nothing is lost to a handover: 3GPP handovers forward
//! the buffered data to the target cell (lossless handover), so the cost is delay.

use std::collections::VecDeque;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal};

use crate::delay::{log_normal, millis};
use crate::profile::HandoverProfile;

/// One interruption, in simulated time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outage {
    pub start: Duration,
    pub end: Duration,
}

/// The lazily drawn outage schedule of a link.
#[derive(Debug, Clone)]
pub(crate) struct Outages {
    /// `None` for a profile without handovers.
    process: Option<Process>,
    /// Drawn outages that may still matter (ending after the earliest time still queried),
    /// in order, not overlapping.
    upcoming: VecDeque<Outage>,
    /// Outages drawn so far, pruned ones included.
    drawn: u64,
}

#[derive(Debug, Clone)]
struct Process {
    gap: Exp<f64>,
    duration: Option<LogNormal<f64>>,
    rng: ChaCha8Rng,
    /// Start of the last outage drawn (the next one is drawn from here).
    last_start: Duration,
    /// End of the last outage drawn (the next one cannot start before).
    last_end: Duration,
}

impl Outages {
    pub(crate) fn new(profile: Option<&HandoverProfile>, rng: ChaCha8Rng) -> Self {
        let process = profile.map(|h| Process {
            gap: Exp::new(1.0 / h.mean_interval_s).expect("validated: mean interval > 0"),
            duration: log_normal(h.duration_median_ms, h.duration_p99_ms),
            rng,
            last_start: Duration::ZERO,
            last_end: Duration::ZERO,
        });
        Outages {
            process,
            upcoming: VecDeque::new(),
            drawn: 0,
        }
    }

    /// Draws outages until one starts after `t`.
    fn draw_past(&mut self, t: Duration) {
        let Some(p) = &mut self.process else { return };
        while self.upcoming.back().is_none_or(|o| o.start <= t) {
            let gap = Duration::from_secs_f64(p.gap.sample(&mut p.rng));
            let start = (p.last_start + gap).max(p.last_end);
            let length = p.duration.as_ref().map_or(0.0, |d| d.sample(&mut p.rng));
            let end = start + millis(length);
            p.last_start = start;
            p.last_end = end;
            self.upcoming.push_back(Outage { start, end });
            self.drawn += 1;
        }
    }

    /// The end of the outage in progress at `t`, if any.
    pub(crate) fn blocked_until(&mut self, t: Duration) -> Option<Duration> {
        self.draw_past(t);
        self.upcoming
            .iter()
            .find(|o| o.start <= t && t < o.end)
            .map(|o| o.end)
    }

    /// First time at or after `t` outside any outage.
    pub(crate) fn usable_from(&mut self, mut t: Duration) -> Duration {
        while let Some(end) = self.blocked_until(t) {
            t = end;
        }
        t
    }

    /// When a transmission needing `work` of air time, ready at `ready`, starts and ends, given
    /// that it cannot start in an outage and pauses during those it meets.
    pub(crate) fn schedule(&mut self, ready: Duration, work: Duration) -> (Duration, Duration) {
        let start = self.usable_from(ready);
        let (mut at, mut left) = (start, work);
        loop {
            self.draw_past(at + left);
            let next = self
                .upcoming
                .iter()
                .find(|o| o.start > at && o.start < at + left)
                .copied();
            match next {
                Some(o) => {
                    left -= o.start - at;
                    at = o.end;
                }
                None => return (start, at + left),
            }
        }
    }

    /// Forgets outages that ended before `t`: no direction will ask about them again.
    pub(crate) fn forget_before(&mut self, t: Duration) {
        while self.upcoming.front().is_some_and(|o| o.end <= t) {
            self.upcoming.pop_front();
        }
    }

    /// The first outage ending after `t`.
    #[cfg(test)]
    pub(crate) fn next_after(&mut self, t: Duration) -> Outage {
        self.draw_past(t);
        *self
            .upcoming
            .iter()
            .find(|o| o.end > t)
            .expect("drawn past t")
    }

    /// Outages drawn and not yet forgotten.
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> usize {
        self.upcoming.len()
    }

    /// Number of handovers that started at or before `t`.
    pub(crate) fn started_by(&mut self, t: Duration) -> u64 {
        self.draw_past(t);
        let later = self.upcoming.iter().filter(|o| o.start > t).count() as u64;
        self.drawn - later
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn outages(mean_s: f64, median_ms: f64, p99_ms: f64) -> Outages {
        Outages::new(
            Some(&HandoverProfile {
                mean_interval_s: mean_s,
                duration_median_ms: median_ms,
                duration_p99_ms: p99_ms,
                in_flight: Default::default(),
            }),
            ChaCha8Rng::seed_from_u64(3),
        )
    }

    #[test]
    fn rate_and_durations_follow_the_profile() {
        let mut o = outages(10.0, 80.0, 250.0);
        let horizon = Duration::from_secs(100_000);
        let n = o.started_by(horizon);
        assert!((9_500..10_500).contains(&n), "{n} handovers in 1e5 s");
        let mut lengths: Vec<f64> = o
            .upcoming
            .iter()
            .map(|x| (x.end - x.start).as_secs_f64() * 1e3)
            .collect();
        lengths.sort_by(f64::total_cmp);
        let median = lengths[lengths.len() / 2];
        assert!((median - 80.0).abs() < 4.0, "{median}");
    }

    #[test]
    fn transmissions_wait_and_pause() {
        let mut o = outages(10.0, 80.0, 80.0);
        o.draw_past(Duration::ZERO);
        let first = o.upcoming[0];
        assert_eq!(first.end - first.start, Duration::from_millis(80));
        // Ready inside the outage: starts at its end.
        let mid = first.start + Duration::from_millis(10);
        assert_eq!(o.schedule(mid, Duration::from_millis(5)).0, first.end);
        // Started 1 ms before it: pauses for all of it.
        let before = first.start - Duration::from_millis(1);
        let (s, e) = o.schedule(before, Duration::from_millis(5));
        assert_eq!(s, before);
        assert_eq!(e, first.end + Duration::from_millis(4));
    }

    #[test]
    fn no_profile_no_outages() {
        let mut o = Outages::new(None, ChaCha8Rng::seed_from_u64(3));
        let t = Duration::from_secs(1000);
        assert_eq!(
            o.schedule(t, Duration::from_secs(1)),
            (t, t + Duration::from_secs(1))
        );
        assert_eq!(o.started_by(t), 0);
    }
}

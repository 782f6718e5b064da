//! Log lines that repeat under load, said at most once per interval with a count.
//!
//! Under overload a node refuses thousands of requests a second; one log line each would spend
//! the CPU that the overload is short of. A [`Throttle`] lets the first event of an interval
//! through and counts the rest, so the next line that is written says how many it stands for.
//! Lock-free: a counter and the time the next line may be written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one line per `interval`; see the module documentation.
#[derive(Debug)]
pub struct Throttle {
    origin: Instant,
    interval_ns: u64,
    /// Nanoseconds after `origin` from which the next line may be written.
    next_ns: AtomicU64,
    /// Events since the last line written.
    pending: AtomicU64,
}

impl Throttle {
    /// A throttle that writes at most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            origin: Instant::now(),
            interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
            next_ns: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }

    /// Records one event. `Some(n)` when a line should be written now, `n` being the events it
    /// stands for (this one and those held back since the last line); `None` otherwise.
    pub fn event(&self) -> Option<u64> {
        self.event_at(self.origin.elapsed())
    }

    fn event_at(&self, since_origin: Duration) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(since_origin.as_nanos()).unwrap_or(u64::MAX);
        let next = self.next_ns.load(Ordering::Relaxed);
        if now < next {
            return None;
        }
        // One caller wins the interval; the others count.
        self.next_ns
            .compare_exchange(
                next,
                now.saturating_add(self.interval_ns),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .ok()?;
        Some(self.pending.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_carrying_the_count() {
        let t = Throttle::new(Duration::from_secs(1));
        let at = Duration::from_millis;
        assert_eq!(
            t.event_at(at(0)),
            Some(1),
            "the first event is said at once"
        );
        for ms in 1..1000 {
            assert_eq!(t.event_at(at(ms)), None);
        }
        assert_eq!(
            t.event_at(at(1000)),
            Some(1000),
            "999 held back, plus this one"
        );
        assert_eq!(t.event_at(at(1500)), None);
        assert_eq!(
            t.event_at(at(5000)),
            Some(2),
            "a quiet spell resets nothing but time"
        );
    }

    #[test]
    fn concurrent_events_are_all_counted() {
        let t = std::sync::Arc::new(Throttle::new(Duration::from_secs(3600)));
        let said: u64 = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || (0..10_000).filter_map(|_| t.event()).sum::<u64>())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(said, 1, "one line within the interval");
        assert_eq!(t.pending.load(Ordering::Relaxed), 40_000 - 1);
    }
}

//! How much of a request's budget the cloud call leaves for the edge's fallback answer.
//!
//! A cloud call gets the budget less this reserve as its timeout, so that when the cloud is
//! late the edge can still answer in time. The answer itself takes microseconds; what the
//! reserve really covers is the timer firing late, which happens when the machine is busy
//! (measured on 2 cores in the flapping-link e2e test: about 2.6 ms late while the model
//! threads held the cores, and a fallback 20 ms past the budget with one more busy
//! process). So the reserve is learned: every timed-out call reports how long after its timeout
//! it actually ended, and the reserve is a floor plus that lateness's smoothed mean and four
//! times its smoothed deviation (the shape of RFC 6298's RTO), within a cap.

use std::sync::Mutex;
use std::time::Duration;

/// The least reserve: timers fire on whole milliseconds, and the fallback answer is built and
/// sent after the timeout.
pub const FLOOR: Duration = Duration::from_millis(3);
/// The most reserve: beyond this the cloud would be left too little of a small budget.
pub const CAP: Duration = Duration::from_millis(25);
/// Smoothing gains of the mean and the deviation.
const ALPHA: f64 = 0.125;
const BETA: f64 = 0.25;

/// The learned reserve.
#[derive(Debug, Default)]
pub struct FallbackReserve {
    /// Smoothed lateness and its deviation, seconds.
    state: Mutex<(f64, f64)>,
}

impl FallbackReserve {
    /// Records that a call given `timeout` ended after `elapsed`.
    pub fn observe(&self, timeout: Duration, elapsed: Duration) {
        let late = elapsed.saturating_sub(timeout).as_secs_f64();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (mean, dev) = *s;
        *s = (
            mean + ALPHA * (late - mean),
            (1.0 - BETA) * dev + BETA * (late - mean).abs(),
        );
    }

    /// The reserve to keep now.
    pub fn get(&self) -> Duration {
        let (mean, dev) = *self.state.lock().unwrap_or_else(|e| e.into_inner());
        let learned = Duration::from_secs_f64((mean + 4.0 * dev).max(0.0));
        (FLOOR + learned).min(CAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1e3)
    }

    #[test]
    fn starts_at_the_floor_and_stays_there_while_timers_are_on_time() {
        let r = FallbackReserve::default();
        assert_eq!(r.get(), FLOOR);
        for _ in 0..50 {
            r.observe(ms(97.0), ms(97.0));
        }
        assert_eq!(r.get(), FLOOR);
    }

    #[test]
    fn late_timers_grow_it_within_the_cap_and_it_comes_back() {
        let r = FallbackReserve::default();
        for _ in 0..40 {
            r.observe(ms(97.0), ms(100.0));
        }
        let grown = r.get();
        assert!(grown > FLOOR + ms(2.5), "{grown:?}");
        assert!(grown < FLOOR + ms(4.0), "{grown:?}");
        for _ in 0..40 {
            r.observe(ms(50.0), ms(500.0));
        }
        assert_eq!(r.get(), CAP);
        for _ in 0..200 {
            r.observe(ms(97.0), ms(97.0));
        }
        assert!(r.get() < FLOOR + ms(0.1), "{:?}", r.get());
    }
}

//! The circuit breaker in front of the cloud: after a run of consecutive failures it opens and
//! the router stops waiting on a cloud that is not answering; after a cool-down one trial call
//! (a request or a probe) may go through, and its outcome closes or re-opens the circuit.

use std::sync::Mutex;
use std::time::Duration;

use edgeinfer::v1::CircuitState;
use tokio::time::Instant;

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_out: bool },
}

/// A circuit breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
}

impl CircuitBreaker {
    /// Opens after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go to the cloud now. In the half-open state only one trial is let
    /// through until its outcome is recorded.
    pub fn allow(&self) -> bool {
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() < until => false,
            State::Open { .. } => {
                *s = State::HalfOpen { trial_out: true };
                true
            }
            State::HalfOpen { trial_out: false } => {
                *s = State::HalfOpen { trial_out: true };
                true
            }
            State::HalfOpen { trial_out: true } => false,
        }
    }

    /// Records a successful call.
    pub fn success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    /// Records a failed call; returns true when this failure opened the circuit.
    pub fn failure(&self) -> bool {
        let mut s = self.lock();
        let open = match *s {
            State::Closed { failures } => failures + 1 >= self.threshold,
            State::HalfOpen { .. } => true,
            State::Open { .. } => false,
        };
        if open {
            *s = State::Open {
                until: Instant::now() + self.cooldown,
            };
        } else if let State::Closed { failures } = &mut *s {
            *failures += 1;
        }
        open
    }

    /// Records a call that says nothing of the cloud's health (it ran out of a budget shorter
    /// than the path's usual worst case): failures so far stand, and a half-open circuit lets
    /// the next trial through.
    pub fn inconclusive(&self) {
        let mut s = self.lock();
        if let State::HalfOpen { trial_out } = &mut *s {
            *trial_out = false;
        }
    }

    /// The state, as the API reports it.
    pub fn state(&self) -> CircuitState {
        match *self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if Instant::now() < until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_closes_after_a_good_trial() {
        let c = CircuitBreaker::new(3, Duration::from_secs(1));
        assert!(c.allow());
        assert!(!c.failure());
        c.success();
        assert!(!c.failure());
        assert!(!c.failure());
        assert!(c.failure(), "third consecutive failure opens");
        assert_eq!(c.state(), CircuitState::Open);
        assert!(!c.allow());
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(c.state(), CircuitState::HalfOpen);
        assert!(c.allow(), "one trial after the cool-down");
        assert!(!c.allow(), "only one");
        c.success();
        assert_eq!(c.state(), CircuitState::Closed);
        assert!(c.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_reopens() {
        let c = CircuitBreaker::new(1, Duration::from_secs(1));
        assert!(c.failure());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(c.allow());
        assert!(c.failure());
        assert_eq!(c.state(), CircuitState::Open);
        assert!(!c.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn an_inconclusive_call_neither_counts_nor_keeps_the_trial() {
        let c = CircuitBreaker::new(2, Duration::from_secs(1));
        assert!(!c.failure());
        c.inconclusive();
        assert!(c.failure(), "the earlier failure still counts");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(c.allow());
        assert!(!c.allow());
        c.inconclusive();
        assert_eq!(c.state(), CircuitState::HalfOpen);
        assert!(c.allow(), "the trial slot is free again");
    }
}

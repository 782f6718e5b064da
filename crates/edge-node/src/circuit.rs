//! The circuit breaker in front of the cloud: after a run of consecutive failures it opens and
//! the router stops waiting on a cloud that is not answering; after a cool-down one trial call
//! (a request or a probe) may go through, and its outcome closes or re-opens the circuit.

use std::sync::Mutex;
use std::time::Duration;

use edgeinfer::v1::CircuitState;
use tokio::time::Instant;

/// What the circuit allows, as the router's decision sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitView {
    /// Calls go through.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// Cooled down: the next call is the trial.
    TrialFree,
    /// Cooled down, and the trial is out: calls are refused until its outcome.
    TrialOut,
}

impl CircuitView {
    /// True when a call would be let through.
    pub fn allows(self) -> bool {
        matches!(self, CircuitView::Closed | CircuitView::TrialFree)
    }
}

/// Permission for one cloud call. Its outcome is recorded by consuming it; dropped unused (the
/// caller went away), it counts as inconclusive, so a half-open trial slot is never lost.
#[must_use = "record the call's outcome"]
pub struct CallPermit<'a> {
    circuit: &'a CircuitBreaker,
    settled: bool,
}

impl CallPermit<'_> {
    /// The call succeeded: the circuit closes.
    pub fn success(mut self) {
        self.settled = true;
        self.circuit.success();
    }

    /// The call failed; returns true when this failure opened the circuit.
    pub fn failure(mut self) -> bool {
        self.settled = true;
        self.circuit.failure()
    }

    /// The call says nothing of the cloud's health (it ran out of a budget shorter than the
    /// path's usual worst case): failures so far stand, and a half-open circuit lets the next
    /// trial through.
    pub fn inconclusive(mut self) {
        self.settled = true;
        self.circuit.inconclusive();
    }
}

impl Drop for CallPermit<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.circuit.inconclusive();
        }
    }
}

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

    /// What the circuit would allow now, without taking anything: what the router's pure
    /// decision reads.
    pub fn view(&self) -> CircuitView {
        match *self.lock() {
            State::Closed { .. } => CircuitView::Closed,
            State::Open { until } if Instant::now() < until => CircuitView::Open,
            State::Open { .. } | State::HalfOpen { trial_out: false } => CircuitView::TrialFree,
            State::HalfOpen { trial_out: true } => CircuitView::TrialOut,
        }
    }

    /// Permission for one call to the cloud, or `None` while the circuit refuses calls. In the
    /// half-open state the permit is the one trial: nobody else gets one until its outcome is
    /// recorded (or it is dropped, which counts as inconclusive).
    pub fn permit(&self) -> Option<CallPermit<'_>> {
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => {}
            State::Open { until } if Instant::now() < until => return None,
            State::Open { .. } | State::HalfOpen { trial_out: false } => {
                *s = State::HalfOpen { trial_out: true };
            }
            State::HalfOpen { trial_out: true } => return None,
        }
        Some(CallPermit {
            circuit: self,
            settled: false,
        })
    }

    fn success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    fn failure(&self) -> bool {
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

    fn inconclusive(&self) {
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

    fn fail(c: &CircuitBreaker) -> bool {
        c.permit().expect("a permit").failure()
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_closes_after_a_good_trial() {
        let c = CircuitBreaker::new(3, Duration::from_secs(1));
        assert_eq!(c.view(), CircuitView::Closed);
        assert!(!fail(&c));
        c.permit().unwrap().success();
        assert!(!fail(&c));
        assert!(!fail(&c));
        assert!(fail(&c), "third consecutive failure opens");
        assert_eq!(c.state(), CircuitState::Open);
        assert_eq!(c.view(), CircuitView::Open);
        assert!(c.permit().is_none());
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(c.state(), CircuitState::HalfOpen);
        assert_eq!(c.view(), CircuitView::TrialFree);
        let trial = c.permit().expect("one trial after the cool-down");
        assert!(c.permit().is_none(), "only one");
        assert_eq!(c.view(), CircuitView::TrialOut);
        trial.success();
        assert_eq!(c.state(), CircuitState::Closed);
        assert!(c.permit().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_reopens() {
        let c = CircuitBreaker::new(1, Duration::from_secs(1));
        assert!(fail(&c));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(fail(&c));
        assert_eq!(c.state(), CircuitState::Open);
        assert!(c.permit().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_inconclusive_or_abandoned_call_neither_counts_nor_keeps_the_trial() {
        let c = CircuitBreaker::new(2, Duration::from_secs(1));
        assert!(!fail(&c));
        c.permit().unwrap().inconclusive();
        assert!(fail(&c), "the earlier failure still counts");
        tokio::time::advance(Duration::from_secs(2)).await;
        let trial = c.permit().unwrap();
        assert!(c.permit().is_none());
        trial.inconclusive();
        assert_eq!(c.state(), CircuitState::HalfOpen);
        let trial = c.permit().expect("the trial slot is free again");
        drop(trial);
        assert!(c.permit().is_some(), "a dropped permit frees the slot too");
    }
}

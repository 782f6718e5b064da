//! When an open loop sends: the send times of a run at a given rate, evenly spaced or as a
//! Poisson process. Pure (no clock, no I/O), so the arrival process is tested exactly; the
//! load loop maps these offsets onto a real clock.
//!
//! Evenly spaced sends are the easy case for a server: a batcher never sees two requests
//! arrive together. Real clients are independent of each other, which makes arrivals a
//! Poisson process (exponential gaps with the same mean), with bursts that fill queues and
//! batches; latency under it is the one users see.

use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};

/// How an open loop spaces its requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Arrivals {
    /// Exactly 1/rate apart.
    #[default]
    Uniform,
    /// Exponential gaps of mean 1/rate, drawn from a seeded generator (`--seed`).
    Poisson,
}

impl Arrivals {
    pub fn name(self) -> &'static str {
        match self {
            Arrivals::Uniform => "uniform",
            Arrivals::Poisson => "poisson",
        }
    }
}

/// The send offsets (from the start of the run) of an open loop, an endless iterator.
pub struct Schedule {
    rate: f64,
    /// The gap generator; None for evenly spaced sends.
    gaps: Option<(Exp<f64>, ChaCha8Rng)>,
    sent: u64,
    /// Poisson only: the offset of the next send, in seconds.
    next_s: f64,
}

impl Schedule {
    /// `rate` must be positive and finite (the command checks it before).
    pub fn new(rate: f64, arrivals: Arrivals, seed: u64) -> Self {
        let gaps = match arrivals {
            Arrivals::Uniform => None,
            Arrivals::Poisson => Some((
                Exp::new(rate).expect("the rate was checked to be positive and finite"),
                ChaCha8Rng::seed_from_u64(seed),
            )),
        };
        Self {
            rate,
            gaps,
            sent: 0,
            next_s: 0.0,
        }
    }
}

impl Iterator for Schedule {
    type Item = Duration;

    /// The first request leaves at once in both processes.
    fn next(&mut self) -> Option<Duration> {
        let offset_s = match &mut self.gaps {
            // From the index, not a running sum, so rounding cannot drift over a long run.
            None => self.sent as f64 / self.rate,
            Some((exp, rng)) => {
                let now = self.next_s;
                self.next_s += exp.sample(rng);
                now
            }
        };
        self.sent += 1;
        Some(Duration::from_secs_f64(offset_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps_s(schedule: Schedule, n: usize) -> Vec<f64> {
        let offsets: Vec<f64> = schedule.take(n + 1).map(|d| d.as_secs_f64()).collect();
        offsets.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[test]
    fn uniform_sends_are_exactly_one_period_apart() {
        let offsets: Vec<Duration> = Schedule::new(1000.0, Arrivals::Uniform, 7)
            .take(4)
            .collect();
        assert_eq!(offsets, [0, 1, 2, 3].map(Duration::from_millis).to_vec());
        let far = Schedule::new(3.0, Arrivals::Uniform, 7)
            .nth(3_000_000)
            .unwrap();
        assert_eq!(
            far,
            Duration::from_secs(1_000_000),
            "no drift over a long run"
        );
    }

    #[test]
    fn poisson_gaps_are_exponential_with_the_rate_as_mean() {
        let rate = 500.0;
        let gaps = gaps_s(Schedule::new(rate, Arrivals::Poisson, 42), 100_000);
        let n = gaps.len() as f64;
        let mean = gaps.iter().sum::<f64>() / n;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n;
        // An exponential distribution has standard deviation equal to its mean (coefficient
        // of variation 1), where evenly spaced sends have 0; over 100,000 draws both
        // estimates are within about 1 % of the truth.
        assert!((mean * rate - 1.0).abs() < 0.02, "mean gap {mean}");
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.02,
            "cv {}",
            var.sqrt() / mean
        );
        // Memorylessness: P(gap > 2/rate) = e^-2.
        let beyond = gaps.iter().filter(|&&g| g > 2.0 / rate).count() as f64 / n;
        assert!((beyond - (-2.0f64).exp()).abs() < 0.01, "{beyond}");
    }

    #[test]
    fn poisson_schedules_repeat_with_their_seed() {
        let a: Vec<Duration> = Schedule::new(100.0, Arrivals::Poisson, 1)
            .take(50)
            .collect();
        let b: Vec<Duration> = Schedule::new(100.0, Arrivals::Poisson, 1)
            .take(50)
            .collect();
        let c: Vec<Duration> = Schedule::new(100.0, Arrivals::Poisson, 2)
            .take(50)
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a[0], Duration::ZERO);
        assert!(a.windows(2).all(|w| w[0] <= w[1]), "offsets never go back");
    }
}

//! One-way delay: a fixed base plus log-normal jitter given by its median and 99th percentile,
//! optionally correlated from one message to the next.
//!
//! Correlation is an AR(1) process on the jitter's underlying standard normal:
//! `z' = rho * z + sqrt(1 - rho^2) * e`, with `e` a fresh standard normal. `z` stays standard
//! normal whatever `rho`, so the jitter's distribution (its median and p99) is the profile's;
//! only the order of the draws changes. netem's correlation instead mixes a fresh uniform with
//! the last one, which narrows the distribution as the correlation grows.

use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution, LogNormal, StandardNormal};

use crate::profile::DelayProfile;

/// The standard normal's 99th percentile: a log-normal's p99 is `median * exp(sigma * Z99)`.
pub(crate) const Z99: f64 = 2.326_347_874_040_841;

/// A log-normal given by its median and 99th percentile, in milliseconds; `None` when its median
/// is 0 (the variable is always 0).
pub(crate) fn log_normal(median_ms: f64, p99_ms: f64) -> Option<LogNormal<f64>> {
    if median_ms <= 0.0 {
        return None;
    }
    let sigma = (p99_ms / median_ms).ln().max(0.0) / Z99;
    Some(LogNormal::new(median_ms.ln(), sigma).expect("validated: finite median, sigma >= 0"))
}

/// Longest single draw, in ms (a year): a log-normal's tail is unbounded, and a draw beyond
/// this would only risk overflowing simulated time.
const LONGEST_MS: f64 = 365.0 * 24.0 * 3_600_000.0;

/// Milliseconds as a `Duration`, to the nanosecond; clamped to [0, a year].
pub(crate) fn millis(ms: f64) -> Duration {
    Duration::from_nanos((ms.clamp(0.0, LONGEST_MS) * 1e6).round() as u64)
}

/// The delay sampler of one direction.
#[derive(Debug, Clone)]
pub(crate) struct Delay {
    base_ms: f64,
    jitter: Option<Jitter>,
}

#[derive(Debug, Clone)]
struct Jitter {
    /// Used as it is when the draws are independent (the same stream as before correlation
    /// existed, so uncorrelated profiles keep their exact figures).
    log_normal: LogNormal<f64>,
    mu: f64,
    sigma: f64,
    rho: f64,
    /// The last underlying normal, `None` before the first draw.
    z: Option<f64>,
}

impl Delay {
    pub(crate) fn new(profile: &DelayProfile) -> Self {
        let jitter = log_normal(profile.jitter_median_ms, profile.jitter_p99_ms).map(|ln| {
            let median = profile.jitter_median_ms;
            Jitter {
                log_normal: ln,
                mu: median.ln(),
                sigma: (profile.jitter_p99_ms / median).ln().max(0.0) / Z99,
                rho: profile.correlation,
                z: None,
            }
        });
        Delay {
            base_ms: profile.base_ms,
            jitter,
        }
    }

    /// The next one-way delay.
    pub(crate) fn sample(&mut self, rng: &mut impl Rng) -> Duration {
        let jitter = self.jitter.as_mut().map_or(0.0, |j| j.next(rng));
        millis(self.base_ms + jitter)
    }
}

impl Jitter {
    fn next(&mut self, rng: &mut impl Rng) -> f64 {
        if self.rho == 0.0 {
            return self.log_normal.sample(rng);
        }
        let e: f64 = StandardNormal.sample(rng);
        let z = match self.z {
            None => e,
            Some(z) => self.rho * z + (1.0 - self.rho * self.rho).sqrt() * e,
        };
        self.z = Some(z);
        (self.mu + self.sigma * z).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn percentiles_match_the_profile() {
        let mut d = Delay::new(&DelayProfile {
            base_ms: 2.0,
            jitter_median_ms: 3.0,
            jitter_p99_ms: 30.0,
            correlation: 0.0,
        });
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut v: Vec<f64> = (0..200_000)
            .map(|_| d.sample(&mut rng).as_secs_f64() * 1e3)
            .collect();
        v.sort_by(f64::total_cmp);
        let (p50, p99) = (v[100_000], v[198_000]);
        assert!((p50 - 5.0).abs() < 0.1, "{p50}");
        assert!((p99 - 32.0).abs() < 1.0, "{p99}");
        assert!(v[0] >= 2.0);
    }

    #[test]
    fn no_jitter_is_constant() {
        let mut d = Delay::new(&DelayProfile {
            base_ms: 1.5,
            ..DelayProfile::default()
        });
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(d.sample(&mut rng), Duration::from_micros(1500));
    }

    /// Lag-1 correlation of the jitter's logarithm.
    fn lag1(v: &[f64]) -> f64 {
        let logs: Vec<f64> = v.iter().map(|x| x.ln()).collect();
        let n = logs.len() as f64;
        let mean = logs.iter().sum::<f64>() / n;
        let var = logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let cov = logs
            .windows(2)
            .map(|w| (w[0] - mean) * (w[1] - mean))
            .sum::<f64>()
            / (n - 1.0);
        cov / var
    }

    #[test]
    fn correlation_orders_the_draws_but_keeps_the_percentiles() {
        for rho in [0.0, 0.5, 0.9] {
            let mut d = Delay::new(&DelayProfile {
                base_ms: 0.0,
                jitter_median_ms: 3.0,
                jitter_p99_ms: 30.0,
                correlation: rho,
            });
            let mut rng = ChaCha8Rng::seed_from_u64(2);
            let v: Vec<f64> = (0..200_000)
                .map(|_| d.sample(&mut rng).as_secs_f64() * 1e3)
                .collect();
            let r = lag1(&v);
            assert!((r - rho).abs() < 0.01, "rho {rho}: lag-1 {r}");
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            let (p50, p99) = (sorted[100_000], sorted[198_000]);
            // A correlated series wanders, so its percentiles converge more slowly.
            assert!((p50 - 3.0).abs() < 0.15, "rho {rho}: p50 {p50}");
            assert!((p99 - 30.0).abs() < 2.5, "rho {rho}: p99 {p99}");
        }
    }
}

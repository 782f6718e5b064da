//! One-way delay: a fixed base plus log-normal jitter given by its median and 99th percentile.

use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution, LogNormal};

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

/// Milliseconds as a `Duration`, to the nanosecond.
pub(crate) fn millis(ms: f64) -> Duration {
    Duration::from_nanos((ms * 1e6).round() as u64)
}

/// The delay sampler of one direction.
#[derive(Debug, Clone)]
pub(crate) struct Delay {
    base_ms: f64,
    jitter: Option<LogNormal<f64>>,
}

impl Delay {
    pub(crate) fn new(profile: &DelayProfile) -> Self {
        Delay {
            base_ms: profile.base_ms,
            jitter: log_normal(profile.jitter_median_ms, profile.jitter_p99_ms),
        }
    }

    /// One draw of the one-way delay.
    pub(crate) fn sample(&self, rng: &mut impl Rng) -> Duration {
        let jitter = self.jitter.as_ref().map_or(0.0, |d| d.sample(rng));
        millis(self.base_ms + jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn percentiles_match_the_profile() {
        let d = Delay::new(&DelayProfile {
            base_ms: 2.0,
            jitter_median_ms: 3.0,
            jitter_p99_ms: 30.0,
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
        let d = Delay::new(&DelayProfile {
            base_ms: 1.5,
            ..DelayProfile::default()
        });
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(d.sample(&mut rng), Duration::from_micros(1500));
    }
}

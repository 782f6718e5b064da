//! The routing policy (threshold, default budget, confidence metric), changeable at run time,
//! and the confidence metrics themselves. Domain types: the admin service converts them to
//! and from the API's messages, once per change, not once per request.

use std::time::Duration;

use edgeinfer::v1;

/// How the edge measures confidence in its own answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConfidenceMetric {
    /// The largest calibrated probability.
    #[default]
    MaxProbability,
    /// Largest minus second largest probability.
    Margin,
    /// One minus the normalised entropy.
    Entropy,
}

impl ConfidenceMetric {
    /// Every metric.
    pub const ALL: [ConfidenceMetric; 3] = [
        ConfidenceMetric::MaxProbability,
        ConfidenceMetric::Margin,
        ConfidenceMetric::Entropy,
    ];

    /// Confidence of a probability vector under this metric, in [0, 1].
    pub fn of(self, probabilities: &[f32]) -> f32 {
        match self {
            ConfidenceMetric::Margin => {
                let (mut first, mut second) = (0.0f32, 0.0f32);
                for &p in probabilities {
                    if p > first {
                        second = first;
                        first = p;
                    } else if p > second {
                        second = p;
                    }
                }
                first - second
            }
            ConfidenceMetric::Entropy => {
                let k = probabilities.len();
                if k < 2 {
                    return 1.0;
                }
                let h: f32 = probabilities
                    .iter()
                    .filter(|&&p| p > 0.0)
                    .map(|&p| -p * p.ln())
                    .sum();
                (1.0 - h / (k as f32).ln()).clamp(0.0, 1.0)
            }
            ConfidenceMetric::MaxProbability => probabilities.iter().copied().fold(0.0, f32::max),
        }
    }
}

/// The policy in force.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Confidence the edge model must reach to answer by itself, in [0, 1].
    pub threshold: f32,
    /// Budget of requests that set none; also the most a request may ask for.
    pub default_budget: Duration,
    /// How confidence is measured.
    pub metric: ConfidenceMetric,
}

impl Policy {
    /// The policy after applying a `SetPolicy` request, or what is wrong with it, naming the
    /// field.
    pub fn updated(self, change: &v1::SetPolicyRequest) -> Result<Policy, String> {
        let mut next = self;
        if let Some(t) = change.threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(format!("threshold: {t} is outside [0, 1]"));
            }
            next.threshold = t;
        }
        if let Some(b) = change.default_budget_ms {
            if b == 0 {
                return Err("default_budget_ms: must be at least 1".into());
            }
            next.default_budget = Duration::from_millis(u64::from(b));
        }
        match v1::ConfidenceMetric::try_from(change.confidence_metric) {
            Ok(v1::ConfidenceMetric::Unspecified) => {}
            Ok(v1::ConfidenceMetric::MaxProbability) => {
                next.metric = ConfidenceMetric::MaxProbability
            }
            Ok(v1::ConfidenceMetric::Margin) => next.metric = ConfidenceMetric::Margin,
            Ok(v1::ConfidenceMetric::Entropy) => next.metric = ConfidenceMetric::Entropy,
            Err(_) => {
                return Err(format!(
                    "confidence_metric: {} is not a metric",
                    change.confidence_metric
                ));
            }
        }
        Ok(next)
    }
}

impl From<ConfidenceMetric> for v1::ConfidenceMetric {
    fn from(m: ConfidenceMetric) -> Self {
        match m {
            ConfidenceMetric::MaxProbability => v1::ConfidenceMetric::MaxProbability,
            ConfidenceMetric::Margin => v1::ConfidenceMetric::Margin,
            ConfidenceMetric::Entropy => v1::ConfidenceMetric::Entropy,
        }
    }
}

impl From<Policy> for v1::Policy {
    fn from(p: Policy) -> Self {
        v1::Policy {
            threshold: p.threshold,
            default_budget_ms: p.default_budget.as_millis().try_into().unwrap_or(u32::MAX),
            confidence_metric: v1::ConfidenceMetric::from(p.metric) as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_agree_on_certain_and_uniform_answers() {
        let certain = [0.0, 1.0, 0.0, 0.0];
        let uniform = [0.25; 4];
        for m in ConfidenceMetric::ALL {
            assert!((m.of(&certain) - 1.0).abs() < 1e-6, "{m:?}");
        }
        assert_eq!(ConfidenceMetric::MaxProbability.of(&uniform), 0.25);
        assert_eq!(ConfidenceMetric::Margin.of(&uniform), 0.0);
        assert!(ConfidenceMetric::Entropy.of(&uniform).abs() < 1e-6);
        assert!((ConfidenceMetric::Margin.of(&[0.6, 0.3, 0.1]) - 0.3).abs() < 1e-6);
    }

    #[test]
    fn bad_changes_name_the_field_and_leave_the_policy() {
        let p = Policy {
            threshold: 0.9,
            default_budget: Duration::from_millis(100),
            metric: ConfidenceMetric::MaxProbability,
        };
        let change = |t, b, m| v1::SetPolicyRequest {
            threshold: t,
            default_budget_ms: b,
            confidence_metric: m,
        };
        let e = p.updated(&change(Some(1.5), None, 0)).unwrap_err();
        assert!(e.starts_with("threshold"), "{e}");
        let e = p.updated(&change(None, Some(0), 0)).unwrap_err();
        assert!(e.starts_with("default_budget_ms"), "{e}");
        let e = p.updated(&change(None, None, 42)).unwrap_err();
        assert!(e.starts_with("confidence_metric"), "{e}");
        let next = p.updated(&change(Some(0.5), Some(20), 2)).unwrap();
        assert_eq!(next.threshold, 0.5);
        assert_eq!(next.default_budget, Duration::from_millis(20));
        assert_eq!(next.metric, ConfidenceMetric::Margin);
    }
}

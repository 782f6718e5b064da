//! The routing policy (threshold, default budget, confidence metric), changeable at run time,
//! and the confidence metrics themselves.

use edgeinfer::v1::{ConfidenceMetric, Policy};

/// Confidence of a probability vector under `metric`, in [0, 1].
pub fn confidence(metric: ConfidenceMetric, probabilities: &[f32]) -> f32 {
    match metric {
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
        ConfidenceMetric::MaxProbability | ConfidenceMetric::Unspecified => {
            probabilities.iter().copied().fold(0.0, f32::max)
        }
    }
}

/// Validates a policy change, naming the field at fault.
pub fn validate(policy: &Policy) -> Result<(), String> {
    if !(0.0..=1.0).contains(&policy.threshold) {
        return Err(format!("threshold: {} is outside [0, 1]", policy.threshold));
    }
    if policy.default_budget_ms == 0 {
        return Err("default_budget_ms: must be at least 1".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_agree_on_certain_and_uniform_answers() {
        let certain = [0.0, 1.0, 0.0, 0.0];
        let uniform = [0.25; 4];
        for m in [
            ConfidenceMetric::MaxProbability,
            ConfidenceMetric::Margin,
            ConfidenceMetric::Entropy,
        ] {
            assert!((confidence(m, &certain) - 1.0).abs() < 1e-6, "{m:?}");
        }
        assert_eq!(confidence(ConfidenceMetric::MaxProbability, &uniform), 0.25);
        assert_eq!(confidence(ConfidenceMetric::Margin, &uniform), 0.0);
        assert!(confidence(ConfidenceMetric::Entropy, &uniform).abs() < 1e-6);
        assert!((confidence(ConfidenceMetric::Margin, &[0.6, 0.3, 0.1]) - 0.3).abs() < 1e-6);
    }

    #[test]
    fn bad_policies_name_the_field() {
        let mut p = Policy {
            threshold: 1.5,
            default_budget_ms: 100,
            confidence_metric: 1,
        };
        assert!(validate(&p).unwrap_err().starts_with("threshold"));
        p.threshold = 0.5;
        p.default_budget_ms = 0;
        assert!(validate(&p).unwrap_err().starts_with("default_budget_ms"));
    }
}

//! The domain types of an answer: who answered, why, and where the time went. Nodes and the
//! router work with these; the front ends (native, OIP) and the edge's cloud client are the only
//! places that convert them to and from prost messages, so no code converts an `i32` to an enum
//! on a request's path.

use std::time::Duration;

use edgeinfer::v1;
use edgeinfer_model::ood::Novelty;

/// The tier that produced an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The edge's own model.
    Edge,
    /// The cloud's model.
    Cloud,
}

/// Why a tier answered (design.md section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The edge model was confident enough.
    Confident,
    /// The cloud answered because the edge was unsure.
    LowConfidence,
    /// The cloud answered because the edge could not meet the budget.
    EdgeOverloaded,
    /// The caller forced the tier.
    Placement,
    /// The edge answered, unsure, because the cloud failed or is not configured.
    CloudUnavailable,
    /// The edge answered, unsure, because the cloud did not answer in time.
    CloudTimeout,
    /// The edge answered, unsure, because the circuit to the cloud is open.
    CircuitOpen,
    /// The edge answered, unsure, because no cloud call was expected to fit the budget.
    BudgetTooSmall,
    /// The cloud answered because the input is unlike the edge model's training data.
    OutOfDistribution,
}

impl Reason {
    /// Every reason, in the order of [`Reason::index`].
    pub const ALL: [Reason; 9] = [
        Reason::Confident,
        Reason::LowConfidence,
        Reason::EdgeOverloaded,
        Reason::Placement,
        Reason::CloudUnavailable,
        Reason::CloudTimeout,
        Reason::CircuitOpen,
        Reason::BudgetTooSmall,
        Reason::OutOfDistribution,
    ];

    /// True for the reasons where the edge answered although it wanted the cloud.
    pub fn is_fallback(self) -> bool {
        matches!(
            self,
            Reason::CloudUnavailable
                | Reason::CloudTimeout
                | Reason::CircuitOpen
                | Reason::BudgetTooSmall
        )
    }

    /// Position in [`Reason::ALL`], for counters kept in arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The API's name of the reason (`CONFIDENT`, ...), as metrics, logs and OIP parameters
    /// spell it.
    pub fn name(self) -> &'static str {
        v1::Reason::from(self).as_str_name()
    }
}

impl Tier {
    /// Every tier, in the order of [`Tier::index`].
    pub const ALL: [Tier; 2] = [Tier::Edge, Tier::Cloud];

    /// Position in [`Tier::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The API's name of the tier (`EDGE`, `CLOUD`).
    pub fn name(self) -> &'static str {
        v1::Tier::from(self).as_str_name()
    }
}

/// Where a request may be answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Placement {
    /// The router decides.
    #[default]
    Auto,
    /// Only the edge's model.
    EdgeOnly,
    /// The cloud, with the edge as fallback.
    CloudOnly,
}

impl Placement {
    /// Parses a placement as users write it: auto, edge, cloud, or the API's enum names.
    pub fn parse(s: &str) -> Option<Placement> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "" => Some(Placement::Auto),
            "edge" | "edge_only" => Some(Placement::EdgeOnly),
            "cloud" | "cloud_only" => Some(Placement::CloudOnly),
            _ => None,
        }
    }
}

/// Where an answer's time went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    /// Waiting for the edge model's batcher.
    pub queue: Duration,
    /// The edge model's forward pass.
    pub edge_compute: Duration,
    /// Edge to cloud over the link.
    pub uplink: Duration,
    /// Time the cloud reported spending.
    pub cloud: Duration,
    /// Cloud to edge over the link.
    pub downlink: Duration,
    /// From receipt to answer.
    pub total: Duration,
}

/// One answer, before any front end encodes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The request's id.
    pub id: String,
    /// The most probable label.
    pub label: String,
    /// Its index among the model's labels.
    pub class_index: usize,
    /// Its probability.
    pub confidence: f32,
    /// Calibrated probabilities of every label.
    pub probabilities: Vec<f32>,
    /// Who answered.
    pub served_by: Tier,
    /// Why.
    pub reason: Reason,
    /// True when the edge answered although it wanted the cloud.
    pub degraded: bool,
    /// "name@version" of the model that answered.
    pub model: String,
    /// Where the time went.
    pub timing: Timing,
    /// The edge model's confidence under the policy's metric (0 when it did not run).
    pub edge_confidence: f32,
    /// How unlike its model's training inputs the input is: the edge model's verdict when it
    /// ran, else the answering model's; `None` when that model has no input detector.
    pub novelty: Option<Novelty>,
}

// === wire conversions (used by the front ends and the cloud client only) ===

impl From<Tier> for v1::Tier {
    fn from(t: Tier) -> Self {
        match t {
            Tier::Edge => v1::Tier::Edge,
            Tier::Cloud => v1::Tier::Cloud,
        }
    }
}

impl From<Reason> for v1::Reason {
    fn from(r: Reason) -> Self {
        match r {
            Reason::Confident => v1::Reason::Confident,
            Reason::LowConfidence => v1::Reason::LowConfidence,
            Reason::EdgeOverloaded => v1::Reason::EdgeOverloaded,
            Reason::Placement => v1::Reason::Placement,
            Reason::CloudUnavailable => v1::Reason::CloudUnavailable,
            Reason::CloudTimeout => v1::Reason::CloudTimeout,
            Reason::CircuitOpen => v1::Reason::CircuitOpen,
            Reason::BudgetTooSmall => v1::Reason::BudgetTooSmall,
            Reason::OutOfDistribution => v1::Reason::OutOfDistribution,
        }
    }
}

impl From<Placement> for v1::Placement {
    fn from(p: Placement) -> Self {
        match p {
            Placement::Auto => v1::Placement::Auto,
            Placement::EdgeOnly => v1::Placement::EdgeOnly,
            Placement::CloudOnly => v1::Placement::CloudOnly,
        }
    }
}

impl TryFrom<i32> for Placement {
    type Error = i32;

    /// The wire's placement number; the unknown number back as the error.
    fn try_from(n: i32) -> Result<Self, i32> {
        match v1::Placement::try_from(n) {
            Ok(v1::Placement::Auto) => Ok(Placement::Auto),
            Ok(v1::Placement::EdgeOnly) => Ok(Placement::EdgeOnly),
            Ok(v1::Placement::CloudOnly) => Ok(Placement::CloudOnly),
            Err(_) => Err(n),
        }
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().try_into().unwrap_or(u64::MAX)
}

impl From<Timing> for v1::Timing {
    fn from(t: Timing) -> Self {
        v1::Timing {
            queue_us: micros(t.queue),
            edge_compute_us: micros(t.edge_compute),
            uplink_us: micros(t.uplink),
            cloud_us: micros(t.cloud),
            downlink_us: micros(t.downlink),
            total_us: micros(t.total),
        }
    }
}

impl From<Answer> for v1::InferResponse {
    fn from(a: Answer) -> Self {
        v1::InferResponse {
            id: a.id,
            label: a.label,
            class_index: a.class_index as u32,
            confidence: a.confidence,
            probabilities: a.probabilities,
            served_by: v1::Tier::from(a.served_by) as i32,
            reason: v1::Reason::from(a.reason) as i32,
            degraded: a.degraded,
            model: a.model,
            timing: Some(a.timing.into()),
            edge_confidence: a.edge_confidence,
            ood_score: a.novelty.map(|n| n.score),
            out_of_distribution: a.novelty.is_some_and(|n| n.unusual),
            explanation: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_and_tier_has_its_api_name_and_index() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(
                v1::Reason::from_str_name(r.name()),
                Some(v1::Reason::from(*r))
            );
        }
        for (i, t) in Tier::ALL.iter().enumerate() {
            assert_eq!(t.index(), i);
            assert_eq!(v1::Tier::from_str_name(t.name()), Some(v1::Tier::from(*t)));
        }
    }

    #[test]
    fn placements_parse_as_users_write_them_and_from_the_wire() {
        assert_eq!(Placement::parse("Cloud"), Some(Placement::CloudOnly));
        assert_eq!(Placement::parse("EDGE_ONLY"), Some(Placement::EdgeOnly));
        assert_eq!(Placement::parse(""), Some(Placement::Auto));
        assert_eq!(Placement::parse("moon"), None);
        assert_eq!(Placement::try_from(2), Ok(Placement::CloudOnly));
        assert_eq!(Placement::try_from(9), Err(9));
    }
}

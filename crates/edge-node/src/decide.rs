//! The routing decision of design.md section 5, as pure functions: they read a [`Snapshot`] of
//! what the edge knows (policy, path estimates, circuit, its own queue) and a [`Request`], and
//! return a [`Plan`]. No clock is read and nothing is done here; the executor
//! (`crate::router`) carries plans out, as `linksim`'s `link` carries out what its `sim`
//! decides.
//!
//! A request meets up to two decisions: [`decide`] when it arrives, and, when the plan was to
//! run the edge model first, [`after_edge`] with the model's confidence (or
//! [`after_refusal`] when the model's queue refused it).

use std::time::Duration;

use edgeinfer_serving::answer::{Placement, Reason};
use tokio::time::Instant;

use crate::circuit::CircuitView;
use crate::estimates;
use crate::policy::Policy;

/// What the edge knows when it decides.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    /// The policy in force.
    pub policy: Policy,
    /// The learned cloud path; `None` when no cloud is configured.
    pub path: Option<estimates::Snapshot>,
    /// Whether the circuit would let a call through.
    pub circuit: CircuitView,
    /// Expected time until a request given to the edge model now has its answer.
    pub edge_completion: Duration,
    /// Time a cloud call leaves for answering from the edge if the cloud is late.
    pub reserve: Duration,
}

/// What the decision needs of a request.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// Where the caller allows it to be answered.
    pub placement: Placement,
    /// True when the caller named the edge's concrete model: it answers by itself.
    pub concrete_model: bool,
    /// The request's own budget; `None` when it set none.
    pub budget: Option<Duration>,
    /// The caller's gRPC deadline, from receipt.
    pub deadline: Option<Duration>,
    /// Confidence the edge must reach, when the request sets one.
    pub min_confidence: Option<f32>,
    /// When the request arrived.
    pub received: Instant,
    /// Bytes a cloud call would wait behind and send: what already waits on the link's uplink,
    /// plus its own message.
    pub up_bytes: usize,
    /// The same on the way back: the downlink's backlog plus the cloud's expected answer.
    pub down_bytes: usize,
}

/// What to do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Run the edge model (unless it ran already) and answer with it, for this reason.
    Edge(Reason),
    /// Ask the cloud, giving up after `timeout`; its answer is given for `reason`. Any failure
    /// is answered from the edge model, degraded. With `edge_first` the edge model runs
    /// before the call, so that the fallback is ready.
    Cloud {
        /// How long the call may take.
        timeout: Duration,
        /// The reason of a cloud answer.
        reason: Reason,
        /// Run the edge model before calling.
        edge_first: bool,
    },
    /// Run the edge model, then decide again with [`after_edge`].
    EdgeThenDecide,
    /// Refuse now: neither the edge model nor the cloud is expected to answer in time.
    Refuse,
}

/// When the request's budget ends: its own budget, its gRPC deadline and the policy's default,
/// whichever is first. Computed once per request.
pub fn deadline(policy: &Policy, request: &Request) -> Instant {
    let budget = [request.budget, request.deadline]
        .into_iter()
        .flatten()
        .fold(policy.default_budget, Duration::min);
    request.received + budget
}

/// What a cloud call may take if it starts at `now`: the time left less the reserve.
fn cloud_time(snapshot: &Snapshot, deadline: Instant, now: Instant) -> Duration {
    deadline
        .saturating_duration_since(now)
        .saturating_sub(snapshot.reserve)
}

/// Why the cloud cannot be asked now, or `None` when it can: not configured, circuit open, or
/// not expected to answer in `time`. Before the first measurement the cloud is expected to fit:
/// calling is the only way to learn.
fn cloud_blocked(snapshot: &Snapshot, request: &Request, time: Duration) -> Option<Reason> {
    let Some(path) = &snapshot.path else {
        return Some(Reason::CloudUnavailable);
    };
    if !snapshot.circuit.allows() {
        return Some(Reason::CircuitOpen);
    }
    let fits = path
        .expected_call(request.up_bytes, request.down_bytes)
        .is_none_or(|expected| expected <= time);
    (!fits).then_some(Reason::BudgetTooSmall)
}

/// The decision when the request arrives (steps 2 and 3 of section 5).
pub fn decide(snapshot: &Snapshot, request: &Request, deadline: Instant, now: Instant) -> Plan {
    if request.concrete_model {
        return Plan::Edge(Reason::Placement);
    }
    let time = cloud_time(snapshot, deadline, now);
    match request.placement {
        Placement::EdgeOnly => Plan::Edge(Reason::Placement),
        // A forced placement is obeyed even when the call is not expected to fit; only a
        // missing cloud or an open circuit keep it at the edge. The edge answer is computed
        // first (microseconds) so that a failed call still gets an answer within the budget.
        Placement::CloudOnly => match cloud_blocked(snapshot, request, time) {
            Some(reason @ (Reason::CloudUnavailable | Reason::CircuitOpen)) => Plan::Edge(reason),
            _ => Plan::Cloud {
                timeout: time,
                reason: Reason::Placement,
                edge_first: true,
            },
        },
        Placement::Auto => {
            if snapshot.edge_completion <= time {
                Plan::EdgeThenDecide
            } else if cloud_blocked(snapshot, request, time).is_none() {
                Plan::Cloud {
                    timeout: time,
                    reason: Reason::EdgeOverloaded,
                    edge_first: false,
                }
            } else if now + snapshot.edge_completion > deadline {
                // Neither can answer in time: refused now rather than answered late.
                Plan::Refuse
            } else {
                Plan::EdgeThenDecide
            }
        }
    }
}

/// What the edge model said of a request, as the decision needs it.
#[derive(Clone, Copy, Debug)]
pub struct EdgeVerdict {
    /// Its confidence under the policy's metric.
    pub confidence: f32,
    /// True when the input is unlike the edge model's training data: its confidence is not
    /// trusted then, however high.
    pub unusual: bool,
}

/// The decision once the edge model has answered (steps 4 to 6): it answers when confident
/// about an input like its training data; otherwise the cloud is asked when it can be, for
/// the reason the edge was not trusted.
pub fn after_edge(
    snapshot: &Snapshot,
    request: &Request,
    verdict: EdgeVerdict,
    deadline: Instant,
    now: Instant,
) -> Plan {
    let threshold = request.min_confidence.unwrap_or(snapshot.policy.threshold);
    let reason = if verdict.unusual {
        Reason::OutOfDistribution
    } else if verdict.confidence >= threshold {
        return Plan::Edge(Reason::Confident);
    } else {
        Reason::LowConfidence
    };
    let time = cloud_time(snapshot, deadline, now);
    match cloud_blocked(snapshot, request, time) {
        Some(fallback) => Plan::Edge(fallback),
        None => Plan::Cloud {
            timeout: time,
            reason,
            edge_first: false,
        },
    }
}

/// The decision when the edge model's queue refused the request: the cloud takes it when it
/// can answer in time, else it is refused at once.
pub fn after_refusal(
    snapshot: &Snapshot,
    request: &Request,
    deadline: Instant,
    now: Instant,
) -> Plan {
    let time = cloud_time(snapshot, deadline, now);
    match cloud_blocked(snapshot, request, time) {
        None => Plan::Cloud {
            timeout: time,
            reason: Reason::EdgeOverloaded,
            edge_first: false,
        },
        Some(_) => Plan::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ConfidenceMetric;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            policy: Policy {
                threshold: 0.9,
                default_budget: ms(100),
                metric: ConfidenceMetric::MaxProbability,
            },
            path: Some(estimates::Snapshot {
                rtt_p50: Some(0.010),
                ..Default::default()
            }),
            circuit: CircuitView::Closed,
            edge_completion: Duration::ZERO,
            reserve: ms(3),
        }
    }

    fn request(now: Instant) -> Request {
        Request {
            placement: Placement::Auto,
            concrete_model: false,
            budget: None,
            deadline: None,
            min_confidence: None,
            received: now,
            up_bytes: 800,
            down_bytes: 170,
        }
    }

    #[test]
    fn the_budget_is_the_smallest_of_request_deadline_and_default() {
        let now = Instant::now();
        let s = snapshot();
        let mut r = request(now);
        assert_eq!(deadline(&s.policy, &r), now + ms(100));
        r.budget = Some(ms(40));
        assert_eq!(deadline(&s.policy, &r), now + ms(40));
        r.deadline = Some(ms(20));
        assert_eq!(deadline(&s.policy, &r), now + ms(20));
        r.budget = Some(ms(500));
        r.deadline = Some(ms(900));
        assert_eq!(
            deadline(&s.policy, &r),
            now + ms(100),
            "the default caps it"
        );
    }

    #[test]
    fn a_late_edge_goes_to_the_cloud_when_it_fits_else_is_refused() {
        let now = Instant::now();
        let mut s = snapshot();
        let r = request(now);
        let d = deadline(&s.policy, &r);
        assert_eq!(decide(&s, &r, d, now), Plan::EdgeThenDecide);
        s.edge_completion = ms(120);
        assert_eq!(
            decide(&s, &r, d, now),
            Plan::Cloud {
                timeout: ms(97),
                reason: Reason::EdgeOverloaded,
                edge_first: false
            }
        );
        // Neither in time: refused now, not answered late.
        s.path = Some(estimates::Snapshot {
            rtt_p50: Some(0.200),
            ..Default::default()
        });
        assert_eq!(decide(&s, &r, d, now), Plan::Refuse);
        s.path = None;
        assert_eq!(decide(&s, &r, d, now), Plan::Refuse);
        // An edge late for a cloud call's timeout but within the budget answers itself.
        s.edge_completion = ms(98);
        assert_eq!(decide(&s, &r, d, now), Plan::EdgeThenDecide);
    }

    fn sure(confidence: f32) -> EdgeVerdict {
        EdgeVerdict {
            confidence,
            unusual: false,
        }
    }

    #[test]
    fn an_unusual_input_goes_to_the_cloud_however_confident_the_edge() {
        let now = Instant::now();
        let mut s = snapshot();
        let r = request(now);
        let d = deadline(&s.policy, &r);
        let unusual = EdgeVerdict {
            confidence: 1.0,
            unusual: true,
        };
        assert!(matches!(
            after_edge(&s, &r, unusual, d, now),
            Plan::Cloud {
                reason: Reason::OutOfDistribution,
                ..
            }
        ));
        // When the cloud cannot be asked, the edge answers, degraded, for the usual reasons.
        s.circuit = CircuitView::Open;
        assert_eq!(
            after_edge(&s, &r, unusual, d, now),
            Plan::Edge(Reason::CircuitOpen)
        );
    }

    #[test]
    fn an_unsure_edge_asks_the_cloud_unless_something_blocks_it() {
        let now = Instant::now();
        let mut s = snapshot();
        let r = request(now);
        let d = deadline(&s.policy, &r);
        assert_eq!(
            after_edge(&s, &r, sure(0.95), d, now),
            Plan::Edge(Reason::Confident)
        );
        assert!(matches!(
            after_edge(&s, &r, sure(0.5), d, now),
            Plan::Cloud {
                reason: Reason::LowConfidence,
                ..
            }
        ));
        assert_eq!(
            after_edge(&s, &r, sure(0.5), d, now + ms(95)),
            Plan::Edge(Reason::BudgetTooSmall)
        );
        s.circuit = CircuitView::TrialOut;
        assert_eq!(
            after_edge(&s, &r, sure(0.5), d, now),
            Plan::Edge(Reason::CircuitOpen)
        );
        s.path = None;
        assert_eq!(
            after_edge(&s, &r, sure(0.5), d, now),
            Plan::Edge(Reason::CloudUnavailable)
        );
    }

    #[test]
    fn a_refused_request_goes_to_the_cloud_or_is_refused() {
        let now = Instant::now();
        let mut s = snapshot();
        let r = request(now);
        let d = deadline(&s.policy, &r);
        assert!(matches!(
            after_refusal(&s, &r, d, now),
            Plan::Cloud {
                reason: Reason::EdgeOverloaded,
                ..
            }
        ));
        s.circuit = CircuitView::Open;
        assert_eq!(after_refusal(&s, &r, d, now), Plan::Refuse);
    }
}

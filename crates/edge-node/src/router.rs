//! The router's executor: it carries out the plans that [`crate::decide`] makes, through one
//! "call the cloud or fall back" path, and learns from what it sees (round trips, rates, how
//! late timers fire, the circuit's outcomes).
//!
//! The router is generic over the edge model ([`EdgeModel`]) and the cloud ([`Cloud`]), so that
//! its tests run on tokio's paused clock with fakes of both; the node serves it with the
//! swappable model slot (a batcher per model version) and the real cloud client.
//!
//! The router never looks inside the input or the labels: it works from probabilities and the
//! model's metadata.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use edgeinfer_linksim::Transit;
use edgeinfer_model::ModelMetadata;
use edgeinfer_serving::answer::{Answer, Reason, Tier, Timing};
use edgeinfer_serving::batcher::{BatchError, Scored};
use edgeinfer_serving::error::ServeError;
use edgeinfer_serving::models::ModelSlot;
use edgeinfer_serving::node::{Call, argmax, model_ref};
use tokio::time::Instant;

use crate::circuit::{CircuitBreaker, CircuitView};
use crate::decide::{self, Plan, Request};
use crate::estimates::PathEstimates;
use crate::hard_examples::{HardExample, HardExampleStore};
use crate::policy::Policy;
use crate::reserve::FallbackReserve;

/// The edge's model, as the router needs it.
pub trait EdgeModel: Send + Sync + 'static {
    /// The metadata of the model in service now (a swap may change it between calls).
    fn metadata(&self) -> Arc<ModelMetadata>;
    /// Scores one call's input, to be answered before `deadline` (refused at once when it
    /// would not be), and says which model did: the one in service when the call started, even
    /// if another is swapped in meanwhile.
    fn classify(
        &self,
        call: &Call,
        deadline: Instant,
    ) -> impl Future<Output = Result<(Scored, Arc<ModelMetadata>), BatchError>> + Send;
    /// Expected time until a request submitted now has its answer.
    fn expected_completion(&self) -> Duration;
}

impl EdgeModel for ModelSlot {
    fn metadata(&self) -> Arc<ModelMetadata> {
        self.current().meta.clone()
    }

    fn classify(
        &self,
        call: &Call,
        deadline: Instant,
    ) -> impl Future<Output = Result<(Scored, Arc<ModelMetadata>), BatchError>> + Send {
        // Taken once, held until the answer: the request finishes on this model.
        let served = self.current();
        let input = call.input.values.clone();
        async move {
            let scored = served.classify(input, Some(deadline)).await?;
            Ok((scored, served.meta.clone()))
        }
    }

    fn expected_completion(&self) -> Duration {
        self.current().batcher.expected_completion()
    }
}

/// Why a cloud call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer before the deadline (slow or lossy link, handover, overloaded cloud).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The cloud could not be reached, or failed.
    #[error("cloud unavailable: {0}")]
    Unavailable(String),
    /// The cloud refused the edge's credentials: a setting is wrong, not the network.
    #[error("the cloud refused the edge's credentials: {0}")]
    Refused(String),
}

/// A cloud answer and how it crossed the link.
#[derive(Clone, Debug)]
pub struct CloudAnswer {
    /// The cloud's answer.
    pub answer: Answer,
    /// The simulated crossing (absent only if the link layer did not report it).
    pub transit: Option<Transit>,
}

/// The cloud, as the router needs it.
pub trait Cloud: Send + Sync + 'static {
    /// Asks the cloud to answer `call` within `timeout` (sent along as its deadline). The
    /// router also stops waiting at `timeout`.
    fn infer(
        &self,
        call: &Call,
        timeout: Duration,
    ) -> impl Future<Output = Result<CloudAnswer, CallError>> + Send;
    /// Bytes of the message that asking the cloud about `call` sends.
    fn message_bytes(&self, call: &Call) -> usize;
    /// Bytes already waiting on the way to the cloud and back, `[up, down]`: a message sent now
    /// is serialized after them.
    fn backlog(&self) -> [u64; 2] {
        [0, 0]
    }
}

/// Encoded size of a cloud answer for a model with `classes` labels: the probabilities
/// dominate; ids, labels and timing add about a hundred bytes.
fn expected_answer_bytes(classes: usize) -> usize {
    classes * 4 + 128
}

/// Answers by reason and by tier since start.
#[derive(Debug, Default)]
pub struct Counters {
    by_reason: [AtomicU64; Reason::ALL.len()],
    by_tier: [AtomicU64; Tier::ALL.len()],
}

impl Counters {
    fn count(&self, answer: &Answer) {
        self.by_reason[answer.reason.index()].fetch_add(1, Ordering::Relaxed);
        self.by_tier[answer.served_by.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Non-zero counts by reason.
    pub fn reasons(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL
            .into_iter()
            .map(|r| (r, self.by_reason[r.index()].load(Ordering::Relaxed)))
            .filter(|&(_, n)| n > 0)
    }

    /// Non-zero counts by tier.
    pub fn tiers(&self) -> impl Iterator<Item = (Tier, u64)> + '_ {
        Tier::ALL
            .into_iter()
            .map(|t| (t, self.by_tier[t.index()].load(Ordering::Relaxed)))
            .filter(|&(_, n)| n > 0)
    }
}

/// The router: the edge model, the cloud, and what the edge knows of both.
pub struct Router<M, C> {
    /// The edge model (swappable: each answer names the version that produced it).
    pub(crate) model: M,
    /// The cloud, when one is configured.
    pub(crate) cloud: Option<C>,
    /// What the edge has learned about the cloud path.
    pub(crate) estimates: PathEstimates,
    /// Stops waiting on a cloud that keeps failing.
    pub(crate) circuit: CircuitBreaker,
    /// Threshold, default budget, confidence metric.
    pub(crate) policy: RwLock<Policy>,
    /// Time kept back from a cloud call for answering from the edge if the cloud is late.
    pub(crate) reserve: FallbackReserve,
    /// Answers by reason and tier, for the status.
    pub(crate) counters: Counters,
    /// Set once the cloud's refusal of the edge's token has been logged: a wrong setting is
    /// said once, not on every request.
    refusal_logged: AtomicBool,
    /// Where the cloud's answers are kept for fine-tuning, when `--hard-examples-dir` is set.
    pub(crate) hard_examples: Option<HardExampleStore>,
}

/// What the edge model said about one request.
struct EdgeView {
    scored: Scored,
    confidence: f32,
    /// The model that scored it.
    model: Arc<ModelMetadata>,
}

impl<M: EdgeModel, C: Cloud> Router<M, C> {
    /// A router; `cloud` is `None` when the edge runs alone.
    pub fn new(model: M, cloud: Option<C>, circuit: CircuitBreaker, policy: Policy) -> Self {
        Self {
            model,
            cloud,
            estimates: PathEstimates::default(),
            circuit,
            policy: RwLock::new(policy),
            reserve: FallbackReserve::default(),
            counters: Counters::default(),
            refusal_logged: AtomicBool::new(false),
            hard_examples: None,
        }
    }

    /// This router keeping every answer the cloud gives in `store`.
    pub fn with_hard_examples(mut self, store: Option<HardExampleStore>) -> Self {
        self.hard_examples = store;
        self
    }

    /// The policy in force.
    pub fn policy(&self) -> Policy {
        *self.policy.read().unwrap_or_else(|e| e.into_inner())
    }

    /// What the edge knows now, for a decision.
    fn snapshot(&self) -> decide::Snapshot {
        decide::Snapshot {
            policy: self.policy(),
            path: self.cloud.as_ref().map(|_| self.estimates.snapshot()),
            circuit: self.circuit.view(),
            edge_completion: self.model.expected_completion(),
            reserve: self.reserve.get(),
        }
    }

    /// Answers one call, and counts the answer.
    pub async fn route(&self, call: &Call) -> Result<Answer, ServeError> {
        let answer = self.execute(call).await?;
        self.counters.count(&answer);
        Ok(answer)
    }

    async fn execute(&self, call: &Call) -> Result<Answer, ServeError> {
        let meta = self.model.metadata();
        // The fit test serializes the call after what already waits on the link (its FIFO).
        let [up_backlog, down_backlog] = self.cloud.as_ref().map_or([0, 0], |c| c.backlog());
        let request = Request {
            placement: call.placement,
            concrete_model: call.model == meta.name,
            budget: (call.budget_ms > 0).then(|| Duration::from_millis(u64::from(call.budget_ms))),
            deadline: call.deadline,
            min_confidence: call.min_confidence,
            received: call.received,
            up_bytes: up_backlog as usize
                + self.cloud.as_ref().map_or(0, |c| c.message_bytes(call)),
            down_bytes: down_backlog as usize + expected_answer_bytes(meta.labels.len()),
        };
        let snapshot = self.snapshot();
        let deadline = decide::deadline(&snapshot.policy, &request);
        let metric = snapshot.policy.metric;
        let mut edge: Option<EdgeView> = None;
        // Why the edge model refused the request, when it did.
        let mut refusal: Option<BatchError> = None;
        let mut plan = decide::decide(&snapshot, &request, deadline, Instant::now());
        loop {
            plan = match plan {
                Plan::Edge(reason) => {
                    let view = match edge {
                        Some(v) => v,
                        None => self.run_edge(call, metric, deadline).await?,
                    };
                    return Ok(self.edge_answer(call, &view, reason));
                }
                Plan::EdgeThenDecide => match self.run_edge(call, metric, deadline).await {
                    Ok(view) => {
                        let verdict = decide::EdgeVerdict {
                            confidence: view.confidence,
                            unusual: view.scored.novelty.is_some_and(|n| n.unusual),
                        };
                        let next = decide::after_edge(
                            &self.snapshot(),
                            &request,
                            verdict,
                            deadline,
                            Instant::now(),
                        );
                        edge = Some(view);
                        next
                    }
                    Err(ServeError::Batch(e)) if e.is_overload() => {
                        refusal = Some(e);
                        decide::after_refusal(&self.snapshot(), &request, deadline, Instant::now())
                    }
                    Err(e) => return Err(e),
                },
                Plan::Cloud {
                    timeout,
                    reason,
                    edge_first,
                } => {
                    if edge_first && edge.is_none() {
                        // A busy edge model does not stop the call; it only leaves no answer
                        // ready for a fallback.
                        edge = match self.run_edge(call, metric, deadline).await {
                            Ok(view) => Some(view),
                            Err(ServeError::Batch(e)) if e.is_overload() => None,
                            Err(e) => return Err(e),
                        };
                    }
                    return self
                        .cloud_or_fall_back(call, edge, timeout, reason, deadline)
                        .await;
                }
                Plan::Refuse => {
                    let error = refusal.unwrap_or_else(|| BatchError::WouldMiss {
                        expected: snapshot.edge_completion,
                        left: deadline.saturating_duration_since(Instant::now()),
                    });
                    return Err(error.into());
                }
            };
        }
    }

    async fn run_edge(
        &self,
        call: &Call,
        metric: crate::policy::ConfidenceMetric,
        deadline: Instant,
    ) -> Result<EdgeView, ServeError> {
        let (scored, model) = self.model.classify(call, deadline).await?;
        let confidence = metric.of(&scored.probabilities);
        Ok(EdgeView {
            scored,
            confidence,
            model,
        })
    }

    /// The one path to the cloud: take the circuit's permission, call, learn from the
    /// outcome, and answer from the cloud or, on any failure, from the edge (running its model
    /// now if it has not run).
    async fn cloud_or_fall_back(
        &self,
        call: &Call,
        edge: Option<EdgeView>,
        timeout: Duration,
        reason: Reason,
        deadline: Instant,
    ) -> Result<Answer, ServeError> {
        let (Some(cloud), Some(permit)) = (&self.cloud, self.circuit.permit()) else {
            let reason = if self.cloud.is_none() {
                Reason::CloudUnavailable
            } else {
                Reason::CircuitOpen
            };
            return self.fall_back(call, edge, reason, deadline).await;
        };
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, cloud.infer(call, timeout)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(timeout)),
        };
        let failure = match result {
            Ok(answer) => {
                permit.success();
                if let Some(t) = answer.transit {
                    self.estimates.observe_exchange(
                        t.uplink_bytes,
                        t.uplink,
                        t.downlink_bytes,
                        t.downlink,
                        answer.answer.timing.cloud,
                    );
                }
                let answer = self.cloud_answer(call, edge.as_ref(), answer, reason);
                self.keep_hard_example(call, edge.as_ref(), &answer);
                return Ok(answer);
            }
            Err(e) => e,
        };
        let fallback = match &failure {
            CallError::Timeout(_) => {
                self.reserve.observe(timeout, started.elapsed());
                // A call cut short by a budget below the path's retransmission timeout
                // (SRTT + 4 RTTVAR) was a gamble on a fast exchange, not a test of the cloud:
                // on a heavy-tailed link such calls miss often while the cloud is fine.
                if timeout < self.estimates.rto() {
                    permit.inconclusive();
                } else if permit.failure() {
                    tracing::warn!(error = %failure, "circuit to the cloud opened");
                }
                Reason::CloudTimeout
            }
            CallError::Unavailable(_) | CallError::Refused(_) => {
                if permit.failure() {
                    tracing::warn!(error = %failure, "circuit to the cloud opened");
                }
                self.log_refusal(&failure);
                Reason::CloudUnavailable
            }
        };
        tracing::debug!(error = %failure, "cloud call failed; the edge answers");
        self.fall_back(call, edge, fallback, deadline).await
    }

    /// Hands the cloud's answer to the hard-example store, if there is one; never waits.
    fn keep_hard_example(&self, call: &Call, edge: Option<&EdgeView>, answer: &Answer) {
        let Some(store) = &self.hard_examples else {
            return;
        };
        let meta = edge.map_or_else(|| self.model.metadata(), |e| e.model.clone());
        store.offer(HardExample::from_answer(
            call,
            &meta.input_shape,
            edge.map(|e| e.scored.probabilities.as_slice()),
            model_ref(&meta),
            answer,
        ));
    }

    /// Says once, at ERROR, that the cloud refuses the edge's token: every later call would
    /// fail the same way until the setting is fixed.
    pub(crate) fn log_refusal(&self, error: &CallError) {
        if let CallError::Refused(message) = error
            && !self.refusal_logged.swap(true, Ordering::Relaxed)
        {
            tracing::error!(
                cloud_says = %message,
                "the cloud refuses the edge's credentials: check --cloud-token / \
                 --cloud-token-file (EDGE_CLOUD_TOKEN); the edge answers by itself meanwhile"
            );
        }
    }

    async fn fall_back(
        &self,
        call: &Call,
        edge: Option<EdgeView>,
        reason: Reason,
        deadline: Instant,
    ) -> Result<Answer, ServeError> {
        let view = match edge {
            Some(v) => v,
            None => self.run_edge(call, self.policy().metric, deadline).await?,
        };
        Ok(self.edge_answer(call, &view, reason))
    }

    fn edge_answer(&self, call: &Call, view: &EdgeView, reason: Reason) -> Answer {
        let (index, confidence) = argmax(&view.scored.probabilities);
        Answer {
            id: call.id.clone(),
            label: view.model.labels[index].clone(),
            class_index: index,
            confidence,
            probabilities: view.scored.probabilities.clone(),
            served_by: Tier::Edge,
            reason,
            degraded: reason.is_fallback(),
            model: model_ref(&view.model),
            timing: Timing {
                queue: view.scored.queue,
                edge_compute: view.scored.compute,
                total: call.received.elapsed(),
                ..Timing::default()
            },
            edge_confidence: view.confidence,
            novelty: view.scored.novelty,
        }
    }

    fn cloud_answer(
        &self,
        call: &Call,
        edge: Option<&EdgeView>,
        cloud: CloudAnswer,
        reason: Reason,
    ) -> Answer {
        let (uplink, downlink) = cloud
            .transit
            .map_or((Duration::ZERO, Duration::ZERO), |t| (t.uplink, t.downlink));
        Answer {
            id: call.id.clone(),
            served_by: Tier::Cloud,
            reason,
            degraded: false,
            edge_confidence: edge.map_or(0.0, |e| e.confidence),
            novelty: edge.map_or(cloud.answer.novelty, |e| e.scored.novelty),
            timing: Timing {
                queue: edge.map_or(Duration::ZERO, |e| e.scored.queue),
                edge_compute: edge.map_or(Duration::ZERO, |e| e.scored.compute),
                uplink,
                cloud: cloud.answer.timing.cloud,
                downlink,
                total: call.received.elapsed(),
            },
            ..cloud.answer
        }
    }

    /// The circuit as the status reports it.
    pub fn circuit_view(&self) -> CircuitView {
        self.circuit.view()
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;

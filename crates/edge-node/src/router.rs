//! The router: where each request is answered (design.md section 5).
//!
//! 1. The budget is the smallest of the request's `latency_budget_ms`, its gRPC deadline and
//!    the server default.
//! 2. A forced placement is obeyed.
//! 3. When the edge's expected completion exceeds the budget and the cloud is expected to fit,
//!    the cloud answers (EDGE_OVERLOADED).
//! 4. The edge model runs; at or above the threshold it answers (CONFIDENT).
//! 5. Otherwise, with the circuit closed and the expected cloud call within what is left of the
//!    budget, the cloud is asked with that remainder as its deadline (LOW_CONFIDENCE); any
//!    failure falls back to the edge's answer, degraded, with the reason.
//! 6. Otherwise the edge answers, degraded (CIRCUIT_OPEN or BUDGET_TOO_SMALL).
//!
//! The router never looks inside the input or the labels: it works from probabilities and the
//! model's metadata.

use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgeinfer::v1::infer_request::Input;
use edgeinfer::v1::{
    ConfidenceMetric, InferRequest, InferResponse, Placement, Policy, Reason, Tier, Timing,
};
use edgeinfer_linksim::Link;
use edgeinfer_model::ModelMetadata;
use edgeinfer_serving::batcher::{BatchError, Batcher, Scored};
use edgeinfer_serving::error::ServeError;
use edgeinfer_serving::metrics::Metrics;
use edgeinfer_serving::node::{Call, Node, argmax, model_ref};
use prost::Message;

use crate::circuit::CircuitBreaker;
use crate::estimates::PathEstimates;
use crate::policy::confidence;
use crate::reserve::FallbackReserve;
use crate::upstream::{CallError, CloudAnswer, Upstream};

/// Encoded size of a cloud answer for a model with `classes` labels: the probabilities
/// dominate; ids, labels and timing add about a hundred bytes.
fn expected_answer_bytes(classes: usize) -> usize {
    classes * 4 + 128
}

/// Answers by reason and by tier since start.
#[derive(Debug, Default)]
pub struct Counters {
    by_reason: [AtomicU64; 9],
    by_tier: [AtomicU64; 3],
}

impl Counters {
    fn count(&self, tier: Tier, reason: Reason) {
        self.by_reason[reason as usize].fetch_add(1, Ordering::Relaxed);
        self.by_tier[tier as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Non-zero counts by reason name.
    pub fn reasons(&self) -> Vec<(String, u64)> {
        (1..9)
            .filter_map(|i| {
                let n = self.by_reason[i].load(Ordering::Relaxed);
                let name = Reason::try_from(i as i32).ok()?.as_str_name().to_string();
                (n > 0).then_some((name, n))
            })
            .collect()
    }

    /// Non-zero counts by tier name.
    pub fn tiers(&self) -> Vec<(String, u64)> {
        (1..3)
            .filter_map(|i| {
                let n = self.by_tier[i].load(Ordering::Relaxed);
                let name = Tier::try_from(i as i32).ok()?.as_str_name().to_string();
                (n > 0).then_some((name, n))
            })
            .collect()
    }
}

/// The edge node: its model, its view of the cloud, and its policy.
pub struct EdgeNode {
    /// The edge model behind its batcher.
    pub(crate) batcher: Batcher,
    /// "name@version" of the edge model.
    model_ref: String,
    /// The cloud, when one is configured.
    pub(crate) upstream: Option<Upstream>,
    /// The simulated link the cloud calls cross (switchable at run time).
    pub(crate) link: Link,
    /// What the edge has learned about the cloud path.
    pub(crate) estimates: Arc<PathEstimates>,
    /// Stops waiting on a cloud that keeps failing.
    pub(crate) circuit: Arc<CircuitBreaker>,
    /// Threshold, default budget, confidence metric.
    pub(crate) policy: RwLock<Policy>,
    /// Answers by reason and tier, for the status.
    pub(crate) counters: Counters,
    /// Request metrics.
    metrics: Metrics,
    /// Start time, for the status's uptime.
    pub(crate) started: Instant,
    /// Time kept back from a cloud call for answering from the edge if the cloud is late.
    pub(crate) reserve: FallbackReserve,
}

/// What the edge model said about one request.
struct EdgeView {
    scored: Scored,
    confidence: f32,
}

impl EdgeNode {
    /// An edge node; `upstream` is `None` when it runs without a cloud.
    pub fn new(
        batcher: Batcher,
        upstream: Option<Upstream>,
        link: Link,
        circuit: Arc<CircuitBreaker>,
        estimates: Arc<PathEstimates>,
        policy: Policy,
        metrics: Metrics,
    ) -> Self {
        Self {
            model_ref: model_ref(batcher.metadata()),
            batcher,
            upstream,
            link,
            estimates,
            circuit,
            policy: RwLock::new(policy),
            counters: Counters::default(),
            metrics,
            started: Instant::now(),
            reserve: FallbackReserve::default(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Policy {
        *self.policy.read().unwrap_or_else(|e| e.into_inner())
    }

    fn meta(&self) -> &ModelMetadata {
        self.batcher.metadata()
    }

    async fn run_edge(
        &self,
        call: &Call,
        metric: ConfidenceMetric,
    ) -> Result<EdgeView, BatchError> {
        let scored = self.batcher.classify(call.input.values.clone()).await?;
        let confidence = confidence(metric, &scored.probabilities);
        Ok(EdgeView { scored, confidence })
    }

    /// The message sent to the cloud: 8-bit pixels when exact (a quarter of the bytes).
    fn cloud_request(&self, call: &Call, remaining: Duration) -> InferRequest {
        let input = if call.input.exact_u8 {
            Input::Raw(call.input.to_u8())
        } else {
            Input::Pixels(edgeinfer::v1::Pixels {
                values: call.input.values.clone(),
            })
        };
        InferRequest {
            id: call.id.clone(),
            input: Some(input),
            latency_budget_ms: remaining.as_millis().clamp(1, u128::from(u32::MAX)) as u32,
            min_confidence: None,
            placement: Placement::Auto as i32,
            model: String::new(),
        }
    }

    /// Whether a cloud call of this size is expected to fit in `remaining`. Before the first
    /// measurement the answer is yes: calling is the only way to learn.
    fn cloud_fits(&self, up_bytes: usize, remaining: Duration) -> bool {
        self.estimates
            .expected_call(up_bytes, expected_answer_bytes(self.meta().labels.len()))
            .is_none_or(|expected| expected <= remaining)
    }

    async fn call_cloud(
        &self,
        upstream: &Upstream,
        request: InferRequest,
        remaining: Duration,
    ) -> Result<CloudAnswer, CallError> {
        let up_bytes = request.encoded_len();
        let started = Instant::now();
        let result = upstream.infer(request, remaining).await;
        if let Err(CallError::Timeout(_)) = &result {
            self.reserve.observe(remaining, started.elapsed());
        }
        match &result {
            Ok(answer) => {
                self.circuit.success();
                if let Some(t) = answer.transit {
                    let cloud_us = answer.response.timing.as_ref().map_or(0, |t| t.cloud_us);
                    self.estimates.observe_exchange(
                        up_bytes,
                        t.uplink,
                        t.downlink_bytes,
                        t.downlink,
                        Duration::from_micros(cloud_us),
                    );
                }
            }
            // A call cut short by a budget below the path's retransmission timeout
            // (SRTT + 4 RTTVAR) was a gamble on a fast exchange, not a test of the cloud:
            // on a heavy-tailed link such calls miss often while the cloud is fine.
            Err(CallError::Timeout(_)) if remaining < self.estimates.rto() => {
                self.circuit.inconclusive();
                tracing::debug!(?remaining, "cloud call ran out of a short budget");
            }
            Err(e) => {
                if self.circuit.failure() {
                    tracing::warn!(error = %e, "circuit to the cloud opened");
                }
                tracing::debug!(error = %e, "cloud call failed");
            }
        }
        result
    }

    fn edge_answer(&self, call: &Call, view: &EdgeView, reason: Reason) -> InferResponse {
        let (index, confidence) = argmax(&view.scored.probabilities);
        InferResponse {
            id: call.id.clone(),
            label: self.meta().labels[index].clone(),
            class_index: index as u32,
            confidence,
            probabilities: view.scored.probabilities.clone(),
            served_by: Tier::Edge as i32,
            reason: reason as i32,
            degraded: reason.is_fallback(),
            model: self.model_ref.clone(),
            timing: Some(Timing {
                queue_us: view.scored.queue.as_micros() as u64,
                edge_compute_us: view.scored.compute.as_micros() as u64,
                total_us: call.received.elapsed().as_micros() as u64,
                ..Timing::default()
            }),
            edge_confidence: view.confidence,
        }
    }

    fn cloud_answer(
        &self,
        call: &Call,
        edge: Option<&EdgeView>,
        answer: CloudAnswer,
        reason: Reason,
    ) -> InferResponse {
        let mut r = answer.response;
        let cloud_us = r.timing.as_ref().map_or(0, |t| t.cloud_us);
        let transit = answer.transit.unwrap_or(edgeinfer_linksim::Transit {
            uplink: Duration::ZERO,
            downlink: Duration::ZERO,
            uplink_bytes: 0,
            downlink_bytes: 0,
        });
        r.id = call.id.clone();
        r.served_by = Tier::Cloud as i32;
        r.reason = reason as i32;
        r.degraded = false;
        r.edge_confidence = edge.map_or(0.0, |e| e.confidence);
        r.timing = Some(Timing {
            queue_us: edge.map_or(0, |e| e.scored.queue.as_micros() as u64),
            edge_compute_us: edge.map_or(0, |e| e.scored.compute.as_micros() as u64),
            uplink_us: transit.uplink.as_micros() as u64,
            cloud_us,
            downlink_us: transit.downlink.as_micros() as u64,
            total_us: call.received.elapsed().as_micros() as u64,
        });
        r
    }

    /// The request's budget: the smallest of its own, its deadline and the default.
    fn budget(&self, call: &Call, policy: &Policy) -> Duration {
        let mut budget = Duration::from_millis(u64::from(policy.default_budget_ms));
        if call.budget_ms > 0 {
            budget = budget.min(Duration::from_millis(u64::from(call.budget_ms)));
        }
        if let Some(d) = call.deadline {
            budget = budget.min(d);
        }
        budget
    }

    fn record(&self, response: InferResponse) -> InferResponse {
        self.counters.count(response.served_by(), response.reason());
        response
    }

    /// Falls back to the edge model after a failed cloud call; runs it now if it has not run.
    async fn fall_back(
        &self,
        call: &Call,
        edge: Option<EdgeView>,
        metric: ConfidenceMetric,
        error: &CallError,
    ) -> Result<InferResponse, ServeError> {
        let reason = match error {
            CallError::Timeout(_) => Reason::CloudTimeout,
            CallError::Unavailable(_) => Reason::CloudUnavailable,
        };
        let view = match edge {
            Some(v) => v,
            None => self.run_edge(call, metric).await?,
        };
        Ok(self.edge_answer(call, &view, reason))
    }

    async fn route(&self, call: Call) -> Result<InferResponse, ServeError> {
        let policy = self.policy();
        let metric = ConfidenceMetric::try_from(policy.confidence_metric)
            .unwrap_or(ConfidenceMetric::MaxProbability);
        // A concrete model's name asks for that model: the edge model answers by itself.
        if call.model == self.meta().name {
            let view = self.run_edge(&call, metric).await?;
            return Ok(self.edge_answer(&call, &view, Reason::Placement));
        }
        let budget = self.budget(&call, &policy);
        let deadline = call.received + budget;
        // The cloud gets the budget less a reserve, so that a fallback after a cloud timeout
        // is still answered within the budget (see `reserve`).
        let reserve = self.reserve.get();
        let remaining = || {
            deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(reserve)
        };
        let threshold = call.min_confidence.unwrap_or(policy.threshold);

        match (call.placement, &self.upstream) {
            (Placement::EdgeOnly, _) | (Placement::CloudOnly, None) => {
                let view = self.run_edge(&call, metric).await?;
                let reason = if self.upstream.is_none() && call.placement == Placement::CloudOnly {
                    Reason::CloudUnavailable
                } else {
                    Reason::Placement
                };
                return Ok(self.edge_answer(&call, &view, reason));
            }
            (Placement::CloudOnly, Some(upstream)) => {
                // The edge answer is ready first (microseconds), so a failed cloud call still
                // gets an answer within the budget.
                let view = self.run_edge(&call, metric).await?;
                let request = self.cloud_request(&call, remaining());
                return match self.call_cloud(upstream, request, remaining()).await {
                    Ok(answer) => {
                        Ok(self.cloud_answer(&call, Some(&view), answer, Reason::Placement))
                    }
                    Err(e) => self.fall_back(&call, Some(view), metric, &e).await,
                };
            }
            (Placement::Auto, _) => {}
        }

        // Step 3: the edge cannot make it in time but the cloud can.
        // The cloud message is built only when the edge is late: not on every request's path.
        if let Some(upstream) = &self.upstream
            && self.batcher.expected_completion() > remaining()
        {
            let request = self.cloud_request(&call, remaining());
            if self.cloud_fits(request.encoded_len(), remaining()) && self.circuit.allow() {
                return match self.call_cloud(upstream, request, remaining()).await {
                    Ok(answer) => {
                        Ok(self.cloud_answer(&call, None, answer, Reason::EdgeOverloaded))
                    }
                    Err(e) => self.fall_back(&call, None, metric, &e).await,
                };
            }
        }

        // Step 4: the edge model.
        let view = match self.run_edge(&call, metric).await {
            Ok(v) => v,
            Err(BatchError::QueueFull(n)) => {
                // The edge's queue is full: the cloud takes it when it can, else refuse now.
                if let Some(upstream) = &self.upstream {
                    let request = self.cloud_request(&call, remaining());
                    if self.cloud_fits(request.encoded_len(), remaining()) && self.circuit.allow() {
                        if let Ok(answer) = self.call_cloud(upstream, request, remaining()).await {
                            return Ok(self.cloud_answer(
                                &call,
                                None,
                                answer,
                                Reason::EdgeOverloaded,
                            ));
                        }
                    }
                }
                return Err(BatchError::QueueFull(n).into());
            }
            Err(e) => return Err(e.into()),
        };
        if view.confidence >= threshold {
            return Ok(self.edge_answer(&call, &view, Reason::Confident));
        }

        // Step 5 and 6: unsure; the cloud if it can answer in time.
        let Some(upstream) = &self.upstream else {
            return Ok(self.edge_answer(&call, &view, Reason::CloudUnavailable));
        };
        let request = self.cloud_request(&call, remaining());
        if !self.cloud_fits(request.encoded_len(), remaining()) {
            return Ok(self.edge_answer(&call, &view, Reason::BudgetTooSmall));
        }
        if !self.circuit.allow() {
            return Ok(self.edge_answer(&call, &view, Reason::CircuitOpen));
        }
        match self.call_cloud(upstream, request, remaining()).await {
            Ok(answer) => Ok(self.cloud_answer(&call, Some(&view), answer, Reason::LowConfidence)),
            Err(e) => self.fall_back(&call, Some(view), metric, &e).await,
        }
    }
}

#[tonic::async_trait]
impl Node for EdgeNode {
    fn models(&self) -> &[ModelMetadata] {
        std::slice::from_ref(self.meta())
    }

    async fn infer(&self, call: Call) -> Result<InferResponse, ServeError> {
        self.route(call).await.map(|r| self.record(r))
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

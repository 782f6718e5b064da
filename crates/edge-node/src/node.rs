//! The edge node: the router over the swappable model and the real cloud client, plus the link it
//! crosses, as the front ends and the admin service see it.

use std::sync::Arc;
use std::time::Duration;

use edgeinfer_linksim::Link;
use edgeinfer_model::ModelMetadata;
use edgeinfer_serving::answer::Answer;
use edgeinfer_serving::error::ServeError;
use edgeinfer_serving::input::InputLimits;
use edgeinfer_serving::metrics::Metrics;
use edgeinfer_serving::model_admin::HasModelSlot;
use edgeinfer_serving::models::ModelSlot;
use edgeinfer_serving::node::{Call, Node};
use tokio::time::Instant;

use crate::router::Router;
use crate::upstream::Upstream;

/// The edge node.
pub struct EdgeNode {
    /// Where each request is answered.
    pub(crate) router: Router<ModelSlot, Upstream>,
    /// The simulated link the cloud calls cross (switchable at run time).
    pub(crate) link: Link,
    /// Request metrics.
    metrics: Metrics,
    /// Limits on each request's input.
    limits: InputLimits,
    /// Start time, for the status's uptime.
    pub(crate) started: Instant,
}

impl EdgeNode {
    /// An edge node routing with `router` over `link`, decoding inputs within `limits`.
    pub fn new(
        router: Router<ModelSlot, Upstream>,
        link: Link,
        metrics: Metrics,
        limits: InputLimits,
    ) -> Self {
        Self {
            router,
            link,
            metrics,
            limits,
            started: Instant::now(),
        }
    }

    /// Probes the cloud through the link every `every`: keeps the round-trip estimate fresh,
    /// and lets a recovered cloud close the circuit without sacrificing a user's request. A
    /// probe is a trial like any call: it waits for the circuit's permission, and a cloud
    /// that refuses the edge's token fails it (health checks carry the token too).
    pub async fn probe_loop(&self, every: Duration) {
        let Some(cloud) = &self.router.cloud else {
            return;
        };
        loop {
            if let Some(permit) = self.router.circuit.permit() {
                match cloud.probe(self.router.estimates.rto()).await {
                    Ok(rtt) => {
                        self.router.estimates.observe_rtt(rtt);
                        permit.success();
                    }
                    Err(e) => {
                        if permit.failure() {
                            tracing::warn!(error = %e, "circuit to the cloud opened by probes");
                        }
                        self.router.log_refusal(&e);
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    }
}

#[tonic::async_trait]
impl Node for EdgeNode {
    fn models(&self) -> Arc<[ModelMetadata]> {
        self.router.model.current().listed.clone()
    }

    async fn infer(&self, call: Call) -> Result<Answer, ServeError> {
        self.router.route(&call).await
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn limits(&self) -> InputLimits {
        self.limits
    }

    fn served(&self) -> Option<Arc<edgeinfer_serving::models::Served>> {
        Some(self.router.model.current())
    }
}

impl HasModelSlot for EdgeNode {
    fn model_slot(&self) -> &ModelSlot {
        &self.router.model
    }
}

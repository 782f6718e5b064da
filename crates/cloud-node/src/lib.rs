//! The cloud node: serves the larger full-precision model behind the edge, with the same native
//! and Open Inference Protocol services, health, reflection and metrics.
//!
//! Invariant: the cloud knows nothing of the edge, its router or the link; to it the edge is
//! just another client. Every answer is its model's, so `served_by` is CLOUD, and
//! `timing.cloud_us` reports the time spent here so the edge can tell link time from compute.
//!
//! # Layout
//!
//! - [`config`]: flags and `CLOUD_*` environment twins.
//! - [`CloudNode`]: the [`Node`] that answers calls with the model.
//! - [`prepare`]: the model and TLS files, loaded and checked before any port is bound.
//! - [`run`]: the whole server on given listeners until shutdown.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use edgeinfer_model::{Classifier, ModelMetadata};
use edgeinfer_serving::answer::{Answer, Reason, Tier, Timing};
use edgeinfer_serving::auth::{BearerAuthLayer, token_setting};
use edgeinfer_serving::batcher::Batcher;
use edgeinfer_serving::error::ServeError;
use edgeinfer_serving::metrics::{Exposition, Metrics, serve_metrics};
use edgeinfer_serving::node::{Call, Node, argmax, model_ref};
use edgeinfer_serving::server::{Listeners, node_routes, serve};
use edgeinfer_serving::telemetry::TraceContextLayer;
use futures::FutureExt;
use prometheus_client::registry::Registry;
use tonic::transport::ServerTlsConfig;

pub use config::CloudConfig;

/// The cloud's model behind its batcher.
pub struct CloudNode {
    batcher: Batcher,
    metrics: Metrics,
    model_ref: String,
}

impl CloudNode {
    /// Wraps `model`, registering the metrics in `registry`.
    pub fn new(model: Arc<dyn Classifier>, config: &CloudConfig, registry: &mut Registry) -> Self {
        let metrics = Metrics::register(registry, model.metadata());
        let model_ref = model_ref(model.metadata());
        Self {
            batcher: Batcher::new(model, config.batcher(), metrics.batcher.clone()),
            metrics,
            model_ref,
        }
    }
}

#[tonic::async_trait]
impl Node for CloudNode {
    fn models(&self) -> &[ModelMetadata] {
        std::slice::from_ref(self.batcher.metadata())
    }

    async fn infer(&self, call: Call) -> Result<Answer, ServeError> {
        let scored = self.batcher.classify(call.input.values).await?;
        let (index, confidence) = argmax(&scored.probabilities);
        let total = call.received.elapsed();
        Ok(Answer {
            id: call.id,
            label: self.batcher.metadata().labels[index].clone(),
            class_index: index,
            confidence,
            probabilities: scored.probabilities,
            served_by: Tier::Cloud,
            reason: Reason::Confident,
            degraded: false,
            model: self.model_ref.clone(),
            timing: Timing {
                queue: scored.queue,
                cloud: total,
                total,
                ..Timing::default()
            },
            edge_confidence: 0.0,
        })
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// Everything the configuration names, loaded and checked before any port is bound.
#[derive(Clone)]
pub struct Prepared {
    /// The settings.
    pub config: CloudConfig,
    /// The cloud model.
    pub model: Arc<dyn Classifier>,
    /// The server's TLS settings; `None` for plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// The bearer token clients must present; `None` accepts any caller.
    pub auth_token: Option<String>,
}

/// Loads the model and the TLS files named in `config`, naming the setting at fault in the
/// error.
pub fn prepare(config: CloudConfig) -> anyhow::Result<Prepared> {
    let tls = config.server_tls()?;
    let auth_token = token_setting(
        &config.auth_token,
        config.auth_token_file.as_deref(),
        "--auth-token",
    )?;
    let model = edgeinfer_model::load_classifier(&config.model)
        .with_context(|| format!("--model / CLOUD_MODEL {}", config.model.display()))?;
    Ok(Prepared {
        config,
        model,
        tls,
        auth_token,
    })
}

/// Serves the cloud node on `listeners` until `shutdown` completes, then finishes the requests
/// in flight and returns.
pub async fn run(
    prepared: Prepared,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Prepared {
        config,
        model,
        tls,
        auth_token,
    } = prepared;
    let mut registry = Registry::with_prefix("edgeinfer");
    let node = Arc::new(CloudNode::new(model, &config, &mut registry));
    let shutdown = shutdown.shared();
    if let Some(listener) = listeners.metrics {
        let exposition = Exposition {
            triton: node.metrics.triton.clone(),
            registry,
        };
        tokio::spawn(serve_metrics(
            listener,
            Arc::new(exposition),
            shutdown.clone(),
        ));
    }
    let (routes, names) = node_routes(node, "edgeinfer-cloud", config.max_message_bytes);
    if auth_token.is_none() {
        tracing::warn!("no auth token set: inference calls are accepted without credentials");
    }
    let auth = BearerAuthLayer::new(auth_token);
    let trace = TraceContextLayer::new("cloud");
    serve(trace, listeners.grpc, routes, names, auth, tls, shutdown)
        .await
        .context("gRPC server failed")
}

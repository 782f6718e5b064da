//! The cloud node: serves the larger full-precision model behind the edge, with the same native
//! and Open Inference Protocol services, health, reflection and metrics, and the Open
//! Inference Protocol over HTTP on its own listener.
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
use edgeinfer_model::ModelMetadata;
use edgeinfer_serving::answer::{Answer, Reason, Tier, Timing};
use edgeinfer_serving::auth::BearerAuthLayer;
use edgeinfer_serving::error::ServeError;
use edgeinfer_serving::input::InputLimits;
use edgeinfer_serving::limits::Gate;
use edgeinfer_serving::metrics::{Exposition, Metrics, serve_metrics};
use edgeinfer_serving::model_admin::{
    HasModelSlot, add_model_control, reload_on_signal_and_change,
};
use edgeinfer_serving::models::ModelSlot;
use edgeinfer_serving::node::{Call, Node, argmax};
use edgeinfer_serving::oip_http::{HttpSettings, serve_optional_http};
use edgeinfer_serving::repository::StartingModel;
use edgeinfer_serving::server::{GrpcSettings, Listeners, node_routes, serve};
use edgeinfer_serving::telemetry::TraceContextLayer;
use edgeinfer_serving::tls::HttpTlsConfig;
use futures::FutureExt;
use prometheus_client::registry::Registry;
use tonic::service::RoutesBuilder;
use tonic::transport::ServerTlsConfig;

pub use config::CloudConfig;

/// The cloud's model (swappable) behind its batcher.
pub struct CloudNode {
    /// The model in service; each answer names the version that produced it.
    model: ModelSlot,
    metrics: Metrics,
    limits: InputLimits,
}

impl CloudNode {
    /// Serves `model`, registering the metrics in `registry`.
    pub fn new(model: StartingModel, config: &CloudConfig, registry: &mut Registry) -> Self {
        let metrics = Metrics::register(registry, model.model.metadata());
        Self {
            model: model.into_slot(config.node.batcher(), metrics.batcher.clone()),
            metrics,
            limits: config.node.input_limits(),
        }
    }

    /// The model in service, for loading another.
    pub fn model(&self) -> &ModelSlot {
        &self.model
    }
}

#[tonic::async_trait]
impl Node for CloudNode {
    fn models(&self) -> Arc<[ModelMetadata]> {
        self.model.current().listed.clone()
    }

    async fn infer(&self, call: Call) -> Result<Answer, ServeError> {
        // Held until the answer: the request finishes on the model it started with.
        let served = self.model.current();
        let ends = call.ends();
        let scored = served.classify(call.input.values, ends).await?;
        let (index, confidence) = argmax(&scored.probabilities);
        let total = call.received.elapsed();
        Ok(Answer {
            id: call.id,
            label: served.meta.labels[index].clone(),
            class_index: index,
            confidence,
            probabilities: scored.probabilities,
            served_by: Tier::Cloud,
            reason: Reason::Confident,
            degraded: false,
            model: served.model_ref.clone(),
            timing: Timing {
                queue: scored.queue,
                cloud: total,
                total,
                ..Timing::default()
            },
            edge_confidence: 0.0,
            novelty: scored.novelty,
        })
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn limits(&self) -> InputLimits {
        self.limits
    }

    fn served(&self) -> Option<Arc<edgeinfer_serving::models::Served>> {
        Some(self.model.current())
    }
}

impl HasModelSlot for CloudNode {
    fn model_slot(&self) -> &ModelSlot {
        &self.model
    }
}

/// Everything the configuration names, loaded and checked before any port is bound.
#[derive(Clone)]
pub struct Prepared {
    /// The settings.
    pub config: CloudConfig,
    /// The cloud model.
    pub model: StartingModel,
    /// The server's TLS settings; `None` for plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// The bearer token clients must present; `None` accepts any caller.
    pub auth_token: Option<String>,
    /// The HTTP listener's TLS settings (the same files as `tls`); `None` for plaintext.
    pub http_tls: Option<Arc<HttpTlsConfig>>,
    /// The bearer token admin calls must present; `None` accepts any caller.
    pub admin_token: Option<String>,
}

/// Loads the model and the TLS files named in `config`, naming the setting at fault in the
/// error.
pub fn prepare(config: CloudConfig) -> anyhow::Result<Prepared> {
    let tls = config.node.server_tls("CLOUD")?;
    let http_tls = config.node.http_tls("CLOUD")?;
    let auth_token = config.node.data_token()?;
    let admin_token = config.node.admin_token()?;
    let model = StartingModel::load(
        &config.model,
        config.node.model_repository.as_deref(),
        &config.repository_model,
        "CLOUD",
    )?;
    Ok(Prepared {
        config,
        model,
        tls,
        auth_token,
        http_tls,
        admin_token,
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
        http_tls,
        admin_token,
    } = prepared;
    let mut registry = Registry::with_prefix("edgeinfer");
    let node = Arc::new(CloudNode::new(model, &config, &mut registry));
    let shutdown = shutdown.shared();
    let reloads = tokio::spawn(reload_on_signal_and_change(
        node.clone(),
        config.node.model_watch(),
    ));
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
    let limits = config.node.server_limits();
    let gate = Gate::new(limits.max_concurrent_requests);
    let (routes, names) = node_routes(node.clone(), SERVER_NAME, &limits, &gate);
    if auth_token.is_none() {
        tracing::warn!("no auth token set: inference calls are accepted without credentials");
    }
    let auth = BearerAuthLayer::new(auth_token);
    let http_auth = auth.clone();
    let http = serve_optional_http(
        listeners.http,
        node.clone(),
        SERVER_NAME,
        HttpSettings {
            limits,
            gate,
            auth: http_auth,
            tls: http_tls,
        },
        shutdown.clone(),
    )
    .map(|r| r.context("OIP HTTP server failed"));
    let data = serve(
        TraceContextLayer::new("cloud"),
        listeners.grpc,
        routes,
        names,
        GrpcSettings {
            auth,
            tls: tls.clone(),
            limits,
        },
        shutdown.clone(),
    );
    // The admin plane: model control on its own listener with its own token; the data port
    // does not serve it (UNIMPLEMENTED there).
    let admin = async {
        let Some(listener) = listeners.admin else {
            return Ok(());
        };
        if admin_token.is_none() {
            tracing::warn!(
                "no admin token set: anyone who reaches the admin listener can load a model \
                 (set --admin-token or --admin-token-file)"
            );
        }
        let mut routes = RoutesBuilder::default();
        let names = add_model_control(&mut routes, node, limits.max_message_bytes);
        serve(
            TraceContextLayer::new("cloud-admin"),
            listener,
            routes,
            names.to_vec(),
            GrpcSettings {
                auth: BearerAuthLayer::new(admin_token),
                tls,
                limits,
            },
            shutdown,
        )
        .await
    };
    let grpc = async { tokio::try_join!(data, admin).context("gRPC server failed") };
    let result = tokio::try_join!(grpc, http).map(|_| ());
    reloads.abort();
    result
}

/// The name the node gives itself in OIP server metadata.
const SERVER_NAME: &str = "edgeinfer-cloud";

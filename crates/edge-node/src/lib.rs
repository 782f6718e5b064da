//! The edge node: serves its own quantized model and routes each request between that model and
//! the cloud over the simulated link, falling back to its own answer when the cloud cannot
//! answer in time.
//!
//! Invariant: the router knows nothing of MNIST; it works from the model's metadata and
//! probabilities. The link is reached only through `edgeinfer_linksim`'s tower layer.
//!
//! # Layout
//!
//! - [`config`]: flags and `EDGE_*` environment twins.
//! - [`decide`]: the routing decision as pure functions of a snapshot and a request, returning
//!   a plan.
//! - [`router`]: the executor of plans, generic over the edge model and the cloud, with one
//!   "call the cloud or fall back" path.
//! - [`node`]: the [`node::EdgeNode`]: the router over the batcher and the cloud client.
//! - [`policy`]: threshold, budget and confidence metrics.
//! - [`estimates`]: online estimates of the cloud path (RFC 6298 round trip, rates, cloud time).
//! - [`circuit`]: the circuit breaker in front of the cloud.
//! - [`reserve`]: the part of a budget kept back for a fallback answer, learned from how late
//!   timers fire.
//! - [`upstream`]: the cloud client through the link, balanced over the cloud's addresses.
//! - [`admin`]: the `EdgeAdmin` service (`ModelAdmin`, shared with the cloud, lives in
//!   `edgeinfer_serving::model_admin`).
//! - [`router_metrics`]: the router's and the link's figures, read at each scrape.
//! - [`hard_examples`]: the bounded on-disk store of the cloud's answers to the edge's
//!   requests (`--hard-examples-dir`), and its reader.
//! - [`run`]: the whole edge server until shutdown.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod circuit;
pub mod config;
pub mod decide;
pub mod estimates;
pub mod hard_examples;
pub mod node;
pub mod policy;
pub mod reserve;
pub mod router;
pub mod router_metrics;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use edgeinfer::service_names;
use edgeinfer::v1::edge_admin_server::EdgeAdminServer;
use edgeinfer_linksim::{Link, LinkProfile, TraceSource};
use edgeinfer_serving::auth::BearerAuthLayer;
use edgeinfer_serving::limits::Gate;
use edgeinfer_serving::metrics::{Exposition, Metrics, serve_metrics};
use edgeinfer_serving::model_admin::{add_model_control, reload_on_signal_and_change};
use edgeinfer_serving::oip_http::{HttpSettings, serve_optional_http};
use edgeinfer_serving::repository::StartingModel;
use edgeinfer_serving::server::{GrpcSettings, Listeners, node_routes, serve};
use edgeinfer_serving::telemetry::TraceContextLayer;
use edgeinfer_serving::tls::HttpTlsConfig;
use futures::FutureExt;
use prometheus_client::registry::Registry;
use tonic::service::RoutesBuilder;
use tonic::transport::{ClientTlsConfig, ServerTlsConfig};

pub use config::{EdgeConfig, Tokens};

use crate::circuit::CircuitBreaker;
use crate::hard_examples::HardExampleStore;
use crate::node::EdgeNode;
use crate::policy::Policy;
use crate::router::Router;
use crate::upstream::Upstream;

/// Everything the configuration names, loaded and checked before any port is bound.
pub struct Prepared {
    /// The settings.
    pub config: EdgeConfig,
    /// The edge model.
    pub model: StartingModel,
    /// The link profile.
    pub profile: LinkProfile,
    /// The server's TLS settings; `None` for plaintext.
    pub server_tls: Option<ServerTlsConfig>,
    /// TLS to the cloud, for an https:// cloud URL.
    pub cloud_tls: Option<ClientTlsConfig>,
    /// The bearer tokens, read from their values or files.
    pub tokens: Tokens,
    /// Where trace files named by profile documents from `SetLinkProfile` may be.
    pub traces: TraceSource,
    /// The HTTP listener's TLS settings (the same files as `server_tls`); `None` for plaintext.
    pub http_tls: Option<Arc<HttpTlsConfig>>,
    /// The hard-example store (its writer thread started), when `--hard-examples-dir` is set.
    pub hard_examples: Option<HardExampleStore>,
}

/// Loads the model, the link profile and the TLS files and checks the cloud address, naming
/// the setting at fault in the error.
pub fn prepare(config: EdgeConfig) -> anyhow::Result<Prepared> {
    let model = StartingModel::load(
        &config.model,
        config.node.model_repository.as_deref(),
        &config.repository_model,
        "EDGE",
    )?;
    let profile = LinkProfile::resolve(&config.link_profile).with_context(|| {
        format!(
            "--link-profile / EDGE_LINK_PROFILE {:?}",
            config.link_profile
        )
    })?;
    let server_tls = config.node.server_tls("EDGE")?;
    let http_tls = config.node.http_tls("EDGE")?;
    let tokens = config.tokens()?;
    let traces = match &config.link_trace_dir {
        None => TraceSource::None,
        Some(dir) => TraceSource::dir(dir)
            .with_context(|| format!("--link-trace-dir / EDGE_LINK_TRACE_DIR {}", dir.display()))?,
    };
    let hard_examples = match &config.hard_examples_dir {
        Some(dir) => Some(
            HardExampleStore::open(dir, config.hard_examples_max_bytes).with_context(|| {
                format!(
                    "--hard-examples-dir / EDGE_HARD_EXAMPLES_DIR {}",
                    dir.display()
                )
            })?,
        ),
        None => None,
    };
    let files = config.cloud_tls_files();
    let cloud_tls = if config.has_cloud() {
        let address = upstream::parse_address(&config.cloud)?;
        if address.tls {
            Some(files.config(&address.host)?)
        } else {
            None
        }
    } else {
        None
    };
    if files.any() && cloud_tls.is_none() {
        anyhow::bail!(
            "--cloud-ca, --cloud-tls-cert and --cloud-tls-key need an https:// cloud URL; \
             --cloud / EDGE_CLOUD is {:?}",
            config.cloud
        );
    }
    Ok(Prepared {
        config,
        model,
        profile,
        server_tls,
        cloud_tls,
        tokens,
        traces,
        http_tls,
        hard_examples,
    })
}

/// Serves the edge node on `listeners` until `shutdown` completes, then finishes the requests
/// in flight and returns.
pub async fn run(
    prepared: Prepared,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Prepared {
        config,
        model,
        profile,
        server_tls,
        cloud_tls,
        tokens,
        traces,
        http_tls,
        hard_examples,
    } = prepared;
    let mut registry = Registry::with_prefix("edgeinfer");
    let metrics = Metrics::register(&mut registry, model.model.metadata());
    let triton = metrics.triton.clone();
    let link = Link::new(profile, config.link_seed).with_timer(config.link_timer);
    let upstream = if config.has_cloud() {
        Some(Upstream::new(
            &config.cloud,
            link.clone(),
            tokens.cloud.as_deref(),
            Duration::from_millis(config.cloud_resolve_ms),
            cloud_tls,
        )?)
    } else {
        tracing::warn!("no cloud configured: the edge answers everything itself");
        None
    };
    let slot = model.into_slot(config.node.batcher(), metrics.batcher.clone());
    let policy = Policy {
        threshold: config.threshold,
        default_budget: Duration::from_millis(u64::from(config.budget_ms)),
        metric: config.confidence_metric,
    };
    let circuit = CircuitBreaker::new(
        config.circuit_failures,
        Duration::from_millis(config.circuit_cooldown_ms),
    );
    let node = Arc::new(EdgeNode::new(
        Router::new(slot, upstream, circuit, policy).with_hard_examples(hard_examples),
        link,
        metrics,
        config.node.input_limits(),
    ));

    let shutdown = shutdown.shared();
    let mut background = Vec::new();
    background.push(tokio::spawn(reload_on_signal_and_change(
        node.clone(),
        config.node.model_watch(),
    )));
    if config.probe_interval_ms > 0 {
        let node = node.clone();
        let every = Duration::from_millis(config.probe_interval_ms);
        background.push(tokio::spawn(async move { node.probe_loop(every).await }));
    }
    if let Some(listener) = listeners.metrics {
        registry.register_collector(Box::new(router_metrics::RouterCollector {
            node: node.clone(),
        }));
        tokio::spawn(serve_metrics(
            listener,
            Arc::new(Exposition { triton, registry }),
            shutdown.clone(),
        ));
    }
    let limits = config.node.server_limits();
    let gate = Gate::new(limits.max_concurrent_requests);
    let (routes, names) = node_routes(node.clone(), SERVER_NAME, &limits, &gate);
    let data_auth = BearerAuthLayer::new(tokens.data);
    let data = serve(
        TraceContextLayer::new("edge"),
        listeners.grpc,
        routes,
        names,
        GrpcSettings {
            auth: data_auth.clone(),
            tls: server_tls.clone(),
            limits,
        },
        shutdown.clone(),
    );
    // OIP over HTTP: the same node (so through the router), token and TLS files as gRPC.
    let http = serve_optional_http(
        listeners.http,
        node.clone(),
        SERVER_NAME,
        HttpSettings {
            limits,
            gate,
            auth: data_auth,
            tls: http_tls,
        },
        shutdown.clone(),
    )
    .map(|r| r.context("OIP HTTP server failed"));
    // The admin plane: control calls on their own listener, with their own token, the same
    // TLS as the data plane. The data port does not serve them at all (UNIMPLEMENTED there).
    let admin = async {
        let Some(listener) = listeners.admin else {
            return Ok(());
        };
        if tokens.admin.is_none() {
            tracing::warn!(
                "no admin token set: anyone who reaches the admin listener can change the policy \
                 and the link (set --admin-token or --admin-token-file)"
            );
        }
        let mut routes = RoutesBuilder::default();
        routes.add_service(EdgeAdminServer::new(admin::AdminService::new(
            node.clone(),
            traces,
        )));
        let mut names = vec![service_names::EDGE_ADMIN];
        names.extend(add_model_control(
            &mut routes,
            node,
            limits.max_message_bytes,
        ));
        serve(
            TraceContextLayer::new("edge-admin"),
            listener,
            routes,
            names,
            GrpcSettings {
                auth: BearerAuthLayer::new(tokens.admin),
                tls: server_tls,
                limits,
            },
            shutdown,
        )
        .await
    };
    let grpc = async { tokio::try_join!(data, admin).context("gRPC server failed") };
    let result = tokio::try_join!(grpc, http).map(|_| ());
    for task in background {
        task.abort();
    }
    result
}

/// The name the node gives itself in OIP server metadata.
const SERVER_NAME: &str = "edgeinfer-edge";

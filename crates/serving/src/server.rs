//! Assembles a node's gRPC server: its services plus health and reflection (v1 and v1alpha,
//! since grpcurl 1.8 asks v1alpha), on one listener, with graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use edgeinfer::FILE_DESCRIPTOR_SET;
use edgeinfer::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use edgeinfer::service_names;
use edgeinfer::v1::inference_server::InferenceServer;
use tokio::net::TcpListener;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::auth::BearerAuthLayer;
use crate::limits::{Gate, ServerLimits};
use crate::native::NativeService;
use crate::node::Node;
use crate::oip::OipService;
use crate::telemetry::TraceContextLayer;

/// Largest gRPC message accepted or sent by default. Open Inference Protocol batches are the
/// big ones (1,024 rows of 784 floats is about 3.2 MB); image fields have their own,
/// smaller limit.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The listeners a node serves on, bound by the caller (port 0 in tests) so that every
/// configuration error is found before anything is bound.
pub struct Listeners {
    /// gRPC data plane: inference only.
    pub grpc: TcpListener,
    /// gRPC admin plane: control calls only, never on the data port; `None` when disabled.
    pub admin: Option<TcpListener>,
    /// Prometheus metrics, when enabled.
    pub metrics: Option<TcpListener>,
    /// The Open Inference Protocol over HTTP (`/v2/...`), when enabled.
    pub http: Option<TcpListener>,
}

/// The services every node serves: the native API and the Open Inference Protocol, admitting
/// inference requests through `gate`, with the service names health checks report on.
pub fn node_routes<N: Node>(
    node: Arc<N>,
    server_name: &str,
    limits: &ServerLimits,
    gate: &Gate,
) -> (RoutesBuilder, Vec<&'static str>) {
    let bytes = limits.max_message_bytes;
    let mut routes = RoutesBuilder::default();
    routes
        .add_service(
            InferenceServer::new(NativeService::new(
                node.clone(),
                gate.clone(),
                limits.max_stream_frames,
            ))
            .max_decoding_message_size(bytes)
            .max_encoding_message_size(bytes),
        )
        .add_service(
            GrpcInferenceServiceServer::new(OipService::new(node, server_name, gate.clone()))
                .max_decoding_message_size(bytes)
                .max_encoding_message_size(bytes),
        );
    (routes, vec![service_names::INFERENCE, service_names::OIP])
}

/// How a gRPC listener admits connections and calls.
#[derive(Clone)]
pub struct GrpcSettings {
    /// Guards every service but health and reflection.
    pub auth: BearerAuthLayer,
    /// TLS; `None` for plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// Streams per connection, call time, idle connections.
    pub limits: ServerLimits,
}

/// Serves `routes` plus health and reflection on `listener` with `settings`, until `shutdown`
/// completes. On shutdown it reports NOT_SERVING, stops accepting, and returns once in-flight
/// requests are answered. `trace` makes each request's span and names the listener in logs
/// ("edge", "edge-admin", "cloud").
pub async fn serve(
    trace: TraceContextLayer,
    listener: TcpListener,
    mut routes: RoutesBuilder,
    service_names: Vec<&'static str>,
    settings: GrpcSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let GrpcSettings { auth, tls, limits } = settings;
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in service_names.iter().copied().chain([""]) {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    // Reflection lists only what this node serves (the descriptor set also describes the
    // other node's services, which would answer UNIMPLEMENTED here).
    let reflection = || {
        service_names
            .iter()
            .copied()
            .chain(["grpc.health.v1.Health"])
            .fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
                |builder, name| builder.with_service_name(name),
            )
    };
    routes
        .add_service(health)
        .add_service(
            reflection()
                .build_v1()
                .expect("the embedded descriptor sets are valid"),
        )
        .add_service(
            reflection()
                .build_v1alpha()
                .expect("the embedded descriptor sets are valid"),
        );
    // Small messages dominate: without TCP_NODELAY, Nagle and delayed ACKs add tens of ms.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut server = Server::builder()
        .max_concurrent_streams(limits.max_streams_per_connection)
        .timeout(limits.request_timeout)
        .http2_keepalive_interval(Some(limits.connection_timeout))
        .http2_keepalive_timeout(Some(limits.connection_timeout));
    match tls {
        Some(tls) => server = server.tls_config(tls)?,
        None => tracing::warn!(
            listener = trace.node(),
            "serving gRPC in plaintext: no TLS certificate set"
        ),
    }
    server
        // The request's span first, child of the caller's `traceparent`: a refused request
        // is part of the caller's trace too.
        .layer(trace)
        // Authentication next: nothing runs for a request that presents no valid token.
        .layer(auth)
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            for name in service_names.iter().copied().chain([""]) {
                reporter
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            tracing::info!("shutting down: finishing requests in flight");
        })
        .await
}

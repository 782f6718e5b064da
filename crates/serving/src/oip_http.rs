//! The Open Inference Protocol over HTTP/REST (KServe v2, Triton's HTTP API) on a node's own
//! listener: health, server and model metadata, model configuration (which Triton's clients
//! and `perf_analyzer` read), readiness and inference with JSON or binary tensors.
//!
//! A transcoder, not a second front end: every route turns its request into the gRPC
//! binding's message ([`crate::oip_json`]) and calls the node's [`OipService`], so decoding,
//! validation, routing (the edge's calls go through its router), tracing and metrics are the
//! gRPC ones. Errors come back as `{"error": "..."}` with the HTTP status that
//! [`crate::error::http_status`] gives the gRPC code.
//!
//! The stack, outermost first: TLS (when configured, the same files as the gRPC listener),
//! HTTP/1.1 (hyper, with a bound on the time to send headers), the bearer token (the same rule
//! and token as gRPC; `/v2/health/*` open), then the axum router. Bodies are read up to a limit
//! named in the refusal (413).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use edgeinfer::inference::grpc_inference_service_server::GrpcInferenceService;
use edgeinfer::inference::{
    ModelMetadataRequest, ModelReadyRequest, ServerMetadataRequest, ServerReadyRequest,
};
use http::{HeaderMap, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tonic::Status;
use tower::ServiceExt;

use crate::auth::BearerAuthLayer;
use crate::error::http_status;
use crate::limits::{Gate, ServerLimits};
use crate::node::Node;
use crate::oip::OipService;
use crate::oip_json::{self, HEADER_LENGTH};

/// Settings of the HTTP listener.
#[derive(Clone)]
pub struct HttpSettings {
    /// The node's limits: the largest request body read (`--max-message-bytes`), and the time
    /// a client has to complete the TLS handshake and to send a request's head before its
    /// connection is closed (`--connection-timeout-ms`: an idle half-open connection must not
    /// hold a task for ever).
    pub limits: ServerLimits,
    /// The node's gate on inference requests in progress, shared with its gRPC listener.
    pub gate: Gate,
    /// The data-plane token rule, the gRPC listener's.
    pub auth: BearerAuthLayer,
    /// TLS, from the same files as the gRPC listener; `None` for plaintext.
    pub tls: Option<Arc<ServerConfig>>,
}

/// What every route needs.
struct Shared<N> {
    oip: OipService<N>,
    /// Most rows one request may carry: the configuration's `max_batch_size`.
    max_batch_rows: usize,
    max_body_bytes: usize,
}

/// The path's model and, on `/versions/{version}` routes, version.
#[derive(Deserialize)]
struct ModelPath {
    model: String,
    #[serde(default)]
    version: String,
}

/// The routes of the OIP HTTP binding over `node`; `server_name` is what `GET /v2` reports.
pub fn router<N: Node>(
    node: Arc<N>,
    server_name: &str,
    max_body_bytes: usize,
    gate: Gate,
) -> Router {
    let shared = Arc::new(Shared {
        max_batch_rows: node.limits().max_batch_rows,
        oip: OipService::new(node, server_name, gate),
        max_body_bytes,
    });
    Router::new()
        .route("/v2", get(server_metadata::<N>))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(server_ready::<N>))
        .route("/v2/models/{model}", get(model_metadata::<N>))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(model_metadata::<N>),
        )
        .route("/v2/models/{model}/ready", get(model_ready::<N>))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready::<N>),
        )
        .route("/v2/models/{model}/config", get(model_config::<N>))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(model_config::<N>),
        )
        .route("/v2/models/{model}/infer", post(infer::<N>))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer::<N>),
        )
        .fallback(|req: Request<Body>| async move {
            error(
                StatusCode::NOT_FOUND,
                format!(
                    "{} {}: no such route; this server answers the Open Inference Protocol under /v2",
                    req.method(),
                    req.uri().path()
                ),
            )
        })
        .method_not_allowed_fallback(|req: Request<Body>| async move {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on {}", req.method(), req.uri().path()),
            )
        })
        .with_state(shared)
}

/// An OIP error answer.
fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_response(status, &json!({"error": message.into()}))
}

/// The HTTP answer to a refused call.
fn refused(status: &Status) -> Response<Body> {
    error(http_status(status.code()), status.message())
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(value.to_string()))
        .expect("static headers are valid")
}

async fn server_metadata<N: Node>(State(s): State<Arc<Shared<N>>>) -> Response<Body> {
    match s
        .oip
        .server_metadata(tonic::Request::new(ServerMetadataRequest {}))
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            json_response(
                StatusCode::OK,
                &json!({"name": r.name, "version": r.version, "extensions": ["binary_tensor_data"]}),
            )
        }
        Err(status) => refused(&status),
    }
}

async fn server_ready<N: Node>(State(s): State<Arc<Shared<N>>>) -> Response<Body> {
    match s
        .oip
        .server_ready(tonic::Request::new(ServerReadyRequest {}))
        .await
    {
        Ok(r) if r.get_ref().ready => empty(StatusCode::OK),
        Ok(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the node serves no model"),
        Err(status) => refused(&status),
    }
}

async fn model_ready<N: Node>(
    State(s): State<Arc<Shared<N>>>,
    Path(p): Path<ModelPath>,
) -> Response<Body> {
    // Metadata first: an unknown model or version is 404, as on every other model route.
    if let Err(status) = metadata(&s, &p).await {
        return refused(&status);
    }
    let request = ModelReadyRequest {
        name: p.model,
        version: p.version,
    };
    match s.oip.model_ready(tonic::Request::new(request)).await {
        Ok(r) if r.get_ref().ready => empty(StatusCode::OK),
        Ok(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the model is not ready"),
        Err(status) => refused(&status),
    }
}

async fn metadata<N: Node>(
    s: &Shared<N>,
    p: &ModelPath,
) -> Result<edgeinfer::inference::ModelMetadataResponse, Status> {
    let request = ModelMetadataRequest {
        name: p.model.clone(),
        version: p.version.clone(),
    };
    Ok(s.oip
        .model_metadata(tonic::Request::new(request))
        .await?
        .into_inner())
}

async fn model_metadata<N: Node>(
    State(s): State<Arc<Shared<N>>>,
    Path(p): Path<ModelPath>,
) -> Response<Body> {
    match metadata(&s, &p).await {
        Ok(m) => json_response(StatusCode::OK, &oip_json::model_metadata(&m)),
        Err(status) => refused(&status),
    }
}

async fn model_config<N: Node>(
    State(s): State<Arc<Shared<N>>>,
    Path(p): Path<ModelPath>,
) -> Response<Body> {
    match metadata(&s, &p).await {
        Ok(m) => json_response(
            StatusCode::OK,
            &oip_json::model_config(&m, s.max_batch_rows),
        ),
        Err(status) => refused(&status),
    }
}

async fn infer<N: Node>(
    State(s): State<Arc<Shared<N>>>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let failed = |code: tonic::Code| s.oip.node().metrics().failed(code);
    let bytes = match read_body(&headers, body, s.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err((status, message)) => {
            failed(tonic::Code::InvalidArgument);
            return error(status, message);
        }
    };
    let parsed = match parse_request(&p, &headers, &bytes) {
        Ok(parsed) => parsed,
        Err(status) => {
            failed(status.code());
            return refused(&status);
        }
    };
    // The gRPC service counts its own refusals and answers.
    let answer = match s.oip.model_infer(tonic::Request::new(parsed.request)).await {
        Ok(r) => r.into_inner(),
        Err(status) => return refused(&status),
    };
    let (bytes, header_length) = oip_json::infer_response(answer, parsed.binary_output);
    let builder = Response::builder().status(StatusCode::OK);
    let builder = match header_length {
        Some(n) => builder
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(HEADER_LENGTH, n),
        None => builder.header(header::CONTENT_TYPE, "application/json"),
    };
    builder
        .body(Body::from(bytes))
        .expect("the headers are valid")
}

/// Reads a request body, refusing what the front end cannot read before parsing anything: a
/// compressed body (415) and one over the limit (413, naming it), declared or sent.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, (StatusCode, String)> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body: more than the limit of {limit} bytes (--max-message-bytes)"),
        )
    };
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && encoding.as_bytes() != b"identity"
    {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Encoding: {}: compressed bodies are not accepted; send identity",
                String::from_utf8_lossy(encoding.as_bytes())
            ),
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

/// Parses an inference body, JSON or JSON and binary tensors.
fn parse_request(
    p: &ModelPath,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<oip_json::HttpInferRequest, Status> {
    let header_length = match headers.get(HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    Status::invalid_argument(
                        "Inference-Header-Content-Length: expected a number of bytes",
                    )
                })?,
        ),
    };
    oip_json::parse_infer(&p.model, &p.version, body, header_length).map_err(Status::from)
}

/// An empty answer with a status, as the health routes give it.
fn empty(status: StatusCode) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::empty())
        .expect("no headers")
}

/// [`serve_http`] on `listener` when the node has one (`--http-listen` set), else nothing: what
/// both nodes' `run` call, so that an unset listener needs no branch there.
pub async fn serve_optional_http<N: Node>(
    listener: Option<TcpListener>,
    node: Arc<N>,
    server_name: &str,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    match listener {
        Some(listener) => serve_http(listener, node, server_name, settings, shutdown).await,
        None => Ok(()),
    }
}

/// Serves the OIP HTTP binding of `node` on `listener` until `shutdown` completes, then stops
/// accepting and returns once the requests in flight are answered.
pub async fn serve_http<N: Node>(
    listener: TcpListener,
    node: Arc<N>,
    server_name: &str,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let routes = router(
        node,
        server_name,
        settings.limits.max_message_bytes,
        settings.gate.clone(),
    );
    let handshake_timeout = settings.limits.connection_timeout;
    let auth = settings.auth.clone();
    // The token is checked before routing: nothing runs for a request without a valid one.
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let routes = routes.clone();
        let checked = auth.check(&req);
        async move {
            match checked {
                Ok(()) => routes.oneshot(req.map(Body::new)).await,
                Err(status) => Ok::<_, Infallible>(refused(&status)),
            }
        }
    });
    let acceptor = settings.tls.map(TlsAcceptor::from);
    if acceptor.is_none() {
        tracing::warn!("serving OIP over HTTP in plaintext: no TLS certificate set");
    }
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small messages dominate, as on gRPC: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(service.clone());
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(handshake_timeout);
            let result = match acceptor {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            watcher
                                .watch(http.serve_connection(TokioIo::new(tls), service))
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "http: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "http: TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "http: connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

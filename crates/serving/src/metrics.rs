//! Prometheus metrics shared by both nodes, and the small HTTP server that exposes them at
//! `/metrics` in the text exposition format (OpenMetrics flavour, which Prometheus reads).
//!
//! Names follow Triton's where there is an equivalent, so dashboards carry over: requests by
//! outcome, request duration, queue wait and compute time, plus batch sizes and queue depth.
//! The edge registers its router's metrics (link estimates, circuit state) into the same
//! registry before serving it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::answer::{Reason, Tier};

/// Labels of an answered request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// "EDGE" or "CLOUD".
    pub served_by: &'static str,
    /// The routing reason, for example "CONFIDENT".
    pub reason: &'static str,
}

/// Labels of a refused request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// The gRPC status code name, for example "INVALID_ARGUMENT".
    pub code: &'static str,
}

/// Labels of a latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    /// "EDGE" or "CLOUD".
    pub served_by: &'static str,
}

fn latency_histogram() -> Histogram {
    // 25 µs to about 13 s, doubling.
    Histogram::new(exponential_buckets(25e-6, 2.0, 20))
}

/// The batcher's metrics.
#[derive(Clone, Debug)]
pub struct BatcherMetrics {
    /// Requests waiting for a worker.
    pub queue_depth: Gauge,
    /// Requests per forward pass.
    pub batch_size: Histogram,
    /// Time from enqueue to the start of the forward pass.
    pub queue_seconds: Histogram,
    /// Duration of forward passes.
    pub compute_seconds: Histogram,
    /// Requests refused because the queue was full.
    pub rejected: Counter,
    /// Requests dropped before compute because their caller had gone.
    pub cancelled: Counter,
}

/// Metrics every node records.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Answered requests by who answered and why.
    pub requests: Family<RequestLabels, Counter>,
    /// Refused requests by gRPC code.
    pub failures: Family<CodeLabels, Counter>,
    /// End-to-end request duration on this node, by who answered.
    pub request_seconds: Family<TierLabels, Histogram>,
    /// The batcher's metrics.
    pub batcher: BatcherMetrics,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` (names get the registry's prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            failures: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            batcher: BatcherMetrics {
                queue_depth: Gauge::default(),
                batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
                queue_seconds: latency_histogram(),
                compute_seconds: latency_histogram(),
                rejected: Counter::default(),
                cancelled: Counter::default(),
            },
        };
        registry.register(
            "requests",
            "Answered inference requests by who answered (served_by) and why (reason)",
            m.requests.clone(),
        );
        registry.register(
            "request_failures",
            "Inference requests refused, by gRPC status code",
            m.failures.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from receiving an inference request to answering it, on this node",
            m.request_seconds.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for the model",
            m.batcher.queue_depth.clone(),
        );
        registry.register(
            "batch_size",
            "Requests per forward pass of the model",
            m.batcher.batch_size.clone(),
        );
        registry.register(
            "queue_duration_seconds",
            "Time requests waited for the model",
            m.batcher.queue_seconds.clone(),
        );
        registry.register(
            "compute_duration_seconds",
            "Duration of the model's forward passes",
            m.batcher.compute_seconds.clone(),
        );
        registry.register(
            "queue_rejected",
            "Requests refused because the model's queue was full",
            m.batcher.rejected.clone(),
        );
        registry.register(
            "queue_cancelled",
            "Requests dropped before compute because their caller had gone",
            m.batcher.cancelled.clone(),
        );
        m
    }

    /// A fresh set registered nowhere, for tests and tools.
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    /// Counts one answered request.
    pub fn answered(&self, tier: Tier, reason: Reason, seconds: f64) {
        // Label values are static names: counting allocates nothing once a series exists.
        let served_by = tier.name();
        self.requests
            .get_or_create(&RequestLabels {
                served_by,
                reason: reason.name(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&TierLabels { served_by })
            .observe(seconds);
    }

    /// Counts one refused request.
    pub fn failed(&self, code: tonic::Code) {
        self.failures
            .get_or_create(&CodeLabels {
                code: edgeinfer::code_name(code),
            })
            .inc();
    }
}

/// Renders the registry in the text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, registry);
    out
}

/// Serves `GET /metrics` from `listener` until `shutdown` completes.
pub async fn serve_metrics(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    continue;
                }
            },
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<Incoming>| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(respond(req.uri().path(), &registry)) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics: connection ended with an error");
            }
        });
    }
}

fn respond(path: &str, registry: &Registry) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(registry),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found; metrics are at /metrics\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_requests_appear_in_the_exposition() {
        let mut registry = Registry::with_prefix("edgeinfer");
        let m = Metrics::register(&mut registry);
        m.answered(Tier::Edge, Reason::Confident, 0.001);
        m.failed(tonic::Code::InvalidArgument);
        let text = render(&registry);
        assert!(
            text.contains("edgeinfer_requests_total{served_by=\"EDGE\",reason=\"CONFIDENT\"} 1"),
            "{text}"
        );
        assert!(text.contains("edgeinfer_request_failures_total{code=\"INVALID_ARGUMENT\"} 1"));
        assert!(text.contains("edgeinfer_request_duration_seconds_count{served_by=\"EDGE\"} 1"));
        assert!(text.ends_with("# EOF\n"));
    }
}

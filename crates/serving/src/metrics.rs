//! Prometheus metrics shared by both nodes, and the small HTTP server that exposes them at
//! `/metrics` in the Prometheus text format (version 0.0.4, which every scraper reads).
//!
//! Two sets side by side. Triton's per-model figures under Triton's names and labels
//! (`nv_inference_request_success{model,version}` and the rest, [`triton`]), so dashboards
//! built for Triton carry over; and edgeinfer's own (`edgeinfer_*`): requests by who answered
//! and why, latency histograms, batch sizes, queue depth. The edge registers its router's
//! metrics (link estimates and counters, the circuit's state set) into the same registry
//! before serving it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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

use edgeinfer_model::ModelMetadata;

use crate::answer::{Reason, Tier};
use crate::throttle::Throttle;

/// How often refusals may be logged.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

pub mod triton;

pub use triton::{TritonMetrics, TritonVersion};

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
    /// Requests dropped before compute because their time ran out in the queue.
    pub expired: Counter,
    /// Triton's figures of the model, every version it served.
    pub triton: TritonMetrics,
    /// Triton's figures of the version this batcher serves (executions, inferences, queue and
    /// compute time).
    pub version: TritonVersion,
}

impl BatcherMetrics {
    /// The same metrics for the batcher of `version`, which goes into service: its passes are
    /// counted under its own version label.
    pub fn for_version(&self, version: &str) -> Self {
        Self {
            version: self.triton.serve(version),
            ..self.clone()
        }
    }
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
    /// Triton's figures of the node's model (shared with `batcher.triton`).
    pub triton: TritonMetrics,
    /// Refusals are logged at most once a second, each line with the count it stands for.
    refusal_log: Arc<Throttle>,
}

impl Metrics {
    /// Creates the metrics of a node running `model` and registers edgeinfer's own in
    /// `registry` (names get the registry's prefix); Triton's are in [`Metrics::triton`],
    /// rendered by [`Exposition`].
    pub fn register(registry: &mut Registry, model: &ModelMetadata) -> Self {
        let queue_depth = Gauge::default();
        let triton = TritonMetrics::new(&model.name, &model.version, queue_depth.clone());
        let m = Self {
            requests: Family::default(),
            failures: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            triton: triton.clone(),
            refusal_log: Arc::new(Throttle::new(REFUSAL_LOG_INTERVAL)),
            batcher: BatcherMetrics {
                version: triton.current(),
                triton,
                queue_depth,
                batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
                queue_seconds: latency_histogram(),
                compute_seconds: latency_histogram(),
                rejected: Counter::default(),
                cancelled: Counter::default(),
                expired: Counter::default(),
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
            "Requests refused at once by the model's queue: full, too long a wait, or an answer expected after the deadline",
            m.batcher.rejected.clone(),
        );
        registry.register(
            "queue_cancelled",
            "Requests dropped before compute because their caller had gone",
            m.batcher.cancelled.clone(),
        );
        registry.register(
            "queue_expired",
            "Requests dropped before compute because their time ran out in the queue",
            m.batcher.expired.clone(),
        );
        m
    }

    /// A fresh set registered nowhere, for tests and tools.
    pub fn unregistered(model: &ModelMetadata) -> Self {
        Self::register(&mut Registry::default(), model)
    }

    /// Counts one answered request; `model` is the answer's `name@version`.
    pub fn answered(&self, tier: Tier, reason: Reason, model: &str, seconds: f64) {
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
        self.triton.succeeded(
            model,
            Duration::try_from_secs_f64(seconds).unwrap_or_default(),
        );
    }

    /// Counts one refused request and logs it, throttled: under overload refusals come by the
    /// thousand a second, and a line each would spend the CPU the node is short of.
    pub fn refused(&self, status: &tonic::Status) {
        self.failed(status.code());
        if let Some(count) = self.refusal_log.event() {
            tracing::info!(
                code = ?status.code(),
                message = status.message(),
                count,
                "refused {count} request(s) since the last such line (at most one a second); \
                 the latest"
            );
        }
    }

    /// Counts one refused request.
    pub fn failed(&self, code: tonic::Code) {
        self.failures
            .get_or_create(&CodeLabels {
                code: edgeinfer::code_name(code),
            })
            .inc();
        self.triton.failed();
    }
}

/// What a node's `/metrics` shows: Triton's families, then its registry.
#[derive(Debug)]
pub struct Exposition {
    /// Triton's figures of the node's model.
    pub triton: TritonMetrics,
    /// edgeinfer's own metrics, and the edge's router metrics.
    pub registry: Registry,
}

impl Exposition {
    /// Renders everything in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.triton.render(&mut out);
        out.push_str(&render(&self.registry));
        out
    }
}

/// Renders a registry in the Prometheus text format (version 0.0.4).
///
/// `prometheus-client` encodes OpenMetrics only; Triton's counters cannot follow OpenMetrics'
/// `_total` rule, and one scrape has one format, so the registry's text is turned into the
/// classic format: no `# UNIT` and `# EOF` lines, and a counter's HELP and TYPE name its
/// `_total` samples, as the Go and Python clients write them.
pub fn render(registry: &Registry) -> String {
    let mut openmetrics = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut openmetrics, registry);
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some((name, kind)) = line
            .strip_prefix("# TYPE ")
            .and_then(|r| r.rsplit_once(' '))
        {
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "gauge" | "histogram" | "summary" => ("", kind),
                _ => ("", "untyped"),
            };
            if let Some(text) = help.take().and_then(|h| h.strip_prefix(name)) {
                out.push_str(&format!("# HELP {name}{suffix}{text}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Serves `GET /metrics` from `listener` until `shutdown` completes.
pub async fn serve_metrics(
    listener: TcpListener,
    registry: Arc<Exposition>,
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

fn respond(path: &str, exposition: &Exposition) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            exposition.render(),
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

    fn model() -> ModelMetadata {
        ModelMetadata {
            name: "edge-mlp".into(),
            version: "3".into(),
            task: "mnist".into(),
            architecture: "mlp".into(),
            input_shape: vec![4],
            labels: vec!["a".into(), "b".into()],
            temperature: 1.0,
            test_accuracy: 0.0,
            quantization: "int8".into(),
        }
    }

    #[test]
    fn answered_requests_appear_in_the_exposition_under_both_names() {
        let mut registry = Registry::with_prefix("edgeinfer");
        let m = Metrics::register(&mut registry, &model());
        m.answered(Tier::Edge, Reason::Confident, "edge-mlp@3", 0.001);
        m.answered(Tier::Cloud, Reason::LowConfidence, "cloud-cnn@1", 0.002);
        m.failed(tonic::Code::InvalidArgument);
        let text = Exposition {
            triton: m.triton.clone(),
            registry,
        }
        .render();
        for line in [
            "nv_inference_request_success{model=\"edge-mlp\",version=\"3\"} 2",
            "nv_inference_request_failure{model=\"edge-mlp\",version=\"3\"} 1",
            "nv_inference_request_duration_us{model=\"edge-mlp\",version=\"3\"} 3000",
            "edgeinfer_requests_total{served_by=\"EDGE\",reason=\"CONFIDENT\"} 1",
            "edgeinfer_request_failures_total{code=\"INVALID_ARGUMENT\"} 1",
            "edgeinfer_request_duration_seconds_count{served_by=\"EDGE\"} 1",
            "# TYPE edgeinfer_requests_total counter",
            "# TYPE edgeinfer_request_duration_seconds histogram",
            "# TYPE edgeinfer_queue_depth gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with("# HELP edgeinfer_requests_total Answered")),
            "{text}"
        );
        // The classic format: no OpenMetrics-only lines.
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    #[test]
    fn every_family_has_one_help_and_one_type_line_naming_its_samples() {
        let mut registry = Registry::with_prefix("edgeinfer");
        let m = Metrics::register(&mut registry, &model());
        m.answered(Tier::Edge, Reason::Confident, "edge-mlp@3", 0.001);
        let text = Exposition {
            triton: m.triton.clone(),
            registry,
        }
        .render();
        let mut typed = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let sample = line.split(['{', ' ']).next().unwrap();
                let family = typed.last().expect("a sample before any TYPE line");
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| sample.strip_suffix(s))
                    .filter(|b| b == family)
                    .unwrap_or(sample);
                assert_eq!(base, family, "sample {line:?} under TYPE {family}");
            }
        }
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(helps, typed.len(), "{text}");
        let mut unique = typed.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), typed.len(), "a family twice in\n{text}");
    }
}

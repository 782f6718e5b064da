//! Logging and OpenTelemetry: the process's tracing subscriber, spans exported over
//! OTLP/gRPC when an endpoint is given (`--otlp-endpoint`), and the W3C trace context
//! (`traceparent`, `tracestate`) read from incoming requests ([`TraceContextLayer`]) and
//! written into outgoing calls ([`inject_trace_context`]).
//!
//! Without an endpoint nothing of OpenTelemetry runs: the layer creates no span and the
//! injection writes nothing, so the request path pays one relaxed load.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Set once spans are exported: the layer and the injection do nothing until then.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// True when spans are exported over OTLP.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The exporter, kept alive by the binary; [`Telemetry::shutdown`] sends what is buffered.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter.
    pub async fn shutdown(self) {
        // The SDK's shutdown blocks until its export task has finished; off the runtime's
        // threads, so that the task can run.
        let provider = self.provider;
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5)) {
                eprintln!("OpenTelemetry shutdown: {e}");
            }
        })
        .await;
    }
}

/// Checks an OTLP/gRPC endpoint: an `http://` or `https://` URL with a host.
pub fn parse_otlp_endpoint(value: &str) -> Result<String, String> {
    let uri: http::Uri = value
        .parse()
        .map_err(|e| format!("{value:?} is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(value.to_string()),
        _ => Err(format!(
            "{value:?} is not an http:// or https:// URL with a host (for example \
             http://127.0.0.1:4317)"
        )),
    }
}

/// Installs the process's subscriber: logs to stderr (`format` "json" or text, filtered by
/// `RUST_LOG`, default info) and, with `otlp_endpoint`, spans exported over OTLP/gRPC as
/// `service_name`, with the W3C trace-context propagator. Call it inside the tokio runtime
/// (the exporter runs on it), once.
pub fn init(
    format: &str,
    otlp_endpoint: Option<&str>,
    service_name: &'static str,
) -> anyhow::Result<Option<Telemetry>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if format == "json" {
        logs.json().boxed()
    } else {
        logs.boxed()
    };
    let (spans, telemetry) = match otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(Duration::from_secs(5))
                .build()
                .with_context(|| format!("OTLP exporter to {endpoint}"))?;
            // The batch processor on tokio: the tonic exporter needs the runtime's reactor,
            // which the SDK's default thread-based processor does not have.
            let processor =
                BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_resource(Resource::builder().with_service_name(service_name).build())
                .build();
            let tracer = provider.tracer("edgeinfer");
            global::set_text_map_propagator(TraceContextPropagator::new());
            (
                Some(tracing_opentelemetry::layer().with_tracer(tracer)),
                Some(Telemetry { provider }),
            )
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(spans)
        .try_init()
        .context("a tracing subscriber is already installed")?;
    if telemetry.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Ok(telemetry)
}

// === propagation ===

/// Reads trace context from HTTP headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes trace context into gRPC metadata.
struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Writes the current span's trace context (`traceparent`) into an outgoing call's metadata,
/// so that the callee's spans join the trace. Does nothing when spans are not exported.
pub fn inject_trace_context(metadata: &mut MetadataMap) {
    if !exporting() {
        return;
    }
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut MetadataInjector(metadata))
    });
}

// === TraceContextLayer ===

/// A server span per request, child of the caller's `traceparent` when it sent one.
#[derive(Clone, Copy, Debug)]
pub struct TraceContextLayer {
    /// The node, as the spans name it ("edge", "cloud").
    node: &'static str,
}

impl TraceContextLayer {
    /// Spans named for `node`.
    pub fn new(node: &'static str) -> Self {
        Self { node }
    }

    /// The node (or listener) the spans are named for.
    pub fn node(&self) -> &'static str {
        self.node
    }
}

impl<S> Layer<S> for TraceContextLayer {
    type Service = TraceContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceContext {
            inner,
            node: self.node,
        }
    }
}

/// The service of [`TraceContextLayer`].
#[derive(Clone, Debug)]
pub struct TraceContext<S> {
    inner: S,
    node: &'static str,
}

impl<S, B> Service<http::Request<B>> for TraceContext<S>
where
    S: Service<http::Request<B>>,
    S::Future: Future,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Health checks (the edge probes the cloud four times a second) would each be a
        // trace of their own: noise, not requests.
        let path = request.uri().path();
        let span = if exporting() && !path.starts_with("/grpc.health.v1.Health/") {
            let span = tracing::info_span!(
                "rpc",
                otel.name = path,
                otel.kind = "server",
                node = self.node,
            );
            let parent =
                global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(request.headers())));
            let _ = span.set_parent(parent);
            span
        } else {
            tracing::Span::none()
        };
        let future = span.in_scope(|| self.inner.call(request));
        future.instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_endpoints_are_http_urls_with_a_host() {
        assert_eq!(
            parse_otlp_endpoint("http://127.0.0.1:4317").as_deref(),
            Ok("http://127.0.0.1:4317")
        );
        assert!(parse_otlp_endpoint("https://collector.example:4317").is_ok());
        for bad in [
            "127.0.0.1:4317",
            "ftp://host:21",
            "http://",
            "not a url",
            "",
        ] {
            let err = parse_otlp_endpoint(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn trace_context_survives_metadata_and_headers() {
        // The propagator writes into gRPC metadata what the server layer reads from headers.
        use opentelemetry::propagation::TextMapPropagator;
        use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};
        let sent = SpanContext::new(
            opentelemetry::trace::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            opentelemetry::trace::SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let propagator = TraceContextPropagator::new();
        let mut metadata = MetadataMap::new();
        propagator.inject_context(
            &opentelemetry::Context::new().with_remote_span_context(sent.clone()),
            &mut MetadataInjector(&mut metadata),
        );
        assert_eq!(
            metadata.get("traceparent").unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let headers = metadata.into_headers();
        let got = propagator.extract(&HeaderExtractor(&headers));
        assert_eq!(got.span().span_context(), &sent);
    }
}

//! The cloud node's settings: flags with `CLOUD_*` environment twins, validated before any
//! port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use edgeinfer_serving::batcher::BatcherConfig;
use edgeinfer_serving::server::DEFAULT_MAX_MESSAGE_BYTES;
use edgeinfer_serving::tls::{self, TlsError};
use std::sync::Arc;

use edgeinfer_serving::tls::HttpTlsConfig;
use tonic::transport::ServerTlsConfig;

/// Serves the cloud model of edgeinfer over gRPC (native API, Open Inference Protocol, health,
/// reflection), the Open Inference Protocol over HTTP, and Prometheus metrics over HTTP.
#[derive(Clone, Debug, Parser)]
#[command(name = "cloud-node", version, about, long_about = None)]
pub struct CloudConfig {
    /// gRPC address to listen on.
    #[arg(long, env = "CLOUD_LISTEN", default_value = "0.0.0.0:50052")]
    pub listen: SocketAddr,

    /// HTTP address for Prometheus metrics at /metrics; "off" disables them.
    #[arg(long, env = "CLOUD_METRICS_LISTEN", default_value = "0.0.0.0:9092", value_parser = edgeinfer_serving::cli::parse_optional_addr)]
    pub metrics_listen: std::option::Option<SocketAddr>,

    /// Model file (.safetensors or .gguf) to serve.
    #[arg(
        long,
        env = "CLOUD_MODEL",
        default_value = "models/cloud-cnn.safetensors"
    )]
    pub model: PathBuf,

    /// Bearer token clients must present on inference calls; empty means none.
    #[arg(
        long,
        env = "CLOUD_AUTH_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub auth_token: String,

    /// File holding the bearer token (one line), instead of --auth-token: for compose and
    /// Kubernetes secrets.
    #[arg(long, env = "CLOUD_AUTH_TOKEN_FILE", conflicts_with = "auth_token")]
    pub auth_token_file: Option<PathBuf>,

    /// PEM certificate chain to serve gRPC over TLS; plaintext without it.
    #[arg(long, env = "CLOUD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "CLOUD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s) that client certificates must chain to (mutual TLS): clients
    /// without such a certificate are refused.
    #[arg(long, env = "CLOUD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Most requests in one forward pass.
    #[arg(long, env = "CLOUD_MAX_BATCH", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_batch: u32,

    /// Most requests waiting for the model; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "CLOUD_MAX_QUEUE", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queue: u32,

    /// Microseconds a partial batch may wait for more requests (0: run what is waiting).
    #[arg(long, env = "CLOUD_QUEUE_DELAY_US", default_value_t = 0)]
    pub queue_delay_us: u64,

    /// Model worker threads (default: one per core).
    #[arg(long, env = "CLOUD_WORKERS", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: Option<u32>,

    /// Largest gRPC message accepted, in bytes.
    #[arg(long, env = "CLOUD_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Log format: text or json.
    #[arg(long, env = "CLOUD_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// HTTP address of the Open Inference Protocol over HTTP/REST (`/v2/...`), with the same
    /// token and TLS as gRPC; "off" disables it.
    #[arg(long, env = "CLOUD_HTTP_LISTEN", default_value = "0.0.0.0:8001", value_parser = edgeinfer_serving::cli::parse_optional_addr)]
    pub http_listen: std::option::Option<SocketAddr>,
    /// gRPC address of the admin plane (`ModelAdmin`: loading a model), never served on
    /// --listen. Keep it on loopback or a private network; "off" disables it.
    #[arg(long, env = "CLOUD_ADMIN_LISTEN", default_value = "127.0.0.1:50062", value_parser = edgeinfer_serving::cli::parse_optional_addr)]
    pub admin_listen: std::option::Option<SocketAddr>,

    /// Bearer token every admin call must present (`authorization: Bearer <token>`).
    #[arg(
        long,
        env = "CLOUD_ADMIN_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub admin_token: String,

    /// File holding the admin token (one line), instead of --admin-token.
    #[arg(long, env = "CLOUD_ADMIN_TOKEN_FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,

    /// Milliseconds between checks of the --model file for changes, which are loaded and
    /// swapped in (after the probe); 0 disables the watch. SIGHUP reloads it in any case.
    #[arg(long, env = "CLOUD_MODEL_WATCH_MS", default_value_t = 1000)]
    pub model_watch_ms: u64,

    /// Model repository in Triton's layout, `<repository>/<model>/<version>/<file>`: the node
    /// serves the highest version of --repository-model from it instead of --model, and
    /// loads newer versions as they appear (checked at the --model-watch-ms interval).
    #[arg(long, env = "CLOUD_MODEL_REPOSITORY")]
    pub model_repository: Option<PathBuf>,

    /// The model directory of --model-repository this node serves.
    #[arg(long, env = "CLOUD_REPOSITORY_MODEL", default_value = "cloud-cnn")]
    pub repository_model: String,

    /// Export spans over OTLP/gRPC to this collector (http://HOST:4317); a request's W3C
    /// `traceparent` is honoured. Default: no export.
    #[arg(long, env = "CLOUD_OTLP_ENDPOINT", value_name = "URL", value_parser = edgeinfer_serving::telemetry::parse_otlp_endpoint)]
    pub otlp_endpoint: Option<String>,
}

impl CloudConfig {
    /// The batcher settings.
    pub fn batcher(&self) -> BatcherConfig {
        BatcherConfig::from_flags(
            self.max_batch,
            self.max_queue,
            self.queue_delay_us,
            self.workers,
        )
    }

    /// The server's TLS settings, files read and checked; `None` for plaintext.
    pub fn server_tls(&self) -> Result<Option<ServerTlsConfig>, TlsError> {
        tls::server_config(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_client_ca.as_deref(),
            "CLOUD",
        )
    }

    /// The HTTP listener's TLS settings, from the same files; `None` for plaintext.
    pub fn http_tls(&self) -> Result<Option<Arc<HttpTlsConfig>>, TlsError> {
        tls::http_server_config(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_client_ca.as_deref(),
            "CLOUD",
        )
    }

    /// Settings for a node on the given model with every other value at its default, as
    /// tests and `edgeinfer up` use it.
    pub fn for_model(model: impl Into<PathBuf>) -> Self {
        let mut c = Self::parse_from(["cloud-node"]);
        c.model = model.into();
        c.metrics_listen = None;
        c.http_listen = None;
        c.admin_listen = None;
        c
    }
}

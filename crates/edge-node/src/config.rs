//! The edge node's settings: flags with `EDGE_*` environment twins, validated before any port
//! is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::builder::PossibleValue;
use clap::{Parser, ValueEnum};

use crate::policy::ConfidenceMetric;
use edgeinfer_linksim::LinkTimer;
use edgeinfer_serving::auth::{TokenError, token_setting};
use edgeinfer_serving::batcher::BatcherConfig;
use edgeinfer_serving::server::DEFAULT_MAX_MESSAGE_BYTES;
use edgeinfer_serving::tls::{self, ClientFiles, HttpTlsConfig, TlsError};
use tonic::transport::ServerTlsConfig;

// The flag's spellings of the confidence metrics; the metric itself stays free of clap.
impl ValueEnum for ConfidenceMetric {
    fn value_variants<'a>() -> &'a [Self] {
        &ConfidenceMetric::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            ConfidenceMetric::MaxProbability => {
                PossibleValue::new("max-probability").help("The largest calibrated probability")
            }
            ConfidenceMetric::Margin => {
                PossibleValue::new("margin").help("Largest minus second largest probability")
            }
            ConfidenceMetric::Entropy => {
                PossibleValue::new("entropy").help("One minus the normalised entropy")
            }
        })
    }
}

/// Serves the edge model of edgeinfer and routes uncertain or late requests to the cloud over a
/// simulated 5G link, answering itself (degraded) when the cloud cannot answer in time.
#[derive(Clone, Debug, Parser)]
#[command(name = "edge-node", version, about, long_about = None)]
pub struct EdgeConfig {
    /// gRPC address to listen on.
    #[arg(long, env = "EDGE_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// gRPC address of the admin plane (`EdgeAdmin`: status, link profile, policy;
    /// `ModelAdmin`: loading a model), never
    /// served on --listen. Keep it on loopback or a private network; "off" disables it.
    #[arg(long, env = "EDGE_ADMIN_LISTEN", default_value = "127.0.0.1:50061", value_parser = edgeinfer_serving::cli::parse_optional_addr)]
    pub admin_listen: std::option::Option<SocketAddr>,

    /// Bearer token every admin call must present (`authorization: Bearer <token>`).
    #[arg(
        long,
        env = "EDGE_ADMIN_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub admin_token: String,

    /// File holding the admin token (one line), instead of --admin-token.
    #[arg(long, env = "EDGE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Bearer token every inference call must present; health and reflection stay open.
    /// Default: none (the data plane is open).
    #[arg(
        long,
        env = "EDGE_AUTH_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub auth_token: String,

    /// File holding the data-plane token (one line), instead of --auth-token.
    #[arg(long, env = "EDGE_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// HTTP address for Prometheus metrics at /metrics; "off" disables them.
    #[arg(long, env = "EDGE_METRICS_LISTEN", default_value = "0.0.0.0:9091", value_parser = edgeinfer_serving::cli::parse_optional_addr)]
    pub metrics_listen: std::option::Option<SocketAddr>,

    /// Model file (.gguf or .safetensors) of the edge model.
    #[arg(
        long,
        env = "EDGE_MODEL",
        default_value = "models/edge-mlp-int8.safetensors"
    )]
    pub model: PathBuf,

    /// The cloud node's URL; its host is re-resolved so that requests spread over every
    /// address (replicas). "off" runs the edge alone.
    #[arg(long, env = "EDGE_CLOUD", default_value = "http://127.0.0.1:50052")]
    pub cloud: String,

    /// Simulated link to the cloud: a built-in profile name (ideal, urllc, embb-mmwave,
    /// embb-midband, lte, cell-edge, offline) or a TOML/JSON profile file.
    #[arg(long, env = "EDGE_LINK_PROFILE", default_value = "embb-midband")]
    pub link_profile: String,

    /// Directory of the trace files that profile documents received by `SetLinkProfile` may
    /// name (bare file names only). Without it such documents may carry traces inline
    /// (`trace_ms`) but name no file: nothing received over the network opens a path.
    #[arg(long, env = "EDGE_LINK_TRACE_DIR")]
    pub link_trace_dir: Option<PathBuf>,

    /// Seed of the link's random processes.
    #[arg(long, env = "EDGE_LINK_SEED", default_value_t = 1)]
    pub link_seed: u64,

    /// Confidence the edge model must reach to answer by itself, in [0, 1]. The default keeps
    /// accuracy within 0.002 of the cloud model's while the edge answers about 90 % of MNIST
    /// (models/MODELS.md, `edgeinfer sweep`).
    #[arg(long, env = "EDGE_THRESHOLD", default_value_t = 0.95, value_parser = parse_unit)]
    pub threshold: f32,

    /// Latency budget in milliseconds, for requests that set none; also the most a request
    /// may ask for.
    #[arg(long, env = "EDGE_BUDGET_MS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub budget_ms: u32,

    /// How confidence is measured.
    #[arg(long, env = "EDGE_CONFIDENCE_METRIC", value_enum, default_value_t = ConfidenceMetric::MaxProbability)]
    pub confidence_metric: ConfidenceMetric,

    /// Bearer token presented to the cloud.
    #[arg(
        long,
        env = "EDGE_CLOUD_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub cloud_token: String,

    /// File holding the token presented to the cloud (one line), instead of --cloud-token.
    #[arg(long, env = "EDGE_CLOUD_TOKEN_FILE")]
    pub cloud_token_file: Option<PathBuf>,

    /// PEM CA certificate(s) the cloud's certificate must chain to, for an https:// cloud
    /// URL [default: the system's roots].
    #[arg(long, env = "EDGE_CLOUD_CA")]
    pub cloud_ca: Option<PathBuf>,

    /// PEM certificate chain the edge presents to the cloud (mutual TLS).
    #[arg(long, env = "EDGE_CLOUD_TLS_CERT", requires = "cloud_tls_key")]
    pub cloud_tls_cert: Option<PathBuf>,

    /// PEM private key of --cloud-tls-cert.
    #[arg(long, env = "EDGE_CLOUD_TLS_KEY", requires = "cloud_tls_cert")]
    pub cloud_tls_key: Option<PathBuf>,

    /// PEM certificate chain to serve gRPC over TLS; plaintext without it.
    #[arg(long, env = "EDGE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "EDGE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s) that client certificates must chain to (mutual TLS): clients
    /// without such a certificate are refused.
    #[arg(long, env = "EDGE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Consecutive cloud failures that open the circuit breaker.
    #[arg(long, env = "EDGE_CIRCUIT_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub circuit_failures: u32,

    /// Milliseconds the circuit stays open before a probe may close it.
    #[arg(long, env = "EDGE_CIRCUIT_COOLDOWN_MS", default_value_t = 1000)]
    pub circuit_cooldown_ms: u64,

    /// Milliseconds between health probes of the cloud through the link (they keep the
    /// round-trip estimate fresh and find a recovered cloud); 0 disables them.
    #[arg(long, env = "EDGE_PROBE_INTERVAL_MS", default_value_t = 250)]
    pub probe_interval_ms: u64,

    /// Milliseconds between DNS look-ups of the cloud's host.
    #[arg(long, env = "EDGE_CLOUD_RESOLVE_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..))]
    pub cloud_resolve_ms: u64,

    /// Most requests in one forward pass.
    #[arg(long, env = "EDGE_MAX_BATCH", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_batch: u32,

    /// Most requests waiting for the model; more go to the cloud when the budget allows, or
    /// are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "EDGE_MAX_QUEUE", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queue: u32,

    /// Microseconds a partial batch may wait for more requests (0: run what is waiting).
    #[arg(long, env = "EDGE_QUEUE_DELAY_US", default_value_t = 0)]
    pub queue_delay_us: u64,

    /// Model worker threads (default: one per core).
    #[arg(long, env = "EDGE_WORKERS", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: Option<u32>,

    /// Largest gRPC message accepted, in bytes.
    #[arg(long, env = "EDGE_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Log format: text or json.
    #[arg(long, env = "EDGE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// HTTP address of the Open Inference Protocol over HTTP/REST (`/v2/...`, routed as gRPC
    /// calls are), with the same token and TLS as gRPC; "off" disables it.
    #[arg(long, env = "EDGE_HTTP_LISTEN", default_value = "0.0.0.0:8000", value_parser = edgeinfer_serving::cli::parse_optional_addr)]
    pub http_listen: std::option::Option<SocketAddr>,

    /// How the simulated link waits out each message's delay: "precise" (a timerfd thread,
    /// within tens of microseconds; what a 1 ms URLLC link needs) or "tokio" (tokio's timer,
    /// up to 1 ms late per direction, no timer thread).
    #[arg(long, env = "EDGE_LINK_TIMER", default_value = "precise", value_parser = parse_link_timer)]
    pub link_timer: LinkTimer,

    /// Milliseconds between checks of the --model file for changes, which are loaded and
    /// swapped in (after the probe); 0 disables the watch. SIGHUP reloads it in any case.
    #[arg(long, env = "EDGE_MODEL_WATCH_MS", default_value_t = 1000)]
    pub model_watch_ms: u64,

    /// Model repository in Triton's layout, `<repository>/<model>/<version>/<file>`: the node
    /// serves the highest version of --repository-model from it instead of --model, and
    /// loads newer versions as they appear (checked at the --model-watch-ms interval).
    #[arg(long, env = "EDGE_MODEL_REPOSITORY")]
    pub model_repository: Option<PathBuf>,

    /// The model directory of --model-repository this node serves.
    #[arg(long, env = "EDGE_REPOSITORY_MODEL", default_value = "edge-mlp")]
    pub repository_model: String,

    /// Export spans over OTLP/gRPC to this collector (http://HOST:4317); a request's W3C
    /// `traceparent` is honoured and carried on to the cloud. Default: no export.
    #[arg(long, env = "EDGE_OTLP_ENDPOINT", value_name = "URL", value_parser = edgeinfer_serving::telemetry::parse_otlp_endpoint)]
    pub otlp_endpoint: Option<String>,
}

fn parse_link_timer(s: &str) -> Result<LinkTimer, String> {
    match s {
        "precise" => Ok(LinkTimer::Precise),
        "tokio" => Ok(LinkTimer::Tokio),
        _ => Err(format!(
            "{s:?} is not a link timer; expected precise or tokio"
        )),
    }
}

fn parse_unit(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside [0, 1]"))
    }
}

impl EdgeConfig {
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
            "EDGE",
        )
    }

    /// The HTTP listener's TLS settings, from the same files; `None` for plaintext.
    pub fn http_tls(&self) -> Result<Option<Arc<HttpTlsConfig>>, TlsError> {
        tls::http_server_config(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_client_ca.as_deref(),
            "EDGE",
        )
    }

    /// The files of the cloud client's TLS settings.
    pub fn cloud_tls_files(&self) -> ClientFiles<'_> {
        ClientFiles {
            ca: self
                .cloud_ca
                .as_deref()
                .map(|p| ("--cloud-ca / EDGE_CLOUD_CA", p)),
            cert: self
                .cloud_tls_cert
                .as_deref()
                .map(|p| ("--cloud-tls-cert / EDGE_CLOUD_TLS_CERT", p)),
            key: self
                .cloud_tls_key
                .as_deref()
                .map(|p| ("--cloud-tls-key / EDGE_CLOUD_TLS_KEY", p)),
        }
    }

    /// True when a cloud is configured.
    pub fn has_cloud(&self) -> bool {
        !matches!(self.cloud.as_str(), "" | "off" | "none")
    }

    /// Settings for an edge on `model` talking to `cloud`, every other value at its default,
    /// as tests and `edgeinfer up` use it.
    pub fn for_model(model: impl Into<PathBuf>, cloud: impl Into<String>) -> Self {
        let mut c = Self::parse_from(["edge-node"]);
        c.model = model.into();
        c.cloud = cloud.into();
        c.metrics_listen = None;
        c.admin_listen = None;
        c.http_listen = None;
        c
    }

    /// The three bearer tokens, values or files read and checked, naming the setting at fault.
    pub fn tokens(&self) -> Result<Tokens, TokenError> {
        Ok(Tokens {
            admin: token_setting(
                &self.admin_token,
                self.admin_token_file.as_deref(),
                "--admin-token",
            )?,
            data: token_setting(
                &self.auth_token,
                self.auth_token_file.as_deref(),
                "--auth-token",
            )?,
            cloud: token_setting(
                &self.cloud_token,
                self.cloud_token_file.as_deref(),
                "--cloud-token",
            )?,
        })
    }
}

/// The edge's bearer tokens; `None` where not set.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    /// What admin calls must present.
    pub admin: Option<String>,
    /// What inference calls must present.
    pub data: Option<String>,
    /// What the edge presents to the cloud.
    pub cloud: Option<String>,
}

impl EdgeConfig {}

//! The edge node's settings: flags with `EDGE_*` environment twins, validated before any port
//! is bound.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::PossibleValue;
use clap::{Parser, ValueEnum};

use crate::policy::ConfidenceMetric;
use edgeinfer_linksim::LinkTimer;
use edgeinfer_serving::auth::{TokenError, token_setting};
use edgeinfer_serving::flags::NodeFlags;
use edgeinfer_serving::tls::ClientFiles;

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
    #[arg(long, default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// gRPC address of the admin plane (`EdgeAdmin`: status, link profile, policy;
    /// `ModelAdmin`: loading a model), never
    /// served on --listen. Keep it on loopback or a private network; "off" disables it.
    #[arg(long, default_value = "127.0.0.1:50061", value_parser = edgeinfer_serving::cli::parse_optional_addr)]
    pub admin_listen: std::option::Option<SocketAddr>,

    /// HTTP address for Prometheus metrics at /metrics; "off" disables them.
    #[arg(long, default_value = "0.0.0.0:9091", value_parser = edgeinfer_serving::cli::parse_optional_addr)]
    pub metrics_listen: std::option::Option<SocketAddr>,

    /// Model file (.gguf or .safetensors) of the edge model.
    #[arg(long, default_value = "models/edge-mlp-int8.safetensors")]
    pub model: PathBuf,

    /// The cloud node's URL; its host is re-resolved so that requests spread over every
    /// address (replicas). "off" runs the edge alone.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    pub cloud: String,

    /// Simulated link to the cloud: a built-in profile name (ideal, urllc, embb-mmwave,
    /// embb-midband, lte, cell-edge, offline) or a TOML/JSON profile file.
    #[arg(long, default_value = "embb-midband")]
    pub link_profile: String,

    /// Directory of the trace files that profile documents received by `SetLinkProfile` may
    /// name (bare file names only). Without it such documents may carry traces inline
    /// (`trace_ms`) but name no file: nothing received over the network opens a path.
    #[arg(long)]
    pub link_trace_dir: Option<PathBuf>,

    /// Seed of the link's random processes.
    #[arg(long, default_value_t = 1)]
    pub link_seed: u64,

    /// Confidence the edge model must reach to answer by itself, in [0, 1]. The default keeps
    /// accuracy within 0.002 of the cloud model's while the edge answers about 90 % of MNIST
    /// (models/MODELS.md, `edgeinfer sweep`).
    #[arg(long, default_value_t = 0.95, value_parser = parse_unit)]
    pub threshold: f32,

    /// Latency budget in milliseconds, for requests that set none; also the most a request
    /// may ask for.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub budget_ms: u32,

    /// How confidence is measured.
    #[arg(long, value_enum, default_value_t = ConfidenceMetric::MaxProbability)]
    pub confidence_metric: ConfidenceMetric,

    /// Bearer token presented to the cloud.
    #[arg(long, default_value = "", hide_env_values = true)]
    pub cloud_token: String,

    /// File holding the token presented to the cloud (one line), instead of --cloud-token.
    #[arg(long)]
    pub cloud_token_file: Option<PathBuf>,

    /// PEM CA certificate(s) the cloud's certificate must chain to, for an https:// cloud
    /// URL [default: the system's roots].
    #[arg(long)]
    pub cloud_ca: Option<PathBuf>,

    /// PEM certificate chain the edge presents to the cloud (mutual TLS).
    #[arg(long, requires = "cloud_tls_key")]
    pub cloud_tls_cert: Option<PathBuf>,

    /// PEM private key of --cloud-tls-cert.
    #[arg(long, requires = "cloud_tls_cert")]
    pub cloud_tls_key: Option<PathBuf>,

    /// Consecutive cloud failures that open the circuit breaker.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub circuit_failures: u32,

    /// Milliseconds the circuit stays open before a probe may close it.
    #[arg(long, default_value_t = 1000)]
    pub circuit_cooldown_ms: u64,

    /// Milliseconds between health probes of the cloud through the link (they keep the
    /// round-trip estimate fresh and find a recovered cloud); 0 disables them.
    #[arg(long, default_value_t = 250)]
    pub probe_interval_ms: u64,

    /// Milliseconds between DNS look-ups of the cloud's host.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..))]
    pub cloud_resolve_ms: u64,

    /// HTTP address of the Open Inference Protocol over HTTP/REST (`/v2/...`, routed as gRPC
    /// calls are), with the same token and TLS as gRPC; "off" disables it.
    #[arg(long, default_value = "0.0.0.0:8000", value_parser = edgeinfer_serving::cli::parse_optional_addr)]
    pub http_listen: std::option::Option<SocketAddr>,

    /// How the simulated link waits out each message's delay: "precise" (a timerfd thread,
    /// within tens of microseconds; what a 1 ms URLLC link needs) or "tokio" (tokio's timer,
    /// up to 1 ms late per direction, no timer thread).
    #[arg(long, default_value = "precise", value_parser = parse_link_timer)]
    pub link_timer: LinkTimer,

    /// Directory of the hard-example store: every request the cloud answers for the edge is
    /// kept there (input, the edge's and the cloud's probabilities, the cloud's label, the
    /// models, a timestamp) for fine-tuning (`edgeinfer hard-examples export`, `edgeinfer
    /// adapt`). Writing never delays a request: when the writer falls behind, records are
    /// dropped and counted. Off without it.
    #[arg(long, value_name = "DIR")]
    pub hard_examples_dir: Option<PathBuf>,

    /// Most bytes the hard-example store keeps; past it the oldest records are deleted.
    #[arg(long, default_value_t = crate::hard_examples::DEFAULT_MAX_BYTES, value_parser = clap::value_parser!(u64).range(crate::hard_examples::MIN_MAX_BYTES..))]
    pub hard_examples_max_bytes: u64,

    /// The model directory of --model-repository this node serves.
    #[arg(long, default_value = "edge-mlp")]
    pub repository_model: String,

    /// Settings both nodes share.
    #[command(flatten)]
    pub node: NodeFlags,
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
            admin: self.node.admin_token()?,
            data: self.node.data_token()?,
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

edgeinfer_serving::node_config!(EdgeConfig, "edge-node", "EDGE", "edgeinfer-edge");

//! `edgeinfer up`: cloud and edge in one process on the shipped models, ready for grpcurl.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use edgeinfer_cli::local::{LocalOptions, LocalTls, repository_file, start};

/// Options of `edgeinfer up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Link profile between edge and cloud: ideal, urllc, embb-mmwave, embb-midband, lte,
    /// cell-edge, offline, or a TOML/JSON profile file.
    #[arg(long, env = "EDGEINFER_UP_PROFILE", default_value = "embb-midband")]
    pub profile: String,
    /// Seed of the simulated link.
    #[arg(long, env = "EDGEINFER_UP_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Edge gRPC address.
    #[arg(
        long,
        env = "EDGEINFER_UP_EDGE_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub edge_listen: SocketAddr,
    /// Cloud gRPC address.
    #[arg(
        long,
        env = "EDGEINFER_UP_CLOUD_LISTEN",
        default_value = "127.0.0.1:50052"
    )]
    pub cloud_listen: SocketAddr,
    /// Edge admin address (`EdgeAdmin`: status, link profile, policy).
    #[arg(
        long,
        env = "EDGEINFER_UP_ADMIN_LISTEN",
        default_value = "127.0.0.1:50061"
    )]
    pub admin_listen: SocketAddr,
    /// Bearer token the admin calls must present (default: none).
    #[arg(long, env = "EDGEINFER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Edge metrics address ("off" to disable).
    #[arg(long, env = "EDGEINFER_UP_EDGE_METRICS_LISTEN", default_value = "127.0.0.1:9091", value_parser = edgeinfer_serving::cli::parse_optional_addr)]
    pub edge_metrics_listen: std::option::Option<SocketAddr>,
    /// Cloud metrics address ("off" to disable).
    #[arg(long, env = "EDGEINFER_UP_CLOUD_METRICS_LISTEN", default_value = "127.0.0.1:9092", value_parser = edgeinfer_serving::cli::parse_optional_addr)]
    pub cloud_metrics_listen: std::option::Option<SocketAddr>,
    /// Edge model file (default: the shipped int8 MLP).
    #[arg(long, env = "EDGEINFER_UP_EDGE_MODEL")]
    pub edge_model: Option<PathBuf>,
    /// Cloud model file (default: the shipped CNN).
    #[arg(long, env = "EDGEINFER_UP_CLOUD_MODEL")]
    pub cloud_model: Option<PathBuf>,
    /// Edge confidence threshold (default: the edge's own default).
    #[arg(long, env = "EDGEINFER_UP_THRESHOLD")]
    pub threshold: Option<f32>,
    /// Default latency budget in milliseconds (default: the edge's own default).
    #[arg(long, env = "EDGEINFER_UP_BUDGET_MS")]
    pub budget_ms: Option<u32>,
    /// Serve both nodes over TLS with this PEM certificate chain (it must name 127.0.0.1 or
    /// the listen addresses); the edge reaches the cloud over mutual TLS with it.
    #[arg(long, env = "EDGEINFER_UP_TLS_CERT", value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "EDGEINFER_UP_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate that --tls-cert chains to; the cloud accepts only clients whose
    /// certificates chain to it.
    #[arg(
        long,
        env = "EDGEINFER_UP_TLS_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_ca: Option<PathBuf>,
    /// Edge address of the Open Inference Protocol over HTTP (`/v2/...`; "off" to disable).
    #[arg(long, env = "EDGEINFER_UP_EDGE_HTTP_LISTEN", default_value = "127.0.0.1:8000", value_parser = edgeinfer_serving::cli::parse_optional_addr)]
    pub edge_http_listen: std::option::Option<SocketAddr>,
    /// Cloud address of the Open Inference Protocol over HTTP (`/v2/...`; "off" to disable).
    #[arg(long, env = "EDGEINFER_UP_CLOUD_HTTP_LISTEN", default_value = "127.0.0.1:8001", value_parser = edgeinfer_serving::cli::parse_optional_addr)]
    pub cloud_http_listen: std::option::Option<SocketAddr>,
    /// Cloud admin address (`ModelAdmin`: loading a model); it takes --admin-token too.
    #[arg(
        long,
        env = "EDGEINFER_UP_CLOUD_ADMIN_LISTEN",
        default_value = "127.0.0.1:50062"
    )]
    pub cloud_admin_listen: SocketAddr,
    /// Keep the cloud's answers to the edge's requests in this directory (the edge's
    /// --hard-examples-dir), for `edgeinfer hard-examples export` and `edgeinfer adapt`.
    #[arg(long, env = "EDGEINFER_UP_HARD_EXAMPLES_DIR", value_name = "DIR")]
    pub hard_examples_dir: Option<PathBuf>,
    /// Export both nodes' spans over OTLP/gRPC to this collector (http://HOST:4317); a
    /// request's W3C `traceparent` is honoured and carried from edge to cloud.
    #[arg(long, env = "EDGEINFER_UP_OTLP_ENDPOINT", value_name = "URL", value_parser = edgeinfer_serving::telemetry::parse_otlp_endpoint)]
    pub otlp_endpoint: Option<String>,
}

/// Runs both nodes until Ctrl-C or SIGTERM.
pub async fn run_up(args: &UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let defaults = LocalOptions::default();
    let servers = start(LocalOptions {
        edge_listen: args.edge_listen,
        cloud_listen: args.cloud_listen,
        edge_admin_listen: args.admin_listen,
        cloud_admin_listen: Some(args.cloud_admin_listen),
        admin_token: args.admin_token.clone(),
        edge_metrics_listen: args.edge_metrics_listen,
        cloud_metrics_listen: args.cloud_metrics_listen,
        edge_model: args.edge_model.clone().unwrap_or(defaults.edge_model),
        cloud_model: args.cloud_model.clone().unwrap_or(defaults.cloud_model),
        profile: args.profile.clone(),
        seed: args.seed,
        threshold: args.threshold,
        budget_ms: args.budget_ms,
        tls: match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(LocalTls {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        },
        edge_http_listen: args.edge_http_listen,
        cloud_http_listen: args.cloud_http_listen,
        edge_hard_examples_dir: args.hard_examples_dir.clone(),
        ..defaults
    })
    .await?;
    eprintln!("cloud listening on {}", servers.cloud);
    eprintln!("edge listening on {}", servers.edge);
    eprintln!(
        "edge admin (EdgeAdmin) listening on {} (ModelAdmin too); for example:\n  {}\n  {}",
        servers.edge_admin,
        admin_command(
            servers.edge_admin,
            args.tls_ca.as_deref(),
            args.admin_token.is_some(),
            "edgeinfer.v1.EdgeAdmin/GetStatus",
        ),
        admin_command(
            servers.edge_admin,
            args.tls_ca.as_deref(),
            args.admin_token.is_some(),
            "edgeinfer.v1.ModelAdmin/LoadModel",
        )
    );
    if let Some(a) = servers.cloud_admin {
        eprintln!(
            "cloud admin (ModelAdmin) listening on {a}; reload its model file:\n  {}",
            admin_command(
                a,
                args.tls_ca.as_deref(),
                args.admin_token.is_some(),
                "edgeinfer.v1.ModelAdmin/LoadModel",
            )
        );
    }
    for (node, http) in [("edge", servers.edge_http), ("cloud", servers.cloud_http)] {
        if let Some(addr) = http {
            eprintln!(
                "{node} OIP HTTP listening on {addr}; for example:\n  {}",
                curl_command(addr, args.tls_ca.as_deref())
            );
        }
    }
    if let Some(dir) = &args.hard_examples_dir {
        eprintln!(
            "edge keeps the cloud's answers in {} (edgeinfer hard-examples export, edgeinfer adapt)",
            dir.display()
        );
    }
    if let Some(m) = servers.edge_metrics {
        eprintln!("edge metrics on http://{m}/metrics");
    }
    if let Some(m) = servers.cloud_metrics {
        eprintln!("cloud metrics on http://{m}/metrics");
    }
    eprintln!(
        "ready in {} ms, link profile {}; try:\n\n{}\nCtrl-C stops both nodes.",
        started.elapsed().as_millis(),
        args.profile,
        first_commands(servers.edge, args.tls_ca.as_deref()),
    );
    edgeinfer_serving::shutdown::signal().await;
    servers.stop().await?;
    eprintln!("stopped");
    Ok(())
}

/// A grpcurl line calling `method` (which takes an empty request) on an admin listener.
fn admin_command(admin: SocketAddr, ca: Option<&Path>, token: bool, method: &str) -> String {
    let security = match ca {
        Some(ca) => format!("-cacert {}", ca.display()),
        None => "-plaintext".to_string(),
    };
    let auth = if token {
        " -H \"authorization: Bearer $EDGEINFER_ADMIN_TOKEN\""
    } else {
        ""
    };
    format!("grpcurl {security}{auth} {admin} {method}")
}

/// A curl line for a node's OIP HTTP model metadata (no token: `up` sets no data-plane token).
fn curl_command(http: SocketAddr, ca: Option<&Path>) -> String {
    match ca {
        Some(ca) => format!(
            "curl --cacert {} https://{http}/v2/models/mnist",
            ca.display()
        ),
        None => format!("curl http://{http}/v2/models/mnist"),
    }
}

/// grpcurl commands that work as printed from any directory: list the services, then classify
/// the example digit shipped in the repository. With TLS, grpcurl checks the edge's certificate
/// against `ca`.
fn first_commands(edge: SocketAddr, ca: Option<&Path>) -> String {
    let security = match ca {
        Some(ca) => format!("-cacert {}", ca.display()),
        None => "-plaintext".to_string(),
    };
    let mut out = format!("  grpcurl {security} {edge} list\n");
    let example = repository_file(Path::new("tests/interop/data/seven.png"));
    if example.exists() {
        out += &format!(
            "  grpcurl {security} -d \"{{\\\"image\\\": \\\"$(base64 -w0 {})\\\"}}\" {edge} edgeinfer.v1.Inference/Infer\n",
            example.display()
        );
    }
    out
}

//! The cloud node's settings: flags with `CLOUD_*` environment twins, validated before any
//! port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use edgeinfer_serving::flags::NodeFlags;

/// Serves the cloud model of edgeinfer over gRPC (native API, Open Inference Protocol, health,
/// reflection), the Open Inference Protocol over HTTP, and Prometheus metrics over HTTP.
#[derive(Clone, Debug, Parser)]
#[command(name = "cloud-node", version, about, long_about = None)]
pub struct CloudConfig {
    /// gRPC address to listen on.
    #[arg(long, default_value = "0.0.0.0:50052")]
    pub listen: SocketAddr,

    /// HTTP address for Prometheus metrics at /metrics; "off" disables them.
    #[arg(long, default_value = "0.0.0.0:9092", value_parser = edgeinfer_serving::cli::parse_optional_addr)]
    pub metrics_listen: std::option::Option<SocketAddr>,

    /// Model file (.safetensors or .gguf) to serve.
    #[arg(long, default_value = "models/cloud-cnn.safetensors")]
    pub model: PathBuf,

    /// HTTP address of the Open Inference Protocol over HTTP/REST (`/v2/...`), with the same
    /// token and TLS as gRPC; "off" disables it.
    #[arg(long, default_value = "0.0.0.0:8001", value_parser = edgeinfer_serving::cli::parse_optional_addr)]
    pub http_listen: std::option::Option<SocketAddr>,
    /// gRPC address of the admin plane (`ModelAdmin`: loading a model), never served on
    /// --listen. Keep it on loopback or a private network; "off" disables it.
    #[arg(long, default_value = "127.0.0.1:50062", value_parser = edgeinfer_serving::cli::parse_optional_addr)]
    pub admin_listen: std::option::Option<SocketAddr>,

    /// The model directory of --model-repository this node serves.
    #[arg(long, default_value = "cloud-cnn")]
    pub repository_model: String,

    /// Settings both nodes share.
    #[command(flatten)]
    pub node: NodeFlags,
}

impl CloudConfig {
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

edgeinfer_serving::node_config!(CloudConfig, "cloud-node", "CLOUD", "edgeinfer-cloud");

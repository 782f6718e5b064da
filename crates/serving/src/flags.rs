//! The settings both nodes take, defined once: tokens, TLS, the batcher, limits, model reloads
//! and telemetry. Each node flattens [`NodeFlags`] into its own configuration, beside what
//! differs between them (addresses, model, repository name, the edge's routing).
//!
//! Every flag has an environment twin named by the node's prefix (`EDGE_MAX_BATCH`,
//! `CLOUD_MAX_BATCH`): [`with_env_twins`] derives them from the flag names when the command is
//! built, so no twin can be forgotten or misspelt and the shared flags need not be written
//! twice to get two prefixes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Command};
use tonic::transport::ServerTlsConfig;

use crate::auth::{TokenError, token_setting};
use crate::tls::{self, HttpTlsConfig, TlsError};

use crate::batcher::{
    BatcherConfig, DEFAULT_INLINE_BELOW, DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_QUEUE_WAIT,
};
use crate::input::{
    DEFAULT_MAX_BATCH_ROWS, DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_SIDE, InputLimits,
};
use crate::limits::{
    DEFAULT_CONNECTION_TIMEOUT, DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_MAX_STREAM_FRAMES,
    DEFAULT_MAX_STREAMS_PER_CONNECTION, DEFAULT_REQUEST_TIMEOUT, ServerLimits,
};
use crate::server::DEFAULT_MAX_MESSAGE_BYTES;

/// The settings every node has.
#[derive(Clone, Debug, Args)]
pub struct NodeFlags {
    /// Bearer token every inference call must present; health and reflection stay open.
    /// Default: none (the data plane is open).
    #[arg(long, default_value = "", hide_env_values = true)]
    pub auth_token: String,

    /// File holding the data-plane token (one line), instead of --auth-token: for compose and
    /// Kubernetes secrets.
    #[arg(long, conflicts_with = "auth_token")]
    pub auth_token_file: Option<PathBuf>,

    /// Bearer token every admin call must present (`authorization: Bearer <token>`).
    #[arg(long, default_value = "", hide_env_values = true)]
    pub admin_token: String,

    /// File holding the admin token (one line), instead of --admin-token.
    #[arg(long, conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,

    /// PEM certificate chain to serve gRPC and HTTP over TLS; plaintext without it.
    #[arg(long, requires = "tls_key", help_heading = "TLS")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert", help_heading = "TLS")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s) that client certificates must chain to (mutual TLS): clients
    /// without such a certificate are refused.
    #[arg(long, requires = "tls_cert", help_heading = "TLS")]
    pub tls_client_ca: Option<PathBuf>,

    /// Most requests in one forward pass.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH as u32, value_parser = clap::value_parser!(u32).range(1..=4096), help_heading = "Batching")]
    pub max_batch: u32,

    /// Most requests waiting for the model; more are refused at once (the edge sends them to
    /// the cloud when the budget allows).
    #[arg(long, default_value_t = DEFAULT_MAX_QUEUE as u32, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Batching")]
    pub max_queue: u32,

    /// Longest a request may wait for the model, in milliseconds: one expected to wait longer
    /// is refused at once, one that waited longer is not computed. Requests are also refused
    /// at once when their answer is expected after their deadline.
    #[arg(long, default_value_t = DEFAULT_MAX_QUEUE_WAIT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Batching")]
    pub max_queue_wait_ms: u64,

    /// Microseconds a partial batch may wait for more requests (0: run what is waiting).
    #[arg(long, default_value_t = 0, help_heading = "Batching")]
    pub queue_delay_us: u64,

    /// Microseconds below which a model's measured pass of one request runs on the thread that
    /// received it when nothing is queued, instead of being handed to a worker (the hand-off
    /// costs more than such a pass); 0 always hands off.
    #[arg(long, default_value_t = DEFAULT_INLINE_BELOW.as_micros() as u64, help_heading = "Batching")]
    pub inline_below_us: u64,

    /// Model worker threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256), help_heading = "Batching")]
    pub workers: Option<u32>,

    /// Largest gRPC message, and HTTP request body, accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES, help_heading = "Limits")]
    pub max_message_bytes: usize,

    /// Most inference requests in progress at once on this node (gRPC and HTTP together;
    /// an open `InferStream` counts as one); more are refused with RESOURCE_EXHAUSTED (HTTP
    /// 429) at once.
    #[arg(long, default_value_t = DEFAULT_MAX_CONCURRENT_REQUESTS as u32, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    pub max_concurrent_requests: u32,

    /// Most HTTP/2 streams (calls) a client may open at once on one gRPC connection.
    #[arg(long, default_value_t = DEFAULT_MAX_STREAMS_PER_CONNECTION, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    pub max_streams_per_connection: u32,

    /// Most frames of one `InferStream` being answered at once; the stream reads no further
    /// frames until one is answered.
    #[arg(long, default_value_t = DEFAULT_MAX_STREAM_FRAMES as u32, value_parser = clap::value_parser!(u32).range(1..=65536), help_heading = "Limits")]
    pub max_stream_frames: u32,

    /// Most rows (batch entries) in one Open Inference Protocol request.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH_ROWS as u32, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    pub max_oip_rows: u32,

    /// Largest encoded image accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_IMAGE_BYTES, help_heading = "Limits")]
    pub max_image_bytes: usize,

    /// Largest image width or height accepted, in pixels.
    #[arg(long, default_value_t = DEFAULT_MAX_IMAGE_SIDE, value_parser = clap::value_parser!(u32).range(1..=65535), help_heading = "Limits")]
    pub max_image_side: u32,

    /// Most time any call may take, in milliseconds, whatever deadline its client set.
    #[arg(long, default_value_t = DEFAULT_REQUEST_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    pub request_timeout_ms: u64,

    /// Connection liveness, in milliseconds: an idle HTTP/2 connection is pinged this often
    /// and closed when the ping is not answered within as long again; a TLS handshake or an
    /// HTTP/1 request head must arrive within it too.
    #[arg(long, default_value_t = DEFAULT_CONNECTION_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(100..), help_heading = "Limits")]
    pub connection_timeout_ms: u64,

    /// Milliseconds between checks of the --model file for changes, which are loaded and
    /// swapped in (after the probe); 0 disables the watch. SIGHUP reloads it in any case.
    #[arg(long, default_value_t = 1000)]
    pub model_watch_ms: u64,

    /// Model repository in Triton's layout, `<repository>/<model>/<version>/<file>`: the node
    /// serves the highest version of --repository-model from it instead of --model, and
    /// loads newer versions as they appear (checked at the --model-watch-ms interval).
    #[arg(long)]
    pub model_repository: Option<PathBuf>,

    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Export spans over OTLP/gRPC to this collector (http://HOST:4317); a request's W3C
    /// `traceparent` is honoured (and the edge carries it on to the cloud). Default: no
    /// export.
    #[arg(long, value_name = "URL", value_parser = crate::telemetry::parse_otlp_endpoint)]
    pub otlp_endpoint: Option<String>,
}

impl NodeFlags {
    /// The batcher settings.
    pub fn batcher(&self) -> BatcherConfig {
        BatcherConfig::from_flags(
            self.max_batch,
            self.max_queue,
            self.max_queue_wait_ms,
            self.queue_delay_us,
            self.workers,
            self.inline_below_us,
        )
    }

    /// The limits applied to each request's input.
    pub fn input_limits(&self) -> InputLimits {
        InputLimits {
            max_image_bytes: self.max_image_bytes,
            max_image_side: self.max_image_side,
            max_batch_rows: self.max_oip_rows as usize,
        }
    }

    /// The limits of the node's listeners.
    pub fn server_limits(&self) -> ServerLimits {
        ServerLimits {
            max_message_bytes: self.max_message_bytes,
            max_concurrent_requests: self.max_concurrent_requests as usize,
            max_streams_per_connection: self.max_streams_per_connection,
            max_stream_frames: self.max_stream_frames as usize,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            connection_timeout: Duration::from_millis(self.connection_timeout_ms),
        }
    }

    /// The server's TLS settings, files read and checked; `None` for plaintext. `prefix`
    /// (`EDGE`, `CLOUD`) names the environment twins in errors.
    pub fn server_tls(&self, prefix: &str) -> Result<Option<ServerTlsConfig>, TlsError> {
        tls::server_config(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_client_ca.as_deref(),
            prefix,
        )
    }

    /// The HTTP listener's TLS settings, from the same files; `None` for plaintext.
    pub fn http_tls(&self, prefix: &str) -> Result<Option<Arc<HttpTlsConfig>>, TlsError> {
        tls::http_server_config(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_client_ca.as_deref(),
            prefix,
        )
    }

    /// The data-plane token, its value or file read and checked; `None` when not set.
    pub fn data_token(&self) -> Result<Option<String>, TokenError> {
        token_setting(
            &self.auth_token,
            self.auth_token_file.as_deref(),
            "--auth-token",
        )
    }

    /// The admin token, its value or file read and checked; `None` when not set.
    pub fn admin_token(&self) -> Result<Option<String>, TokenError> {
        token_setting(
            &self.admin_token,
            self.admin_token_file.as_deref(),
            "--admin-token",
        )
    }

    /// How often the model file or repository is checked for changes; `None` for never.
    pub fn model_watch(&self) -> Option<Duration> {
        (self.model_watch_ms > 0).then(|| Duration::from_millis(self.model_watch_ms))
    }
}

/// Gives every long flag of `command` that has no environment variable the twin
/// `<PREFIX>_<FLAG>` (`--max-batch` with prefix `EDGE`: `EDGE_MAX_BATCH`), so that flags and
/// twins cannot drift apart. Help and version are left alone.
pub fn with_env_twins(command: Command, prefix: &str) -> Command {
    command.mut_args(|arg| {
        let long = match arg.get_long() {
            Some(long) if arg.get_env().is_none() && !matches!(long, "help" | "version") => {
                long.to_owned()
            }
            _ => return arg,
        };
        let twin = format!("{prefix}_{}", long.replace('-', "_").to_ascii_uppercase());
        arg.env(twin)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Debug, Parser)]
    struct Node {
        #[arg(long, default_value = "a")]
        listen: String,
        #[command(flatten)]
        flags: NodeFlags,
    }

    #[test]
    fn every_flag_gets_its_prefixed_twin() {
        let command = with_env_twins(Node::command(), "EDGE");
        let twins: Vec<String> = command
            .get_arguments()
            .filter_map(|a| Some(a.get_env()?.to_string_lossy().into_owned()))
            .collect();
        assert!(twins.contains(&"EDGE_LISTEN".to_owned()), "{twins:?}");
        assert!(twins.contains(&"EDGE_MAX_QUEUE_WAIT_MS".to_owned()));
        assert!(twins.contains(&"EDGE_AUTH_TOKEN_FILE".to_owned()));
        assert!(!twins.iter().any(|t| t.contains("HELP")), "{twins:?}");
        let flags = command
            .get_arguments()
            .filter(|a| {
                a.get_long()
                    .is_some_and(|l| !matches!(l, "help" | "version"))
            })
            .count();
        assert_eq!(twins.len(), flags, "one twin per flag");
    }

    #[test]
    fn defaults_parse_and_values_are_checked() {
        let node = Node::try_parse_from(["node"]).unwrap();
        assert_eq!(node.flags.batcher().max_queue_wait, DEFAULT_MAX_QUEUE_WAIT);
        assert_eq!(node.flags.server_limits().max_concurrent_requests, 4096);
        let command = with_env_twins(Node::command(), "CLOUD");
        let e = command
            .try_get_matches_from(["node", "--max-concurrent-requests", "0"])
            .unwrap_err();
        assert!(e.to_string().contains("--max-concurrent-requests"), "{e}");
        let m = with_env_twins(Node::command(), "CLOUD")
            .try_get_matches_from(["node", "--max-oip-rows", "8"])
            .unwrap();
        let node = Node::from_arg_matches(&m).unwrap();
        assert_eq!(node.flags.input_limits().max_batch_rows, 8);
    }
}

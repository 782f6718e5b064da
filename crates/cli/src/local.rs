//! Cloud and edge in this process on the shipped models: what `edgeinfer up` runs, and what
//! `edgeinfer sweep` measures when it is given no addresses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cloud_node::CloudConfig;
use edge_node::{EdgeConfig, prepare};
use edgeinfer_serving::cli::{Addresses, bind_listeners};
use futures::FutureExt;
use futures::future::BoxFuture;
use std::future::Future;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Finds a shipped model file: `$EDGEINFER_MODELS_DIR`, then `models/` in the repository.
pub fn shipped_model(file: &str) -> PathBuf {
    match std::env::var_os("EDGEINFER_MODELS_DIR") {
        Some(dir) => Path::new(&dir).join(file),
        None => repository_file(&Path::new("models").join(file)),
    }
}

/// Finds a file of the repository: under the current directory or any parent, else in the
/// source tree this binary was built from.
pub fn repository_file(relative: &Path) -> PathBuf {
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            let candidate = dir.join(relative);
            if candidate.exists() {
                return candidate;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// What to start.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Edge gRPC address.
    pub edge_listen: SocketAddr,
    /// Cloud gRPC address.
    pub cloud_listen: SocketAddr,
    /// Edge admin address (`EdgeAdmin`).
    pub edge_admin_listen: SocketAddr,
    /// Token admin calls must present, if any.
    pub admin_token: Option<String>,
    /// Token the cloud requires, if any.
    pub cloud_auth_token: Option<String>,
    /// Token the edge presents to the cloud, if any (the cloud's own by default).
    pub edge_cloud_token: Option<String>,
    /// Edge metrics address, if any.
    pub edge_metrics_listen: Option<SocketAddr>,
    /// Cloud metrics address, if any.
    pub cloud_metrics_listen: Option<SocketAddr>,
    /// Edge model file.
    pub edge_model: PathBuf,
    /// Cloud model file.
    pub cloud_model: PathBuf,
    /// Link profile name or file.
    pub profile: String,
    /// Link seed.
    pub seed: u64,
    /// Directory of the trace files that `SetLinkProfile` documents may name.
    pub link_trace_dir: Option<PathBuf>,
    /// Edge threshold, when not the default.
    pub threshold: Option<f32>,
    /// Default budget, when not the default.
    pub budget_ms: Option<u32>,
    /// TLS for both nodes and between them; plaintext when `None`.
    pub tls: Option<LocalTls>,
    /// Edge OIP HTTP address, if any.
    pub edge_http_listen: Option<SocketAddr>,
    /// Cloud OIP HTTP address, if any.
    pub cloud_http_listen: Option<SocketAddr>,
    /// Cloud admin address (`ModelAdmin`), if any; it takes `admin_token` too.
    pub cloud_admin_listen: Option<SocketAddr>,
    /// Milliseconds between checks of both model files for changes, when not the default.
    pub model_watch_ms: Option<u64>,
    /// Edge model repository (Triton layout), served instead of `edge_model` when set.
    pub edge_model_repository: Option<PathBuf>,
    /// Where the edge keeps the cloud's answers (`--hard-examples-dir`), if anywhere.
    pub edge_hard_examples_dir: Option<PathBuf>,
}

/// PEM files for [`LocalOptions::tls`]. Both nodes serve `cert`; the cloud also requires
/// client certificates that chain to `ca` (mutual TLS), and the edge presents `cert` to it and
/// checks the cloud's against `ca`. `cert` must name 127.0.0.1, where the nodes listen.
#[derive(Clone, Debug)]
pub struct LocalTls {
    /// CA certificate.
    pub ca: PathBuf,
    /// Certificate chain of both nodes.
    pub cert: PathBuf,
    /// Key of `cert`.
    pub key: PathBuf,
}

impl Default for LocalOptions {
    fn default() -> Self {
        let any = "127.0.0.1:0".parse().expect("valid address");
        Self {
            edge_listen: any,
            cloud_listen: any,
            edge_admin_listen: any,
            admin_token: None,
            cloud_auth_token: None,
            edge_cloud_token: None,
            edge_metrics_listen: None,
            cloud_metrics_listen: None,
            edge_model: shipped_model("edge-mlp-int8.safetensors"),
            cloud_model: shipped_model("cloud-cnn.safetensors"),
            profile: "embb-midband".into(),
            seed: 1,
            link_trace_dir: None,
            threshold: None,
            budget_ms: None,
            tls: None,
            edge_http_listen: None,
            cloud_http_listen: None,
            cloud_admin_listen: Some(any),
            model_watch_ms: None,
            edge_model_repository: None,
            edge_hard_examples_dir: None,
        }
    }
}

/// Running servers. Dropping them without [`LocalServers::stop`] leaves them running until the
/// process ends.
pub struct LocalServers {
    /// Bound edge gRPC address.
    pub edge: SocketAddr,
    /// Bound edge admin address.
    pub edge_admin: SocketAddr,
    /// Bound cloud gRPC address.
    pub cloud: SocketAddr,
    /// Bound edge metrics address.
    pub edge_metrics: Option<SocketAddr>,
    /// Bound cloud metrics address.
    pub cloud_metrics: Option<SocketAddr>,
    /// Bound edge OIP HTTP address.
    pub edge_http: Option<SocketAddr>,
    /// Bound cloud OIP HTTP address.
    pub cloud_http: Option<SocketAddr>,
    edge_task: Running,
    /// `None` while the cloud is stopped.
    cloud_task: Option<Running>,
    /// Kept to restart the cloud on the same address.
    cloud_prepared: cloud_node::Prepared,
    /// Bound cloud admin address (`ModelAdmin`), if any.
    pub cloud_admin: Option<SocketAddr>,
}

/// A server task and the switch that stops it.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn spawn<F>(serve: impl FnOnce(BoxFuture<'static, ()>) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, mut rx) = watch::channel(false);
        let signal = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        Self {
            stop,
            task: tokio::spawn(serve(signal.boxed())),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("a server task panicked")?
    }
}

/// Loads both models, binds, and starts serving.
pub async fn start(options: LocalOptions) -> anyhow::Result<LocalServers> {
    let tls = options.tls.as_ref();
    let mut cloud_config = CloudConfig {
        listen: options.cloud_listen,
        metrics_listen: options.cloud_metrics_listen,
        http_listen: options.cloud_http_listen,
        admin_listen: options.cloud_admin_listen,
        ..CloudConfig::for_model(&options.cloud_model)
    };
    let flags = &mut cloud_config.node;
    flags.tls_cert = tls.map(|t| t.cert.clone());
    flags.tls_key = tls.map(|t| t.key.clone());
    flags.tls_client_ca = tls.map(|t| t.ca.clone());
    flags.auth_token = options.cloud_auth_token.clone().unwrap_or_default();
    flags.admin_token = options.admin_token.clone().unwrap_or_default();
    if let Some(ms) = options.model_watch_ms {
        cloud_config.node.model_watch_ms = ms;
    }
    let cloud_prepared = cloud_node::prepare(cloud_config)?;
    let cloud_listeners = bind_listeners(
        Addresses {
            grpc: options.cloud_listen,
            admin: options.cloud_admin_listen,
            metrics: options.cloud_metrics_listen,
            http: options.cloud_http_listen,
        },
        "CLOUD",
    )
    .await?;
    let cloud = cloud_listeners.grpc.local_addr()?;
    let cloud_admin = bound(&cloud_listeners.admin)?;
    let cloud_metrics = bound(&cloud_listeners.metrics)?;
    let cloud_http = bound(&cloud_listeners.http)?;

    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut edge_config = EdgeConfig::for_model(&options.edge_model, format!("{scheme}://{cloud}"));
    if let Some(t) = tls {
        edge_config.node.tls_cert = Some(t.cert.clone());
        edge_config.node.tls_key = Some(t.key.clone());
        edge_config.cloud_ca = Some(t.ca.clone());
        edge_config.cloud_tls_cert = Some(t.cert.clone());
        edge_config.cloud_tls_key = Some(t.key.clone());
    }
    edge_config.listen = options.edge_listen;
    edge_config.admin_listen = Some(options.edge_admin_listen);
    edge_config.node.admin_token = options.admin_token.clone().unwrap_or_default();
    edge_config.cloud_token = options
        .edge_cloud_token
        .clone()
        .or_else(|| options.cloud_auth_token.clone())
        .unwrap_or_default();
    edge_config.metrics_listen = options.edge_metrics_listen;
    edge_config.http_listen = options.edge_http_listen;
    edge_config.link_profile = options.profile.clone();
    edge_config.link_seed = options.seed;
    edge_config.link_trace_dir = options.link_trace_dir.clone();
    if let Some(t) = options.threshold {
        edge_config.threshold = t;
    }
    if let Some(b) = options.budget_ms {
        edge_config.budget_ms = b;
    }
    if let Some(ms) = options.model_watch_ms {
        edge_config.node.model_watch_ms = ms;
    }
    edge_config.node.model_repository = options.edge_model_repository.clone();
    edge_config.hard_examples_dir = options.edge_hard_examples_dir.clone();
    let prepared = prepare(edge_config)?;
    let edge_listeners = bind_listeners(
        Addresses {
            grpc: options.edge_listen,
            admin: Some(options.edge_admin_listen),
            metrics: options.edge_metrics_listen,
            http: options.edge_http_listen,
        },
        "EDGE",
    )
    .await?;
    let edge = edge_listeners.grpc.local_addr()?;
    let edge_admin = edge_listeners
        .admin
        .as_ref()
        .context("the admin listener was bound")?
        .local_addr()?;
    let edge_metrics = bound(&edge_listeners.metrics)?;
    let edge_http = bound(&edge_listeners.http)?;

    let cloud_task = Running::spawn({
        let prepared = cloud_prepared.clone();
        move |signal| cloud_node::run(prepared, cloud_listeners, signal)
    });
    let edge_task = Running::spawn(move |signal| edge_node::run(prepared, edge_listeners, signal));
    Ok(LocalServers {
        edge,
        edge_admin,
        cloud,
        edge_metrics,
        cloud_metrics,
        edge_http,
        cloud_http,
        edge_task,
        cloud_task: Some(cloud_task),
        cloud_prepared,
        cloud_admin,
    })
}

/// The address an optional listener was bound to.
fn bound(listener: &Option<tokio::net::TcpListener>) -> std::io::Result<Option<SocketAddr>> {
    listener.as_ref().map(|l| l.local_addr()).transpose()
}

impl LocalServers {
    /// Stops the cloud (after its requests in flight), leaving the edge running.
    pub async fn stop_cloud(&mut self) -> anyhow::Result<()> {
        match self.cloud_task.take() {
            Some(t) => t.stop().await,
            None => Ok(()),
        }
    }

    /// Starts the cloud again on the address it had.
    pub async fn restart_cloud(&mut self) -> anyhow::Result<()> {
        self.stop_cloud().await?;
        let addresses = Addresses {
            grpc: self.cloud,
            admin: self.cloud_admin,
            metrics: None,
            http: self.cloud_http,
        };
        let listeners = bind_listeners(addresses, "CLOUD").await?;
        let prepared = self.cloud_prepared.clone();
        self.cloud_task = Some(Running::spawn(move |signal| {
            cloud_node::run(prepared, listeners, signal)
        }));
        Ok(())
    }

    /// Stops both servers after the requests in flight are answered.
    pub async fn stop(self) -> anyhow::Result<()> {
        let edge = self.edge_task.stop().await;
        if let Some(cloud) = self.cloud_task {
            cloud.stop().await?;
        }
        edge
    }
}

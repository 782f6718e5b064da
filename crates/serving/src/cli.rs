//! What the binaries share at their edge: `main` itself ([`binary_main!`], [`serve_node`]), parsing
//! settings with exit status 64 on a bad value, logging set-up, and binding.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use clap::error::ErrorKind;
use tokio::net::TcpListener;

use crate::server::Listeners;

/// Exit status for a configuration error (sysexits EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// Defines a binary's `fn main() -> ExitCode`: sets candle's thread settings (one thread per
/// forward pass; see `edgeinfer_model::threading`) before any thread exists to read them, then
/// runs the async block given on a multi-threaded tokio runtime. A macro because setting the
/// environment is `unsafe` (sound only while one thread exists), which this crate forbids: the
/// code expands in the binary, first thing in its `main`.
///
/// ```ignore
/// edgeinfer_serving::binary_main!(async { std::process::ExitCode::SUCCESS });
/// ```
#[macro_export]
macro_rules! binary_main {
    ($body:expr) => {
        fn main() -> ::std::process::ExitCode {
            for (key, value) in ::edgeinfer_model::threading::env_defaults() {
                // SAFETY: first thing in `main`, before the runtime starts: no other thread
                // exists yet, so nothing reads the environment while it changes.
                unsafe { ::std::env::set_var(key, value) };
            }
            $crate::cli::block_on($body)
        }
    };
}

/// Runs `body` on a new multi-threaded tokio runtime (the second half of [`binary_main!`]).
pub fn block_on(body: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(body),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A node's configuration, as [`node_main`] needs it.
pub trait NodeConfig: Parser {
    /// The binary's name, for messages (`edge-node`).
    const BINARY: &'static str;
    /// The prefix of the environment twins (`EDGE`).
    const PREFIX: &'static str;
    /// The service name spans are exported under (`edgeinfer-edge`).
    const SERVICE: &'static str;
    /// The settings both nodes share.
    fn flags(&self) -> &crate::flags::NodeFlags;
    /// The addresses to bind.
    fn addresses(&self) -> Addresses;
}

/// Implements [`NodeConfig`] for a node's configuration `$config`, which has the fields
/// `listen`, `admin_listen`, `metrics_listen`, `http_listen` and `node` (the shared flags).
#[macro_export]
macro_rules! node_config {
    ($config:ty, $binary:literal, $prefix:literal, $service:literal) => {
        impl $crate::cli::NodeConfig for $config {
            const BINARY: &'static str = $binary;
            const PREFIX: &'static str = $prefix;
            const SERVICE: &'static str = $service;

            fn flags(&self) -> &$crate::flags::NodeFlags {
                &self.node
            }

            fn addresses(&self) -> $crate::cli::Addresses {
                $crate::cli::Addresses {
                    grpc: self.listen,
                    admin: self.admin_listen,
                    metrics: self.metrics_listen,
                    http: self.http_listen,
                }
            }
        }
    };
}

/// The whole `main` of a node binary: parse the settings ([`parse_or_exit`]), set up logging
/// and span export, then [`serve_node`] with `prepare` and `run`; export is flushed on the
/// way out.
pub async fn node_main<C, P, Fut>(
    prepare: impl FnOnce(C) -> anyhow::Result<P>,
    run: impl FnOnce(P, Listeners) -> Fut,
) -> ExitCode
where
    C: NodeConfig,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config: C = parse_or_exit(C::PREFIX);
    let flags = config.flags();
    let telemetry = match init_telemetry(
        &flags.log_format,
        flags.otlp_endpoint.as_deref(),
        C::SERVICE,
        C::BINARY,
    ) {
        Ok(t) => t,
        Err(status) => return status,
    };
    let addresses = config.addresses();
    let status = serve_node(C::BINARY, C::PREFIX, config, addresses, prepare, run).await;
    if let Some(t) = telemetry {
        t.shutdown().await;
    }
    status
}

/// A node binary from its settings on: everything that can be wrong with the configuration is
/// found by `prepare` before a port is bound; then the listeners are bound and `run` serves on
/// them until SIGTERM or Ctrl-C. Configuration and binding errors exit with status 64, a
/// failure while serving with 1, each printed as `name: the chain of causes`.
pub async fn serve_node<C, P, Fut>(
    name: &str,
    prefix: &str,
    config: C,
    addresses: Addresses,
    prepare: impl FnOnce(C) -> anyhow::Result<P>,
    run: impl FnOnce(P, Listeners) -> Fut,
) -> ExitCode
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    let prepared = match prepare(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let listeners = match bind_listeners(addresses, prefix).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing::info!(grpc = %addresses.grpc, admin = ?addresses.admin, http = ?addresses.http, metrics = ?addresses.metrics, "{name} listening");
    match run(prepared, listeners).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses flags and environment, each flag's twin named `<prefix>_<FLAG>`
/// ([`crate::flags::with_env_twins`]); on a bad value prints clap's message, which names the
/// flag and its environment twin, and exits with status 64 before anything is bound.
pub fn parse_or_exit<T: Parser>(prefix: &str) -> T {
    let parsed = crate::flags::with_env_twins(T::command(), prefix)
        .try_get_matches()
        .and_then(|matches| T::from_arg_matches(&matches));
    match parsed {
        Ok(config) => config,
        Err(e) => {
            let code = match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => i32::from(EXIT_CONFIG),
            };
            let _ = e.print();
            std::process::exit(code);
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text or JSON lines; no span
/// export. Does nothing when a subscriber is already installed.
pub fn init_tracing(format: &str) {
    // Without an endpoint the only possible failure is an installed subscriber.
    let _ = crate::telemetry::init(format, None, "edgeinfer");
}

/// Installs logging and, with `otlp_endpoint`, span export ([`crate::telemetry::init`]) for
/// the binary `binary`; on failure prints why and returns the exit status of bad settings.
pub fn init_telemetry(
    format: &str,
    otlp_endpoint: Option<&str>,
    service_name: &'static str,
    binary: &str,
) -> Result<Option<crate::telemetry::Telemetry>, std::process::ExitCode> {
    crate::telemetry::init(format, otlp_endpoint, service_name).map_err(|e| {
        eprintln!("{binary}: {e:#}");
        std::process::ExitCode::from(EXIT_CONFIG)
    })
}

/// The addresses a node listens on.
#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    /// gRPC data plane.
    pub grpc: SocketAddr,
    /// gRPC admin plane, if any.
    pub admin: Option<SocketAddr>,
    /// Prometheus metrics, if any.
    pub metrics: Option<SocketAddr>,
    /// OIP over HTTP, if any.
    pub http: Option<SocketAddr>,
}

/// Binds a node's listeners; errors name the flag and its environment twin (`prefix` is
/// `EDGE` or `CLOUD`).
pub async fn bind_listeners(addresses: Addresses, prefix: &str) -> anyhow::Result<Listeners> {
    async fn bind(
        addr: SocketAddr,
        flag: &str,
        prefix: &str,
        env: &str,
    ) -> anyhow::Result<TcpListener> {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("{flag} / {prefix}_{env} {addr}"))
    }
    let grpc = bind(addresses.grpc, "--listen", prefix, "LISTEN").await?;
    let admin = match addresses.admin {
        None => None,
        Some(addr) => Some(bind(addr, "--admin-listen", prefix, "ADMIN_LISTEN").await?),
    };
    let metrics = match addresses.metrics {
        None => None,
        Some(addr) => Some(bind(addr, "--metrics-listen", prefix, "METRICS_LISTEN").await?),
    };
    let http = match addresses.http {
        None => None,
        Some(addr) => Some(bind(addr, "--http-listen", prefix, "HTTP_LISTEN").await?),
    };
    Ok(Listeners {
        grpc,
        admin,
        metrics,
        http,
    })
}

/// Parses an address, or "off" / "" for none. Fields using it are typed
/// `std::option::Option<SocketAddr>`: spelled in full, clap leaves the `Option` to this parser
/// instead of making the flag optional (which would ignore the default).
pub fn parse_optional_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    match s {
        "" | "off" | "none" => Ok(None),
        _ => s
            .parse()
            .map(Some)
            .map_err(|e| format!("{s:?} is not an address like 0.0.0.0:9092 or \"off\": {e}")),
    }
}

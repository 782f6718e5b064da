//! What the server binaries share at their edge: parsing settings with exit status 64 on a
//! bad value, logging set-up, and binding.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use clap::error::ErrorKind;
use tokio::net::TcpListener;

use crate::server::Listeners;

/// Exit status for a configuration error (sysexits EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// Parses flags and environment; on a bad value prints clap's message, which names the flag
/// and its environment twin, and exits with status 64 before anything is bound.
pub fn parse_or_exit<T: Parser>() -> T {
    match T::try_parse() {
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

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text or JSON lines.
pub fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Binds the gRPC and metrics listeners; errors name the flag and its environment twin
/// (`prefix` is `EDGE` or `CLOUD`).
pub async fn bind_listeners(
    grpc: SocketAddr,
    metrics: Option<SocketAddr>,
    prefix: &str,
) -> anyhow::Result<Listeners> {
    let grpc_listener = TcpListener::bind(grpc)
        .await
        .with_context(|| format!("--listen / {prefix}_LISTEN {grpc}"))?;
    let metrics = match metrics {
        None => None,
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics-listen / {prefix}_METRICS_LISTEN {addr}"))?,
        ),
    };
    Ok(Listeners {
        grpc: grpc_listener,
        metrics,
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

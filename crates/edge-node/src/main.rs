//! The `edge-node` binary: parse settings, load and check everything, bind, serve until
//! SIGTERM or Ctrl-C.

use std::process::ExitCode;

use edge_node::{EdgeConfig, prepare, run};
use edgeinfer_serving::cli::{
    Addresses, EXIT_CONFIG, bind_listeners, init_telemetry, parse_or_exit,
};

/// Sets candle's thread settings (one thread per forward pass; see
/// `edgeinfer_model::threading`) before anything reads them, then runs `async_main`.
fn main() -> ExitCode {
    for (key, value) in edgeinfer_model::threading::env_defaults() {
        // SAFETY: first thing in `main`: no other thread exists yet, so nothing reads the
        // environment while it changes.
        unsafe { std::env::set_var(key, value) };
    }
    async_main()
}

#[tokio::main]
async fn async_main() -> ExitCode {
    let config: EdgeConfig = parse_or_exit();
    let endpoint = config.otlp_endpoint.as_deref();
    let telemetry =
        match init_telemetry(&config.log_format, endpoint, "edgeinfer-edge", "edge-node") {
            Ok(t) => t,
            Err(status) => return status,
        };
    let addresses = Addresses {
        grpc: config.listen,
        admin: config.admin_listen,
        metrics: config.metrics_listen,
    };
    // Everything that can be wrong with the configuration is found before a port is bound.
    let prepared = match prepare(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("edge-node: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let listeners = match bind_listeners(addresses, "EDGE").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("edge-node: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing::info!(grpc = %addresses.grpc, admin = ?addresses.admin, "edge listening");
    let result = run(prepared, listeners, edgeinfer_serving::shutdown::signal()).await;
    if let Some(t) = telemetry {
        t.shutdown().await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

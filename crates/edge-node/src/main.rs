//! The `edge-node` binary: parse settings, load and check everything, bind, serve until
//! SIGTERM or Ctrl-C.

use std::process::ExitCode;

use edge_node::{EdgeConfig, prepare, run};
use edgeinfer_serving::cli::{EXIT_CONFIG, bind_listeners, init_tracing, parse_or_exit};

#[tokio::main]
async fn main() -> ExitCode {
    let config: EdgeConfig = parse_or_exit();
    init_tracing(&config.log_format);
    let (listen, metrics) = (config.listen, config.metrics_listen);
    // Everything that can be wrong with the configuration is found before a port is bound.
    let prepared = match prepare(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("edge-node: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let listeners = match bind_listeners(listen, metrics, "EDGE").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("edge-node: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing::info!(grpc = %listen, "edge listening");
    match run(prepared, listeners, edgeinfer_serving::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

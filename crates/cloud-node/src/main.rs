//! The `cloud-node` binary: parse settings, load the model, bind, serve until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use cloud_node::{CloudConfig, load_model, run};
use edgeinfer_serving::cli::{EXIT_CONFIG, bind_listeners, init_tracing, parse_or_exit};

#[tokio::main]
async fn main() -> ExitCode {
    let config: CloudConfig = parse_or_exit();
    init_tracing(&config.log_format);
    // Everything that can be wrong with the configuration is found before a port is bound.
    let model = match load_model(&config) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("cloud-node: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let listeners = match bind_listeners(config.listen, config.metrics_listen, "CLOUD").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cloud-node: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing::info!(grpc = %config.listen, model = %config.model.display(), "cloud listening");
    match run(
        config,
        model,
        listeners,
        edgeinfer_serving::shutdown::signal(),
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloud-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

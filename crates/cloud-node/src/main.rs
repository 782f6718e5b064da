//! The `cloud-node` binary: parse settings, load the model, bind, serve until SIGTERM or Ctrl-C.

use cloud_node::{CloudConfig, prepare, run};
use edgeinfer_serving::cli::{Addresses, init_telemetry, parse_or_exit, serve_node};
use edgeinfer_serving::shutdown;

edgeinfer_serving::binary_main!(async {
    let config: CloudConfig = parse_or_exit();
    let endpoint = config.otlp_endpoint.as_deref();
    let telemetry = match init_telemetry(
        &config.log_format,
        endpoint,
        "edgeinfer-cloud",
        "cloud-node",
    ) {
        Ok(t) => t,
        Err(status) => return status,
    };
    tracing::info!(model = %config.model.display(), "cloud model");
    let addresses = Addresses {
        grpc: config.listen,
        admin: config.admin_listen,
        metrics: config.metrics_listen,
        http: config.http_listen,
    };
    let status = serve_node("cloud-node", "CLOUD", config, addresses, prepare, |p, l| {
        run(p, l, shutdown::signal())
    })
    .await;
    if let Some(t) = telemetry {
        t.shutdown().await;
    }
    status
});

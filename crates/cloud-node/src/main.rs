//! The `cloud-node` binary: parse settings, load the model, bind, serve until SIGTERM or Ctrl-C.

use cloud_node::{CloudConfig, prepare, run};
use edgeinfer_serving::cli::{Addresses, init_tracing, parse_or_exit, serve_node};
use edgeinfer_serving::shutdown;

edgeinfer_serving::binary_main!(async {
    let config: CloudConfig = parse_or_exit();
    init_tracing(&config.log_format);
    tracing::info!(model = %config.model.display(), "cloud model");
    let addresses = Addresses {
        grpc: config.listen,
        admin: config.admin_listen,
        metrics: config.metrics_listen,
        http: config.http_listen,
    };
    serve_node("cloud-node", "CLOUD", config, addresses, prepare, |p, l| {
        run(p, l, shutdown::signal())
    })
    .await
});

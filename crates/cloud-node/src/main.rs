//! The `cloud-node` binary: parse settings, load the model, bind, serve until SIGTERM or Ctrl-C.

use cloud_node::{CloudConfig, prepare, run};
use edgeinfer_serving::cli::node_main;
use edgeinfer_serving::shutdown;

edgeinfer_serving::binary_main!(node_main::<CloudConfig, _, _>(prepare, |p, l| run(
    p,
    l,
    shutdown::signal()
)));

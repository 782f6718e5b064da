//! The `edge-node` binary: parse settings, load and check everything, bind, serve until
//! SIGTERM or Ctrl-C.

use edge_node::{EdgeConfig, prepare, run};
use edgeinfer_serving::cli::node_main;
use edgeinfer_serving::shutdown;

edgeinfer_serving::binary_main!(node_main::<EdgeConfig, _, _>(prepare, |p, l| run(
    p,
    l,
    shutdown::signal()
)));

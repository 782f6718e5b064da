//! The `edge-node` binary. Placeholder until the serving issue lands.

fn main() {
    eprintln!("edge-node: not implemented yet (see the serving issue)");
    std::process::exit(1);
}

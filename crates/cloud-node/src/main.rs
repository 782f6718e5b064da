//! The `cloud-node` binary. Placeholder until the serving issue lands.

fn main() {
    eprintln!("cloud-node: not implemented yet (see the serving issue)");
    std::process::exit(1);
}

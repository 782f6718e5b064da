//! The `edgeinfer` command line.

fn main() {
    eprintln!("edgeinfer: the models and servers come with the models and serving issues");
    std::process::exit(1);
}

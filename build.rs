//! Compiles `proto/` into Rust with no `protoc` on the machine: protox parses the files into a
//! descriptor set, which tonic-prost-build turns into messages, clients and servers. The same
//! encoded descriptor set is written to `OUT_DIR` for server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "edgeinfer/v1/inference.proto",
    "edgeinfer/v1/admin.proto",
    "inference/grpc_service.proto",
    "inference/model_repository.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let descriptors = protox::compile(PROTOS, ["proto"])?;
    fs::write(
        out_dir.join("edgeinfer_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

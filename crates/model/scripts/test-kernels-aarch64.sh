#!/usr/bin/env bash
# Runs the int8 kernels' tests (crates/model/src/int8/kernels.rs) for aarch64 under qemu, so the
# NEON and NEON dot-product kernels are held to the scalar one on an x86 machine too.
# The kernels file is built alone, in a scratch crate, with the quantizer it tests against.
# Needs: rustup target aarch64-unknown-linux-gnu; Debian packages qemu-user,
# gcc-aarch64-linux-gnu and libc6-dev-arm64-cross.
# Usage: bash crates/model/scripts/test-kernels-aarch64.sh
set -euo pipefail
src=$(cd "$(dirname "$0")/../src/int8" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src" "$tmp/.cargo"
cat >"$tmp/Cargo.toml" <<'TOML'
[package]
name = "int8-kernels-aarch64"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
thiserror = "2.0"

[dev-dependencies]
rand = "0.9"
rand_chacha = "0.9"
TOML
cat >"$tmp/.cargo/config.toml" <<'TOML'
[target.aarch64-unknown-linux-gnu]
linker = "aarch64-linux-gnu-gcc"
# -cpu max has the dot-product extension, so both NEON kernels run.
runner = "qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu max"
TOML
# The parent module's quantizer, from its first item to the layer type.
sed -n '/^\/\/\/ The largest quantized magnitude/,/^\/\/\/ A linear layer/p' "$src/mod.rs" \
    | sed '$d' >"$tmp/src/quantize.rs"
cat >"$tmp/src/lib.rs" <<RS
pub mod int8 {
    include!("quantize.rs");
    #[path = "$src/kernels.rs"]
    pub mod kernels;
}
RS
cd "$tmp"
cargo test --offline --target aarch64-unknown-linux-gnu -- --nocapture

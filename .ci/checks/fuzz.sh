#!/usr/bin/env bash
# Fuzz smoke run: builds every target of fuzz/ with the stable toolchain (libFuzzer through the
# libfuzzer-sys crate, coverage by LLVM's sancov pass; see fuzz/README.md) and runs each for
# FUZZ_SECONDS (default 20) from the committed corpus. A crash, a timeout or an out-of-memory
# fails the check and leaves the input in fuzz/artifacts/<target>/. New corpus entries go to a
# temporary directory, so the committed corpus stays as it is. Run by .ci/run; can also be run
# alone from any directory; `bash .ci/checks/fuzz.sh image oip` runs only those targets.
set -euo pipefail
cd "$(dirname "$0")/../../fuzz"

seconds=${FUZZ_SECONDS:-20}
host=$(rustc -vV | sed -n 's/^host: //p')
# What cargo-fuzz passes, less the sanitizer (which needs a nightly compiler): coverage counters
# and comparison tracing for libFuzzer, and `cfg(fuzzing)`. `--target` keeps these flags off
# build scripts and proc-macros, which run on the host uninstrumented.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# Its own target directory (the flags differ from the workspace's), inside fuzz/.
export CARGO_TARGET_DIR=$PWD/target

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(image native oip model_file link_profile link_trace)
fi

bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
echo "building ${#targets[@]} fuzz targets ($(date +%T))"
cargo build --release --locked --target "$host" "${bins[@]}"
echo "built ($(date +%T))"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/$t" "artifacts/$t"
    # -timeout: one input taking more than 10 s is a hang; -rss_limit_mb: memory growth;
    # oversized single allocations abort in the targets' allocator (fuzz/src/lib.rs).
    if "target/$host/release/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        "$work/$t" "corpus/$t" >"$work/$t.log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log")
        cov=$(grep -o 'cov: [0-9]*' "$work/$t.log" | tail -n1)
        echo "fuzz $t: ok, $execs executions in ${seconds} s, $cov"
    else
        echo "fuzz $t: FAILED; last lines:"
        tail -n 40 "$work/$t.log"
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets failed: ${failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi

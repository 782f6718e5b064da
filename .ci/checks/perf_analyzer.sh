#!/usr/bin/env bash
# Triton's perf_analyzer against both nodes, over gRPC and over HTTP, with random FP32 data
# far outside [0, 1] (which the Open Inference Protocol front ends must take): every run must
# end with zero failed requests. Runs are short (windows of one second, at most ten each); the
# infer/s figures are printed, not judged: speed claims live in the benchmarks.
#
# perf_analyzer's own default random data is random bytes: read as FP32, about one value in 256
# is NaN or infinite, and the nodes refuse those, naming the element. So the load runs use
# random finite values written here (seeded, spread over [-1e6, 1e6], with subnormals), and
# one run with the default data checks that it is refused for exactly that reason.
#
# perf_analyzer is the C++ binary the tritonclient 2.34.0 wheel ships: the wheel is downloaded
# (no install, so its Python dependencies do not meet .venv's pins) and the binary extracted,
# with libcudart.so.12 from PyPI's nvidia-cuda-runtime-cu12 on LD_LIBRARY_PATH (the binary
# links it even for CPU-only servers) and Debian's libb64-0d. Both are kept in a cache directory
# across runs. Run by .ci/run; can also be run alone from any directory.
set -euo pipefail
cd "$(dirname "$0")/../.."

tools=${PERF_ANALYZER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer/perf_analyzer-2.34.0}
perf_analyzer=$tools/tritonclient-2.34.0.data/data/bin/perf_analyzer
cudart_dir=$tools/nvidia/cuda_runtime/lib
if [ ! -x "$perf_analyzer" ] || [ ! -e "$cudart_dir/libcudart.so.12" ]; then
    echo "fetching perf_analyzer (tritonclient 2.34.0) and libcudart.so.12 into $tools"
    mkdir -p "$tools/wheels"
    [ -x "$tools/venv/bin/pip" ] || python3 -m venv "$tools/venv"
    "$tools/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
        -d "$tools/wheels" tritonclient==2.34.0 nvidia-cuda-runtime-cu12==12.9.79
    python3 - "$tools" <<'PY'
import pathlib, sys, zipfile
tools = pathlib.Path(sys.argv[1])
wanted = ("tritonclient-2.34.0.data/data/bin/perf_analyzer", "nvidia/cuda_runtime/lib/libcudart.so.12")
for wheel in (tools / "wheels").glob("*.whl"):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name in wanted:
                z.extract(name, tools)
PY
    chmod +x "$perf_analyzer"
fi
if ! ldconfig -p | grep -q 'libb64\.so\.0d'; then
    echo "installing libb64-0d"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends libb64-0d >/dev/null
fi
export LD_LIBRARY_PATH="$cudart_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# perf_analyzer has no --version and exits 99 on --help: check its libraries instead.
if ldd "$perf_analyzer" | grep 'not found'; then
    echo "perf_analyzer lacks the libraries above"
    exit 1
fi

work=$(mktemp -d)
# shellcheck source=.ci/lib/up.sh
. .ci/lib/up.sh
build_binaries
start_up

# Random finite FP32 rows in perf_analyzer's JSON input format, seeded.
python3 - "$work/random.json" <<'PY'
import json, random, sys
rng = random.Random(17)
extremes = [1e-45, -1e-45, 0.0, 1e6, -1e6]
rows = []
for _ in range(16):
    row = [rng.uniform(-1e6, 1e6) if rng.random() < 0.9 else rng.choice(extremes) for _ in range(784)]
    rows.append({"input": row})
json.dump({"data": rows}, open(sys.argv[1], "w"))
PY

# perf_analyzer's default data: refused for its NaN or infinite values, not for anything else.
if timeout 60 "$perf_analyzer" -m mnist -u "$edge_http" -i http --concurrency-range 1 \
    --measurement-mode count_windows --measurement-request-count 50 --max-trials 1 \
    >"$work/pa-default.txt" 2>&1; then
    echo "perf_analyzer's default random data (NaN and infinities among it) was accepted"
    exit 1
fi
if ! grep -q 'is not a finite number' "$work/pa-default.txt"; then
    echo "perf_analyzer's default random data failed for another reason:"
    tail -n 20 "$work/pa-default.txt"
    exit 1
fi
echo "default random data: refused as expected: $(grep -o 'inputs\[0\][^"]*finite number' "$work/pa-default.txt" | head -n1)"

# One short run; fails on any failed request (perf_analyzer exits non-zero on the first error),
# not on noisy timings: the stability bound is loose (shared cores, a simulated link), since the
# figures are reported, not judged. It also fails on a run that measured nothing, and when
# perf_analyzer is stopped after 120 s.
failures=0
summary=()
run_pa() {
    local node=$1 protocol=$2 url=$3 concurrency=$4 out shape=()
    out="$work/pa-$node-$protocol-$concurrency.txt"
    # Over gRPC perf_analyzer would read the batch dimension from ModelConfig, an RPC of
    # Triton's own that the nodes do not serve: the request shape is given instead. Over HTTP
    # it reads /v2/models/mnist/config.
    [ "$protocol" = grpc ] && shape=(--shape "input:1,784")
    if timeout 120 "$perf_analyzer" -m mnist -u "$url" -i "$protocol" --input-data "$work/random.json" \
        "${shape[@]}" --concurrency-range "$concurrency" --measurement-interval 1000 \
        --max-trials 10 --stability-percentage 999 \
        >"$out" 2>&1 &&
        throughput=$(grep -o 'Throughput: [0-9.]* infer/sec' "$out" | tail -n1 | awk '{print $2}') &&
        [ -n "$throughput" ]; then
        summary+=("$(printf '%-5s %-4s concurrency %-2s %10s infer/s' "$node" "$protocol" "$concurrency" "$throughput")")
    else
        failures=$((failures + 1))
        summary+=("$(printf '%-5s %-4s concurrency %-2s FAILED' "$node" "$protocol" "$concurrency")")
        echo "--- perf_analyzer $node $protocol concurrency $concurrency:"
        tail -n 30 "$out"
    fi
}
for concurrency in 1 8; do
    run_pa edge grpc "$edge" "$concurrency"
    run_pa edge http "$edge_http" "$concurrency"
    run_pa cloud grpc "$cloud" "$concurrency"
    run_pa cloud http "$cloud_http" "$concurrency"
done
printf '%s\n' "${summary[@]}"
if [ "$failures" -ne 0 ]; then
    echo "perf_analyzer: $failures run(s) failed"
    exit 1
fi
echo "perf_analyzer: every run answered with zero errors"

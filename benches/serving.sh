#!/usr/bin/env bash
# Serving figures of BENCHMARKS.md, each a ratio within one run of this script:
#
#   bash benches/serving.sh floor      # edge Infer/ModelInfer against `edgeinfer floor`, c=1 and c=64
#   bash benches/serving.sh cloud      # cloud-node at c=64, --max-batch 1 against 64
#   bash benches/serving.sh startup    # edge-node start to SERVING, and its RSS under c=512
#   bash benches/serving.sh overload   # edgeinfer up under a closed loop of 2048, budget 100 ms
#
# It builds the release binaries first (set BIN to a directory of prebuilt ones instead) and
# starts every server itself on the default ports, which must be free. The load generator is
# `edgeinfer bench` on the same machine. Each figure is printed with what produced it.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?"usage: $0 floor|cloud|startup|overload"}
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet --bin edgeinfer --bin edge-node --bin cloud-node
    BIN=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release
fi
out=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$out"
}
trap cleanup EXIT

serving() { # ADDR: wait until the server at ADDR answers health checks
    for _ in $(seq 300); do
        "$BIN/edgeinfer" health --addr "$1" >/dev/null 2>&1 && return 0
        sleep 0.02
    done
    echo "no server at $1" >&2
    return 1
}

steps() { # FILE LABEL: one line per step of a bench --json report
    python3 - "$1" "$2" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
for s in report.get("steps", [report]):
    print(f"{sys.argv[2]} c={s['concurrency']}: p50 {s['latency_us']['p50']} us, "
          f"{s['throughput_rps']:.0f} req/s, errors {s['errors'] or 'none'}")
PY
}

case $what in
floor)
    "$BIN/edgeinfer" floor >"$out/floor.log" 2>&1 & pids+=($!)
    "$BIN/edgeinfer" up >"$out/up.log" 2>&1 & pids+=($!)
    serving 127.0.0.1:50070
    serving 127.0.0.1:50051
    for round in 1 2; do
        for protocol in native oip; do
            extra=()
            [ "$protocol" = oip ] && extra=(--oip-dtype fp32)
            for target in floor=127.0.0.1:50070 edge=127.0.0.1:50051; do
                name=${target%%=*}
                placement=()
                [ "$name" = edge ] && placement=(--placement edge)
                "$BIN/edgeinfer" bench --addr "${target#*=}" --protocol "$protocol" "${extra[@]}" \
                    "${placement[@]}" --concurrency 1,64 --duration 5 --warmup 1 --json \
                    >"$out/b.json"
                steps "$out/b.json" "round $round $protocol $name"
            done
        done
    done
    ;;
cloud)
    for round in 1 2; do
        for batch in 1 64; do
            "$BIN/cloud-node" --metrics-listen off --http-listen off --admin-listen off \
                --max-batch "$batch" >"$out/cloud.log" 2>&1 & pid=$!
            serving 127.0.0.1:50052
            "$BIN/edgeinfer" bench --addr 127.0.0.1:50052 --concurrency 64 --duration 6 \
                --warmup 1 --json >"$out/b.json"
            steps "$out/b.json" "round $round cloud --max-batch $batch"
            kill "$pid"
            wait "$pid" 2>/dev/null || true
        done
    done
    ;;
startup)
    "$BIN/cloud-node" --metrics-listen off --http-listen off --admin-listen off \
        >"$out/cloud.log" 2>&1 & pids+=($!)
    serving 127.0.0.1:50052
    for run in 1 2 3 4 5; do
        t0=$(date +%s%N)
        "$BIN/edge-node" --metrics-listen off --http-listen off --admin-listen off \
            >"$out/edge.log" 2>&1 & edge=$!
        serving 127.0.0.1:50051
        t1=$(date +%s%N)
        echo "edge-node start to SERVING, run $run: $(((t1 - t0) / 1000000)) ms" \
            "(health checks 20 ms apart at most)"
        if [ $run -lt 5 ]; then
            kill "$edge"
            wait "$edge" 2>/dev/null || true
        fi
    done
    pids+=("$edge")
    (while kill -0 "$edge" 2>/dev/null; do
        awk '/VmRSS/ {print $2}' "/proc/$edge/status"
        sleep 0.25
    done) >"$out/rss" &
    "$BIN/edgeinfer" bench --addr 127.0.0.1:50051 --concurrency 512 --duration 8 --json \
        >"$out/b.json"
    steps "$out/b.json" "edge"
    sleep 1
    echo "edge-node resident memory during and after c=512: max" \
        "$(sort -n "$out/rss" | tail -1 | awk '{printf "%.1f", $1 / 1024}') MB," \
        "last $(tail -1 "$out/rss" | awk '{printf "%.1f", $1 / 1024}') MB"
    ;;
overload)
    "$BIN/edgeinfer" up >"$out/up.log" 2>&1 & up=$!
    pids+=("$up")
    serving 127.0.0.1:50051
    (while kill -0 "$up" 2>/dev/null; do
        awk '/VmRSS/ {print $2}' "/proc/$up/status"
        sleep 0.5
    done) >"$out/rss" &
    "$BIN/edgeinfer" bench --addr 127.0.0.1:50051 --concurrency 2048 --duration 10 \
        --budget-ms 100 --json >"$out/b.json"
    python3 - "$out/b.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ok, n = r["ok"], r["requests"]
print(f"c=2048: {n} requests, {ok} answered ({ok / r['duration_s']:.0f}/s), errors "
      f"{r['errors'] or 'none'}; {r['within_budget'] * n / max(ok, 1):.1%} of answers within "
      f"{r['budget_ms']} ms; latency p50 {r['latency_us']['p50']} us, p99 "
      f"{r['latency_us']['p99']} us; the servers' own time p50 "
      f"{r['timing_us']['total']['p50']} us, p99 {r['timing_us']['total']['p99']} us")
PY
    echo "edgeinfer up resident memory: max" \
        "$(sort -n "$out/rss" | tail -1 | awk '{printf "%.1f", $1 / 1024}') MB (edge and cloud)"
    ;;
*)
    echo "usage: $0 floor|cloud|startup|overload" >&2
    exit 64
    ;;
esac

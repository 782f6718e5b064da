#!/usr/bin/env bash
# grpcurl through `edgeinfer link proxy --profile lte` (issue 15): a real third-party client, a
# cloud node started from the built binary (`edgeinfer up`), the proxy between them, all on
# 127.0.0.1, port 0.
# The same health call direct and through the proxy; the proxy's median must carry lte's
# delay (at least 30 ms more: lte's round trip is 37 ms at the median, 20 ms at the least, and
# every call crosses it at least once). The processes are stopped on exit, also on failure.
# Run by .ci/run; can also be run alone from any directory.
set -euo pipefail
cd "$(dirname "$0")/../.."

# shellcheck source=.ci/lib/clients.sh
. .ci/lib/clients.sh

cargo build --bins --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin=$target_dir/debug

work=$(mktemp -d)
pids=()
stop() {
    status=$?
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ]; then
        tail -n 20 "$work"/*.log 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap stop EXIT
trap 'exit 130' INT TERM

# Waits up to 60 s for PATTERN in LOG (the address a process printed) and prints the match.
address_in() {
    local log=$1 pattern=$2 pid=$3 found
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || { echo "process $pid exited; $log:" >&2; cat "$log" >&2; return 1; }
        # Colour codes out first: the log may be coloured.
        found=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -oE "$pattern" | head -n1 |
            grep -oE '[0-9.]+:[0-9]+' | head -n1) || true
        [ -n "$found" ] && { echo "$found"; return 0; }
        sleep 0.2
    done
    echo "no address in $log after 60 s" >&2
    return 1
}

# `edgeinfer up` prints the addresses it bound; only its cloud is used here.
"$bin/edgeinfer" up --edge-listen 127.0.0.1:0 --cloud-listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 --edge-metrics-listen 127.0.0.1:0 \
    --cloud-metrics-listen 127.0.0.1:0 >"$work/up.log" 2>&1 &
pids+=($!)
cloud=$(address_in "$work/up.log" 'cloud listening on [0-9.]+:[0-9]+' "${pids[-1]}")

"$bin/edgeinfer" link proxy --listen 127.0.0.1:0 --upstream "$cloud" --profile lte \
    >"$work/proxy.log" 2>&1 &
pids+=($!)
proxy=$(address_in "$work/proxy.log" 'link proxy: [0-9.]+:[0-9]+' "${pids[-1]}")
echo "cloud on $cloud, link proxy (lte) on $proxy"

# Milliseconds of one grpcurl health call to ADDR (it must answer SERVING).
call_ms() {
    local start end out
    start=$(date +%s%N)
    out=$(grpcurl -plaintext -max-time 10 "$1" grpc.health.v1.Health/Check)
    end=$(date +%s%N)
    grep -q SERVING <<<"$out" || { echo "health through $1: $out" >&2; return 1; }
    echo $(((end - start) / 1000000))
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

for addr in "$cloud" "$proxy"; do call_ms "$addr" >/dev/null; done # warm up (page cache)
direct=$(for _ in $(seq 9); do call_ms "$cloud"; done | median)
through=$(for _ in $(seq 9); do call_ms "$proxy"; done | median)
echo "grpcurl health, median of 9: direct ${direct} ms, through link proxy (lte) ${through} ms"
[ $((through - direct)) -ge 30 ] ||
    { echo "the proxy added $((through - direct)) ms; lte's delay is at least 30 ms" >&2; exit 1; }

# An inference call goes through as well, answered by the cloud.
grpcurl -plaintext -max-time 10 -d @ "$proxy" edgeinfer.v1.Inference/Infer \
    <tests/interop/data/two.json >"$work/infer.json"
grep -q '"label"' "$work/infer.json" || { echo "Infer through the proxy:" >&2; cat "$work/infer.json" >&2; exit 1; }
echo "Infer through the proxy answered: $(tr -d ' \n' <"$work/infer.json" | cut -c1-120)"
echo "link proxy check passed"

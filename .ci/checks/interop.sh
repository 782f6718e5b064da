#!/usr/bin/env bash
# Interoperability checks: real third-party clients (grpcurl, tritonclient, stubs generated from
# proto/, grpcio-health-checking) and the README walkthrough, against an edge and a cloud started
# from the built binaries (`edgeinfer up` on free ports). The servers are stopped on exit, also
# when a step fails. Run by .ci/run; can also be run alone from any directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

# The clients: .ci/run has installed them into .venv; install them when run alone.
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import tritonclient.grpc, grpc_health, grpc_tools, opentelemetry.proto' 2>/dev/null ||
    [ ! -x .venv/bin/grpcurl ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
fi
export PATH="$root/.venv/bin:$PATH"

echo "building the binaries"
cargo build --bins --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export PATH="$target_dir/debug:$PATH"

work=$(mktemp -d)
server_pid=
stop_servers() {
    status=$?
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ "$status" -ne 0 ] && [ -s "$work/up.log" ]; then
        echo "--- last lines of the servers' log:"
        tail -n 30 "$work/up.log"
    fi
    rm -rf "$work"
    exit "$status"
}
trap stop_servers EXIT
trap 'exit 130' INT TERM

# Port 0 everywhere: the checks never collide with a running `edgeinfer up` or another run.
edgeinfer up --edge-listen 127.0.0.1:0 --cloud-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --edge-metrics-listen 127.0.0.1:0 --cloud-metrics-listen 127.0.0.1:0 \
    >"$work/up.log" 2>&1 &
server_pid=$!

edge= cloud= admin=
for _ in $(seq 300); do
    kill -0 "$server_pid" 2>/dev/null || { echo "edgeinfer up exited before listening"; exit 1; }
    edge=$(grep -o 'edge listening on [0-9.:]*' "$work/up.log" | head -n1 | awk '{print $4}') || true
    cloud=$(grep -o 'cloud listening on [0-9.:]*' "$work/up.log" | head -n1 | awk '{print $4}') || true
    admin=$(grep -o 'edge admin (EdgeAdmin) listening on [0-9.:]*' "$work/up.log" | head -n1 | awk '{print $6}') || true
    [ -n "$edge" ] && [ -n "$cloud" ] && [ -n "$admin" ] && break
    sleep 0.2
done
[ -n "$edge" ] && [ -n "$cloud" ] && [ -n "$admin" ] || { echo "edgeinfer up did not report its addresses within 60 s"; exit 1; }
for addr in "$edge" "$cloud"; do
    for _ in $(seq 100); do
        edgeinfer health --addr "http://$addr" --timeout-ms 1000 >/dev/null 2>&1 && break
        sleep 0.2
    done
    edgeinfer health --addr "http://$addr"
done

python tests/interop/run_interop.py --edge "$edge" --cloud "$cloud" --admin "$admin"

# shellcheck shell=bash
# Sourced by the checks that need running servers: `build_binaries` builds them and puts them on
# PATH; `start_up [ARGS...]` starts `edgeinfer up ARGS...` on free ports (port 0 everywhere, so
# a check never collides with a running `edgeinfer up` or another check), stopped on exit, also
# when a step fails. After `start_up`, these are set: edge, cloud, admin (gRPC) and edge_http,
# cloud_http (OIP over HTTP), each HOST:PORT. Needs `work`: a scratch directory, removed on exit.
: "${work:?set work to a scratch directory before sourcing .ci/lib/up.sh}"

build_binaries() {
    echo "building the binaries"
    cargo build --bins --quiet
    local target_dir
    target_dir=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    export PATH="$target_dir/debug:$PATH"
}

server_pid=
stop_up() {
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
trap stop_up EXIT
trap 'exit 130' INT TERM

# The address printed after "$1 listening on" in the log, or nothing yet.
listening() {
    grep -o "$1 listening on [0-9.:]*" "$work/up.log" | head -n1 | awk '{print $NF}' || true
}

start_up() {
    edgeinfer up --edge-listen 127.0.0.1:0 --cloud-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --cloud-admin-listen 127.0.0.1:0 \
        --edge-metrics-listen 127.0.0.1:0 --cloud-metrics-listen 127.0.0.1:0 \
        --edge-http-listen 127.0.0.1:0 --cloud-http-listen 127.0.0.1:0 "$@" \
        >"$work/up.log" 2>&1 &
    server_pid=$!
    edge='' cloud='' admin='' edge_http='' cloud_http=''
    for _ in $(seq 300); do
        kill -0 "$server_pid" 2>/dev/null || { echo "edgeinfer up exited before listening"; exit 1; }
        edge=$(listening 'edge')
        cloud=$(listening 'cloud')
        admin=$(listening 'edge admin (EdgeAdmin)')
        edge_http=$(listening 'edge OIP HTTP')
        cloud_http=$(listening 'cloud OIP HTTP')
        [ -n "$edge" ] && [ -n "$cloud" ] && [ -n "$admin" ] && [ -n "$edge_http" ] &&
            [ -n "$cloud_http" ] && break
        sleep 0.2
    done
    [ -n "$edge" ] && [ -n "$cloud" ] && [ -n "$admin" ] && [ -n "$edge_http" ] && [ -n "$cloud_http" ] ||
        { echo "edgeinfer up did not report its addresses within 60 s"; exit 1; }
    for addr in "$edge" "$cloud"; do
        for _ in $(seq 100); do
            edgeinfer health --addr "http://$addr" --timeout-ms 1000 >/dev/null 2>&1 && break
            sleep 0.2
        done
        edgeinfer health --addr "http://$addr"
    done
}

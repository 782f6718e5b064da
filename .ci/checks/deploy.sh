#!/usr/bin/env bash
# Deploy check, run by .ci/run after the cargo tests, on this machine's Docker engine:
#   1. the public Dockerfile and the scripts lint (hadolint, shellcheck), the manifests validate
#      (kubernetes-validate, offline, strict) and the compose file parses with the compose tool
#      that answers here;
#   2. the images build with no registry (deploy/build-offline-images.sh);
#   3. the compose demo runs for real: both services healthy; EDGE and CLOUD answers through the
#      edge's published port; cloud stopped, then cut off the network: every request still
#      answered, by the edge, degraded; cloud answers return after start / reconnect;
#      `--scale cloud=3`: every replica answers part of the load (each one's own metrics);
#      `--profile link-proxy`: the edge reaches the cloud through `edgeinfer link proxy` (lte)
#      and its cloud answers carry lte's delay.
#   4. a real Prometheus (Debian's package, on the host) scrapes the demo's edge and cloud, and
#      every query of the Grafana dashboard (deploy/grafana/edgeinfer.json) returns data
#      through Prometheus' HTTP API (deploy/ci/dashboard_queries.py).
# Everything it starts is torn down on exit, also on failure. DEPLOY_PROFILE=release|dev picks
# the cargo profile (default dev: .ci/run has just built it for the tests); DEPLOY_NO_CARGO=1
# uses the binaries already in target/ as they are; DEPLOY_MODELS=DIR ships other model files.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

profile=${DEPLOY_PROFILE:-dev}
case $profile in release) profile_dir=release ;; *) profile_dir=debug ;; esac
target_dir=${CARGO_TARGET_DIR:-$root/target}
cli=$target_dir/$profile_dir/edgeinfer
work=$target_dir/deploy
mkdir -p "$work"

t0=$(date +%s)
say() { printf -- '--- deploy: %s (+%ss)\n' "$*" "$(($(date +%s) - t0))"; }
fail() {
    printf 'deploy check FAILED: %s\n' "$*" >&2
    exit 1
}

# === 1. static checks ==========================================================================
# jq and curl read the answers and metrics; this machine kind has both, a bare Debian may not.
# Prometheus (Debian's package) scrapes the demo in step 4.
missing=()
for tool in jq curl prometheus; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv=$work/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r deploy/ci/requirements.txt

say "hadolint deploy/Dockerfile (it needs a registry to build, so it is linted here); shellcheck"
"$venv/bin/hadolint" deploy/Dockerfile
"$venv/bin/shellcheck" .ci/checks/deploy.sh deploy/build-offline-images.sh

say "kubernetes manifests (kubernetes-validate, strict, offline schemas)"
manifests=()
for f in deploy/k8s/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
# The oldest Kubernetes the manifests claim (gRPC probes are GA from 1.27) and the newest
# bundled schema.
for k in 1.27.0 ""; do
    "$venv/bin/kubernetes-validate" --strict --quiet ${k:+-k "$k"} "${manifests[@]}"
done
# Every manifest is in the kustomization, and everything it lists exists.
"$venv/bin/python" - "${manifests[@]}" <<'EOF'
import os, sys, yaml
listed = yaml.safe_load(open("deploy/k8s/kustomization.yaml"))["resources"]
files = sorted(os.path.basename(f) for f in sys.argv[1:])
assert sorted(listed) == files, f"kustomization lists {sorted(listed)}, directory has {files}"
yaml.safe_load(open("deploy/prometheus.yml"))
print(f"kustomization lists all {len(files)} manifests; prometheus.yml parses")
EOF

if docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose_cmd=(docker-compose)
else
    fail "neither 'docker compose' nor 'docker-compose' answers"
fi
say "compose tool: ${compose_cmd[*]} ($("${compose_cmd[@]}" version --short 2>/dev/null || echo '?'))"
"${compose_cmd[@]}" -f deploy/docker-compose.yml config -q
"${compose_cmd[@]}" -f deploy/docker-compose.yml --profile prometheus config -q
"${compose_cmd[@]}" -f deploy/docker-compose.yml --profile link-proxy config -q

# === 2. images, no registry ====================================================================
docker info >/dev/null 2>&1 || fail "no Docker engine answers"
id=$(date +%s)-$$
tag=ci-$id
project=edgeinfer-ci-$id
say "offline images edgeinfer/{edge,cloud}-node:$tag from $profile binaries"
deploy/build-offline-images.sh --profile "$profile" --tag "$tag" ${DEPLOY_NO_CARGO:+--no-cargo} \
    ${DEPLOY_MODELS:+--models "$DEPLOY_MODELS"}

# === 3. the compose demo =======================================================================
compose() {
    "${compose_cmd[@]}" -p "$project" -f deploy/docker-compose.yml \
        -f deploy/ci/docker-compose.test.yml "$@"
}
# The demo's settings: ephemeral host ports (no collision with anything on this machine), the
# default link profile, and a threshold high enough that a few hundred test digits include
# low-confidence ones that go to the cloud.
export EDGEINFER_TAG=$tag EDGE_GRPC_PORT='' EDGE_METRICS_PORT='' EDGE_HTTP_PORT='' EDGE_THRESHOLD=0.99 RUST_LOG=info

teardown() {
    status=$?
    trap - EXIT INT TERM
    set +e
    if [ -n "${prom_pid:-}" ]; then
        kill "$prom_pid" 2>/dev/null
        wait "$prom_pid" 2>/dev/null
    fi
    if [ "$status" != 0 ]; then
        echo "--- deploy: failed; state and recent logs" >&2
        [ -z "${prom_pid:-}" ] || tail -n 20 "$work/$project-prometheus.log" >&2
        compose ps >&2
        compose logs --no-color --tail=40 >&2
    fi
    compose logs --no-color >"$work/$project.log" 2>&1
    compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1
    docker rmi "edgeinfer/edge-node:$tag" "edgeinfer/cloud-node:$tag" >/dev/null 2>&1
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
    # shellcheck disable=SC2086 # one container id per word
    [ -z "$left" ] || docker rm -f $left >/dev/null 2>&1
    say "torn down (logs in ${work#"$root"/}/$project.log)"
    exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# Waits until `count` containers of `service` are running and healthy.
wait_healthy() {
    local service=$1 count=$2 deadline=$(($(date +%s) + ${3:-90})) ids healthy
    while :; do
        healthy=0
        ids=$(compose ps -q "$service")
        for c in $ids; do
            [ "$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c")" = running/healthy ] &&
                healthy=$((healthy + 1))
        done
        [ "$healthy" -ge "$count" ] && return 0
        [ "$(date +%s)" -lt "$deadline" ] || fail "$service: $healthy of $count healthy after ${3:-90}s"
        sleep 1
    done
}

# `bench_json OUT ARGS...`: a bench run against the edge, its JSON in OUT.
bench_json() {
    local out=$1
    shift
    timeout 120 "$cli" bench --addr "$edge" --json "$@" >"$out" ||
        fail "edgeinfer bench $* exited $?"
}
field() { jq -r "$2" "$1"; }
summary() {
    jq -c '{requests, ok, errors, served_by, reasons, degraded}' "$1"
}

# Every request answered, none by the cloud, some degraded with a cloud-failure reason. The
# callers ask for confidence 0.999, so that most requests would go to the cloud if they could.
expect_edge_only_degraded() {
    local f=$1 what=$2
    summary "$f"
    [ "$(field "$f" .ok)" = "$(field "$f" .requests)" ] || fail "$what: not every request answered"
    [ "$(field "$f" '.served_by.cloud // 0')" = 0 ] || fail "$what: the cloud answered"
    [ "$(field "$f" '.degraded')" -gt 0 ] || fail "$what: no degraded answer"
    jq -e '.reasons | keys | any(. == "CLOUD_UNAVAILABLE" or . == "CLOUD_TIMEOUT" or . == "CIRCUIT_OPEN")' \
        "$f" >/dev/null || fail "$what: no cloud-failure reason among the answers"
}

# Polls until cloud answers come back through the edge's own routing (circuit closed again).
wait_cloud_answers() {
    local what=$1 deadline=$(($(date +%s) + 60)) f=$work/$project-recover.json
    while :; do
        bench_json "$f" --requests 50 --concurrency 2 --min-confidence 0.999
        if [ "$(field "$f" '.served_by.cloud // 0')" -gt 0 ]; then
            summary "$f"
            return 0
        fi
        [ "$(date +%s)" -lt "$deadline" ] || fail "$what: no cloud answer within 60s"
        sleep 2
    done
}

say "compose up -d (project $project)"
compose up -d
wait_healthy cloud 1
wait_healthy edge 1
edge=http://$(compose port edge 50051)
say "both healthy; edge at $edge"

# Prometheus on the host, scraping the published metrics ports every second. Its port is a
# free one the kernel picked: Prometheus does not report the port it got for port 0.
prom_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
prom=http://127.0.0.1:$prom_port
cat >"$work/$project-prometheus.yml" <<PROMETHEUS_YML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: edge
    static_configs: [{targets: ["$(compose port edge 9091)"]}]
  - job_name: cloud
    static_configs: [{targets: ["$(compose port --index=1 cloud 9092)"]}]
PROMETHEUS_YML
say "prometheus $(prometheus --version 2>&1 | awk 'NR == 1 {print $3}') at $prom"
prometheus --config.file="$work/$project-prometheus.yml" --storage.tsdb.path="$work/$project-tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" >"$work/$project-prometheus.log" 2>&1 &
prom_pid=$!
deadline=$(($(date +%s) + 60))
until [ "$(curl -fsS --max-time 2 "$prom/api/v1/targets?state=active" 2>/dev/null |
    jq '[.data.activeTargets[] | select(.health == "up")] | length' 2>/dev/null)" = 2 ]; do
    kill -0 "$prom_pid" 2>/dev/null || fail "prometheus exited (log: $work/$project-prometheus.log)"
    [ "$(date +%s)" -lt "$deadline" ] || fail "prometheus: edge and cloud targets not both up within 60s"
    sleep 1
done
say "prometheus scrapes edge and cloud"

say "requests through the edge: EDGE and CLOUD answers"
f=$work/$project-normal.json
bench_json "$f" --requests 300 --concurrency 4
summary "$f"
[ "$(field "$f" .ok)" = 300 ] || fail "not every request answered"
[ "$(field "$f" '.served_by.edge // 0')" -gt 0 ] || fail "no EDGE answer"
[ "$(field "$f" '.served_by.cloud // 0')" -gt 0 ] || fail "no CLOUD answer (threshold $EDGE_THRESHOLD)"
timeout 30 "$cli" infer --addr "$edge" --mnist-test 0 --placement cloud --json >"$work/$project-infer.json" ||
    fail "infer --placement cloud exited $?"
jq -c '{served_by, reason, model, label: .label}' "$work/$project-infer.json"
[ "$(field "$work/$project-infer.json" '.served_by | ascii_upcase')" = CLOUD ] || fail "--placement cloud not answered by CLOUD"

say "the CLI inside the edge container (README's demo): bench on the shipped MNIST test set"
compose exec -T edge edgeinfer bench --requests 50 --concurrency 2 --json >"$work/$project-exec.json" ||
    fail "compose exec edge edgeinfer bench exited $?"
summary "$work/$project-exec.json"
[ "$(field "$work/$project-exec.json" .ok)" = 50 ] || fail "bench inside the edge container: not every request answered"

say "Grafana dashboard: every query returns data through Prometheus"
# Open-loop load for 8 s, with cloud answers among them (threshold $EDGE_THRESHOLD), so that
# every rate() in the dashboard's 1-minute window sees its counters move.
bench_json "$work/$project-dashboard.json" --duration 8 --rate 50
summary "$work/$project-dashboard.json"
deadline=$(($(date +%s) + 30))
until "$venv/bin/python" deploy/ci/dashboard_queries.py --prometheus "$prom" --window 1m \
    deploy/grafana/edgeinfer.json >"$work/$project-dashboard.txt"; do
    [ "$(date +%s)" -lt "$deadline" ] || {
        cat "$work/$project-dashboard.txt"
        fail "some dashboard queries returned no data within 30s of the load"
    }
    sleep 2
done
cat "$work/$project-dashboard.txt"
kill "$prom_pid"
wait "$prom_pid" 2>/dev/null || true
prom_pid=

say "compose stop cloud: the edge answers everything, degraded"
compose stop --timeout 5 cloud
f=$work/$project-stopped.json
bench_json "$f" --requests 200 --concurrency 4 --min-confidence 0.999
expect_edge_only_degraded "$f" "cloud stopped"

say "compose start cloud: cloud answers come back"
compose start cloud
wait_healthy cloud 1
wait_cloud_answers "cloud restarted"

say "docker network disconnect of the cloud: the edge answers everything, degraded"
cloud=$(compose ps -q cloud)
network=$(docker inspect -f '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}' "$cloud")
docker network disconnect "$network" "$cloud"
f=$work/$project-partitioned.json
bench_json "$f" --requests 200 --concurrency 4 --min-confidence 0.999
expect_edge_only_degraded "$f" "cloud partitioned"

say "docker network connect: cloud answers come back"
# Reconnected with the service's name, which compose gave it as an alias at creation.
docker network connect --alias cloud "$network" "$cloud"
wait_cloud_answers "cloud reconnected"

say "--scale cloud=3: every replica answers part of the load"
compose up -d --no-recreate --scale cloud=3
wait_healthy cloud 3
wait_healthy edge 1
# Each replica's request count, read from its own /metrics (ephemeral loopback port).
replica_counts() {
    local i port
    for i in 1 2 3; do
        port=$(compose port --index="$i" cloud 9092)
        curl -fsS --max-time 5 "http://$port/metrics" |
            awk -v re="${CLOUD_REQUESTS_METRIC:-^[a-z_]*requests_total[{ ]}" \
                '$0 ~ re { n += $NF } END { printf "%d ", n }'
    done
}
read -r -a before <<<"$(replica_counts)"
deadline=$(($(date +%s) + 90))
while :; do
    bench_json "$work/$project-scaled.json" --requests 300 --concurrency 8 --placement cloud
    read -r -a after <<<"$(replica_counts)"
    echo "cloud replicas' requests: before ${before[*]}, now ${after[*]}"
    spread=1
    for i in 0 1 2; do [ "${after[$i]}" -gt "${before[$i]}" ] || spread=0; done
    [ "$spread" = 1 ] && break
    [ "$(date +%s)" -lt "$deadline" ] ||
        fail "after 90s of load not every cloud replica had answered (the edge must re-resolve 'cloud')"
    sleep 3
done
summary "$work/$project-scaled.json"

say "--profile link-proxy: edge -> edgeinfer link proxy (lte) -> cloud, the edge's own link ideal"
# The edge is recreated with the new settings; one cloud replica again. The profile goes by
# COMPOSE_PROFILES, so that the teardown's `down` removes the proxy too.
export EDGE_CLOUD=http://link-proxy:50053 EDGE_LINK_PROFILE=ideal LINK_PROXY_PROFILE=lte
export COMPOSE_PROFILES=link-proxy
compose up -d --scale cloud=1
wait_healthy link-proxy 1
wait_healthy edge 1
edge=http://$(compose port edge 50051)
wait_cloud_answers "through the link proxy"
f=$work/$project-proxy.json
bench_json "$f" --requests 40 --concurrency 1 --placement cloud
summary "$f"
jq -c '.latency_us | {p50, p99}' "$f"
[ "$(field "$f" '.served_by.cloud // 0')" -gt 0 ] || fail "link proxy: no CLOUD answer"
# lte's round trip is 37 ms at the median; directly (ideal) a cloud answer takes about 1 ms.
p50=$(field "$f" .latency_us.p50)
[ "$p50" -ge 25000 ] || fail "link proxy: cloud answers' median $p50 us, not lte's delay (>= 25 ms)"
say "through the proxy: median $((p50 / 1000)) ms (lte's round trip: 37 ms)"

say "passed"

#!/usr/bin/env bash
# Interoperability checks: real third-party clients (grpcurl, tritonclient over gRPC and HTTP,
# curl, stubs generated from proto/, grpcio-health-checking) and the README walkthrough, against
# an edge and a cloud started from the built binaries (`edgeinfer up` on free ports, see
# .ci/lib/up.sh). The servers are stopped on exit, also when a step fails. Run by .ci/run; can also be run alone from any directory.
set -euo pipefail
cd "$(dirname "$0")/../.."

# shellcheck source=.ci/lib/clients.sh
. .ci/lib/clients.sh
if ! command -v curl >/dev/null; then
    apt-get update -qq && apt-get install -y -qq curl >/dev/null
fi

work=$(mktemp -d)
# shellcheck source=.ci/lib/up.sh
. .ci/lib/up.sh
build_binaries
start_up

python tests/interop/run_interop.py --edge "$edge" --cloud "$cloud" --admin "$admin" \
    --edge-http "$edge_http" --cloud-http "$cloud_http"

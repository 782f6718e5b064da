# shellcheck shell=bash
# Sourced by the checks that drive third-party clients: makes sure the repository's .venv holds
# tests/interop/requirements.txt (grpcurl, tritonclient, numpy, ...) and puts it first on PATH.
# .ci/run installs them once; a check run alone installs what is missing. Run from the root.
[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c 'import tritonclient.grpc, tritonclient.http, grpc_health, grpc_tools, opentelemetry.proto, numpy' 2>/dev/null ||
    [ ! -x .venv/bin/grpcurl ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
fi
export PATH="$PWD/.venv/bin:$PATH"

#!/usr/bin/env bash
# Issue 16's cascade, live: `edgeinfer up --profile ideal` with the shipped version-2 edge model
# (models/edge-mlp-v2-int8.safetensors, MODELS.md), and benches/ood.py sending, one request at
# a time over the Open Inference Protocol (gRPC), at the default threshold: the 10,000 test
# images; the same with placement cloud (the cloud-only accuracy, in the same run); 10,000
# uniform-noise images; the test images shifted 6 px. It passes when at least 90 % of the test
# images are answered CONFIDENT at the edge, the cascade is at least as accurate as the cloud
# alone, and at most 5 % of the noise and of the shifted images are answered CONFIDENT at the
# edge. Run by .ci/run; can also be run alone from any directory.
set -euo pipefail
cd "$(dirname "$0")/../.."

# shellcheck source=.ci/lib/clients.sh
. .ci/lib/clients.sh

work=$(mktemp -d)
# shellcheck source=.ci/lib/up.sh
. .ci/lib/up.sh
build_binaries
start_up --profile ideal --edge-model models/edge-mlp-v2-int8.safetensors

python benches/ood.py --addr "$edge" --sets test,test@cloud,noise,shift6 --json >"$work/ood.json"
python - "$work/ood.json" <<'PY'
import json, sys

r = json.load(open(sys.argv[1]))
test, cloud, noise, shift = (r[k] for k in ("test", "test@cloud", "noise", "shift6"))
for name, s in r.items():
    print(f"{name}: {s['n']} sent, CONFIDENT at the edge {s['confident_at_edge']:.2%}, "
          f"accuracy {s['accuracy']}, reasons {s['reasons']}")
failures = []
def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)
check(test["n"] == 10000 and cloud["n"] == 10000, "the whole test set, both ways")
check(test["confident_at_edge"] >= 0.90,
      f"{test['confident_at_edge']:.2%} answered at the edge (>= 90 %)")
check(test["accuracy"] >= cloud["accuracy"],
      f"cascade accuracy {test['accuracy']:.4f} >= cloud-only {cloud['accuracy']:.4f}")
for name, s in (("noise", noise), ("shift6", shift)):
    check(s["confident_at_edge"] <= 0.05,
          f"{name}: {s['confident_at_edge']:.2%} CONFIDENT at the edge (<= 5 %)")
sys.exit(1 if failures else 0)
PY
echo "cascade check passed"

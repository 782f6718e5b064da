#!/usr/bin/env bash
# Checks the model pipeline and the shipped model files against issue 3's acceptance:
#   1. a short training (one epoch on 20,000 images) through train, quantize and eval
#      reaches an accuracy above 0.9, for the f32, q8_0 and int8 files;
#   2. the shipped files in models/ load and meet their cards: edge-mlp q8_0 >= 0.975 and
#      within 0.003 of f32, q4_0 within 0.01, int8 within 0.001 (issue 14), cloud-cnn >= 0.990,
#      ECE <= 0.02 for all, the q8_0 and int8 files at most 30 % of the f32 file; edge-mlp
#      version 2 (issue 16) >= 0.985 and its int8 form within 0.001, version "2" in both.
# Usage: bash models/check.sh [path/to/edgeinfer]   (default: builds and uses the release binary)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ge 1 ]; then
    ei=$1
else
    cargo build --release --quiet -p edgeinfer-cli
    ei=target/release/edgeinfer
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "--- short training through train, quantize, eval"
"$ei" train --model edge-mlp --limit 20000 --epochs 1 --seed 1 --out "$tmp/ci.safetensors"
"$ei" quantize --in "$tmp/ci.safetensors" --dtype q8_0 --out "$tmp/ci-q8_0.gguf"
"$ei" quantize --in "$tmp/ci.safetensors" --dtype int8 --out "$tmp/ci-int8.safetensors"
for f in ci.safetensors ci-q8_0.gguf ci-int8.safetensors; do
    "$ei" eval --model "$tmp/$f" --json --no-latency >"$tmp/$f.json"
done

echo "--- shipped models"
for f in edge-mlp.safetensors edge-mlp-int8.safetensors edge-mlp-q8_0.gguf edge-mlp-q4_0.gguf \
    cloud-cnn.safetensors edge-mlp-v2.safetensors edge-mlp-v2-int8.safetensors; do
    "$ei" eval --model "models/$f" --json --no-latency >"$tmp/$f.json"
done

python3 - "$tmp" <<'EOF'
import json, os, sys

tmp = sys.argv[1]
r = {f[:-5]: json.load(open(os.path.join(tmp, f))) for f in os.listdir(tmp) if f.endswith(".json")}
failures = []

def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)

for f in ["ci.safetensors", "ci-q8_0.gguf", "ci-int8.safetensors"]:
    check(r[f]["accuracy"] > 0.9, f"short training {f}: accuracy {r[f]['accuracy']:.4f} > 0.9")

f32, i8, q8, q4, cnn = (r[k] for k in ["edge-mlp.safetensors", "edge-mlp-int8.safetensors",
                                       "edge-mlp-q8_0.gguf", "edge-mlp-q4_0.gguf",
                                       "cloud-cnn.safetensors"])
check(q8["accuracy"] >= 0.975, f"edge-mlp q8_0 accuracy {q8['accuracy']:.4f} >= 0.975")
check(abs(q8["accuracy"] - f32["accuracy"]) <= 0.003,
      f"edge-mlp q8_0 {q8['accuracy']:.4f} within 0.003 of f32 {f32['accuracy']:.4f}")
check(abs(q4["accuracy"] - f32["accuracy"]) <= 0.01,
      f"edge-mlp q4_0 {q4['accuracy']:.4f} within 0.01 of f32 {f32['accuracy']:.4f}")
check(abs(i8["accuracy"] - f32["accuracy"]) <= 0.001,
      f"edge-mlp int8 {i8['accuracy']:.4f} within 0.001 of f32 {f32['accuracy']:.4f}")
check(cnn["accuracy"] >= 0.990, f"cloud-cnn accuracy {cnn['accuracy']:.4f} >= 0.990")
v2, v2i8 = r["edge-mlp-v2.safetensors"], r["edge-mlp-v2-int8.safetensors"]
check(v2["accuracy"] >= 0.985, f"edge-mlp v2 accuracy {v2['accuracy']:.4f} >= 0.985")
check(abs(v2i8["accuracy"] - v2["accuracy"]) <= 0.001,
      f"edge-mlp v2 int8 {v2i8['accuracy']:.4f} within 0.001 of f32 {v2['accuracy']:.4f}")
check(v2["version"] == v2i8["version"] == "2", f"edge-mlp v2 files say version {v2['version']}, {v2i8['version']}")
for name, m in [("edge-mlp f32", f32), ("edge-mlp int8", i8), ("edge-mlp q8_0", q8),
                ("edge-mlp q4_0", q4), ("cloud-cnn", cnn), ("edge-mlp v2 f32", v2),
                ("edge-mlp v2 int8", v2i8)]:
    check(m["ece"] <= 0.02, f"{name} ECE {m['ece']:.4f} <= 0.02")
    check(m["n"] == 10000, f"{name} evaluated on {m['n']} test images")
# The network's share of the file: the input detector (the same in every form of a model) is
# not the network being compressed.
def network_bytes(m):
    return m["file_bytes"] - m.get("ood", {}).get("bytes", 0)
for name, m, of in [("q8_0", q8, f32), ("int8", i8, f32), ("v2 int8", v2i8, v2)]:
    ratio = network_bytes(m) / network_bytes(of)
    check(ratio <= 0.30, f"{name} network is {ratio:.1%} of the f32 one (<= 30 %)")
for name, m in [("edge-mlp f32", f32), ("edge-mlp int8", i8), ("edge-mlp q8_0", q8),
                ("edge-mlp q4_0", q4), ("edge-mlp v2 f32", v2), ("edge-mlp v2 int8", v2i8)]:
    flagged = m.get("ood", {}).get("test_flagged")
    check(flagged is not None and flagged <= 0.02,
          f"{name} carries an input detector flagging {flagged} of the test images (<= 0.02)")
sys.exit(1 if failures else 0)
EOF

#!/usr/bin/env bash
# Retrains models/edge-mlp.safetensors (`train --model edge-mlp --seed 1`) as it was made, and
# checks that the network's tensors come out bit for bit the same.
#
# The result depends on the CPU's L1 data cache: candle's f32 matmul is the gemm crate's, which
# sizes its blocks along the summed dimension from the L1d size and associativity it reads from
# /sys at run time (see MODELS.md, edge-mlp). The shipped file was made where the first layer's
# 800-long sums are one block (a 48 KiB 12-way L1d, for one); this script shows gemm such a
# cache, whatever the machine has, by bind-mounting made-up cache folders over
# /sys/devices/system/cpu/cpu*/cache in a private mount namespace, for the training alone.
# Needs root (unshare -m) and Linux.
#
# Usage: bash models/reproduce.sh [path/to/edgeinfer] [L1D_SIZE L1D_WAYS]
#   default: builds and uses the release binary, and a 48K 12-way L1d. `32K 8` shows what a
#   32 KiB 8-way L1d (AMD EPYC) gives: other weights, test accuracy 0.9760.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ge 1 ]; then
    ei=$(realpath "$1")
else
    cargo build --release --quiet -p edgeinfer-cli
    ei=$PWD/target/release/edgeinfer
fi
l1d_size=${2:-48K}
l1d_ways=${3:-12}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A copy of every CPU's cache description, with the level-1 data cache replaced.
for cpu in /sys/devices/system/cpu/cpu[0-9]*; do
    [ -d "$cpu/cache" ] || continue
    for index in "$cpu"/cache/index*; do
        copy=$tmp/cache/${cpu##*/}/${index##*/}
        mkdir -p "$copy"
        for f in level type size ways_of_associativity coherency_line_size shared_cpu_list; do
            [ -r "$index/$f" ] && cat "$index/$f" >"$copy/$f"
        done
        if [ "$(cat "$index/level")" = 1 ] && [ "$(cat "$index/type")" = Data ]; then
            echo "$l1d_size" >"$copy/size"
            echo "$l1d_ways" >"$copy/ways_of_associativity"
        fi
    done
done

echo "training edge-mlp, seed 1, with gemm seeing a $l1d_size $l1d_ways-way L1d"
unshare -m bash -euo pipefail -c '
    mount --make-rprivate /
    for copy in "$1"/cache/cpu*; do
        mount --bind "$copy" "/sys/devices/system/cpu/${copy##*/}/cache"
    done
    "$2" train --model edge-mlp --seed 1 --out "$1/edge-mlp.safetensors"
' _ "$tmp" "$ei"

python3 - models/edge-mlp.safetensors "$tmp/edge-mlp.safetensors" <<'EOF'
import json, struct, sys

def tensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    meta = header.pop("__metadata__", {})
    return meta, {k: body[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items()}

(shipped_meta, shipped), (new_meta, new) = tensors(sys.argv[1]), tensors(sys.argv[2])
network = sorted(k for k in shipped if k.startswith("fc"))
same = [k for k in network if new.get(k) == shipped[k]]
for k in network:
    print(f"{k}: {'same bits' if k in same else 'DIFFERENT'}")
acc = lambda m: m.get("edgeinfer.test_accuracy", "?")
print(f"test accuracy: shipped {acc(shipped_meta)}, retrained {acc(new_meta)}")
if len(same) != len(network) or not network:
    sys.exit("the retrained network differs from models/edge-mlp.safetensors")
print("models/edge-mlp.safetensors reproduced: every network tensor bit for bit")
EOF

#!/usr/bin/env python3
"""Offline: the edge-to-cloud cascade of edge models against the cloud model, in numpy.

For each edge model file (f32 safetensors, as `edgeinfer train` writes) and each threshold,
over the 10,000 MNIST test images: the share the edge would answer itself (calibrated max
probability at or above the threshold, and not flagged by the file's input detector, as the
router decides), the cascade's accuracy (the edge's answer there, the cloud's elsewhere) beside
the cloud-only accuracy, and where the errors are: the edge's on the images it keeps, the
cloud's on those it would get. The cascade is at least as accurate as the cloud alone exactly
when the edge errs no more often than the cloud on the images the edge keeps, so the last
column, the cloud's errors on those images, is the edge's allowance.

This is the router's rule computed on the model files directly (the live figure, through a
running edge over OIP, is benches/ood.py's `test` and `test@cloud` rows). The int8 and GGUF
forms are the same network within 0.001 of accuracy (models/check.sh); give the f32 file they
were made from.

With --share S it also asks what no threshold could beat: for each confidence metric the
router offers (max probability, margin between the two most probable labels, negative
entropy), the edge keeps exactly the fraction S it is surest of (flagged inputs last), and the
cascade's accuracy is printed for that choice.

With --split validation it reads the validation split instead (the last 5,000 training images,
which training holds out): a recipe chosen by its cascade there has not seen the test set.

Usage: python benches/cascade.py [--cloud models/cloud-cnn.safetensors]
           [--thresholds 0.9,0.95,0.97] [--share 0.9] [--split test|validation] EDGE.safetensors...
Needs numpy; reads data/mnist.
"""

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ood_compare import ROOT, idx, safetensors  # noqa: E402


def softmax(z):
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


def load(path, architecture):
    w, meta = safetensors(pathlib.Path(path))
    found = meta.get("edgeinfer.architecture", "?")
    if not found.startswith(architecture) or meta.get("edgeinfer.quantization") != "f32":
        sys.exit(f"{path}: holds {found} ({meta.get('edgeinfer.quantization')}), "
                 f"expected an f32 {architecture} file")
    return w, float(meta["edgeinfer.temperature"])


def edge(path, x):
    """(calibrated probabilities, flagged by the input detector) of an edge-mlp file."""
    w, t = load(path, "mlp-")
    h = np.maximum(x @ w["fc1.weight"][:, :784].T + w["fc1.bias"], 0)
    p = softmax((h @ w["fc2.weight"].T + w["fc2.bias"]) / t)
    if "ood.mean" not in w:
        return p, np.zeros(len(x), bool)
    d = x - w["ood.mean"]
    y = d @ w["ood.basis"].T
    lam = w["ood.variances"]
    k = y.shape[1]
    residual = np.maximum((d * d).sum(1) - (y * y).sum(1), 0)
    score = ((y * y / lam[:k]).sum(1) + residual / lam[k]) / 784
    return p, score > w["ood.threshold"][0]


def conv5(x, w, b):
    """A 5x5 convolution without padding as one matrix product: x (n, c, h, w)."""
    n, c, hh, ww = x.shape
    oh, ow = hh - 4, ww - 4
    cols = np.lib.stride_tricks.sliding_window_view(x, (5, 5), axis=(2, 3))
    cols = cols.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * 25)
    out = cols @ w.reshape(w.shape[0], -1).T + b
    return out.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)


def pool2(x):
    n, c, hh, ww = x.shape
    return x.reshape(n, c, hh // 2, 2, ww // 2, 2).max((3, 5))


def cloud(path, x):
    """Calibrated probabilities of a cloud-cnn file."""
    w, t = load(path, "cnn-")
    out = []
    for start in range(0, len(x), 500):
        a = x[start:start + 500].reshape(-1, 1, 28, 28)
        a = pool2(np.maximum(conv5(a, w["conv1.weight"], w["conv1.bias"]), 0))
        a = pool2(np.maximum(conv5(a, w["conv2.weight"], w["conv2.bias"]), 0)).reshape(len(a), -1)
        a = np.maximum(a @ w["fc1.weight"].T + w["fc1.bias"], 0)
        out.append(softmax((a @ w["fc2.weight"].T + w["fc2.bias"]) / t))
    return np.concatenate(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("edge", nargs="+", help="edge-mlp f32 safetensors files")
    ap.add_argument("--cloud", default=str(ROOT / "models" / "cloud-cnn.safetensors"))
    ap.add_argument("--thresholds", default="0.9,0.95,0.97,0.98")
    ap.add_argument("--share", type=float, help="also keep exactly this fraction at the edge")
    ap.add_argument("--split", choices=["test", "validation"], default="test",
                    help="the 10,000 test images, or the last 5,000 training images")
    args = ap.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]
    x, y = images(args.split)
    cloud_right = cloud(args.cloud, x).argmax(1) == y
    print(f"{args.split} split, {len(y)} images; cloud-only accuracy {cloud_right.mean():.4f} "
          f"({args.cloud})")
    print("| edge model | edge accuracy | threshold | edge share | cascade accuracy "
          "| edge errors kept | cloud errors on those |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path in args.edge:
        p, flagged = edge(path, x)
        edge_right = p.argmax(1) == y
        for t in thresholds:
            kept = (p.max(1) >= t) & ~flagged
            cascade = np.where(kept, edge_right, cloud_right).mean()
            print(f"| {pathlib.Path(path).name} | {edge_right.mean():.4f} | {t} | {kept.mean():.2%} "
                  f"| {cascade:.4f} | {(kept & ~edge_right).sum()} | {(kept & ~cloud_right).sum()} |")
        if args.share is not None:
            fixed_share(path, p, flagged, edge_right, cloud_right, args.share)


def images(split):
    """(pixels in [0, 1], labels) of a split: test, or validation (the last 5,000 training
    images, as `edgeinfer train` holds them out)."""
    if split == "test":
        x = idx("t10k-images-idx3-ubyte.gz", 16, (-1, 784))
        y = idx("t10k-labels-idx1-ubyte.gz", 8, (-1,))
    else:
        x = idx("train-images-idx3-ubyte.gz", 16, (-1, 784))[-5000:]
        y = idx("train-labels-idx1-ubyte.gz", 8, (-1,))[-5000:]
    return x.astype(np.float32) / 255, y


def fixed_share(path, p, flagged, edge_right, cloud_right, share):
    """The cascade when the edge keeps exactly `share` of the inputs, surest first."""
    top = np.sort(p, 1)
    metrics = {
        "max probability": top[:, -1],
        "margin": top[:, -1] - top[:, -2],
        "negative entropy": (p * np.log(np.maximum(p, 1e-12))).sum(1),
    }
    for name, m in metrics.items():
        order = np.argsort(-np.where(flagged, -np.inf, m), kind="stable")
        kept = np.zeros(len(p), bool)
        kept[order[: round(share * len(p))]] = True
        cascade = np.where(kept, edge_right, cloud_right).mean()
        print(f"  {pathlib.Path(path).name}, exactly {share:.0%} kept by {name}: cascade accuracy "
              f"{cascade:.4f}, edge errors kept {(kept & ~edge_right).sum()}, cloud errors on "
              f"those {(kept & ~cloud_right).sum()}")


if __name__ == "__main__":
    main()

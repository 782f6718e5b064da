#!/usr/bin/env python3
"""Offline: two out-of-distribution scores for the edge MLP, side by side, in numpy.

  hidden  Mahalanobis distance in the MLP's hidden layer (class means, one shared covariance)
  pca     the input-space score edgeinfer ships (crates/model/src/ood.rs): probabilistic PCA of
          the training images with K directions, squared Mahalanobis distance per input value

Both are fitted on the 55,000 training images, with thresholds at the 99th percentile of the
validation split's scores. For each set (as in benches/ood.py) it prints the share of inputs
flagged and the share the edge would answer CONFIDENT: calibrated max probability >= 0.95 and
not flagged. Reads models/edge-mlp.safetensors (f32) and data/mnist; needs only numpy.

Usage: python benches/ood_compare.py [--components 40]
"""

import argparse
import gzip
import json
import pathlib
import struct

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def idx(name, offset, shape):
    raw = gzip.open(ROOT / "data" / "mnist" / name).read()
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(shape)


def safetensors(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n :]
    tensors = {
        k: np.frombuffer(data[v["data_offsets"][0] : v["data_offsets"][1]], np.float32).reshape(v["shape"])
        for k, v in header.items()
        if v["dtype"] == "F32"
    }
    return tensors, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--components", type=int, default=40)
    args = ap.parse_args()
    x_train = idx("train-images-idx3-ubyte.gz", 16, (-1, 784)).astype(np.float32) / 255
    y_train = idx("train-labels-idx1-ubyte.gz", 8, (-1,))
    x_test = idx("t10k-images-idx3-ubyte.gz", 16, (-1, 784)).astype(np.float32) / 255
    fit, val, y_fit = x_train[:55000], x_train[55000:], y_train[:55000]

    w, meta = safetensors(ROOT / "models" / "edge-mlp.safetensors")
    w1, b1, w2, b2 = w["fc1.weight"][:, :784], w["fc1.bias"], w["fc2.weight"], w["fc2.bias"]
    temperature = float(meta["edgeinfer.temperature"])

    def hidden(x):
        return np.maximum(x @ w1.T + b1, 0)

    def confidence(x):
        z = (hidden(x) @ w2.T + b2) / temperature
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        return (p / p.sum(1, keepdims=True)).max(1)

    h = hidden(fit)
    means = np.stack([h[y_fit == c].mean(0) for c in range(10)])
    cov = sum((h[y_fit == c] - means[c]).T @ (h[y_fit == c] - means[c]) for c in range(10)) / len(h)
    cov += np.eye(cov.shape[0]) * 1e-3 * np.trace(cov) / cov.shape[0]
    whiten = np.linalg.cholesky(np.linalg.inv(cov)).T
    centres = means @ whiten.T

    def hidden_score(x):
        z = hidden(x) @ whiten.T
        return ((z[:, None, :] - centres[None]) ** 2).sum(-1).min(1)

    k = args.components
    mu = fit.mean(0)
    c = np.cov(fit - mu, rowvar=False)
    lam, vec = np.linalg.eigh(c)
    lam, basis = lam[::-1][:k], vec[:, ::-1][:, :k].T
    rest = (np.trace(c) - lam.sum()) / (784 - k)

    def pca_score(x):
        d = x - mu
        y = d @ basis.T
        residual = (d * d).sum(1) - (y * y).sum(1)
        return ((y * y / lam).sum(1) + residual / rest) / 784

    rng = np.random.default_rng(0)
    img = x_test.reshape(-1, 28, 28)
    sets = {
        "test": x_test,
        "noise": rng.random((len(x_test), 784), dtype=np.float32),
        "shift6": np.roll(img, 6, axis=2).reshape(-1, 784),
        "inverted": 1.0 - x_test,
        "gauss0.3": np.clip(x_test + rng.normal(0, 0.3, x_test.shape), 0, 1).astype(np.float32),
        "flipud": img[:, ::-1, :].reshape(-1, 784).copy(),
        "rot90": np.rot90(img, 1, (1, 2)).reshape(-1, 784).copy(),
    }
    scores = {"hidden": hidden_score, "pca": pca_score}
    thresholds = {name: np.quantile(f(val), 0.99) for name, f in scores.items()}
    print(f"{'set':9s} " + "  ".join(f"{n + ' flagged':>14s} {n + ' CONFIDENT':>16s}" for n in scores))
    for name, x in sets.items():
        sure = confidence(x) >= 0.95
        cells = []
        for score, f in scores.items():
            flagged = f(x) > thresholds[score]
            cells.append(f"{flagged.mean():14.1%} {(sure & ~flagged).mean():16.1%}")
        print(f"{name:9s} " + "  ".join(cells))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Out-of-distribution inputs through a running edge, over the Open Inference Protocol (gRPC).

Sends, one request at a time, each set below and counts how the edge answered:
  test       the 10,000 MNIST test images, as they are
  test@cloud the same with placement cloud: the cloud-only accuracy, measured in the same run
  noise      10,000 images of uniform noise, 784 values in [0, 1) (numpy seed 0)
  shift6     the test images moved 6 pixels right, wrapping around (np.roll)
  inverted   the test images inverted (1 - x): white digits on black become black on white
  gauss0.3   the test images plus Gaussian noise of sigma 0.3 (seed 0), clipped to [0, 1]
  rot90      the test images rotated a quarter turn
For each set: the share answered CONFIDENT at the edge, the share flagged out_of_distribution,
the reasons, and (for sets with labels) the accuracy. Prints a table, or JSON with --json.

Usage: python benches/ood.py [--addr 127.0.0.1:50051] [--sets test,noise,...] [--limit N]
Needs tritonclient[grpc] and numpy (tests/interop/requirements.txt); the MNIST files in
data/mnist.
"""

import argparse
import collections
import gzip
import json
import pathlib
import sys

import numpy as np
import tritonclient.grpc as grpcclient

ROOT = pathlib.Path(__file__).resolve().parent.parent


def mnist_test():
    d = ROOT / "data" / "mnist"
    images = gzip.open(d / "t10k-images-idx3-ubyte.gz").read()
    labels = gzip.open(d / "t10k-labels-idx1-ubyte.gz").read()
    x = np.frombuffer(images, np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255
    return x, np.frombuffer(labels, np.uint8, offset=8)


def sets(x, y):
    rng = np.random.default_rng(0)
    img = x.reshape(-1, 28, 28)
    return {
        "test": (x, y),
        "test@cloud": (x, y),
        "noise": (rng.random((len(x), 784), dtype=np.float32), None),
        "shift6": (np.roll(img, 6, axis=2).reshape(-1, 784), y),
        "inverted": (1.0 - x, y),
        "gauss0.3": (np.clip(x + rng.normal(0, 0.3, x.shape), 0, 1).astype(np.float32), y),
        "rot90": (np.rot90(img, 1, (1, 2)).reshape(-1, 784).copy(), None),
    }


def run(client, images, labels, parameters):
    reasons = collections.Counter()
    confident = flagged = right = 0
    for i, row in enumerate(images):
        inp = grpcclient.InferInput("input", [1, 784], "FP32")
        inp.set_data_from_numpy(row.reshape(1, 784))
        result = client.infer(
            "mnist",
            [inp],
            outputs=[grpcclient.InferRequestedOutput("probabilities")],
            parameters=parameters,
        )
        params = result.get_response().parameters
        reason = params["reason"].string_param
        reasons[reason] += 1
        confident += reason == "CONFIDENT"
        flagged += params["out_of_distribution"].bool_param if "out_of_distribution" in params else 0
        if labels is not None:
            right += int(result.as_numpy("probabilities").argmax()) == int(labels[i])
    n = len(images)
    return {
        "n": n,
        "confident_at_edge": confident / n,
        "flagged": flagged / n,
        "accuracy": right / n if labels is not None else None,
        "reasons": dict(reasons),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", default="127.0.0.1:50051")
    ap.add_argument("--sets", default="test,test@cloud,noise,shift6,inverted,gauss0.3,rot90")
    ap.add_argument("--limit", type=int, default=10_000, help="images per set")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    x, y = mnist_test()
    available = sets(x, y)
    wanted = args.sets.split(",")
    unknown = [s for s in wanted if s not in available]
    if unknown:
        sys.exit(f"unknown set(s) {', '.join(unknown)}; known: {', '.join(available)}")
    client = grpcclient.InferenceServerClient(args.addr)
    out = {}
    for name in wanted:
        images, labels = available[name]
        n = min(args.limit, len(images))
        parameters = {"placement": "cloud"} if name.endswith("@cloud") else None
        out[name] = run(client, images[:n], None if labels is None else labels[:n], parameters)
        if not args.json:
            r = out[name]
            acc = "" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
            print(f"{name:10s} n {r['n']:5d}  CONFIDENT at edge {r['confident_at_edge']:6.1%}  "
                  f"flagged {r['flagged']:6.1%}  accuracy {acc:6s}  {r['reasons']}", flush=True)
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()

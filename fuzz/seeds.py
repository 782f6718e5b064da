#!/usr/bin/env python3
"""Writes the fuzz seed corpus (corpus/<target>/seed-*) from the repository's own files.

Usage: python3 fuzz/seeds.py PROFILES_JSON
where PROFILES_JSON is what `edgeinfer link profiles --json` prints. Standard library only.
Seeds are small on purpose: libFuzzer grows the corpus from them; inputs it found that needed
a fix are kept beside them as `regress-*` and are never rewritten here.
"""

import gzip
import json
import pathlib
import struct
import sys
import zlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / f"seed-{name}").write_bytes(data)


def mnist_digit(index):
    """The index-th test image's 784 bytes, read from the shipped IDX file."""
    raw = gzip.open(ROOT / "data/mnist/t10k-images-idx3-ubyte.gz").read(16 + 784 * (index + 1))
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    assert magic == 2051 and rows == cols == 28, "not an IDX image file"
    return raw[16 + 784 * index : 16 + 784 * (index + 1)]


def png(width, height, pixels, color_type=0):
    """A PNG (8-bit gray, or RGB with color_type 2) of row-major pixels."""
    per = 3 if color_type == 2 else 1
    rows = b"".join(
        b"\x00" + pixels[y * width * per : (y + 1) * width * per] for y in range(height)
    )

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, payload):
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def floats(values):
    return b"".join(struct.pack("<f", v) for v in values)


def main():
    digit = mnist_digit(0)
    gray = png(28, 28, digit)
    # Ink on paper, larger than the model's input: the invert and resize paths.
    paper = png(56, 56, bytes(255 - digit[(y // 2) * 28 + x // 2] for y in range(56) for x in range(56)))
    rgb = png(28, 28, bytes(v for p in digit for v in (p, p, p)), color_type=2)

    write("image", "mnist-gray.png", gray)
    write("image", "paper-56.png", paper)
    write("image", "rgb.png", rgb)

    # edgeinfer.v1.InferRequest: image = 2, pixels = 3 (Pixels.values = 1, packed), raw = 4.
    write("native", "image", field(2, gray))
    write("native", "raw-idx", field(1, b"r1") + field(4, digit))
    write("native", "pixels", field(3, field(1, floats(p / 255 for p in digit))))

    # inference.ModelInferRequest: inputs = 5 (name 1, datatype 2, shape 3 packed int64,
    # contents 5 with fp32_contents 6 / uint_contents 4), raw_input_contents = 7.
    def tensor(datatype, shape, contents=b""):
        packed = b"".join(varint(d) for d in shape)
        body = field(1, b"input") + field(2, datatype) + field(3, packed)
        return body + (field(5, contents) if contents else b"")

    model = field(1, b"mnist")
    write("oip", "uint8-raw", model + field(5, tensor(b"UINT8", [1, 784])) + field(7, digit))
    write("oip", "fp32-raw", model + field(5, tensor(b"FP32", [2, 1, 28, 28])) + field(7, floats(p / 255 for p in digit + digit)))
    write("oip", "fp32-contents", model + field(5, tensor(b"FP32", [1, 784], field(6, floats(p / 255 for p in digit)))))
    write("oip", "uint8-contents", model + field(5, tensor(b"UINT8", [1, 784], field(4, b"".join(varint(p) for p in digit)))))

    # Shipped model files, cut after their headers (and a little data): every header field is
    # there for the fuzzer to mutate without the corpus carrying whole models.
    for name in ["edge-mlp.safetensors", "edge-mlp-int8.safetensors", "cloud-cnn.safetensors"]:
        data = (ROOT / "models" / name).read_bytes()
        (header_len,) = struct.unpack("<Q", data[:8])
        write("model_file", name, data[: 8 + header_len + 256])
    for name in ["edge-mlp-q8_0.gguf", "edge-mlp-q4_0.gguf"]:
        write("model_file", name, (ROOT / "models" / name).read_bytes()[:4096])

    # Every built-in profile as SetLinkProfile would receive it, plus the options no built-in
    # uses (a trace file in the trace directory, an inline trace, correlation, in-flight loss).
    for entry in json.load(open(sys.argv[1])):
        write("link_profile", entry["profile"]["name"] + ".json", json.dumps(entry["profile"], indent=1))
    write(
        "link_profile",
        "options.toml",
        """name = "options"
description = "trace file, inline trace, correlation, handover losing in-flight messages"

[uplink]
trace = "ok.trace"

[uplink.delay]
base_ms = 2.0
jitter_median_ms = 1.0
jitter_p99_ms = 9.0
correlation = 0.5

[downlink]
trace_ms = [1, 1, 3, 4, 4, 7]

[downlink.delay]
base_ms = 2.0

[handover]
mean_interval_s = 0.05
duration_median_ms = 10.0
duration_p99_ms = 40.0
in_flight = "lose"
""",
    )

    # Mahimahi traces: a short one with bursts and gaps, and one that loops at 1 ms.
    write("link_trace", "bursts", "\n".join(str(t) for t in [0, 0, 1, 1, 1, 4, 9, 9, 12, 20]) + "\n")
    write("link_trace", "one-ms", "1\n")
    write("link_trace", "long-gap", "5\n5\n86400000\n")


if __name__ == "__main__":
    main()

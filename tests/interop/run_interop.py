#!/usr/bin/env python3
"""Interoperability checks: real third-party clients against a running edge and cloud.

Run by .ci/checks/interop.sh, which builds the binaries, starts `edgeinfer up` on free ports and
passes their addresses here:

    python tests/interop/run_interop.py --edge 127.0.0.1:PORT --cloud 127.0.0.1:PORT \
        --admin 127.0.0.1:PORT --edge-http 127.0.0.1:PORT --cloud-http 127.0.0.1:PORT

What is checked, each with the client a user would use:
- grpcurl (reflection): list, describe, Infer with JSON pixels and with a base64 PNG, health
  Check, EdgeAdmin calls, and the error a malformed input gets;
- tritonclient[grpc] (Open Inference Protocol): live, ready, model ready, metadata, and infer on
  100 MNIST test digits with the right labels, against the edge and the cloud;
- stubs generated from proto/ with grpcio-tools: Infer, InferStream, ListModels, provenance;
- grpcio-health-checking: Check on the whole server and on each service name;
- curl and tritonclient[http] (Open Inference Protocol over HTTP/REST): health, server and
  model metadata, model config, infer with JSON and binary tensors, OIP JSON errors with their
  HTTP statuses, against the edge and the cloud;
- the `edgeinfer` client commands (infer, bench in both protocols, health);
- TLS: `edgeinfer up` with a certificate made by the README's openssl commands, called by
  grpcurl, the edgeinfer commands, generated stubs and tritonclient, with mutual TLS at the
  cloud;
- the README walkthrough: every fenced block tagged `interop` is run as written (the default
  addresses are replaced by the ones of the servers under test);
- OpenTelemetry: `edgeinfer up --otlp-endpoint` exporting to the official OTLP trace service
  (PyPI `opentelemetry-proto`, served by grpcio, tests/interop/otlp_receiver.py); one request
  with a `traceparent` is one trace with the edge, link (uplink, downlink) and cloud spans.

Prints one line per check and closes with `N passed, N failed`; exits 1 when any failed.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "tests" / "interop" / "gen"
DATA = ROOT / "tests" / "interop" / "data"
README = ROOT / "README.md"

# The addresses the README uses (edgeinfer up's defaults).
README_EDGE = "127.0.0.1:50051"
README_CLOUD = "127.0.0.1:50052"
README_ADMIN = "127.0.0.1:50061"
README_EDGE_HTTP = "127.0.0.1:8000"
README_CLOUD_HTTP = "127.0.0.1:8001"

EDGE_SERVICES = {
    "edgeinfer.v1.Inference",
    "inference.GRPCInferenceService",
    "grpc.health.v1.Health",
}


# === helpers ===


class Context:
    """What every check may use: the servers' addresses and the MNIST test set."""

    def __init__(self, edge: str, cloud: str, admin: str, edge_http: str, cloud_http: str):
        self.edge = edge
        self.cloud = cloud
        self.admin = admin
        self.edge_http = edge_http
        self.cloud_http = cloud_http
        self.images, self.labels = load_mnist_test()


def load_mnist_test():
    mnist = ROOT / "data" / "mnist"
    with gzip.open(mnist / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(mnist / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    assert len(images) == len(labels) == 10_000
    return images, labels


def run(cmd, *, input=None, cwd=ROOT, env=None, timeout=120, shell=False):
    """Runs a command; returns (exit status, stdout + stderr)."""
    p = subprocess.run(
        cmd,
        input=input,
        cwd=cwd,
        env=env,
        timeout=timeout,
        shell=shell,
        capture_output=True,
        text=True,
        executable="/bin/bash" if shell else None,
    )
    return p.returncode, p.stdout + p.stderr


def grpcurl(*args, data=None):
    """Runs grpcurl in plaintext mode; `data` (a dict) is sent on stdin. Returns the output,
    failing the check when grpcurl fails."""
    cmd = ["grpcurl", "-plaintext"]
    if data is not None:
        cmd += ["-d", "@"]
    rc, out = run(cmd + list(args), input=None if data is None else json.dumps(data))
    assert rc == 0, f"grpcurl {' '.join(args)} exited {rc}:\n{out}"
    return out


def grpcurl_json(*args, data=None):
    return json.loads(grpcurl(*args, data=data))


def generated_stubs():
    """Generates Python stubs from proto/ (as a user would) and imports them."""
    GEN.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto" / "edgeinfer").rglob("*.proto"))
    rc, out = run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", f"--python_out={GEN}", f"--grpc_python_out={GEN}"]
        + [f"proto/{p}" for p in protos]
    )
    assert rc == 0, out
    if str(GEN) not in sys.path:
        sys.path.insert(0, str(GEN))
    from edgeinfer.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc  # noqa: E402

    return inference_pb2, inference_pb2_grpc, admin_pb2, admin_pb2_grpc


CHECKS = []


def check(name):
    def register(fn):
        CHECKS.append((name, fn))
        return fn

    return register


# === grpcurl ===


@check("grpcurl list (edge): every data service, and EdgeAdmin only on the admin listener")
def _(ctx):
    services = set(grpcurl(ctx.edge, "list").split())
    missing = EDGE_SERVICES - services
    assert not missing, f"missing {missing} in {services}"
    assert "edgeinfer.v1.EdgeAdmin" not in services, services
    admin = set(grpcurl(ctx.admin, "list").split())
    assert "edgeinfer.v1.EdgeAdmin" in admin and "edgeinfer.v1.Inference" not in admin, admin
    rc, out = run(["grpcurl", "-plaintext", ctx.edge, "edgeinfer.v1.EdgeAdmin/GetStatus"])
    assert rc != 0 and "Unimplemented" in out, out


@check("grpcurl list (cloud): no EdgeAdmin")
def _(ctx):
    services = set(grpcurl(ctx.cloud, "list").split())
    assert {"edgeinfer.v1.Inference", "inference.GRPCInferenceService"} <= services, services
    assert "edgeinfer.v1.EdgeAdmin" not in services, services


@check("grpcurl describe: services and messages with their comments")
def _(ctx):
    out = grpcurl(ctx.edge, "describe", "edgeinfer.v1.Inference")
    for rpc in ("rpc Infer", "rpc InferStream", "rpc ListModels"):
        assert rpc in out, out
    out = grpcurl(ctx.edge, "describe", "edgeinfer.v1.InferRequest")
    assert "latency_budget_ms" in out and "oneof input" in out, out
    out = grpcurl(ctx.edge, "describe", "inference.ModelInferRequest")
    assert "raw_input_contents" in out, out


@check("grpcurl Infer with JSON pixels: the right digit, with provenance")
def _(ctx):
    for i in range(5):
        pixels = [round(float(v) / 255, 4) for v in ctx.images[i]]
        reply = grpcurl_json(ctx.edge, "edgeinfer.v1.Inference/Infer", data={"pixels": {"values": pixels}})
        assert reply["label"] == str(ctx.labels[i]), reply
        assert reply["servedBy"] in ("EDGE", "CLOUD"), reply
        assert reply["reason"], reply
        assert int(reply["timing"]["totalUs"]) > 0, reply


@check("grpcurl Infer with a base64 PNG (any size)")
def _(ctx):
    png = base64.b64encode((DATA / "seven.png").read_bytes()).decode()
    reply = grpcurl_json(ctx.edge, "edgeinfer.v1.Inference/Infer", data={"image": png, "latency_budget_ms": 200})
    assert reply["label"] == "7", reply
    reply = grpcurl_json(ctx.cloud, "edgeinfer.v1.Inference/Infer", data={"image": png})
    assert reply["label"] == "7", reply


@check("grpcurl Infer with a wrong pixel count: INVALID_ARGUMENT naming the field")
def _(ctx):
    rc, out = run(
        ["grpcurl", "-plaintext", "-d", '{"pixels": {"values": [0.5, 0.5, 0.5]}}', ctx.edge, "edgeinfer.v1.Inference/Infer"]
    )
    assert rc != 0, out
    assert "InvalidArgument" in out, out
    assert "pixels" in out, out


@check("grpcurl health Check: whole server and a service")
def _(ctx):
    for addr in (ctx.edge, ctx.cloud):
        assert grpcurl_json(addr, "grpc.health.v1.Health/Check")["status"] == "SERVING"
    reply = grpcurl_json(ctx.admin, "grpc.health.v1.Health/Check", data={"service": "edgeinfer.v1.EdgeAdmin"})
    assert reply["status"] == "SERVING", reply


@check("grpcurl EdgeAdmin: GetStatus, SetPolicy, SetLinkProfile")
def _(ctx):
    status = grpcurl_json(ctx.admin, "edgeinfer.v1.EdgeAdmin/GetStatus")
    assert status["linkProfile"], status
    threshold = status["policy"]["threshold"]
    policy = grpcurl_json(ctx.admin, "edgeinfer.v1.EdgeAdmin/SetPolicy", data={"threshold": 0.5})
    assert abs(policy["threshold"] - 0.5) < 1e-6, policy
    policy = grpcurl_json(ctx.admin, "edgeinfer.v1.EdgeAdmin/SetPolicy", data={"threshold": threshold})
    assert abs(policy["threshold"] - threshold) < 1e-6, policy
    original = status["linkProfile"]
    reply = grpcurl_json(ctx.admin, "edgeinfer.v1.EdgeAdmin/SetLinkProfile", data={"name": "lte"})
    assert reply["linkProfile"] == "lte", reply
    assert grpcurl_json(ctx.admin, "edgeinfer.v1.EdgeAdmin/GetStatus")["linkProfile"] == "lte"
    grpcurl_json(ctx.admin, "edgeinfer.v1.EdgeAdmin/SetLinkProfile", data={"name": original})


# === tritonclient (Open Inference Protocol) ===


def triton(addr):
    import tritonclient.grpc as tc

    return tc, tc.InferenceServerClient(url=addr)


@check("tritonclient: live, ready, model ready, metadata (edge and cloud)")
def _(ctx):
    for addr, concrete in ((ctx.edge, "edge-mlp"), (ctx.cloud, "cloud-cnn")):
        tc, client = triton(addr)
        assert client.is_server_live(), addr
        assert client.is_server_ready(), addr
        for model in ("mnist", concrete):
            assert client.is_model_ready(model), (addr, model)
        # An unknown model is not ready: a false answer or NOT_FOUND (design.md section 4).
        try:
            assert not client.is_model_ready("no-such-model"), addr
        except tc.InferenceServerException as e:
            assert e.status() == "StatusCode.NOT_FOUND", e
        meta = client.get_model_metadata("mnist", as_json=True)
        assert meta["name"] == "mnist", meta
        inputs = {t["name"]: t for t in meta["inputs"]}
        outputs = {t["name"]: t for t in meta["outputs"]}
        assert "input" in inputs and inputs["input"]["datatype"] == "FP32", meta
        assert [int(d) for d in inputs["input"]["shape"]] == [-1, 784], meta
        assert "probabilities" in outputs and outputs["probabilities"]["datatype"] == "FP32", meta
        server = client.get_server_metadata(as_json=True)
        assert server["name"], server


def triton_classify(addr, images, dtype):
    tc, client = triton(addr)
    answers = []
    for image in images:
        data = image.reshape(1, 784)
        data = data.astype(np.float32) / 255.0 if dtype == "FP32" else data.astype(np.uint8)
        inp = tc.InferInput("input", [1, 784], dtype)
        inp.set_data_from_numpy(data)
        out = tc.InferRequestedOutput("probabilities")
        result = client.infer("mnist", [inp], outputs=[out], parameters={"latency_budget_ms": 500}, client_timeout=10)
        probs = result.as_numpy("probabilities")
        assert probs.shape == (1, 10), probs.shape
        params = result.get_response().parameters
        answers.append((int(np.argmax(probs[0])), params))
    return answers


@check("tritonclient infer: 100 test digits, right labels (edge, FP32 and UINT8)")
def _(ctx):
    for dtype in ("FP32", "UINT8"):
        answers = triton_classify(ctx.edge, ctx.images[:100], dtype)
        right = sum(a == int(l) for (a, _), l in zip(answers, ctx.labels[:100]))
        assert right >= 97, f"{dtype}: {right}/100 right"
        _, params = answers[0]
        assert params["served_by"].string_param.lower() in ("edge", "cloud"), params
        assert params["reason"].string_param, params
        assert "degraded" in params, params


@check("tritonclient infer: 100 test digits, right labels (cloud)")
def _(ctx):
    answers = triton_classify(ctx.cloud, ctx.images[:100], "FP32")
    right = sum(a == int(l) for (a, _), l in zip(answers, ctx.labels[:100]))
    assert right >= 98, f"{right}/100 right"


@check("tritonclient infer: a batch of 16 in one request")
def _(ctx):
    tc, client = triton(ctx.edge)
    inp = tc.InferInput("input", [16, 784], "FP32")
    inp.set_data_from_numpy(ctx.images[:16].astype(np.float32) / 255.0)
    result = client.infer("mnist", [inp], client_timeout=10)
    probs = result.as_numpy("probabilities")
    assert probs.shape == (16, 10), probs.shape
    right = int((probs.argmax(axis=1) == ctx.labels[:16]).sum())
    assert right >= 15, right


# === the Open Inference Protocol over HTTP: curl and tritonclient.http ===


def curl(*args, data=None):
    """Runs curl; returns (HTTP status, body). `data` (a dict) is POSTed as JSON."""
    cmd = ["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"]
    if data is not None:
        cmd += ["-H", "content-type: application/json", "--data-binary", "@-"]
    rc, out = run(cmd + list(args), input=None if data is None else json.dumps(data))
    assert rc == 0, f"curl {' '.join(args)} exited {rc}:\n{out}"
    body, _, status = out.rpartition("\n")
    return int(status), body


@check("curl: health, server and model metadata, config (edge and cloud)")
def _(ctx):
    for addr, concrete in ((ctx.edge_http, "edge-mlp"), (ctx.cloud_http, "cloud-cnn")):
        for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/mnist/ready", f"/v2/models/{concrete}/ready"):
            status, body = curl(f"http://{addr}{path}")
            assert status == 200, (addr, path, status, body)
        status, body = curl(f"http://{addr}/v2")
        assert status == 200 and json.loads(body)["name"].startswith("edgeinfer"), body
        status, body = curl(f"http://{addr}/v2/models/mnist")
        meta = json.loads(body)
        assert status == 200 and meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 784]}, body
        status, body = curl(f"http://{addr}/v2/models/mnist/config")
        assert status == 200 and json.loads(body)["input"][0]["dims"] == [784], body
        status, body = curl(f"http://{addr}/v2/models/no-such-model")
        assert status == 404 and "no-such-model" in json.loads(body)["error"], (status, body)


@check("curl infer: JSON tensors, the right digits, provenance; OIP errors with HTTP statuses")
def _(ctx):
    for addr in (ctx.edge_http, ctx.cloud_http):
        for i in range(5):
            request = {"id": f"c{i}", "parameters": {"latency_budget_ms": 500},
                       "inputs": [{"name": "input", "shape": [1, 784], "datatype": "UINT8",
                                   "data": [int(v) for v in ctx.images[i]]}]}
            status, body = curl(f"http://{addr}/v2/models/mnist/infer", data=request)
            assert status == 200, (status, body)
            reply = json.loads(body)
            assert reply["id"] == f"c{i}", reply
            probs = reply["outputs"][0]["data"]
            assert int(np.argmax(probs)) == int(ctx.labels[i]), reply
            assert reply["parameters"]["served_by"] in ("EDGE", "CLOUD"), reply
        bad = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3]}]}
        status, body = curl(f"http://{addr}/v2/models/mnist/infer", data=bad)
        assert status == 400 and "does not hold whole inputs" in json.loads(body)["error"], (status, body)
        status, body = curl(f"http://{addr}/v2/models/nope/infer", data=bad)
        assert status == 404 and "error" in json.loads(body), (status, body)
    # Any finite FP32 value is taken (perf_analyzer's random data), placed on the cloud through
    # the edge's router.
    wild = {"parameters": {"placement": "cloud"},
            "inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                        "data": [float((i * 37) % 101 - 50) for i in range(784)]}]}
    status, body = curl(f"http://{ctx.edge_http}/v2/models/mnist/infer", data=wild)
    assert status == 200 and json.loads(body)["parameters"]["served_by"] == "CLOUD", (status, body)


def triton_http(addr):
    import tritonclient.http as th

    return th, th.InferenceServerClient(url=addr, network_timeout=10)


@check("tritonclient.http: live, ready, model ready, metadata, config (edge and cloud)")
def _(ctx):
    for addr, concrete in ((ctx.edge_http, "edge-mlp"), (ctx.cloud_http, "cloud-cnn")):
        th, client = triton_http(addr)
        assert client.is_server_live() and client.is_server_ready(), addr
        for model in ("mnist", concrete):
            assert client.is_model_ready(model), (addr, model)
        assert not client.is_model_ready("no-such-model"), addr
        meta = client.get_model_metadata("mnist")
        assert meta["inputs"][0]["shape"] == [-1, 784], meta
        assert meta["outputs"][0]["name"] == "probabilities", meta
        config = client.get_model_config("mnist")
        assert config["max_batch_size"] >= 1, config
        assert client.get_server_metadata()["name"].startswith("edgeinfer")


@check("tritonclient.http infer: 100 digits binary (FP32) and JSON (UINT8), a batch of 16, errors")
def _(ctx):
    for addr, need in ((ctx.edge_http, 97), (ctx.cloud_http, 98)):
        th, client = triton_http(addr)
        for dtype, binary in (("FP32", True), ("UINT8", False)):
            right = 0
            for image, label in zip(ctx.images[:100], ctx.labels[:100]):
                data = image.reshape(1, 784)
                data = data.astype(np.float32) / 255.0 if dtype == "FP32" else data.astype(np.uint8)
                inp = th.InferInput("input", [1, 784], dtype)
                inp.set_data_from_numpy(data, binary_data=binary)
                out = th.InferRequestedOutput("probabilities", binary_data=binary)
                result = client.infer("mnist", [inp], outputs=[out], parameters={"latency_budget_ms": 500})
                probs = result.as_numpy("probabilities")
                assert probs.shape == (1, 10), probs.shape
                right += int(np.argmax(probs[0])) == int(label)
            assert right >= need, f"{addr} {dtype}: {right}/100 right"
            params = result.get_response()["parameters"]
            assert params["served_by"] in ("EDGE", "CLOUD") and params["reason"], params
        inp = th.InferInput("input", [16, 784], "FP32")
        inp.set_data_from_numpy(ctx.images[:16].astype(np.float32) / 255.0)
        probs = client.infer("mnist", [inp]).as_numpy("probabilities")
        assert probs.shape == (16, 10) and int((probs.argmax(axis=1) == ctx.labels[:16]).sum()) >= 15, probs
        nan = np.zeros((1, 784), np.float32)
        nan[0, 7] = np.nan
        inp = th.InferInput("input", [1, 784], "FP32")
        inp.set_data_from_numpy(nan)
        try:
            client.infer("mnist", [inp])
            raise AssertionError("NaN was accepted")
        except th.InferenceServerException as e:
            assert e.status() == "400" and "[7]: NaN is not a finite number" in e.message(), (e.status(), e)


# === stubs generated from proto/ ===


@check("generated stubs: Infer with provenance fields")
def _(ctx):
    pb, pb_grpc, _, _ = generated_stubs()
    with grpc.insecure_channel(ctx.edge) as channel:
        stub = pb_grpc.InferenceStub(channel)
        seen = set()
        right = 0
        for i in range(50):
            reply = stub.Infer(pb.InferRequest(id=f"r{i}", raw=ctx.images[i].tobytes(), latency_budget_ms=200), timeout=10)
            assert reply.id == f"r{i}", reply
            right += reply.class_index == ctx.labels[i]
            assert reply.served_by in (pb.EDGE, pb.CLOUD), reply
            assert reply.reason != pb.REASON_UNSPECIFIED, reply
            assert reply.model and "@" in reply.model, reply.model
            assert reply.timing.total_us > 0, reply.timing
            assert len(reply.probabilities) == 10
            seen.add(pb.Tier.Name(reply.served_by))
        assert right >= 48, right
        # A forced placement shows the other tier.
        reply = stub.Infer(pb.InferRequest(raw=ctx.images[0].tobytes(), placement=pb.CLOUD_ONLY, latency_budget_ms=2000), timeout=10)
        assert (reply.served_by, reply.reason) == (pb.CLOUD, pb.PLACEMENT) or reply.degraded, reply
        reply = stub.Infer(pb.InferRequest(raw=ctx.images[0].tobytes(), placement=pb.EDGE_ONLY), timeout=10)
        assert (reply.served_by, reply.reason) == (pb.EDGE, pb.PLACEMENT), reply


@check("generated stubs: InferStream, 100 frames, answers matched by id")
def _(ctx):
    pb, pb_grpc, _, _ = generated_stubs()
    with grpc.insecure_channel(ctx.edge) as channel:
        stub = pb_grpc.InferenceStub(channel)
        frames = (pb.InferRequest(id=f"frame-{i}", raw=ctx.images[i].tobytes()) for i in range(100))
        replies = list(stub.InferStream(frames, timeout=30))
    assert len(replies) == 100, len(replies)
    by_id = {r.id: r for r in replies}
    assert set(by_id) == {f"frame-{i}" for i in range(100)}
    right = sum(by_id[f"frame-{i}"].class_index == ctx.labels[i] for i in range(100))
    assert right >= 97, right


@check("generated stubs: ListModels and EdgeAdmin GetStatus")
def _(ctx):
    pb, pb_grpc, admin_pb, admin_pb_grpc = generated_stubs()
    with grpc.insecure_channel(ctx.edge) as channel:
        models = pb_grpc.InferenceStub(channel).ListModels(pb.ListModelsRequest(), timeout=5).models
        assert models and models[0].name == "edge-mlp", models
        assert list(models[0].labels) == [str(d) for d in range(10)], models[0]
        try:
            admin_pb_grpc.EdgeAdminStub(channel).GetStatus(admin_pb.GetStatusRequest(), timeout=5)
            raise AssertionError("the data port must not serve EdgeAdmin")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNIMPLEMENTED, e
    with grpc.insecure_channel(ctx.admin) as channel:
        status = admin_pb_grpc.EdgeAdminStub(channel).GetStatus(admin_pb.GetStatusRequest(), timeout=5)
        assert status.link_profile and status.edge_model.name == "edge-mlp", status
    with grpc.insecure_channel(ctx.cloud) as channel:
        models = pb_grpc.InferenceStub(channel).ListModels(pb.ListModelsRequest(), timeout=5).models
        assert any(m.name == "cloud-cnn" for m in models), models


# === grpcio-health-checking ===


@check("grpcio-health-checking: overall and per-service status")
def _(ctx):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    serving = health_pb2.HealthCheckResponse.SERVING
    expected = {
        ctx.edge: ["", "edgeinfer.v1.Inference", "inference.GRPCInferenceService"],
        ctx.admin: ["", "edgeinfer.v1.EdgeAdmin"],
        ctx.cloud: ["", "edgeinfer.v1.Inference", "inference.GRPCInferenceService"],
    }
    for addr, services in expected.items():
        with grpc.insecure_channel(addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in services:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == serving, (addr, service, reply)
            try:
                stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
                raise AssertionError("an unknown service must be NOT_FOUND")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND, e
    with grpc.insecure_channel(ctx.cloud) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="edgeinfer.v1.EdgeAdmin"), timeout=5
            )
            raise AssertionError("the cloud serves no EdgeAdmin")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e


# === the edgeinfer client commands ===


@check("edgeinfer health: exit 0 when SERVING, non-zero when nothing listens")
def _(ctx):
    for addr in (ctx.edge, ctx.cloud):
        rc, out = run(["edgeinfer", "health", "--addr", f"http://{addr}"])
        assert rc == 0 and "SERVING" in out, out
    rc, out = run(["edgeinfer", "health", "--addr", f"http://{ctx.admin}", "--service", "edgeinfer.v1.EdgeAdmin"])
    assert rc == 0, out
    rc, out = run(["edgeinfer", "health", "--addr", f"http://{ctx.cloud}", "--service", "edgeinfer.v1.EdgeAdmin"])
    assert rc != 0 and "unknown service" in out, out
    rc, out = run(["edgeinfer", "health", "--addr", "http://127.0.0.1:9", "--timeout-ms", "2000"])
    assert rc != 0 and "127.0.0.1:9" in out, out


@check("edgeinfer infer: MNIST index and PNG, text and JSON")
def _(ctx):
    rc, out = run(["edgeinfer", "infer", "--addr", ctx.edge, "--mnist-test", "0", "--json"])
    assert rc == 0, out
    reply = json.loads(out)
    assert reply["label"] == "7" and reply["true_label"] == 7 and reply["correct"], reply
    assert reply["served_by"] in ("edge", "cloud") and reply["reason"], reply
    rc, out = run(["edgeinfer", "infer", "--addr", ctx.edge, "--image", str(DATA / "seven.png"), "--placement", "cloud"])
    assert rc == 0 and "label        7" in out and "served by" in out, out
    rc, out = run(["edgeinfer", "infer", "--addr", ctx.edge, "--mnist-test", "10000"])
    assert rc != 0 and "out of range" in out, out


@check("edgeinfer bench --json: the contract's fields, native and OIP")
def _(ctx):
    for protocol in ("native", "oip"):
        rc, out = run(
            ["edgeinfer", "bench", "--addr", ctx.edge, "--protocol", protocol, "--requests", "500",
             "--concurrency", "8", "--json"],
            timeout=300,
        )
        assert rc == 0, out
        report = json.loads(out)
        for field in ("requests", "ok", "errors", "throughput_rps", "latency_us", "accuracy", "served_by",
                      "reasons", "degraded", "within_budget"):
            assert field in report, (field, report)
        assert set(report["latency_us"]) >= {"p50", "p90", "p99", "p999", "max"}, report
        assert set(report["served_by"]) == {"edge", "cloud"}, report
        assert report["requests"] == report["ok"] == 500, report
        assert report["served_by"]["edge"] + report["served_by"]["cloud"] == 500, report
        assert report["accuracy"] >= 0.97, report
    rc, out = run(["edgeinfer", "bench", "--addr", ctx.edge, "--rate", "200", "--duration", "1", "--json"])
    assert rc == 0, out
    report = json.loads(out)
    assert report["mode"] == "open" and 150 <= report["requests"] <= 250, report


@check("edgeinfer sweep: table and plots, against the running edge and in process")
def _(ctx):
    status_before = grpcurl_json(ctx.admin, "edgeinfer.v1.EdgeAdmin/GetStatus")
    small = ["--thresholds", "0.5,0.99", "--profiles", "urllc,lte", "--requests", "150", "--warmup", "1",
             "--rate", "500"]
    for mode in (["--edge", f"http://{ctx.edge}", "--edge-admin", f"http://{ctx.admin}", "--cloud", ctx.cloud], []):
        with tempfile.TemporaryDirectory() as out:
            rc, text = run(["edgeinfer", "sweep", *small, *mode, "--out", out], timeout=300)
            assert rc == 0, text
            rows = (Path(out) / "sweep.csv").read_text().splitlines()
            assert rows[0].startswith("profile,threshold,requests,ok,errors,accuracy,edge_share,offloaded_share"), rows[0]
            assert len(rows) == 1 + 4, rows
            table = json.loads((Path(out) / "sweep.json").read_text())
            by_cell = {(r["profile"], round(r["threshold"], 3)): r for r in table["rows"]}
            assert all(r["ok"] == 150 for r in table["rows"]), table["rows"]
            # On urllc nothing stops the edge from asking the cloud, so a stricter threshold
            # must offload more (on lossier links the circuit breaker may legitimately not).
            low, high = by_cell[("urllc", 0.5)], by_cell[("urllc", 0.99)]
            assert high["edge_share"] < low["edge_share"], (low, high)
            for name in ("accuracy_vs_offload.png", "latency_cdf.png"):
                assert (Path(out) / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    # The running edge got its threshold and link back.
    status_after = grpcurl_json(ctx.admin, "edgeinfer.v1.EdgeAdmin/GetStatus")
    assert status_after["linkProfile"] == status_before["linkProfile"], status_after
    assert status_after["policy"]["threshold"] == status_before["policy"]["threshold"], status_after


# === the README walkthrough ===


def readme_blocks():
    """The README's fenced blocks tagged for the walkthrough: (info string, body) pairs."""
    text = README.read_text()
    m = re.search(r"<!-- walkthrough:start -->(.*)<!-- walkthrough:end -->", text, re.S)
    assert m, "README has no walkthrough section"
    return re.findall(r"^```([^\n]*)\n(.*?)^```", m.group(1), re.S | re.M)


def for_servers(ctx, text):
    return (text.replace(README_EDGE, ctx.edge).replace(README_CLOUD, ctx.cloud).replace(README_ADMIN, ctx.admin)
            .replace(README_EDGE_HTTP, ctx.edge_http).replace(README_CLOUD_HTTP, ctx.cloud_http))


@check("README walkthrough: every `interop` block runs as written")
def _(ctx):
    blocks = readme_blocks()
    files = [(info, body) for info, body in blocks if re.search(r"\bfile=", info)]
    scripts = [body for info, body in blocks if re.search(r"\binterop\b", info)]
    assert len(scripts) >= 3, f"only {len(scripts)} interop blocks"
    # A scratch directory that looks like the repository (so relative paths work as in the
    # README), holding the files the README asks the reader to save.
    with tempfile.TemporaryDirectory() as scratch:
        for entry in ROOT.iterdir():
            if entry.name not in (".git", "target"):
                os.symlink(entry, Path(scratch) / entry.name)
        for info, body in files:
            name = re.search(r"\bfile=(\S+)", info).group(1)
            (Path(scratch) / name).write_text(for_servers(ctx, body))
        # The edgeinfer commands that rely on the default address read it from EDGEINFER_ADDR.
        env = dict(os.environ, EDGEINFER_ADDR=f"http://{ctx.edge}")
        for body in scripts:
            script = "set -euo pipefail\n" + for_servers(ctx, body)
            rc, out = run(script, shell=True, cwd=scratch, env=env, timeout=300)
            assert rc == 0, f"README block failed (exit {rc}):\n{body}\n--- output:\n{out}"
            print(textwrap_indent(out), end="")


def start_up(*args):
    """Starts `edgeinfer up` on free ports with extra `args`; returns (process, edge, cloud,
    edge's OIP HTTP address)."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        ["edgeinfer", "up", "--edge-listen", "127.0.0.1:0", "--cloud-listen", "127.0.0.1:0",
         "--admin-listen", "127.0.0.1:0", "--cloud-admin-listen", "127.0.0.1:0",
         "--edge-http-listen", "127.0.0.1:0", "--cloud-http-listen", "127.0.0.1:0",
         "--edge-metrics-listen", "off", "--cloud-metrics-listen", "off", *args],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log.seek(0)
        text = log.read()
        edge = re.search(r"edge listening on (\S+)", text)
        cloud = re.search(r"cloud listening on (\S+)", text)
        edge_http = re.search(r"edge OIP HTTP listening on ([0-9.:]+)", text)
        if edge and cloud and edge_http and "ready in" in text:
            return proc, edge.group(1), cloud.group(1), edge_http.group(1)
        if proc.poll() is not None:
            raise AssertionError(f"edgeinfer up exited {proc.returncode}:\n{text}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("edgeinfer up did not get ready within 60 s")


def stop_up(proc):
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@check("TLS: README's tls-demo blocks, grpcurl, stubs and tritonclient over TLS; mTLS at the cloud")
def _(ctx):
    blocks = readme_blocks()
    demo = [body for info, body in blocks if re.search(r"\btls-demo\b", info)]
    assert len(demo) == 2, f"expected the certificate and the calls blocks, found {len(demo)}"
    certs, calls = demo
    with tempfile.TemporaryDirectory() as scratch:
        rc, out = run("set -euo pipefail\n" + certs, shell=True, cwd=scratch)
        assert rc == 0, f"certificate block failed:\n{out}"
        tls = Path(scratch) / "tls"
        proc, edge, cloud, edge_http = start_up("--tls-cert", str(tls / "node.pem"), "--tls-key", str(tls / "node.key"),
                                     "--tls-ca", str(tls / "ca.pem"))
        try:
            env = dict(os.environ, EDGEINFER_ADDR=f"https://{edge}")
            script = "set -euo pipefail\n" + calls.replace(README_EDGE, edge).replace(README_CLOUD, cloud)
            rc, out = run(script, shell=True, cwd=scratch, env=env)
            assert rc == 0, f"README TLS calls failed (exit {rc}):\n{calls}\n--- output:\n{out}"
            assert "served by    cloud" in out, out
            print(textwrap_indent(out), end="")

            # Plaintext to the TLS edge fails; the cloud refuses a client without a certificate.
            rc, out = run(["grpcurl", "-plaintext", "-max-time", "5", edge, "list"])
            assert rc != 0, out
            rc, out = run(["grpcurl", "-cacert", str(tls / "ca.pem"), "-max-time", "5", cloud,
                           "grpc.health.v1.Health/Check"])
            assert rc != 0, f"the cloud answered a client without a certificate:\n{out}"

            # Generated stubs with grpc's TLS credentials.
            pb, pb_grpc, _, _ = generated_stubs()
            creds = grpc.ssl_channel_credentials(root_certificates=(tls / "ca.pem").read_bytes())
            with grpc.secure_channel(edge, creds) as channel:
                reply = pb_grpc.InferenceStub(channel).Infer(
                    pb.InferRequest(raw=bytes(ctx.images[0]), placement=pb.CLOUD_ONLY), timeout=10)
            assert reply.label == str(ctx.labels[0]) and reply.served_by == pb.CLOUD, reply

            # tritonclient over TLS.
            import tritonclient.grpc as tc
            client = tc.InferenceServerClient(edge, ssl=True, root_certificates=str(tls / "ca.pem"))
            assert client.is_server_ready()
            pixels = tc.InferInput("input", [4, 784], "UINT8")
            pixels.set_data_from_numpy(ctx.images[:4].copy())
            result = client.infer("mnist", [pixels])
            got = result.as_numpy("probabilities").argmax(axis=1)
            assert list(got) == list(ctx.labels[:4]), (got, ctx.labels[:4])

            # OIP over HTTP with the same certificate: curl and tritonclient.http over HTTPS;
            # plaintext HTTP to the TLS listener gets no answer.
            rc, out = run(["curl", "-sS", "--max-time", "5", "--cacert", str(tls / "ca.pem"),
                           f"https://{edge_http}/v2/models/mnist"])
            assert rc == 0 and json.loads(out)["name"] == "mnist", out
            rc, out = run(["curl", "-sS", "--max-time", "5", f"http://{edge_http}/v2/health/ready"])
            assert rc != 0, f"plaintext HTTP was answered by the TLS listener:\n{out}"
            import tritonclient.http as th
            client = th.InferenceServerClient(
                edge_http, ssl=True, ssl_options={"ca_certs": str(tls / "ca.pem")})
            pixels = th.InferInput("input", [4, 784], "UINT8")
            pixels.set_data_from_numpy(ctx.images[:4].copy())
            got = client.infer("mnist", [pixels]).as_numpy("probabilities").argmax(axis=1)
            assert list(got) == list(ctx.labels[:4]), (got, ctx.labels[:4])
        finally:
            stop_up(proc)


def attribute(span, key):
    return next((a.value.string_value for a in span.attributes if a.key == key), None)


@check("OpenTelemetry: a request with a traceparent is one trace at an OTLP receiver: edge, uplink, downlink, cloud")
def _(ctx):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from otlp_receiver import Receiver

    with Receiver() as receiver:
        proc, edge, _, _ = start_up("--otlp-endpoint", f"http://127.0.0.1:{receiver.port}")
        try:
            trace_id, client_span = os.urandom(16), os.urandom(8)
            traceparent = f"00-{trace_id.hex()}-{client_span.hex()}-01"
            pb, pb_grpc, _, _ = generated_stubs()
            with grpc.insecure_channel(edge) as channel:
                reply = pb_grpc.InferenceStub(channel).Infer(
                    pb.InferRequest(raw=bytes(ctx.images[0]), placement=pb.CLOUD_ONLY),
                    metadata=[("traceparent", traceparent)], timeout=10)
            assert reply.served_by == pb.CLOUD, reply

            def complete(spans):
                names = {span.name for _, span in spans}
                servers = [span for _, span in spans if span.name == "/edgeinfer.v1.Inference/Infer"]
                return {"cloud_call", "uplink", "downlink"} <= names and len(servers) == 2

            # The exporter sends a batch every 5 s; bounded wait.
            spans = receiver.wait_for(trace_id, complete, timeout=30)
        finally:
            stop_up(proc)

    summary = sorted(f"{span.name} ({attribute(span, 'node') or '-'})" for _, span in spans)
    print(f"      | {len(spans)} spans in trace {trace_id.hex()}: {', '.join(summary)}")
    assert complete(spans), f"incomplete trace: {summary}"
    by_id = {span.span_id: span for _, span in spans}
    servers = {attribute(span, "node"): span for _, span in spans
               if span.name == "/edgeinfer.v1.Inference/Infer"}
    assert set(servers) == {"edge", "cloud"}, summary
    # The edge's server span is the child of the client's span; everything else hangs under it.
    assert servers["edge"].parent_span_id == client_span, "edge span not under the traceparent"
    for _, span in spans:
        if span is servers["edge"]:
            continue
        assert span.parent_span_id in by_id, f"{span.name}: parent not in the trace"
    (call,) = [span for _, span in spans if span.name == "cloud_call"]
    for name in ("uplink", "downlink"):
        (link,) = [span for _, span in spans if span.name == name]
        assert link.parent_span_id == call.span_id, f"{name} not under cloud_call"
    # The cloud's span is the child of the edge's call: the context crossed the link.
    assert servers["cloud"].parent_span_id == call.span_id, "cloud span not under cloud_call"
    # Walking up from the cloud's span reaches the edge's.
    span, hops = servers["cloud"], 0
    while span is not servers["edge"] and hops < 20:
        span, hops = by_id[span.parent_span_id], hops + 1
    assert span is servers["edge"], "the cloud's span does not descend from the edge's"


def textwrap_indent(text, limit=12):
    lines = text.rstrip("\n").splitlines()
    shown = lines[:limit] + ([f"... ({len(lines) - limit} more lines)"] if len(lines) > limit else [])
    return "".join(f"      | {line}\n" for line in shown)


# === runner ===


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edge", required=True, help="edge gRPC address, HOST:PORT")
    parser.add_argument("--cloud", required=True, help="cloud gRPC address, HOST:PORT")
    parser.add_argument("--admin", required=True, help="edge admin gRPC address, HOST:PORT")
    parser.add_argument("--edge-http", required=True, help="edge OIP HTTP address, HOST:PORT")
    parser.add_argument("--cloud-http", required=True, help="cloud OIP HTTP address, HOST:PORT")
    parser.add_argument("-k", dest="only", help="run only checks whose name contains this")
    args = parser.parse_args()
    for tool in ("grpcurl", "edgeinfer", "curl"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not on PATH")

    ctx = Context(args.edge, args.cloud, args.admin, args.edge_http, args.cloud_http)
    passed = failed = 0
    for name, fn in CHECKS:
        if args.only and args.only not in name:
            continue
        started = time.monotonic()
        try:
            fn(ctx)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the next check runs
            failed += 1
            print(f"FAIL  {name} ({time.monotonic() - started:.1f}s)")
            detail = str(e) if isinstance(e, AssertionError) else traceback.format_exc()
            for line in detail.strip().splitlines()[:40]:
                print(f"      {line}")
        else:
            passed += 1
            print(f"ok    {name} ({time.monotonic() - started:.1f}s)")
        sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

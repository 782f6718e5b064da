"""A small OTLP/gRPC trace receiver for the interoperability checks: the official
`opentelemetry.proto.collector.trace.v1.TraceService` (PyPI `opentelemetry-proto`) served by
grpcio on 127.0.0.1, port 0, keeping every span it is sent.

    with Receiver() as receiver:
        ...  # export to f"http://127.0.0.1:{receiver.port}"
        spans = receiver.wait_for(trace_id, done, timeout=30)
"""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

# Far above what one test exports; a client sending more is refused, not buffered.
MAX_MESSAGE_BYTES = 16 << 20


class _Service(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver):
        self.receiver = receiver

    def Export(self, request, context):
        with self.receiver.lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (a.value.string_value for a in resource_spans.resource.attributes
                     if a.key == "service.name"),
                    "",
                )
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.receiver.spans.append((service, span))
            self.receiver.changed.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()


class Receiver:
    def __init__(self):
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.spans = []  # (service.name, Span)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2),
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Service(self), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(grace=None)

    def trace(self, trace_id: bytes):
        """The spans received so far of one trace, as (service, Span)."""
        with self.lock:
            return [(s, span) for s, span in self.spans if span.trace_id == trace_id]

    def wait_for(self, trace_id: bytes, done, timeout: float):
        """Waits at most `timeout` seconds until `done(spans of trace_id)` holds; returns the
        spans of that trace either way."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                spans = [(s, span) for s, span in self.spans if span.trace_id == trace_id]
                left = deadline - time.monotonic()
                if done(spans) or left <= 0:
                    return spans
                self.changed.wait(timeout=min(left, 1.0))

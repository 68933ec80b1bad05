"""A minimal OTLP/gRPC trace receiver for tests: keeps every request it is sent."""

from __future__ import annotations

import socket
import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: OtlpSink) -> None:
        self._sink = sink

    def Export(self, request, context):  # noqa: N802 (gRPC method name)
        with self._sink.cond:
            self._sink.requests.append(request)
            self._sink.cond.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpSink:
    """Listens on 127.0.0.1 at a free port; spans() flattens what arrived."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.cond = threading.Condition()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self),
                                                                  self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None)

    def spans(self) -> list[tuple[dict, object]]:
        """(resource attributes, span proto) for every span received so far."""
        out = []
        with self.cond:
            reqs = list(self.requests)
        for req in reqs:
            for rs in req.resource_spans:
                res = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend((res, sp) for sp in ss.spans)
        return out

    def wait_for_spans(self, n: int, timeout_s: float = 20) -> list[tuple[dict, object]]:
        """Block until at least n spans arrived (condition wait, not a sleep)."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                got = sum(len(ss.spans) for r in self.requests for rs in r.resource_spans
                          for ss in rs.scope_spans)
                left = deadline - time.monotonic()
                if got >= n or left <= 0:
                    break
                self.cond.wait(left)
        return self.spans()


def _value(v):
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


def span_attrs(span) -> dict:
    return {kv.key: _value(kv.value) for kv in span.attributes}

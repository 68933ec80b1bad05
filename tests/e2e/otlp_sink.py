"""A minimal OTLP/gRPC receiver for tests (traces, logs, metrics): keeps every request."""

from __future__ import annotations

import socket
import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
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


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, sink: OtlpSink) -> None:
        self._sink = sink

    def Export(self, request, context):  # noqa: N802
        with self._sink.cond:
            self._sink.log_requests.append(request)
            self._sink.cond.notify_all()
        return logs_service_pb2.ExportLogsServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, sink: OtlpSink) -> None:
        self._sink = sink

    def Export(self, request, context):  # noqa: N802
        with self._sink.cond:
            self._sink.metric_requests.append(request)
            self._sink.cond.notify_all()
        return metrics_service_pb2.ExportMetricsServiceResponse()


class OtlpSink:
    """Listens on 127.0.0.1 at a free port; spans() / logs() flatten what arrived."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.log_requests: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.cond = threading.Condition()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self),
                                                                  self.server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsService(self), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(self),
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


    def logs(self) -> list[tuple[dict, object]]:
        """(resource attributes, log record proto) for every log record received so far."""
        out = []
        with self.cond:
            reqs = list(self.log_requests)
        for req in reqs:
            for rl in req.resource_logs:
                res = {kv.key: _value(kv.value) for kv in rl.resource.attributes}
                for sl in rl.scope_logs:
                    out.extend((res, lr) for lr in sl.log_records)
        return out

    def wait_for(self, what, pred, timeout_s: float = 30) -> list:  # noqa: ANN001
        """Block until pred(what()) holds (condition wait); returns what() either way."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                got = what()
                left = deadline - time.monotonic()
                if pred(got) or left <= 0:
                    return got
                self.cond.wait(min(left, 1.0))


def _value(v):
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


def span_attrs(span) -> dict:
    return {kv.key: _value(kv.value) for kv in span.attributes}

"""The fast OTLP encoder must produce exactly the SDK encoder's message."""

from __future__ import annotations

from dataclasses import replace

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceState

from otelpeers import attributes as A
from otelpeers.flows import CloseReason
from otelpeers.ids import SpanIds
from otelpeers.otel.encoded import SpanBatch
from otelpeers.otel.mapping import SpanMapper
from otelpeers.otel.otlp_export import encode_request
from otelpeers.otel.resources import ResourceCache
from otelpeers.otel.wire import Unsupported, encode_request_bytes
from otelpeers.testing.flows import flow, local_pair, many, owner

MAPPER = SpanMapper(SpanIds(b"w" * 16))


def flow_records():
    cache = ResourceCache(Resource({A.HOST_NAME: "h", "host.tags": ("a", "b"),
                                    "x.ratio": 0.5, "x.neg": -7}), None, 16)
    return cache, [*local_pair(), *many(300, processes=40),
            flow("77", close_reason=CloseReason.CONNECT_FAILED, proc=None),
            flow("78", close_reason=CloseReason.RESET, peer="2001:db8::5"),
            replace(flow("79"), cookie=2**64 - 1, netns_cookie=2**63 + 5),
            flow("80", proc=owner(1, "ünïcode-ç"), peer="10.0.0.1", local=""),
            flow("81", transport="icmp", peer_port=0)]


def flow_spans():
    cache, recs = flow_records()
    return [MAPPER.to_span(r, cache.get(r.owner)) for r in recs]


def send_encoded(exporter) -> None:  # noqa: ANN001
    """The span export process's way: the same records as flow_spans, encoded beforehand."""
    cache, recs = flow_records()
    batch = SpanBatch(exporter, MAPPER._ids)
    for r in recs:
        if not batch.add_flow(r, cache.get(r.owner)):
            batch.add_span(MAPPER.to_span(r, cache.get(r.owner)))
    assert len(batch) == len(recs)
    assert batch.export()


def test_flow_spans_encode_identically():
    spans = flow_spans()
    fast, sdk = encode_request(spans), encode_spans(spans)
    assert fast == sdk
    assert fast.SerializeToString(deterministic=True) == sdk.SerializeToString(
        deterministic=True)


def test_remote_parent_scope_variants_and_plain_resources():
    ctx = SpanContext(5, 6, is_remote=False)
    spans = [
        ReadableSpan("a", ctx, parent=SpanContext(5, 9, is_remote=True), kind=SpanKind.SERVER,
                     resource=Resource({"k": "v"}, "https://schema/1"), attributes={"b": [1, 2]},
                     start_time=1, end_time=2,
                     instrumentation_scope=InstrumentationScope("s", None, "https://s",
                                                                {"sa": True})),
        ReadableSpan("b", ctx, kind=SpanKind.PRODUCER, resource=Resource({"k": "v"},
                                                                         "https://schema/1"),
                     start_time=3, end_time=4),
    ]
    assert encode_request(spans) == encode_spans(spans)


def test_events_and_links_encode_identically():
    """Spans with sensitive-file and detection events and DNS links stay on the fast path."""
    ctx = SpanContext(5, 6, is_remote=False)
    link_ctx = SpanContext(7, 8, is_remote=False)
    span = ReadableSpan("e", ctx, events=[Event("x", {"a": 1, "b": "s"}, timestamp=3),
                                          Event("y", {"l": ["p", "q"]}, timestamp=4)],
                        links=[Link(link_ctx, {"otelpeers.dns.link": "resolution"})],
                        attributes={"otelpeers.dns.link": "resolution"},  # same key, field 9
                        resource=Resource({}), start_time=1, end_time=2)
    encode_request_bytes([span])  # no fallback
    assert encode_request([span]) == encode_spans([span])


def test_int_attributes_of_every_varint_length_encode_identically():
    """Int attributes use cached prefixes by varint length: each length, both signs, and the
    same key in span, event and link attributes (different fields)."""
    values = [0, 1, 127, 128, 16383, 16384, 2**21, 2**35, 2**56, 2**63 - 1, -1, -128, -2**63]
    ctx = SpanContext(5, 6, is_remote=False)
    spans = [ReadableSpan(f"s{i}", ctx, attributes={"n": v, "m": v, "flag": True},
                          events=[Event("e", {"n": v}, timestamp=3)],
                          links=[Link(SpanContext(7, 8, is_remote=False), {"n": v})],
                          resource=Resource({"n": v}), start_time=1, end_time=2)
             for i, v in enumerate(values)]
    encode_request_bytes(spans)  # no fallback
    assert encode_request(spans) == encode_spans(spans)


def test_unsupported_spans_fall_back_to_the_sdk_encoder():
    ctx = SpanContext(5, 6, is_remote=False)
    huge = ReadableSpan("h", ctx, attributes={"n": 2**64}, resource=Resource({}),
                        start_time=1, end_time=2)
    with pytest.raises(Unsupported):
        encode_request_bytes([huge])


class _Counting:
    def __init__(self, fn):  # noqa: ANN001
        self.fn, self.calls = fn, 0

    def __call__(self, *a):  # noqa: ANN002, ANN204
        self.calls += 1
        return self.fn(*a)


def test_grpc_exporter_sends_the_fast_encoding(monkeypatch):
    """Pins the SDK hooks (_translate_data, and _stub, which the SDK builds its client from
    again when it reconnects): if an upgrade renames either, this fails. The encoder's bytes
    reach gRPC unparsed, and a span the fast encoder cannot write still goes (the SDK's
    encoder, a message serialized as usual)."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    from otelpeers.otel import otlp_export, wire

    got = []

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # noqa: N802, ANN001, ANN201
            got.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    counting = _Counting(wire.encode_request_bytes)
    monkeypatch.setattr(wire, "encode_request_bytes", counting)
    serialized = _Counting(otlp_export.request_bytes)
    monkeypatch.setattr(otlp_export, "request_bytes", serialized)
    ctx = SpanContext(5, 6, is_remote=False, trace_state=TraceState([("k", "v")]))
    stated = ReadableSpan("s", ctx, resource=Resource({}), start_time=1, end_time=2)
    try:
        spans = flow_spans()
        exp = otlp_export.FastGrpcSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True,
                                               timeout=5)
        assert isinstance(exp._client, otlp_export.BytesTraceServiceStub)
        assert exp.export(spans) == SpanExportResult.SUCCESS
        send_encoded(exp)
        assert exp.export([stated]) == SpanExportResult.SUCCESS  # the SDK's encoder
        exp._initialize_channel_and_stub()  # what the SDK does to reconnect
        assert isinstance(exp._client, otlp_export.BytesTraceServiceStub)
        assert exp.export(spans) == SpanExportResult.SUCCESS
        exp.shutdown()
    finally:
        server.stop(None)
    assert counting.calls == 3  # the trace state's batch raised Unsupported in it
    assert serialized.calls == 4  # every request, the reconnected client's too
    assert got == [encode_spans(spans), encode_spans(spans), encode_spans([stated]),
                   encode_spans(spans)]


def test_the_grpc_request_serializer_passes_bytes_and_serializes_messages():
    from otelpeers.otel.otlp_export import request_bytes

    message = encode_spans(flow_spans())
    data = message.SerializeToString()
    assert request_bytes(data) is data
    assert request_bytes(message) == data


def test_http_exporter_sends_the_fast_encoding(monkeypatch):
    """Pins the SDK hook (_client.export) of the HTTP exporter the same way."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from otelpeers.otel import otlp_export, wire

    bodies = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802, ANN201
            bodies.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *a):  # noqa: ANN002, ANN201
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    counting = _Counting(wire.encode_request_bytes)
    monkeypatch.setattr(wire, "encode_request_bytes", counting)
    try:
        spans = flow_spans()
        exp = otlp_export.FastHttpSpanExporter(
            endpoint=f"http://127.0.0.1:{httpd.server_port}/v1/traces", timeout=5)
        assert exp.export(spans) == SpanExportResult.SUCCESS
        send_encoded(exp)
        exp.shutdown()
    finally:
        httpd.shutdown()
    assert counting.calls == 1
    assert [path for path, _ in bodies] == ["/v1/traces"] * 2
    for _, body in bodies:
        assert ExportTraceServiceRequest.FromString(body) == encode_spans(spans)

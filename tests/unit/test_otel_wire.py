"""The fast OTLP encoder must produce exactly the SDK encoder's message."""

from __future__ import annotations

from dataclasses import replace

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind

from otelpeers import attributes as A
from otelpeers.flows import CloseReason
from otelpeers.otel import ResourceCache, SpanMapper
from otelpeers.otel.ids import FlowIds
from otelpeers.otel.synthetic import flow, local_pair, many, owner
from otelpeers.otel.wire import Unsupported, encode_request, encode_request_bytes

MAPPER = SpanMapper(FlowIds(b"w" * 16))


def flow_spans():
    cache = ResourceCache(Resource({A.HOST_NAME: "h", "host.tags": ("a", "b"),
                                    "x.ratio": 0.5, "x.neg": -7}), None, 16)
    recs = [*local_pair(), *many(300, processes=40),
            flow("77", close_reason=CloseReason.CONNECT_FAILED, proc=None),
            flow("78", close_reason=CloseReason.RESET, peer="2001:db8::5"),
            replace(flow("79"), cookie=2**64 - 1, netns_cookie=2**63 + 5),
            flow("80", proc=owner(1, "ünïcode-ç"), peer="10.0.0.1", local=""),
            flow("81", transport="icmp", peer_port=0)]
    return [MAPPER.to_span(r, cache.get(r.owner)) for r in recs]


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


def test_unsupported_spans_fall_back_to_the_sdk_encoder():
    ctx = SpanContext(5, 6, is_remote=False)
    with_event = ReadableSpan("e", ctx, events=[Event("x", {"a": 1}, timestamp=3)],
                              resource=Resource({}), start_time=1, end_time=2)
    with pytest.raises(Unsupported):
        encode_request_bytes([with_event])
    assert encode_request([with_event]) == encode_spans([with_event])
    huge = ReadableSpan("h", ctx, attributes={"n": 2**64}, resource=Resource({}),
                        start_time=1, end_time=2)
    with pytest.raises(Unsupported):
        encode_request_bytes([huge])

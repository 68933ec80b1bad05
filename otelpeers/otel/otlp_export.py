"""OTLP span exporters (gRPC, HTTP/protobuf) with the fast encoder of otelpeers.otel.wire.

Both reuse the SDK's transport through private hooks (gRPC: _translate_data, and _stub, the
class the SDK builds its client from; HTTP: _client.export), so retries, compression,
headers and TLS stay the SDK's. tests/unit/test_otel_wire.py exports to a real local server
through both and fails when an SDK upgrade moves a hook, instead of silently losing the
fast path. export_encoded sends a batch the span export process encoded beforehand
(otelpeers.otel.encoded).

The gRPC client sends the encoder's bytes as they are: with the generated stub the bytes had
to be parsed into a request message for gRPC to serialize it again, about a fifth of the
span export process's time (py-spy, 50,000 flow spans to a local collector).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from otelpeers.otel import wire
from otelpeers.otel.fragments import EncodedSpans


def request_of(spans: Sequence[ReadableSpan]) -> bytes | ExportTraceServiceRequest:
    """The request's bytes from the fast encoder, or, for spans it cannot write, the SDK's
    message (the one place that chooses between the two)."""
    try:
        return wire.encode_request_bytes(spans)
    except wire.Unsupported:
        return encode_spans(spans)


def encode_request(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """Like encode_spans, faster for flow spans; identical message (tested)."""
    request = request_of(spans)
    return (ExportTraceServiceRequest.FromString(request) if isinstance(request, bytes)
            else request)


EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def request_bytes(request: bytes | ExportTraceServiceRequest) -> bytes:
    """The gRPC request serializer: encoded bytes go as they are, a message (the SDK's
    encoder, for spans the fast one cannot write) is serialized."""
    return request if isinstance(request, bytes) else request.SerializeToString()


class BytesTraceServiceStub:
    """The generated TraceServiceStub's Export (same method, same response), taking the
    request's bytes."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Export = channel.unary_unary(
            EXPORT_METHOD, request_serializer=request_bytes,
            response_deserializer=ExportTraceServiceResponse.FromString,
            _registered_method=True)


class FastGrpcSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/gRPC span exporter with the fast encoder (through _translate_data) and
    a client that sends its bytes unparsed (BytesTraceServiceStub, through _stub: the SDK
    builds its client from it again when it reconnects); export_encoded sends spans encoded
    beforehand (otelpeers.otel.encoded), with the same retries, timeout and export
    metrics."""

    span_encoding = "protobuf"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stub = BytesTraceServiceStub
        self._client = self._stub(self._channel)

    def _translate_data(  # type: ignore[override]
            self, data: Sequence[ReadableSpan] | EncodedSpans
    ) -> bytes | ExportTraceServiceRequest:
        if isinstance(data, EncodedSpans):
            return wire.encoded_request_bytes(data)
        return request_of(data)

    def export_encoded(self, batch: EncodedSpans) -> SpanExportResult:
        return self._export(batch)  # type: ignore[arg-type]


class FastHttpSpanExporter(HttpSpanExporter):
    """The SDK's OTLP/HTTP span exporter with the fast encoder: the request bytes go to the
    SDK's own HTTP client (retries, compression, headers, TLS stay the SDK's)."""

    span_encoding = "protobuf"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        return self._send(request_bytes(request_of(spans)))

    def export_encoded(self, batch: EncodedSpans) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        return self._send(wire.encoded_request_bytes(batch))

    def _send(self, data: bytes) -> SpanExportResult:
        return (SpanExportResult.SUCCESS if self._client.export(data).success
                else SpanExportResult.FAILURE)

"""OTLP span exporters (gRPC, HTTP/protobuf) with the fast encoder of otelpeers.otel.wire.

Both reuse the SDK's transport through one private hook each (gRPC: _translate_data; HTTP:
_client.export), so retries, compression, headers and TLS stay the SDK's.
tests/unit/test_otel_wire.py exports to a real local server through both and fails when an
SDK upgrade moves either hook, instead of silently losing the fast path. export_encoded
sends a batch the span export process encoded beforehand (otelpeers.otel.encoded).
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from otelpeers.otel import wire
from otelpeers.otel.fragments import EncodedSpans


def encode_request(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """Like encode_spans, faster for flow spans; identical message (tested)."""
    try:
        return ExportTraceServiceRequest.FromString(wire.encode_request_bytes(spans))
    except wire.Unsupported:
        return encode_spans(spans)


class FastGrpcSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/gRPC span exporter with the fast encoder (through _translate_data);
    export_encoded sends spans encoded beforehand (otelpeers.otel.encoded), with the same
    retries, timeout and export metrics."""

    span_encoding = "protobuf"

    def _translate_data(self, data: Sequence[ReadableSpan] | EncodedSpans
                        ) -> ExportTraceServiceRequest:
        if isinstance(data, EncodedSpans):
            return ExportTraceServiceRequest.FromString(wire.encoded_request_bytes(data))
        return encode_request(data)

    def export_encoded(self, batch: EncodedSpans) -> SpanExportResult:
        return self._export(batch)  # type: ignore[arg-type]


class FastHttpSpanExporter(HttpSpanExporter):
    """The SDK's OTLP/HTTP span exporter with the fast encoder: the request bytes go to the
    SDK's own HTTP client (retries, compression, headers, TLS stay the SDK's)."""

    span_encoding = "protobuf"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            data = wire.encode_request_bytes(spans)
        except wire.Unsupported:
            data = encode_spans(spans).SerializePartialToString()
        return self._send(data)

    def export_encoded(self, batch: EncodedSpans) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        return self._send(wire.encoded_request_bytes(batch))

    def _send(self, data: bytes) -> SpanExportResult:
        return (SpanExportResult.SUCCESS if self._client.export(data).success
                else SpanExportResult.FAILURE)

"""Batches of spans for export, encoded as their spans arrive.

Plain flows are encoded straight from their records (flowspans), everything else from its
ReadableSpan with the exporter's own span encoder, in the encoding the exporter writes
(`span_encoding`: "json" for the OTLP/JSON files, "protobuf" for OTLP gRPC and HTTP); the
exporter's `export_encoded` then only groups the fragments (otelpeers.otel.fragments) by
resource and scope and frames the request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otelpeers.dns.lookups import DnsLookup
from otelpeers.flows import FlowRecord
from otelpeers.ids import SpanIds
from otelpeers.otel import flowspans, otlpjson, wire
from otelpeers.otel.dns_spans import DnsSpanMapper
from otelpeers.otel.fragments import ENCODINGS, EncodedSpans, Fragment
from otelpeers.otel.mapping import SCOPE, SpanMapper

_log = logging.getLogger(__name__)


class SpanBatch:
    """One export's spans (in the span export process, or in-process), collected as they
    come (add, or add_flow / add_span), then export(). With an exporter that takes encoded
    spans (`span_encoding`, `export_encoded`) each span is encoded on arrival; otherwise
    spans are kept for its export(). Spans the encoder cannot write go through export()
    as well."""

    def __init__(self, exporter: SpanExporter | None, ids: SpanIds) -> None:
        self._exporter = exporter
        self._ids = ids
        encoding = getattr(exporter, "span_encoding", None)
        if encoding is not None and encoding not in ENCODINGS:
            raise ValueError(f"span encoding {encoding!r} is not one of {ENCODINGS}")
        self._encoding: str | None = encoding
        self._flow: Callable[[FlowRecord, SpanIds], Fragment | None] = (
            flowspans.span_json if encoding == "json" else flowspans.span_protobuf)
        self._span: Callable[[ReadableSpan], Fragment] = (
            otlpjson.encode_span if encoding == "json" else wire.encode_span)
        self._encoded = EncodedSpans(encoding or "")
        self._spans: list[ReadableSpan] = []
        self._flow_mapper, self._dns_mapper = SpanMapper(ids), DnsSpanMapper(ids)

    def add(self, item: FlowRecord | DnsLookup, resource: Resource) -> None:
        """A flow or a DNS lookup, by the cheapest route that writes its span."""
        if isinstance(item, DnsLookup):
            self.add_span(self._dns_mapper.span_for(item, resource))
        elif not self.add_flow(item, resource):
            self.add_span(self._flow_mapper.to_span(item, resource))

    def add_flow(self, record: FlowRecord, resource: Resource) -> bool:
        """False: not encoded here (no encoding, not a plain flow, or a value the encoding
        cannot carry); the caller maps it and calls add_span."""
        if self._encoding is None or not flowspans.is_plain(record):
            return False
        fragment = self._flow(record, self._ids)
        if fragment is None:
            return False
        self._encoded.entries.append((resource, SCOPE, fragment))
        return True

    def add_span(self, span: ReadableSpan) -> None:
        if self._encoding is None:
            self._spans.append(span)
            return
        try:
            fragment = self._span(span)
        except wire.Unsupported:  # the exporter's export() falls back to the SDK's encoder
            self._spans.append(span)
            return
        self._encoded.entries.append((span.resource, span.instrumentation_scope, fragment))

    def __len__(self) -> int:
        return len(self._encoded) + len(self._spans)

    def seal(self) -> SealedBatch:
        """This batch's spans, to export now or from another thread; the next batch starts
        empty (the span export process encodes the next while the last is being sent)."""
        sealed = SealedBatch(self._exporter, self._encoded, self._spans)
        self._encoded, self._spans = EncodedSpans(self._encoding or ""), []
        return sealed

    def export(self) -> bool:
        """Export the batch and start the next; False when any part failed."""
        return self.seal().export()


class SealedBatch:
    """A batch no longer added to: its encoded spans and the spans the encoder left to the
    exporter's own export()."""

    __slots__ = ("_exporter", "_encoded", "_spans")

    def __init__(self, exporter: SpanExporter | None, encoded: EncodedSpans,
                 spans: list[ReadableSpan]) -> None:
        self._exporter = exporter
        self._encoded = encoded
        self._spans = spans

    def __len__(self) -> int:
        return len(self._encoded) + len(self._spans)

    def export(self) -> bool:
        """False when any part failed."""
        exporter, encoded, spans = self._exporter, self._encoded, self._spans
        if exporter is None:
            return True
        ok = True
        try:
            if encoded:
                ok = exporter.export_encoded(encoded) == SpanExportResult.SUCCESS  # type: ignore[attr-defined]
            if spans:
                ok = exporter.export(spans) == SpanExportResult.SUCCESS and ok
        except Exception as exc:  # an exporter error fails the batch (counted), not the process
            _log.debug("span export raised: %r", exc)
            ok = False
        return ok

"""SpanBatch: spans encoded as they arrive when the exporter takes encoded spans, the same
request as the span route, and what the encoder cannot write still exported, not lost."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelpeers import attributes as A
from otelpeers.events import Direction
from otelpeers.flows import CloseReason, FileAccess, FlowRecord, Listener
from otelpeers.ids import SpanIds
from otelpeers.otel.encoded import SpanBatch
from otelpeers.otel.files import RotatingJsonLinesSpanExporter
from otelpeers.otel.fragments import EncodedSpans
from otelpeers.otel.mapping import SpanMapper
from otelpeers.otel.wire import encode_request_bytes, encoded_request_bytes
from otelpeers.testing.flows import flow, local_pair, many

IDS = SpanIds(b"e" * 16)
MAPPER = SpanMapper(IDS)
RES = (Resource({A.HOST_NAME: "h", A.PROCESS_PID: 1}), Resource({A.HOST_NAME: "h"}))


def records() -> list[FlowRecord]:
    return [*local_pair(), *many(40),
            replace(flow("f1"), files=(FileAccess(1, "/etc/shadow", 0),)),  # span route
            flow("f2", close_reason=CloseReason.SHUTDOWN, complete=False)]  # span route


def fill(batch: SpanBatch, recs: Sequence[FlowRecord]) -> list[ReadableSpan]:
    """Adds recs as the export process does; returns the span route's spans for them."""
    spans = []
    for i, r in enumerate(recs):
        res = RES[i % 2]
        if not batch.add_flow(r, res):
            batch.add_span(MAPPER.to_span(r, res))
        spans.append(MAPPER.to_span(r, res))
    return spans


def test_json_files_get_the_line_the_span_route_writes(tmp_path: Path) -> None:
    recs = records()
    fast = RotatingJsonLinesSpanExporter(tmp_path / "fast", 1 << 24, 2)
    batch = SpanBatch(fast, IDS)
    spans = fill(batch, recs)
    assert len(batch) == len(recs)
    assert batch.export()
    assert len(batch) == 0  # the next batch starts empty
    slow = RotatingJsonLinesSpanExporter(tmp_path / "slow", 1 << 24, 2)
    assert slow.export(spans) == SpanExportResult.SUCCESS
    fast_line = fast.current_path.read_text()
    assert fast_line == slow.current_path.read_text()
    assert sum(len(ss["spans"]) for rs in json.loads(fast_line)["resourceSpans"]
               for ss in rs["scopeSpans"]) == len(recs)


def test_an_exporter_without_an_encoding_gets_spans() -> None:
    mem = InMemorySpanExporter()
    batch = SpanBatch(mem, IDS)
    spans = fill(batch, records())
    assert batch.export()
    assert [s.context.span_id for s in mem.get_finished_spans()] == [
        s.context.span_id for s in spans]


class Recording:
    span_encoding = "protobuf"

    def __init__(self, fail: bool = False) -> None:
        self.encoded: list[EncodedSpans] = []
        self.spans: list[ReadableSpan] = []
        self.fail = fail

    def export_encoded(self, batch: EncodedSpans) -> SpanExportResult:
        if self.fail:
            raise OSError("collector down")
        self.encoded.append(batch)
        return SpanExportResult.SUCCESS

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += spans
        return SpanExportResult.SUCCESS


def test_what_protobuf_cannot_carry_goes_through_export() -> None:
    late = replace(flow("b1", direction=Direction.INBOUND),
                   listener=Listener("0.0.0.0", 80, 2**64 - 1, None, None))  # > int64
    recs = [*many(10), late]
    rec = Recording()
    batch = SpanBatch(rec, IDS)  # type: ignore[arg-type]
    spans = fill(batch, recs)
    assert len(batch) == len(recs) and batch.export()
    (encoded,) = rec.encoded
    assert [s.attributes[A.FLOW_ID] for s in rec.spans] == ["b1"]
    assert encoded_request_bytes(encoded) == encode_request_bytes(spans[:-1])


def test_an_exporter_error_fails_the_batch_not_the_process() -> None:
    batch = SpanBatch(Recording(fail=True), IDS)  # type: ignore[arg-type]
    fill(batch, list(many(3)))
    assert batch.export() is False
    assert len(batch) == 0


def test_the_file_writing_export_process_loads_no_grpc(tmp_path: Path) -> None:
    """gRPC and the OTLP exporters cost the span export process about 14 MB of RSS; writing
    files it needs neither (wire is pure Python; the exporters live in otlp_export)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from otelpeers.config import ExportConfig, FilesConfig\n"
            "from otelpeers.ids import SpanIds\n"
            "from otelpeers.otel import offload, dns_spans, mapping, resources\n"
            "from otelpeers.otel.encoded import SpanBatch\n"
            "from otelpeers.otel.factory import build_span_exporter\n"
            f"cfg = ExportConfig(files=FilesConfig(directory={str(tmp_path)!r}))\n"
            "batch = SpanBatch(build_span_exporter(cfg, env={}), SpanIds(b'x' * 16))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'grpc'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"

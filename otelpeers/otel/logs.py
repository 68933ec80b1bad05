"""DetectionLogSink: every detection as one OTLP log record.

event_name "otelpeers.detection", severity number and text from the detection's severity,
body = its one-line summary, the rule and evidence attributes (otelpeers.otel.detections),
resource = the owning process (the same resource as its spans), and the trace and span id of
the evidence span, so a backend jumps from the alert to the trace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import ClassVar

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import TraceFlags

from otelpeers import __version__
from otelpeers import attributes as A
from otelpeers.detect.model import Detection, EvidenceKind
from otelpeers.exportconfig import ExportConfig
from otelpeers.ids import SpanIds
from otelpeers.otel.detections import detection_attributes
from otelpeers.otel.queue import ExportQueue
from otelpeers.otel.resources import ResourceCache
from otelpeers.pipeline import Outputs

_log = logging.getLogger(__name__)
_SCOPE = InstrumentationScope(A.SCOPE_NAME, __version__)


def log_record(d: Detection, resource: Resource, ids: SpanIds) -> ReadableLogRecord:
    trace_id = span_id = 0
    if d.evidence_span is not None:
        ref = d.evidence_span
        trace_id, span_id = (ids.flow(ref.ident) if ref.kind == EvidenceKind.FLOW
                             else ids.dns(ref.ident))
    record = LogRecord(
        timestamp=d.time_ns, observed_timestamp=d.time_ns, trace_id=trace_id, span_id=span_id,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if trace_id else TraceFlags.DEFAULT),
        severity_text=d.severity.name, severity_number=SeverityNumber(int(d.severity)),
        body=d.summary, attributes=detection_attributes(d), event_name=A.EVENT_DETECTION)
    return ReadableLogRecord(record, resource=resource, instrumentation_scope=_SCOPE)


class DetectionLogSink:
    name: ClassVar[str] = "logs"

    def __init__(self, config: ExportConfig, *, ids: SpanIds, resources: ResourceCache,
                 exporter: LogRecordExporter | None) -> None:
        self._ids = ids
        self._resources = resources
        self._exporter = exporter
        self._queue: ExportQueue[Detection] = ExportQueue(
            self._export if exporter is not None else None, what="log records",
            max_queue=config.max_queue_size, batch=min(512, config.max_export_batch_size),
            delay_s=min(1.0, config.schedule_delay_s))

    def consume(self, out: Outputs) -> None:
        if out.detections:
            self._queue.put((), out.detections)  # detections are never dropped silently

    def _export(self, detections: list[Detection]) -> bool:
        assert self._exporter is not None
        records = [log_record(d, self._resources.get(d.actor.owner), self._ids)
                   for d in detections]
        return self._exporter.export(records) == LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_s: float = 30) -> bool:
        return self._queue.flush(timeout_s)

    def counters(self) -> Mapping[str, int]:
        return {k if k.startswith("batches") or k == "queue_size" else f"records_{k}": v
                for k, v in self._queue.stats().items()}

    def close(self) -> None:
        self._queue.close()
        if self._exporter is not None:
            exporter, self._exporter = self._exporter, None
            try:
                exporter.shutdown()
            except Exception:
                _log.exception("log exporter shutdown failed")

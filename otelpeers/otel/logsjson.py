"""OTLP/JSON log records (detections) straight from the SDK's ReadableLogRecords.

The file exporter's counterpart of metricsjson: the same document as the SDK's encoder
(opentelemetry.exporter.otlp.proto.common's encode_logs, then protobuf's JSON mapping), with
its grouping by resource and then scope, written without loading protobuf into the agent at
its first detection. A unit test checks that both parse to the same document.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord

from otelpeers.otel.jsonvalues import (
    any_value,
    attributes_json,
    request_json,
    resource_json,
    scope_json,
)
from otelpeers.otel.otlpjson import _q


def _record(r: ReadableLogRecord) -> str:
    lr = r.log_record
    parts = []
    if lr.timestamp:
        parts.append(f'"timeUnixNano":"{lr.timestamp}"')
    if lr.observed_timestamp:
        parts.append(f'"observedTimeUnixNano":"{lr.observed_timestamp}"')
    severity = getattr(lr.severity_number, "value", None)
    if severity:
        parts.append(f'"severityNumber":{int(severity)}')
    if lr.severity_text:
        parts.append('"severityText":' + _q(lr.severity_text))
    parts.append('"body":' + any_value(lr.body))  # always set, an empty value included
    attrs = attributes_json(lr.attributes)
    if attrs:
        parts.append(attrs)
    if r.dropped_attributes:
        parts.append(f'"droppedAttributesCount":{int(r.dropped_attributes)}')
    flags = int(lr.trace_flags or 0)
    if flags:
        parts.append(f'"flags":{flags}')
    if lr.trace_id:
        parts.append(f'"traceId":"{lr.trace_id:032x}"')
    if lr.span_id:
        parts.append(f'"spanId":"{lr.span_id:016x}"')
    if getattr(lr, "event_name", None):
        parts.append('"eventName":' + _q(lr.event_name))  # type: ignore[arg-type]
    return "{" + ",".join(parts) + "}"


def logs_request_json(batch: Sequence[ReadableLogRecord]) -> str:
    """One OTLP/JSON ExportLogsServiceRequest (no newline)."""
    grouped: dict[Any, dict[Any, list[str]]] = {}
    for r in batch:
        scope = r.instrumentation_scope or None
        grouped.setdefault(r.resource, {}).setdefault(scope, []).append(_record(r))
    return request_json("resourceLogs", [
        resource_json(resource, "scopeLogs", [scope_json(scope, "logRecords", records)
                                              for scope, records in scopes.items()])
        for resource, scopes in grouped.items()])

"""OpenTelemetry mapping and export of flows (docs/telemetry.md is the contract).

Public API:
    FlowSpanExporter(config: ExportConfig, *, process_attributes=None, host_resource=None,
                     span_exporter=None)
        .export_flows(records) / .force_flush(timeout_s) / .shutdown() / .stats
    build_span_exporter(config: ExportConfig, env=None) -> SpanExporter | None
    detect_host_resource() -> Resource
    FlowMetrics(reader, host_resource, *, agent_counters=None, max_pairs=2000)
        .record_flows(records) / .force_flush() / .shutdown()
    build_metric_reader(config: ExportConfig, env=None) -> MetricReader | None
    PeerTable / LiveView / render(rows, width) -> str   (live terminal view)
"""

from __future__ import annotations

from otelpeers.otel.exporter import FlowSpanExporter
from otelpeers.otel.factory import build_span_exporter, resolve_otlp
from otelpeers.otel.files import RotatingJsonLinesSpanExporter
from otelpeers.otel.ids import FlowIds, read_boot_id
from otelpeers.otel.liveview import LiveView, PeerRow, PeerTable, render
from otelpeers.otel.mapping import SpanMapper, flow_attributes, span_name
from otelpeers.otel.metrics import FlowMetrics, build_metric_reader
from otelpeers.otel.resources import (
    AttributeValue,
    ProcessAttributes,
    ResourceCache,
    default_process_attributes,
    detect_host_resource,
)

__all__ = [
    "AttributeValue",
    "FlowIds",
    "FlowMetrics",
    "LiveView",
    "PeerRow",
    "PeerTable",
    "FlowSpanExporter",
    "ProcessAttributes",
    "ResourceCache",
    "RotatingJsonLinesSpanExporter",
    "SpanMapper",
    "build_metric_reader",
    "build_span_exporter",
    "default_process_attributes",
    "detect_host_resource",
    "flow_attributes",
    "read_boot_id",
    "render",
    "resolve_otlp",
    "span_name",
]

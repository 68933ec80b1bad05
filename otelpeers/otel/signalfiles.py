"""Log records and metrics as OTLP JSON lines in rotated files (otelpeers.otel.files).

Apart from the span exporter so that the span export process, which writes only spans,
does not load the SDK's logs and metrics packages (about 1.5 MB resident). Both encode
without protobuf (otelpeers.otel.metricsjson, otelpeers.otel.logsjson).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)

from otelpeers.otel.files import LOGS_PREFIX, METRICS_PREFIX, RotatingJsonLines
from otelpeers.otel.logsjson import logs_request_json
from otelpeers.otel.metricsjson import metrics_request_json, otlp_aggregation, otlp_temporality


class RotatingJsonLinesLogExporter(LogRecordExporter):
    """Log records as OTLP/JSON lines in <directory>/otelpeers-logs.jsonl (rotated)."""

    def __init__(self, directory: str | os.PathLike[str], max_file_bytes: int,
                 max_files: int) -> None:
        self.files = RotatingJsonLines(directory, LOGS_PREFIX, max_file_bytes, max_files)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        ok = self.files.write(batch, logs_request_json)
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        self.files.close()


class RotatingJsonLinesMetricExporter(MetricExporter):
    """Metrics as OTLP/JSON lines in <directory>/otelpeers-metrics.jsonl (rotated).

    Temporality and histogram aggregation follow the same OTEL_EXPORTER_OTLP_METRICS_*
    variables as the SDK's OTLP exporters (otelpeers.otel.metricsjson). Neither this nor
    the encoding loads protobuf: the agent that writes files never needs it."""

    def __init__(self, directory: str | os.PathLike[str], max_file_bytes: int,
                 max_files: int,
                 preferred_temporality: dict[type, AggregationTemporality] | None = None
                 ) -> None:
        super().__init__(preferred_temporality=otlp_temporality(preferred_temporality),
                         preferred_aggregation=otlp_aggregation())
        self.files = RotatingJsonLines(directory, METRICS_PREFIX, max_file_bytes, max_files)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:
        ok = self.files.write([metrics_data], lambda items: metrics_request_json(items[0]))
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.files.close()

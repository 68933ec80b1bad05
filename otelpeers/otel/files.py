"""OTLP JSON lines in size-bounded, rotated files: the rotation, and the span exporter.

Used when no OTLP endpoint is configured, so the agent still leaves a record of every
signal. One line is one Export*ServiceRequest in the OTLP/JSON encoding (trace and span ids
as hex, enums as integers, as the OTLP specification asks), readable by the Collector's
otlpjsonfile receiver. Per signal, disk use is at most max_files * max_file_bytes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otelpeers.otel.fragments import EncodedSpans, group_by_resource
from otelpeers.otel.otlpjson import grouped_request_json, request_json

_log = logging.getLogger(__name__)

TRACES_PREFIX = "otelpeers-traces"
LOGS_PREFIX = "otelpeers-logs"
METRICS_PREFIX = "otelpeers-metrics"


class RotatingJsonLines:
    """Appends lines to <directory>/<prefix>.jsonl; rotates to .1.jsonl ... when full.

    write(items, encode) encodes items into one line; a line larger than a file is split in
    halves until each fits (a single item that still does not fit is counted and dropped).
    Thread safe."""

    def __init__(self, directory: str | os.PathLike[str], prefix: str, max_file_bytes: int,
                 max_files: int) -> None:
        if max_file_bytes < 1024 or max_files < 1:
            raise ValueError("export.files: max_file_bytes must be >= 1024 and max_files >= 1")
        self.directory = Path(directory)
        self.prefix = prefix
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.items_too_large = 0
        self._lock = threading.Lock()
        self._file: Any = None
        self._size = 0
        self.closed = False

    @property
    def current_path(self) -> Path:
        return self.directory / f"{self.prefix}.jsonl"

    def rotated_path(self, n: int) -> Path:
        return self.directory / f"{self.prefix}.{n}.jsonl"

    def write(self, items: Sequence[Any], encode: Callable[[Sequence[Any]], str]) -> bool:
        """False when closed or the disk refused (logged)."""
        if self.closed:
            return False
        try:
            with self._lock:
                self._write(list(items), encode)
        except OSError as exc:
            _log.warning("cannot write %s to %s: %s", self.prefix, self.directory, exc)
            return False
        return True

    def _write(self, items: list[Any], encode: Callable[[Sequence[Any]], str]) -> None:
        if not items:
            return
        data = encode(items).encode()  # a batch is megabytes: no copy to append the newline
        size = len(data) + 1
        if size > self.max_file_bytes:
            if len(items) == 1:
                self.items_too_large += 1
                return
            half = len(items) // 2  # too big for one file: split until each line fits
            self._write(items[:half], encode)
            self._write(items[half:], encode)
            return
        f = self._open()
        if self._size + size > self.max_file_bytes and self._size > 0:
            self._rotate()
            f = self._open()
        f.write(data)
        f.write(b"\n")
        f.flush()
        self._size += size

    def _open(self) -> Any:
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
            fd = os.open(self.current_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            self._file = os.fdopen(fd, "ab")
            self._size = self._file.tell()
        return self._file

    def _rotate(self) -> None:
        self._file.close()
        self._file = None
        if self.max_files == 1:
            self.current_path.unlink(missing_ok=True)
            return
        self.rotated_path(self.max_files - 1).unlink(missing_ok=True)
        for n in range(self.max_files - 2, 0, -1):
            if self.rotated_path(n).exists():
                self.rotated_path(n).rename(self.rotated_path(n + 1))
        self.current_path.rename(self.rotated_path(1))

    def close(self) -> None:
        with self._lock:
            self.closed = True
            if self._file is not None:
                self._file.close()
                self._file = None


def _entries_json(entries: Sequence[Any]) -> str:
    return grouped_request_json(group_by_resource(entries))


class RotatingJsonLinesSpanExporter(SpanExporter):
    """Spans as OTLP/JSON lines in <directory>/otelpeers-traces.jsonl (rotated)."""

    span_encoding = "json"  # export_encoded takes OTLP/JSON fragments (otelpeers.otel.encoded)

    def __init__(self, directory: str | os.PathLike[str], max_file_bytes: int,
                 max_files: int) -> None:
        self.files = RotatingJsonLines(directory, TRACES_PREFIX, max_file_bytes, max_files)

    @property
    def current_path(self) -> Path:
        return self.files.current_path

    def rotated_path(self, n: int) -> Path:
        return self.files.rotated_path(n)

    @property
    def spans_too_large(self) -> int:
        return self.files.items_too_large

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ok = self.files.write(spans, request_json)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def export_encoded(self, batch: EncodedSpans) -> SpanExportResult:
        if batch.encoding != "json":
            raise ValueError(f"the OTLP/JSON file exporter cannot write {batch.encoding} spans")
        ok = self.files.write(batch.entries, _entries_json)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every write is flushed

    def shutdown(self) -> None:
        self.files.close()

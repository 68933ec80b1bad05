"""A span exporter writing OTLP JSON lines to size-bounded, rotated files.

Used when no OTLP endpoint is configured, so the agent still leaves a record. One line is
one ExportTraceServiceRequest in the OTLP/JSON encoding (trace and span ids as hex, enums
as integers, as the OTLP specification asks), readable by the Collector's otlpjsonfile
receiver. Total disk use is at most max_files * max_file_bytes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otelpeers.otel.otlpjson import request_json

_log = logging.getLogger(__name__)

FILE_PREFIX = "otelpeers-traces"

class RotatingJsonLinesSpanExporter(SpanExporter):
    """Appends to <directory>/otelpeers-traces.jsonl; rotates to .1.jsonl ... when full."""

    def __init__(self, directory: str | os.PathLike[str], max_file_bytes: int,
                 max_files: int) -> None:
        if max_file_bytes < 1024 or max_files < 1:
            raise ValueError("export.files: max_file_bytes must be >= 1024 and max_files >= 1")
        self.directory = Path(directory)
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.spans_too_large = 0  # a single span whose line alone exceeds max_file_bytes
        self._lock = threading.Lock()
        self._file = None
        self._size = 0
        self._closed = False

    @property
    def current_path(self) -> Path:
        return self.directory / f"{FILE_PREFIX}.jsonl"

    def rotated_path(self, n: int) -> Path:
        return self.directory / f"{FILE_PREFIX}.{n}.jsonl"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        try:
            with self._lock:
                self._write(list(spans))
        except OSError as exc:
            _log.warning("cannot write spans to %s: %s", self.directory, exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _write(self, spans: list[ReadableSpan]) -> None:
        if not spans:
            return
        line = (request_json(spans) + "\n").encode()
        if len(line) > self.max_file_bytes:
            if len(spans) == 1:
                self.spans_too_large += 1
                return
            half = len(spans) // 2  # too big for one file: split until each line fits
            self._write(spans[:half])
            self._write(spans[half:])
            return
        f = self._open()
        if self._size + len(line) > self.max_file_bytes and self._size > 0:
            self._rotate()
            f = self._open()
        f.write(line)
        f.flush()
        self._size += len(line)

    def _open(self):
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

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every write is flushed

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None

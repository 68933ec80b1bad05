"""FlowSpanExporter: flow records in (non-blocking), OTLP spans out (background thread).

The pipeline thread only appends records to a bounded queue; one worker thread maps them to
spans and exports them in batches. When the queue is full the newest records are dropped
and counted. Export failures (collector down) are counted and reported with one warning
per interval, never per span; the pipeline never waits for the collector.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otelpeers.config import ExportConfig
from otelpeers.dns.spans import DnsSpanItem, DnsSpanMapper
from otelpeers.flows import FlowRecord
from otelpeers.otel.factory import build_span_exporter
from otelpeers.otel.ids import FlowIds, read_boot_id
from otelpeers.otel.mapping import SpanMapper
from otelpeers.otel.resources import ProcessAttributes, ResourceCache, detect_host_resource

_log = logging.getLogger(__name__)

WARN_INTERVAL_S = 30.0
SHUTDOWN_TIMEOUT_S = 30.0


class FlowSpanExporter:
    """Exports FlowRecords as spans; see docs/telemetry.md for the mapping.

    Thread safety: export_flows may be called from any thread; force_flush and shutdown
    from one controlling thread.
    """

    def __init__(
        self,
        config: ExportConfig,
        *,
        process_attributes: ProcessAttributes | None = None,
        host_resource: Resource | None = None,
        span_exporter: SpanExporter | None = None,
        boot_id: bytes | None = None,
        warn_interval_s: float = WARN_INTERVAL_S,
    ) -> None:
        self._config = config
        self._exporter = span_exporter if span_exporter is not None else build_span_exporter(
            config)
        self._resources = ResourceCache(
            host_resource if host_resource is not None else detect_host_resource(),
            process_attributes, config.max_live_resources)
        self._mapper = SpanMapper(FlowIds(boot_id if boot_id is not None else read_boot_id()))
        self._dns_mapper = DnsSpanMapper()
        self._max_queue = config.max_queue_size
        self._batch = config.max_export_batch_size
        self._delay_s = config.schedule_delay_s
        self._warn_interval_s = warn_interval_s
        self._queue: deque[FlowRecord | DnsSpanItem] = deque()
        self._cond = threading.Condition()
        self._export_lock = threading.Lock()  # one export at a time: worker or flush
        self._stopping = False
        self._closed = False
        self._last_warn = float("-inf")
        self._failed_since_warn = 0
        self._stats = {
            "spans_exported": 0,
            "spans_dropped_queue_full": 0,
            "spans_failed": 0,  # export attempted and failed (collector down, rejected)
            "spans_dropped_shutdown": 0,  # still queued when shutdown ran out of time
            "spans_not_exported": 0,  # no exporter configured at all
            "mapping_errors": 0,
            "batches_exported": 0,
            "batches_failed": 0,
        }
        self._worker = threading.Thread(target=self._run, name="otelpeers-span-export",
                                        daemon=True)
        self._worker.start()

    @property
    def span_exporter(self) -> SpanExporter | None:
        return self._exporter

    @property
    def stats(self) -> Mapping[str, int]:
        with self._cond:
            out = dict(self._stats)
            out["queue_size"] = len(self._queue)
        out["resources_cached"] = len(self._resources)
        out["process_attribute_errors"] = self._resources.attribute_errors
        return out

    # ---- input -------------------------------------------------------------------------
    def export_dns(self, items: Sequence[DnsSpanItem]) -> None:
        """Queue DNS transactions (with their stub-upstream link) as spans; like
        export_flows, never blocks, and what does not fit is dropped and counted."""
        self._enqueue(items)

    def export_flows(self, records: Sequence[FlowRecord]) -> None:
        """Queue records for export; never blocks. Records beyond the queue bound, or after
        shutdown, are dropped and counted."""
        self._enqueue(records)

    def _enqueue(self, records: Sequence[FlowRecord | DnsSpanItem]) -> None:
        if not records:
            return
        with self._cond:
            if self._exporter is None:
                self._stats["spans_not_exported"] += len(records)
                return
            if self._closed:
                self._stats["spans_dropped_shutdown"] += len(records)
                return
            room = self._max_queue - len(self._queue)
            if room < len(records):
                self._stats["spans_dropped_queue_full"] += len(records) - max(room, 0)
                records = records[:max(room, 0)]
            self._queue.extend(records)
            if len(self._queue) >= self._batch:
                self._cond.notify()

    # ---- worker ------------------------------------------------------------------------
    def _run(self) -> None:
        failed = False
        while True:
            with self._cond:
                if failed:
                    # Collector down: wait a full interval before trying again, whatever
                    # arrives meanwhile (it queues, then is dropped and counted).
                    deadline = time.monotonic() + self._delay_s
                    while not self._stopping and time.monotonic() < deadline:
                        self._cond.wait(deadline - time.monotonic())
                elif len(self._queue) < self._batch and not self._stopping:
                    self._cond.wait(self._delay_s)
                if self._stopping:
                    return  # shutdown drains the rest in its own thread, bounded in time
            failed = not self._export_some(self._batch)

    def _take(self, n: int) -> list[FlowRecord | DnsSpanItem]:
        with self._cond:
            k = min(n, len(self._queue))
            return [self._queue.popleft() for _ in range(k)]

    def _export_some(self, n: int) -> bool:
        """Export up to n queued records as one batch; False when the export failed."""
        with self._export_lock:
            records = self._take(n)
            if not records or self._exporter is None:
                return True
            spans = []
            for r in records:
                try:
                    if isinstance(r, DnsSpanItem):
                        spans.append(self._dns_mapper.span_for(
                            r.txn, self._resources.get(r.txn.owner), r.upstream_txn_id))
                    else:
                        spans.append(self._mapper.to_span(r, self._resources.get(r.owner)))
                except Exception:  # one malformed record must not lose the batch
                    _log.exception("cannot map %r to a span", r)
                    with self._cond:
                        self._stats["mapping_errors"] += 1
            if not spans:
                return True
            try:
                ok = self._exporter.export(spans) == SpanExportResult.SUCCESS
            except Exception as exc:  # exporters should not raise; some do (bad encoding)
                _log.debug("span exporter raised: %r", exc)
                ok = False
            with self._cond:
                if ok:
                    self._stats["spans_exported"] += len(spans)
                    self._stats["batches_exported"] += 1
                else:
                    self._stats["spans_failed"] += len(spans)
                    self._stats["batches_failed"] += 1
            if not ok:
                self._warn_failure(len(spans))
            return ok

    def _warn_failure(self, n: int) -> None:
        self._failed_since_warn += n
        now = time.monotonic()
        if now - self._last_warn >= self._warn_interval_s:
            _log.warning("span export failing: %d spans lost since the last report "
                         "(%d in total); is the OTLP collector reachable?",
                         self._failed_since_warn, self._stats["spans_failed"])
            self._last_warn = now
            self._failed_since_warn = 0

    # ---- control -----------------------------------------------------------------------
    def force_flush(self, timeout_s: float = 30) -> bool:
        """Export everything queued now. False when the deadline passed first or an export
        failed (the collector is likely down: more attempts would only wait longer)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._cond:
                if not self._queue:
                    return True
            if time.monotonic() >= deadline or not self._export_some(self._batch):
                return False

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop accepting records, export all queued ones, then shut the exporter down.

        Bounded: at most timeout_s plus one export's own timeout (export.otlp.timeout_s);
        after the first failed export the rest of the queue is dropped and counted.
        Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
        self._worker.join(timeout_s)
        if not self.force_flush(timeout_s):
            with self._cond:
                self._stats["spans_dropped_shutdown"] += len(self._queue)
                self._queue.clear()
            _log.warning("span export did not finish at shutdown (failed or over %.0f s); "
                         "%d spans dropped", timeout_s, self._stats["spans_dropped_shutdown"])
        if self._failed_since_warn:
            _log.warning("span export: %d spans lost since the last report (%d in total)",
                         self._failed_since_warn, self._stats["spans_failed"])
            self._failed_since_warn = 0
        if self._exporter is not None:
            try:
                self._exporter.shutdown()
            except Exception:
                _log.exception("span exporter shutdown failed")

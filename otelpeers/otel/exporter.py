"""SpanSink: completed flows and DNS lookups in (non-blocking), OTLP spans out.

The pipeline thread only queues; the queue's worker maps items to spans (resource = the
owning process) and exports them in batches. Flows and lookups that carry a detection are
priority items: never dropped by the agent's own queue bound (see otelpeers.otel.queue).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import ClassVar

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter

from otelpeers.dns.lookups import DnsLookup
from otelpeers.exportconfig import ExportConfig
from otelpeers.flows import FlowRecord
from otelpeers.ids import SpanIds
from otelpeers.otel.factory import build_span_exporter, resolve_otlp
from otelpeers.otel.queue import SHUTDOWN_TIMEOUT_S, WARN_INTERVAL_S, ExportQueue
from otelpeers.otel.resources import ProcessAttributes, ResourceCache, detect_host_resource
from otelpeers.pipeline import Outputs

_log = logging.getLogger(__name__)

SpanItem = FlowRecord | DnsLookup


class SpanSink:
    """Exports FlowRecords and DnsLookups as spans; see docs/telemetry.md for the mapping.

    consume() may be called from any thread; close() from one controlling thread."""

    name: ClassVar[str] = "export"

    def __init__(
        self,
        config: ExportConfig,
        *,
        ids: SpanIds | None = None,
        process_attributes: ProcessAttributes | None = None,
        host_resource: Resource | None = None,
        span_exporter: SpanExporter | None = None,
        warn_interval_s: float = WARN_INTERVAL_S,
        offload: bool | None = None,
    ) -> None:
        """offload: map, encode and send spans in a child process (otelpeers.otel.offload);
        default export.separate_process, and never with an injected span_exporter."""
        if offload is None:
            offload = config.separate_process and span_exporter is None
        if offload and resolve_otlp(config) is None and not config.files.enabled:
            offload = False  # nothing would be exported: nothing to offload
        self._offload = None
        if offload:
            from otelpeers.otel.offload import OffloadedExport

            host = host_resource if host_resource is not None else detect_host_resource()
            self._offload = OffloadedExport(config, host.attributes,
                                            (ids or SpanIds()).boot_id)
            self._exporter = None
        else:
            self._exporter = (span_exporter if span_exporter is not None
                              else build_span_exporter(config))
        self._resources = ResourceCache(
            host_resource if host_resource is not None else detect_host_resource(),
            process_attributes, config.max_live_resources)
        self._ids = ids if ids is not None else SpanIds()
        self.mapping_errors = 0
        export = (self._export_offloaded if self._offload is not None
                  else self._export if self._exporter is not None else None)
        self._queue: ExportQueue[SpanItem] = ExportQueue(
            export, what="spans",
            max_queue=config.max_queue_size, batch=config.max_export_batch_size,
            delay_s=config.schedule_delay_s, warn_interval_s=warn_interval_s,
            workers=2 if self._offload is not None else 1)

    @property
    def span_exporter(self) -> SpanExporter | None:
        return self._exporter

    def counters(self) -> Mapping[str, int]:
        q = self._queue.stats()
        return {**{k if k.startswith("batches") or k == "queue_size" else f"spans_{k}": v
                   for k, v in q.items()},
                "process_restarts": self._offload.restarts if self._offload else 0,
                "mapping_errors": self.mapping_errors,
                "resources_cached": len(self._resources),
                "process_attribute_errors": self._resources.attribute_errors}

    # ---- input -------------------------------------------------------------------------
    def consume(self, out: Outputs) -> None:
        if not out.flows and not out.dns:
            return
        normal: list[SpanItem] = []
        priority: list[SpanItem] = []
        for item in (*out.dns, *out.flows):
            (priority if item.detections else normal).append(item)
        self._queue.put(normal, priority)

    # ---- worker ------------------------------------------------------------------------
    def _export(self, items: list[SpanItem]) -> bool:
        # Imported here: with the export child (the default) the agent never encodes a span
        # and does not load the encoders.
        from otelpeers.otel.encoded import SpanBatch

        batch = SpanBatch(self._exporter, self._ids)  # the same encoding as the child's
        for item in items:
            owner = item.owner
            try:
                batch.add(item, self._resources.get(owner))
            except Exception:  # one malformed record must not lose the batch
                _log.exception("cannot map %r to a span", item)
                self.mapping_errors += 1
        return batch.export() if len(batch) else True

    def _export_offloaded(self, items: list[SpanItem]) -> bool:
        assert self._offload is not None
        exported, failed, errors = self._offload.export(
            items, self._resource_key, self._resource_attributes)
        self.mapping_errors += errors
        return failed == 0

    @staticmethod
    def _resource_key(owner: object) -> object:
        return "unknown" if owner is None else (owner.tgid, owner.comm)  # type: ignore[attr-defined]

    def _resource_attributes(self, owner: object) -> dict[str, object]:
        return dict(self._resources.get(owner).attributes)  # type: ignore[arg-type]

    # ---- control -----------------------------------------------------------------------
    def force_flush(self, timeout_s: float = 30) -> bool:
        return self._queue.flush(timeout_s)

    def close(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop accepting, export what is queued (bounded by timeout_s plus one export's own
        timeout), shut the exporter down. Idempotent."""
        self._queue.close(timeout_s)
        if self._offload is not None:
            self._offload.close(timeout_s)
        if self._exporter is not None:
            exporter, self._exporter = self._exporter, None
            try:
                exporter.shutdown()
            except Exception:
                _log.exception("span exporter shutdown failed")

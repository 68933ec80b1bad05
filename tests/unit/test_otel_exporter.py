"""FlowSpanExporter: batching, bounded queue, failures, shutdown."""

from __future__ import annotations

import itertools
import logging
import threading
import time

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelpeers import attributes as A
from otelpeers.config import ExportConfig, FilesConfig
from otelpeers.ids import SpanIds
from otelpeers.otel.exporter import SpanSink
from otelpeers.otel.queue import ExportQueue
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import many

HOST = Resource({A.HOST_NAME: "testhost"})


def make(span_exporter, **cfg):
    return SpanSink(ExportConfig(**cfg), span_exporter=span_exporter,
                            host_resource=HOST, ids=SpanIds(b"b" * 16))


class GatedExporter(SpanExporter):
    """Blocks inside export until released, to fill the queue deterministically."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()
        self.spans = []

    def export(self, spans):
        self.entered.set()
        assert self.release.wait(10)
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


class FailingExporter(SpanExporter):
    def __init__(self, raises=False):
        self.calls = 0
        self.raises = raises
        self.shut = False

    def export(self, spans):
        self.calls += 1
        if self.raises:
            raise RuntimeError("boom")
        return SpanExportResult.FAILURE

    def shutdown(self):
        self.shut = True


def test_batches_are_exported_by_the_worker_without_flush():
    mem = InMemorySpanExporter()
    exp = make(mem, max_export_batch_size=100, schedule_delay_s=0.05)
    exp.consume(Outputs(flows=list(many(250))))
    deadline = time.monotonic() + 10
    while len(mem.get_finished_spans()) < 250 and time.monotonic() < deadline:
        time.sleep(0.01)  # polling for the worker's result, bounded by the deadline
    assert len(mem.get_finished_spans()) == 250
    st = exp.counters()
    assert st["spans_exported"] == 250 and st["batches_exported"] >= 3
    exp.close()


def test_full_queue_drops_and_counts():
    gate = GatedExporter()
    exp = make(gate, max_queue_size=10, max_export_batch_size=10, schedule_delay_s=60)
    recs = list(many(25))
    exp.consume(Outputs(flows=recs[:10]))  # a full batch wakes the worker, which blocks in export
    assert gate.entered.wait(10)
    exp.consume(Outputs(flows=recs[10:]))  # 15 more: room for 10
    assert exp.counters()["spans_dropped_queue_full"] == 5
    assert exp.counters()["queue_size"] == 10
    gate.release.set()
    exp.close()
    assert len(gate.spans) == 20
    assert [s.attributes[A.FLOW_ID] for s in gate.spans] == [r.flow_id for r in recs[:20]]
    st = exp.counters()
    assert st["spans_exported"] == 20 and st["spans_dropped_queue_full"] == 5


def test_shutdown_flushes_everything_queued():
    mem = InMemorySpanExporter()
    exp = make(mem, max_export_batch_size=1000, max_queue_size=5000, schedule_delay_s=60)
    exp.consume(Outputs(flows=list(many(1500))))
    exp.close()
    assert len(mem.get_finished_spans()) == 1500
    exp.consume(Outputs(flows=list(many(3))))  # after shutdown: counted, not exported
    assert exp.counters()["spans_dropped_shutdown"] == 3
    exp.close()  # idempotent


def test_force_flush():
    mem = InMemorySpanExporter()
    exp = make(mem, schedule_delay_s=60)
    exp.consume(Outputs(flows=list(many(7))))
    assert exp.force_flush(5)
    assert len(mem.get_finished_spans()) == 7
    exp.close()


def wait_stat(exp, key, value, timeout_s=10):
    deadline = time.monotonic() + timeout_s
    while exp.counters()[key] < value and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the worker's counters, bounded by the deadline
    return exp.counters()[key]


def test_failures_counted_warned_once_and_shutdown_bounded(caplog):
    bad = FailingExporter()
    exp = make(bad, max_export_batch_size=10, max_queue_size=100, schedule_delay_s=60)
    caplog.set_level(logging.WARNING, logger="otelpeers.otel.queue")
    # a full batch: the worker tries once, then backs off
    exp.consume(Outputs(flows=list(many(50))))
    assert wait_stat(exp, "batches_failed", 1) == 1
    for _ in range(3):
        assert not exp.force_flush(5)  # each flush stops at its first failed batch
    t = time.monotonic()
    exp.close()
    assert time.monotonic() - t < 5
    st = exp.counters()
    assert st["batches_failed"] == 5  # worker, 3 flushes, the first batch at shutdown
    assert st["spans_failed"] == 50 and st["spans_dropped_shutdown"] == 0
    assert st["spans_exported"] == 0
    assert bad.shut and bad.calls == 5
    warnings = [r for r in caplog.records if "spans export failing" in r.getMessage()]
    assert len(warnings) == 1  # one per interval, not one per batch


def test_shutdown_gives_up_after_a_failed_batch():
    bad = FailingExporter()
    exp = make(bad, max_export_batch_size=10, max_queue_size=100, schedule_delay_s=60)
    exp.consume(Outputs(flows=list(many(9))))
    exp.consume(Outputs(flows=list(many(51, start_cookie=0x5000))))  # wakes the worker
    assert wait_stat(exp, "batches_failed", 1) == 1
    exp.close()
    st = exp.counters()
    assert st["spans_failed"] == 20 and st["spans_dropped_shutdown"] == 40
    assert bad.calls == 2


def test_exporter_that_raises_is_a_failure_not_a_crash():
    bad = FailingExporter(raises=True)
    exp = make(bad, schedule_delay_s=60)
    exp.consume(Outputs(flows=list(many(3))))
    assert not exp.force_flush(5)
    assert exp.counters()["spans_failed"] == 3
    exp.close()


def test_no_exporter_counts_not_exported(tmp_path, monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    exp = SpanSink(ExportConfig(files=FilesConfig(enabled=False)), host_resource=HOST,
                           ids=SpanIds(b"b" * 16))
    assert exp.span_exporter is None
    exp.consume(Outputs(flows=list(many(4))))
    exp.close()
    assert exp.counters()["spans_not_exported"] == 4


def test_two_workers_export_two_batches_at_once_and_flush_waits_for_both():
    """workers=2 (the span export child): a second batch is exported while the first is
    still in its export; flush returns once both are answered, not when the queue is
    merely empty."""
    entered = [threading.Event(), threading.Event()]
    release = threading.Event()
    exported: list[int] = []
    calls = itertools.count()  # next() is atomic under the interpreter lock

    def export(items):
        i = next(calls)
        if i < 2:
            entered[i].set()
            assert release.wait(10)
        exported.append(len(items))
        return True

    q = ExportQueue(export, what="spans", max_queue=100, batch=10, delay_s=60, workers=2)
    try:
        q.put(list(range(10)))
        q.put(list(range(10, 20)))
        assert entered[0].wait(10) and entered[1].wait(10)  # both inside export at once
        flushed: list[bool] = []
        flusher = threading.Thread(target=lambda: flushed.append(q.flush(10)))
        flusher.start()
        flusher.join(0.3)
        assert flusher.is_alive() and not flushed  # the queue is empty, the batches are not
        release.set()
        flusher.join(10)
        assert flushed == [True]
        assert sorted(exported) == [10, 10] and q.stats()["exported"] == 20
    finally:
        release.set()
        q.close()


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="workers must be at least 1"):
        ExportQueue(lambda items: True, what="spans", max_queue=1, batch=1, delay_s=1,
                    workers=0)

"""Fault test: the collector is down for a minute, then comes back.

The exporter keeps accepting flows the whole time without blocking, its queue stays within
its bound, export resumes on its own once the collector listens again, and every record
handed to it is accounted for: exported, failed, or dropped and counted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import Rotel  # tests/e2e/conftest.py (this directory is on sys.path)
from otlp_sink import OtlpSink, free_port

from otelpeers.config import ExportConfig, OtlpConfig
from otelpeers.otel.exporter import SpanSink
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import many

pytestmark = pytest.mark.e2e

OUTAGE_S = float(os.environ.get("OTELPEERS_OUTAGE_S", "60"))


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_collector_down_for_a_minute_then_back(tmp_path: Path) -> None:
    sink = OtlpSink()
    port = free_port()
    conf = ExportConfig(otlp=OtlpConfig(endpoint=f"http://127.0.0.1:{port}", timeout_s=1),
                        max_queue_size=2000, max_export_batch_size=500, schedule_delay_s=0.2)
    exp = SpanSink(conf, warn_interval_s=10)
    given = 0
    cookie = 0x10000
    rotel = None
    try:
        # Outage: 200 flows every 0.1 s, far more than the queue holds.
        rss_start = rss_kib()
        end = time.monotonic() + OUTAGE_S
        peak_queue = 0
        while time.monotonic() < end:
            batch = list(many(200, start_cookie=cookie))
            cookie += 200
            t = time.monotonic()
            exp.consume(Outputs(flows=batch))
            assert time.monotonic() - t < 0.05  # never blocks on the collector
            given += len(batch)
            peak_queue = max(peak_queue, exp.counters()["queue_size"])
            time.sleep(0.1)  # the offered load's pace, not synchronisation
        st = exp.counters()
        assert st["spans_exported"] == 0 and st["spans_failed"] > 0
        assert st["spans_dropped_queue_full"] > 0
        assert peak_queue <= conf.max_queue_size
        assert rss_kib() - rss_start < 50 * 1024  # bounded: no growth with the backlog

        # The collector comes back on the same port: export resumes by itself.
        rotel = Rotel.on_port(tmp_path, port, sink)
        marker = list(many(50, start_cookie=0xF00000))
        deadline = time.monotonic() + 60
        while True:
            exp.consume(Outputs(flows=marker))
            given += len(marker)
            got = sink.wait_for_spans(1, timeout_s=2)
            if got:
                break
            assert time.monotonic() < deadline, f"export never resumed: {exp.counters()}"
    finally:
        try:
            exp.close(timeout_s=10)
        finally:  # the collector is stopped whatever closing the exporter did
            if rotel is not None:
                rotel.stop()
            sink.stop()
    st = exp.counters()
    assert st["spans_exported"] > 0
    accounted = (st["spans_exported"] + st["spans_failed"] + st["spans_dropped_queue_full"]
                 + st["spans_dropped_shutdown"] + st["mapping_errors"])
    assert accounted == given, st

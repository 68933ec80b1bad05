"""The agent: the pipeline's wiring, declared once, and the live run.

build_agent() is the single place that decides which stages run in which order and where
outputs go; `run`, `replay`, `detect`, `graph --recording`, the kernel tests and the
benchmarks all use it, so what is tested is what runs:

    stages:  ProcessStage -> DnsStage -> FlowStage -> DetectStage
    sinks:   [extra sinks] -> GraphSink -> SpanSink -> DetectionLogSink -> MetricsSink
             -> LiveView

run_live() attaches the sensors, drives the kernel source through the pipeline until a
signal or the deadline, finishes (open flows end marked incomplete) and detaches
everything on every exit path.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from otelpeers.config import Config
from otelpeers.dns.stage import DnsStage
from otelpeers.drive import DriveResult, Source, WallClock, drive
from otelpeers.gctune import tune_for_throughput
from otelpeers.ids import SpanIds
from otelpeers.pipeline import FlowStage, Pipeline, Sink, Stage
from otelpeers.process.stage import ProcessStage

if TYPE_CHECKING:
    from otelpeers.graph.model import RelationshipGraph
    from otelpeers.otel.exporter import SpanSink
    from otelpeers.otel.liveview import LiveView
    from otelpeers.otel.logs import DetectionLogSink
    from otelpeers.otel.metrics import MetricsSink
    from otelpeers.process.table import ProcessTable

log = logging.getLogger(__name__)


@dataclass
class Agent:
    """Everything behind the source. close() flushes every exporter."""

    config: Config
    pipeline: Pipeline
    ids: SpanIds
    process_table: ProcessTable | None = None
    graph: RelationshipGraph | None = None
    spans: SpanSink | None = None
    logs: DetectionLogSink | None = None
    metrics: MetricsSink | None = None
    live: LiveView | None = None
    sources: list[Source] = field(default_factory=list)

    def counters(self) -> dict[str, int]:
        """Agent self-telemetry: every part's counters under stable prefixed names."""
        out = self.pipeline.counters()
        for src in self.sources:
            try:
                out.update({f"source.{k}": int(v) for k, v in src.counters().items()})
            except Exception:  # self-telemetry must never break the agent
                log.debug("source counters failed", exc_info=True)
        return out

    def stage(self, name: str) -> Stage | None:
        return self.pipeline.stage(name)

    def close(self) -> None:
        self.pipeline.close()


def build_agent(config: Config, *, live_host: bool, export: bool = True,
                live_view: bool = False, extra_sinks: Sequence[Sink] = (),
                stream: TextIO | None = None, ids: SpanIds | None = None,
                detect_process: bool | None = None) -> Agent:
    """live_host: read this host's /proc for process context (False when replaying);
    export: spans, detections and metrics leave as OTLP (or files, per config);
    detect_process: run the rules in their own process (default: live_host and
    detect.separate_process; recordings are judged in-process, deterministically)."""
    ids = ids if ids is not None else SpanIds()
    table = None
    if live_host:
        from otelpeers.process.table import ProcessTable

        table = ProcessTable(config.process)
        table.seed()
    stages: list[Stage] = [ProcessStage(config.process, table), DnsStage(config),
                           FlowStage(config)]
    if config.detect.enabled:
        from otelpeers.detect.build import build_detect_stage

        if detect_process is None:
            detect_process = live_host and config.detect.separate_process
        stages.append(build_detect_stage(config.detect, describe=_describer(table),
                                         persist=live_host, separate_process=detect_process))
    agent = Agent(config, Pipeline(stages, extra_sinks), ids, process_table=table)
    sinks = agent.pipeline.sinks  # appended to in order below

    if config.graph.enabled:
        from otelpeers.graph.model import RelationshipGraph
        from otelpeers.graph.sink import GraphSink

        agent.graph = RelationshipGraph(max_nodes=config.graph.max_nodes,
                                        max_edges=config.graph.max_edges)
        sinks.append(GraphSink(agent.graph, process_lookup=table.peek if table else None))
    if export:
        _add_exporters(agent, sinks, table)
    if live_view:
        from otelpeers.otel.liveview import LiveView

        agent.live = LiveView(stream or sys.stdout)
        sinks.append(agent.live)
    return agent


def _describer(table: ProcessTable | None) -> Callable[[int], tuple[str | None, str | None]
                                                       | None] | None:
    """tgid -> (executable name, container id) from the process table's cache (never /proc:
    detection runs on the pipeline thread)."""
    if table is None:
        return None

    def describe(tgid: int) -> tuple[str | None, str | None] | None:
        info = table.peek(tgid)
        return None if info is None else (info.exe_name, info.container_id)

    return describe


def _add_exporters(agent: Agent, sinks: list[Sink], table: ProcessTable | None) -> None:
    from otelpeers.otel.exporter import SpanSink
    from otelpeers.otel.factory import build_log_exporter
    from otelpeers.otel.logs import DetectionLogSink
    from otelpeers.otel.metrics import (
        MetricsSink,
        build_metric_reader,
        build_prometheus_reader,
    )
    from otelpeers.otel.resources import (
        ResourceCache,
        detect_host_resource,
        table_process_attributes,
    )

    export = agent.config.export
    host = detect_host_resource()
    attrs = table_process_attributes(table) if table is not None else None
    agent.spans = SpanSink(export, ids=agent.ids, host_resource=host, process_attributes=attrs)
    sinks.append(agent.spans)
    agent.logs = DetectionLogSink(
        export, ids=agent.ids, resources=ResourceCache(host, attrs, export.max_live_resources),
        exporter=build_log_exporter(export))
    sinks.append(agent.logs)
    readers = [r for r in (build_metric_reader(export), build_prometheus_reader(export))
               if r is not None]
    if readers:
        agent.metrics = MetricsSink(readers, host, agent_counters=agent.counters,
                                    config=export.metrics, ids=agent.ids,
                                    describe=_describer(table))
        sinks.append(agent.metrics)


# ---- the live run ------------------------------------------------------------------------
@dataclass
class RunResult:
    drive: DriveResult
    source: Mapping[str, int]  # the kernel source's final counters
    stale_removed: int


class _DropWarner:
    """Logs kernel drops once per second at most, never once per event."""

    def __init__(self, counters: Callable[[], Mapping[str, int]]) -> None:
        self._counters = counters
        self._last = 0
        self._next = 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + 1.0
        c = self._counters()
        drops = c.get("kernel_drops", 0)
        if drops > self._last:
            log.warning("kernel could not submit %d events so far (%s); raise "
                        "kernel.ringbuf_pages", drops,
                        {k: v for k, v in c.items() if k.startswith("kernel_drops.")})
            self._last = drops


def run_live(agent: Agent, *, duration_s: float | None = None,
             on_ready: Callable[[], None] | None = None,
             extra_after_batch: Callable[[], None] | None = None) -> RunResult:
    """Run until SIGINT/SIGTERM or duration_s; returns after the pipeline finished."""
    from otelpeers.kernel.loader import KernelSensors
    from otelpeers.kernel.source import KernelSource

    stop_requested = False
    source: KernelSource | None = None

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True
        log.info("received %s, stopping", signal.Signals(signum).name)
        if source is not None:
            source.stop()

    old = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    sensors = KernelSensors(agent.config)
    try:
        sensors.start()
        source = KernelSource(sensors, stats_interval_s=agent.config.kernel.stats_interval_s)
        agent.sources.append(source)
        if stop_requested:
            source.stop()
        tune_for_throughput()  # set up: the collector from here on is for the event path
        if on_ready is not None:
            on_ready()
        deadline = time.monotonic() + duration_s if duration_s else None
        warn = _DropWarner(source.counters)

        def after_batch() -> None:
            warn()
            if extra_after_batch is not None:
                extra_after_batch()

        result = drive(source, agent.pipeline, WallClock(),
                       should_stop=(lambda: time.monotonic() >= deadline) if deadline else None,
                       after_batch=after_batch)
        return RunResult(result, dict(source.counters()), len(sensors.stale_removed))
    finally:
        sensors.close()
        for s, h in old.items():
            signal.signal(s, h)

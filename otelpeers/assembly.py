"""Builds the pipeline `run` and `replay` share: stages, sinks, exporters, live view.

Kept apart from the CLI so tests and benchmarks assemble exactly what the agent runs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from otelpeers.config import Config
from otelpeers.dns.stage import DnsPipelineStage
from otelpeers.dns.transactions import DnsTransaction
from otelpeers.flows import FlowRecord
from otelpeers.pipeline import FlowSink, Pipeline
from otelpeers.process.stage import ProcessStage

log = logging.getLogger(__name__)

SOURCE_COUNTERS = ("source.records", "source.decode_errors", "source.kernel_drops")


class _Fanout:
    """Calls several listeners; one failing listener never stops the others."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[Any], None]] = []

    def __call__(self, item: Any) -> None:
        for fn in self.listeners:
            try:
                fn(item)
            except Exception:
                log.exception("listener %r failed", fn)


class _FlowCallback:
    def __init__(self, fn: Callable[[Sequence[FlowRecord]], None]) -> None:
        self.fn = fn

    def export_flows(self, records: Sequence[FlowRecord]) -> None:
        self.fn(records)


@dataclass
class Agent:
    """Everything behind the source; shutdown() flushes every exporter."""

    config: Config
    pipeline: Pipeline
    exporter: Any = None  # FlowSpanExporter
    metrics: Any = None  # FlowMetrics
    live: Any = None  # LiveView
    process_table: Any = None  # ProcessTable
    graph: Any = None  # GraphStage
    counters: list[Callable[[], Mapping[str, int]]] = field(default_factory=list)

    def agent_counters(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for fn in self.counters:
            try:
                out.update(fn())
            except Exception:  # self-telemetry must never break the agent
                log.debug("counter source failed", exc_info=True)
        return out

    def on_tick(self) -> None:
        dns = self.pipeline.dns
        if dns is not None:  # drained every tick, so the sample buffer never overflows
            samples = dns.tracker.metrics.drain_latencies()
            if self.metrics is not None:
                self.metrics.record_dns(samples)
        if self.live is not None:
            self.live.refresh(self.pipeline.flows.live_flows())

    def shutdown(self) -> None:
        if self.exporter is not None:
            self.exporter.shutdown()
        if self.metrics is not None:
            self.metrics.shutdown()


def assemble(config: Config, *, live_host: bool, export: bool = True,
             live_view: bool = False, extra_sinks: Sequence[FlowSink] = (),
             on_transaction: Callable[[DnsTransaction], None] | None = None,
             stream: TextIO | None = None) -> Agent:
    """live_host: read this host's /proc for process context (False when replaying)."""
    table = None
    if live_host:
        from otelpeers.process.table import ProcessTable

        table = ProcessTable(config.process)
        table.seed()
    process = ProcessStage(config.process, table)
    txn_listeners = _Fanout()
    if on_transaction is not None:
        txn_listeners.listeners.append(on_transaction)
    dns = DnsPipelineStage(config, on_transaction=txn_listeners)
    agent = Agent(config, Pipeline(config, extra_sinks, dns=dns, process=process),
                  process_table=table)
    sinks = agent.pipeline.sinks

    if config.graph.enabled:
        from otelpeers.graph import RelationshipGraph
        from otelpeers.graph.stage import GraphStage

        lookup = table.lookup if table is not None else None
        agent.graph = GraphStage(RelationshipGraph(max_nodes=config.graph.max_nodes,
                                                   max_edges=config.graph.max_edges),
                                 process_lookup=lookup)
        sinks.append(agent.graph)
        txn_listeners.listeners.append(agent.graph.on_transaction)
        process.listeners.append(agent.graph.on_process_event)
        agent.counters.append(lambda: _prefixed("graph", agent.graph.graph.stats))
    # The live source adds its counters when it starts (run_live), after the metric
    # instruments are made from the names known here: name them now, at zero.
    agent.counters.append(lambda: dict.fromkeys(SOURCE_COUNTERS, 0))
    agent.counters.append(lambda: _prefixed("flows", vars(agent.pipeline.flows.stats)))
    agent.counters.append(lambda: _prefixed("process", process.stats))
    agent.counters.append(lambda: dns.stats)
    if export:
        from otelpeers.otel import (
            FlowMetrics,
            FlowSpanExporter,
            build_metric_reader,
            detect_host_resource,
        )

        host = detect_host_resource()
        agent.exporter = FlowSpanExporter(
            config.export, host_resource=host,
            process_attributes=table.resource_attributes if table is not None else None)
        sinks.append(agent.exporter)
        dns.span_sink = agent.exporter.export_dns
        agent.counters.append(lambda: _prefixed("export", agent.exporter.stats))
        reader = build_metric_reader(config.export)
        if reader is not None:
            agent.metrics = FlowMetrics(reader, host, agent_counters=agent.agent_counters)
            sinks.append(_FlowCallback(agent.metrics.record_flows))
    if live_view:
        from otelpeers.otel.liveview import LiveView

        agent.live = LiveView(stream or sys.stdout)
        sinks.append(_FlowCallback(agent.live.add_completed))
    return agent


def _prefixed(prefix: str, stats: Mapping[str, Any]) -> dict[str, int]:
    return {f"{prefix}.{k}": int(v) for k, v in stats.items() if isinstance(v, int | bool)}

"""Volume metrics per (process, peer) and agent self-telemetry, through the SDK meters.

One MeterProvider (resource: the host, service.name "otelpeers"), since metric points of
many processes would otherwise need one provider each; the process is an attribute here.
The (process, peer) combinations are bounded: past the bound, new peers are reported as
network.peer.address "other" and counted, so a port scan cannot blow up cardinality.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from otelpeers import __version__
from otelpeers import attributes as A
from otelpeers.config import ExportConfig
from otelpeers.events import Direction
from otelpeers.flows import FlowRecord
from otelpeers.otel.factory import http_traces_url, resolve_otlp

AgentCounters = Callable[[], Mapping[str, int]]

_DIRECTION = {Direction.OUTBOUND: "outbound", Direction.INBOUND: "inbound"}


def build_metric_reader(config: ExportConfig, env: Mapping[str, str] | None = None
                        ) -> MetricReader | None:
    """A periodic OTLP metric reader (same endpoint rules as spans); None without OTLP."""
    resolved = resolve_otlp(config, env)
    if resolved is None:
        return None
    protocol, endpoint = resolved
    otlp = config.otlp
    headers = dict(otlp.headers) or None
    timeout = otlp.timeout_s if endpoint else None
    exporter: Any
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        exporter = OTLPMetricExporter(endpoint=endpoint, insecure=otlp.insecure if endpoint
                                      else None, headers=headers, timeout=timeout)
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetricExporter,
        )
        url = http_traces_url(endpoint, "/v1/metrics") if endpoint else None
        exporter = HttpMetricExporter(endpoint=url, headers=headers, timeout=timeout)
    return PeriodicExportingMetricReader(
        exporter, export_interval_millis=config.metrics_interval_s * 1000)


class FlowMetrics:
    """otelpeers.flow.bytes / otelpeers.flow.connections per (process, peer), and
    otelpeers.agent.<name> observable counters from agent_counters()."""

    def __init__(self, reader: MetricReader, host_resource: Resource, *,
                 agent_counters: AgentCounters | None = None, max_pairs: int = 2000) -> None:
        resource = host_resource.merge(Resource({A.SERVICE_NAME: "otelpeers"}))
        self.provider = MeterProvider(metric_readers=[reader], resource=resource,
                                      shutdown_on_exit=False)
        meter = self.provider.get_meter(A.SCOPE_NAME, __version__)
        self._bytes = meter.create_counter(
            A.METRIC_FLOW_BYTES, unit="By",
            description="payload bytes of completed flows, per process and peer")
        self._conns = meter.create_counter(
            A.METRIC_FLOW_CONNECTIONS, unit="{connection}",
            description="completed flows (connections), per process and peer")
        self._dns_duration = meter.create_histogram(
            A.METRIC_DNS_LOOKUP_DURATION, unit="s",
            description="DNS lookup duration, query sent to response (or timeout)")
        self._dns_queries = meter.create_counter(
            A.METRIC_DNS_QUERIES, unit="{query}",
            description="DNS transactions by response code and question type")
        self._max_pairs = max_pairs
        self._pairs: set[tuple[str, str]] = set()
        self.pairs_overflowed = 0
        self._agent = agent_counters
        self._agent_names: set[str] = set()
        if agent_counters is not None:
            # One observable counter per name the callback reports at construction; names
            # that only appear later are not reported (documented).
            for name in sorted(agent_counters()):
                self._agent_names.add(name)
                meter.create_observable_counter(
                    A.METRIC_AGENT_PREFIX + name, callbacks=[self._observe(name)],
                    description=f"agent self-telemetry: {name}")

    def _observe(self, name: str):
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            try:
                value = self._agent().get(name)
            except Exception:  # the agent's stats must never break metric export
                return []
            return [] if value is None else [Observation(int(value))]
        return callback

    def record_flows(self, records: Iterable[FlowRecord]) -> None:
        for r in records:
            process = r.owner.comm if r.owner is not None else A.UNKNOWN_SERVICE
            peer = r.peer_addr
            if (process, peer) not in self._pairs:
                if len(self._pairs) < self._max_pairs:
                    self._pairs.add((process, peer))
                else:
                    peer = A.PEER_OTHER
                    self.pairs_overflowed += 1
            base = {A.PROCESS_EXECUTABLE_NAME: process, A.NETWORK_PEER_ADDRESS: peer,
                    A.NETWORK_TRANSPORT: r.transport}
            self._bytes.add(r.counters.payload_out, {**base, A.NETWORK_IO_DIRECTION: "transmit"})
            self._bytes.add(r.counters.payload_in, {**base, A.NETWORK_IO_DIRECTION: "receive"})
            self._conns.add(1, {**base, A.FLOW_DIRECTION: _DIRECTION.get(r.direction, "unknown"),
                                A.FLOW_CLOSE_REASON: r.close_reason.value})

    def record_dns(self, samples: Iterable[tuple[float, Mapping[str, Any]]]) -> None:
        """Latency samples from DnsMetrics.drain_latencies (labels already bounded there)."""
        for seconds, attrs in samples:
            self._dns_duration.record(seconds, attrs)
            self._dns_queries.add(1, attrs)

    def force_flush(self, timeout_s: float = 30) -> bool:
        return self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        self.provider.shutdown()

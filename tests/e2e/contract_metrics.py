"""Synthetic metrics exactly as the metrics contract of issue 12 names them (docs/telemetry.md).

Built with the OpenTelemetry SDK and sent with its OTLP/HTTP exporter, so what a store
receives is what the agent's SDK would send: same instrument kinds, units, attribute names,
resource (the host, service.name "otelpeers") and cumulative temporality. Tests use it to
learn the names a store gives OTLP metrics and to feed every dashboard panel; the lead can
swap it for the real agent with real traffic (see test_dashboard_queries.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

MB = 1_048_576
HOST = "otelpeers-e2e-host"


@dataclass(frozen=True)
class Pair:
    """One process x peer pair, with the contract's pair attributes."""

    process: str
    server_address: str
    peer_address: str
    server_port: int
    transport: str = "tcp"
    direction: str = "outbound"
    container_id: str | None = None

    def attributes(self) -> dict[str, str | int]:
        a: dict[str, str | int] = {
            "process.executable.name": self.process,
            "server.address": self.server_address,
            "network.peer.address": self.peer_address,
            "server.port": self.server_port,
            "network.transport": self.transport,
            "otelpeers.flow.direction": self.direction,
        }
        if self.container_id:  # omitted, never empty, when unknown
            a["container.id"] = self.container_id
        return a


# A 1 MB download whose peer has a resolved name, a failing connection, a server's accepted
# connection, an unresolved UDP peer, and a containerised client.
DOWNLOAD = Pair("curl", "download.otelpeers.test", "10.203.0.2", 80)
FAILING = Pair("python3", "refused.otelpeers.test", "10.203.0.3", 9)
INBOUND = Pair("nginx", "10.203.0.1", "10.203.0.9", 8080, direction="inbound")
UDP_PEER = Pair("ntpd", "10.203.0.4", "10.203.0.4", 123, transport="udp")
IN_CONTAINER = Pair("wget", "api.otelpeers.test", "10.203.0.5", 443,
                    container_id="4f1c0de5a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a7b8c9d0e1f2")
PAIRS = (DOWNLOAD, FAILING, INBOUND, UDP_PEER, IN_CONTAINER)
DOWNLOAD_SENT = 112  # request bytes of the download

# Bucket boundaries in the histograms' own units. The SDK's default boundaries (0, 5, 10,
# 25, ... 10000) suit milliseconds: with unit "s" every DNS lookup would land in the first
# bucket and a p95 would read 4.75 s. The agent needs boundaries like these too.
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
RTT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
               0.1, 0.25, 0.5, 1.0)
SIZE_BUCKETS = tuple(float(4**k) for k in range(3, 16))  # 64 B .. 1 GiB

AGENT_COUNTERS = (
    "otelpeers.agent.source.kernel_drops",
    "otelpeers.agent.source.kernel_drops.ringbuf_tcp_close",
    "otelpeers.agent.export.spans_dropped_queue_full",
    "otelpeers.agent.dns.parse_errors",
    "otelpeers.agent.metrics.pairs_overflowed",
    "otelpeers.agent.detect.state_evicted",
)
AGENT_GAUGES = ("otelpeers.agent.export.queue_size",)


class CountingExporter(OTLPMetricExporter):
    """The SDK's OTLP/HTTP exporter, counting the samples a Prometheus-style store makes of
    what it sent: one per sum or gauge point; per histogram point one per bucket (+Inf
    included), plus _sum and _count. Tests wait until the store shows that many."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.samples_sent = 0
        self.last_result: MetricExportResult | None = None

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs) -> MetricExportResult:
        n = 0
        for rm in metrics_data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for dp in metric.data.data_points:
                        hist = isinstance(metric.data, Histogram)
                        n += len(dp.explicit_bounds) + 3 if hist else 1
        result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        self.last_result = result
        if result == MetricExportResult.SUCCESS:
            self.samples_sent += n
        return result


def _in_trace(trace_id: int, span_id: int):
    """A context whose current span is a sampled one, so histograms keep an exemplar."""
    ctx = SpanContext(trace_id, span_id, is_remote=False,
                      trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(ctx))


class ContractMetrics:
    """Records the contract's instruments and pushes them on demand (push()).

    Each push exports the cumulative state, like one agent metrics interval. Values are
    chosen so that every instrument has a point and the download pair has exactly
    1 MB received.
    """

    def __init__(self, endpoint: str, *, host: str = HOST) -> None:
        self.exporter = CountingExporter(endpoint=endpoint, timeout=10)
        # No interval: exports happen only when push() asks (and none at shutdown).
        self.reader = PeriodicExportingMetricReader(self.exporter,
                                                    export_interval_millis=math.inf)
        resource = Resource.create({"service.name": "otelpeers", "host.name": host,
                                    "os.type": "linux"})
        self.provider = MeterProvider(metric_readers=[self.reader], resource=resource)
        m = self.provider.get_meter("otelpeers")
        self.bytes = m.create_counter("otelpeers.flow.bytes", unit="By")
        self.packets = m.create_counter("otelpeers.flow.packets", unit="{packet}")
        self.connections = m.create_counter("otelpeers.flow.connections", unit="{connection}")
        self.duration = m.create_histogram("otelpeers.flow.duration", unit="s",
                                           explicit_bucket_boundaries_advisory=SECONDS_BUCKETS)
        self.size = m.create_histogram("otelpeers.flow.size", unit="By",
                                       explicit_bucket_boundaries_advisory=SIZE_BUCKETS)
        self.srtt = m.create_histogram("otelpeers.tcp.srtt", unit="s",
                                       explicit_bucket_boundaries_advisory=RTT_BUCKETS)
        self.peers_new = m.create_counter("otelpeers.peers.new", unit="{peer}")
        self.dns_duration = m.create_histogram(
            "dns.lookup.duration", unit="s", explicit_bucket_boundaries_advisory=SECONDS_BUCKETS)
        self.dns_queries = m.create_counter("otelpeers.dns.queries", unit="{query}")
        self.detections = m.create_counter("otelpeers.detections", unit="{detection}")
        self.agent: dict[str, int] = dict.fromkeys(AGENT_COUNTERS + AGENT_GAUGES, 0)
        for name in AGENT_COUNTERS:
            m.create_observable_counter(name, [self._observe(name)], unit="")
        for name in AGENT_GAUGES:
            m.create_observable_gauge(name, [self._observe(name)], unit="")
        self._span = 1

    def _observe(self, name: str):
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(self.agent[name])]
        return callback

    def _ctx(self):
        self._span += 1
        return _in_trace(0x0AF7651916CD43DD8448EB211C80319C + self._span, self._span)

    # ---- what one metrics interval of traffic adds -----------------------------------------
    def opened(self, pair: Pair) -> None:
        self.connections.add(1, {**pair.attributes(), "otelpeers.flow.state": "opened"})

    def transfer(self, pair: Pair, *, sent: int, received: int) -> None:
        """Payload bytes of `pair` in this interval (a live delta or the rest at close)."""
        attrs = pair.attributes()
        for direction, n in (("transmit", sent), ("receive", received)):
            io = {**attrs, "network.io.direction": direction}
            self.bytes.add(n, io)
            self.packets.add(-(-n // 1448), io)  # full-size segments, rounded up

    def closed(self, pair: Pair, *, size: int, duration_s: float,
               srtt_s: float | None = 0.0004, failed: bool = False) -> None:
        attrs = pair.attributes()
        self.connections.add(1, {**attrs, "otelpeers.flow.state":
                                 "failed" if failed else "closed"})
        ctx = self._ctx()  # the connection span's ids become the exemplar
        self.duration.record(duration_s, attrs, context=ctx)
        self.size.record(size, attrs, context=ctx)
        if srtt_s is not None and pair.transport == "tcp":
            self.srtt.record(srtt_s, attrs, context=ctx)

    def flow(self, pair: Pair, *, sent: int, received: int, duration_s: float,
             srtt_s: float | None = 0.0004, failed: bool = False) -> None:
        """One whole connection of `pair` inside this interval."""
        self.opened(pair)
        self.transfer(pair, sent=sent, received=received)
        self.closed(pair, size=sent + received, duration_s=duration_s, srtt_s=srtt_s,
                    failed=failed)

    def new_peer(self, pair: Pair) -> None:
        self.peers_new.add(1, {"process.executable.name": pair.process,
                               "network.transport": pair.transport,
                               "otelpeers.flow.direction": pair.direction})

    def dns(self, process: str, *, qtype: str = "A", rcode: str = "NOERROR",
            duration_s: float = 0.002) -> None:
        attrs: dict[str, str] = {"process.executable.name": process,
                                 "dns.question.type": qtype, "dns.response_code": rcode}
        if rcode != "NOERROR":
            attrs["error.type"] = rcode
        self.dns_duration.record(duration_s, attrs, context=self._ctx())
        self.dns_queries.add(1, attrs)

    def detection(self, rule: str, severity: str, process: str) -> None:
        self.detections.add(1, {"security_rule.name": rule,
                                "otelpeers.detection.severity": severity,
                                "process.executable.name": process})

    def set_agent(self, values: Mapping[str, int]) -> None:
        unknown = set(values) - set(self.agent)
        if unknown:
            raise KeyError(f"not agent metrics of the contract: {sorted(unknown)}")
        self.agent.update(values)

    # ---- export -------------------------------------------------------------------------------
    def push(self) -> None:
        """Export the current cumulative state now; raises when the store refused it."""
        self.exporter.last_result = None
        self.provider.force_flush(timeout_millis=20_000)
        if self.exporter.last_result != MetricExportResult.SUCCESS:
            raise RuntimeError(f"OTLP metrics export to {self.exporter._endpoint} failed: "
                               f"{self.exporter.last_result}")

    @property
    def samples_sent(self) -> int:
        return self.exporter.samples_sent

    def shutdown(self) -> None:
        self.provider.shutdown()


def push_interval(m: ContractMetrics, n: int) -> None:
    """Interval n (0 or 1) of a small fixed scenario, then a push.

    Interval 0: every pair has traffic, and the download has started (request sent, nothing
    received yet). Interval 1: the download receives exactly MB and closes, so its received
    bytes grow by exactly MB between the two pushes; the other pairs repeat.
    """
    if n == 0:
        m.opened(DOWNLOAD)
        m.transfer(DOWNLOAD, sent=DOWNLOAD_SENT, received=0)
        m.new_peer(DOWNLOAD)
        m.flow(INBOUND, sent=2048, received=300, duration_s=0.05)
        m.new_peer(INBOUND)
        m.flow(UDP_PEER, sent=48, received=48, duration_s=0.001, srtt_s=None)
        m.new_peer(UDP_PEER)
        m.flow(IN_CONTAINER, sent=700, received=5000, duration_s=0.2)
        m.new_peer(IN_CONTAINER)
        m.flow(FAILING, sent=0, received=0, duration_s=0.0005, failed=True)
        m.new_peer(FAILING)
        m.dns("curl", duration_s=0.0015)
        m.dns("curl", qtype="AAAA", duration_s=0.0021)
        m.dns("python3", rcode="NXDOMAIN", duration_s=0.004)
        m.detection("dns_tunnel", "high", "python3")
        m.set_agent({"otelpeers.agent.export.queue_size": 3})
    elif n == 1:
        m.transfer(DOWNLOAD, sent=0, received=MB)
        m.closed(DOWNLOAD, size=DOWNLOAD_SENT + MB, duration_s=0.4, srtt_s=0.0002)
        m.flow(FAILING, sent=0, received=0, duration_s=0.0005, failed=True)
        m.flow(INBOUND, sent=4096, received=300, duration_s=0.05)
        m.flow(UDP_PEER, sent=48, received=48, duration_s=0.001, srtt_s=None)
        m.flow(IN_CONTAINER, sent=700, received=5000, duration_s=0.3)
        m.dns("curl", duration_s=0.003)
        m.dns("python3", rcode="NXDOMAIN", duration_s=0.006)
        m.detection("dns_tunnel", "high", "python3")
        m.detection("beaconing", "medium", "wget")
        m.set_agent({name: 2 for name in AGENT_COUNTERS}
                    | {"otelpeers.agent.export.queue_size": 5})
    else:
        raise ValueError(f"push_interval: the scenario has intervals 0 and 1, not {n}")
    m.push()

"""MetricsSink: volume and frequency per peer pair, DNS, detections, agent self-telemetry.

The sink aggregates in plain Python on the pipeline thread (a dict update per flow, never an
SDK call per flow: at 20,000 flows/s the SDK's instruments would cost more than the rest of
the agent) and produces the OTel MetricsData itself when a reader collects, like the span
path builds ReadableSpans directly. Any SDK MetricReader works: the periodic OTLP/file
reader, the Prometheus reader, the in-memory reader of the tests; each is registered with
MetricReader._set_collect_callback (pinned by tests/unit/test_otel_metrics.py).

- Live volume: open flows' bytes and packets are added as deltas of their cumulative
  counters (progress snapshots), the remainder at close: a flow's total over all intervals
  equals its span's totals, nothing counted twice.
- Pairs: process x peer (docs/telemetry.md lists the attributes; export.metrics chooses
  them); at most export.metrics.max_pairs, new pairs past the bound are reported as "other"
  and counted (otelpeers.agent.metrics.pairs_overflowed).
- Histograms (duration, size, smoothed RTT at close; DNS latency) carry one exemplar per
  point and interval: the largest value, with the trace and span id of its span.
- Agent self-telemetry: every counter the agent's parts report at collection time is a
  point (otelpeers.agent.<name>), counters as monotonic sums, levels as gauges; names that
  appear after start are included as they appear.
Temporality follows each reader (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from opentelemetry.sdk.metrics._internal.exemplar import Exemplar
from opentelemetry.sdk.metrics._internal.instrument import _Counter, _Histogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricReader,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otelpeers import __version__
from otelpeers import attributes as A
from otelpeers.dns.lookups import DnsLookup
from otelpeers.events import ZERO_COUNTERS, Counters, Direction, Owner
from otelpeers.exportconfig import ConfigError, ExportConfig, MetricsConfig
from otelpeers.flows import CloseReason, FlowRecord
from otelpeers.ids import SpanIds
from otelpeers.otel.dns_spans import is_error
from otelpeers.otel.factory import build_metric_exporter
from otelpeers.pipeline import Outputs

AgentCounters = Callable[[], Mapping[str, int]]
ProcessDescriber = Callable[[int], tuple[str | None, str | None] | None]

_SCOPE = InstrumentationScope(A.SCOPE_NAME, __version__)
_DIRECTION = {Direction.OUTBOUND: "outbound", Direction.INBOUND: "inbound"}
GAUGE_SUFFIXES = ("queue_size", "size", "pending", "cached", "live", "entries", "streams",
                  "nodes", "edges")
MAX_LABELS = 64  # distinct DNS qtype / rcode labels, "other" (which takes the rest) included
PAIR_ATTRIBUTES = (A.PROCESS_EXECUTABLE_NAME, A.CONTAINER_ID, A.SERVER_ADDRESS,
                   A.NETWORK_PEER_ADDRESS, A.SERVER_PORT, A.NETWORK_TRANSPORT,
                   A.FLOW_DIRECTION)

# Bucket boundaries: seconds from a loopback round trip to an hour-long connection; bytes
# from one small request to a large transfer.
DURATION_BOUNDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
                   1800.0, 3600.0)
SIZE_BOUNDS = (64.0, 512.0, 4096.0, 32768.0, 262144.0, 1048576.0, 8388608.0, 67108864.0,
               536870912.0)
RTT_BOUNDS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
DNS_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
              10.0)


@dataclass(frozen=True)
class _Def:
    name: str
    unit: str
    description: str
    bounds: tuple[float, ...] = ()  # histograms only


M_BYTES = _Def(A.METRIC_FLOW_BYTES, "By", "payload bytes per peer pair, live")
M_PACKETS = _Def(A.METRIC_FLOW_PACKETS, "{packet}", "packets per peer pair, live")
M_CONNS = _Def(A.METRIC_FLOW_CONNECTIONS, "{connection}",
               "connections per peer pair: opened, failed (never established), closed")
M_NEW_PEERS = _Def(A.METRIC_PEERS_NEW, "{peer}", "peer pairs seen for the first time")
M_DURATION = _Def(A.METRIC_FLOW_DURATION, "s", "connection duration, at close",
                  DURATION_BOUNDS)
M_SIZE = _Def(A.METRIC_FLOW_SIZE, "By", "bytes sent and received per connection, at close",
              SIZE_BOUNDS)
M_RTT = _Def(A.METRIC_TCP_SRTT, "s", "TCP smoothed round-trip time at close", RTT_BOUNDS)
M_DNS_DURATION = _Def(A.METRIC_DNS_LOOKUP_DURATION, "s",
                      "DNS lookup duration, query sent to response (or timeout)", DNS_BOUNDS)
M_DNS_QUERIES = _Def(A.METRIC_DNS_QUERIES, "{query}", "DNS lookups by response code and type")
M_DETECTIONS = _Def(A.METRIC_DETECTIONS, "{detection}", "detections by rule and severity")
SUMS = (M_BYTES, M_PACKETS, M_CONNS, M_NEW_PEERS, M_DNS_QUERIES, M_DETECTIONS)
HISTOGRAMS = (M_DURATION, M_SIZE, M_RTT, M_DNS_DURATION)

Attrs = tuple[tuple[str, Any], ...]


class _Sum:
    """One monotonic sum stream (a metric with one attribute set), updated in place: no dict
    and no hashing per flow. The sink keeps every stream in a list for collection."""

    __slots__ = ("d", "attrs", "value")

    def __init__(self, d: _Def, attrs: Attrs) -> None:
        self.d, self.attrs, self.value = d, attrs, 0


class _Hist:
    """One cumulative histogram stream; the exemplar is the interval's largest value."""

    __slots__ = ("d", "attrs", "counts", "count", "sum", "min", "max", "exemplar")

    def __init__(self, d: _Def, attrs: Attrs) -> None:
        self.d, self.attrs = d, attrs
        self.counts = [0] * (len(d.bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.exemplar: tuple[float, int, tuple[int, int] | None] | None = None

    def record(self, value: float, time_ns: int, span: tuple[int, int] | None) -> None:
        self.counts[bisect_left(self.d.bounds, value)] += 1
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if self.exemplar is None or value > self.exemplar[0]:
            self.exemplar = (value, time_ns, span)


class _Pair:
    """The streams of one peer pair, made once: a flow's update is a few attribute adds."""

    __slots__ = ("bytes_tx", "bytes_rx", "packets_tx", "packets_rx", "opened", "failed",
                 "closed", "duration", "size", "rtt")

    def __init__(self, sink: MetricsSink, attrs: Attrs) -> None:
        tx = (*attrs, (A.NETWORK_IO_DIRECTION, "transmit"))
        rx = (*attrs, (A.NETWORK_IO_DIRECTION, "receive"))
        s, h = sink.sum_stream, sink.hist_stream
        self.bytes_tx, self.bytes_rx = s(M_BYTES, tx), s(M_BYTES, rx)
        self.packets_tx, self.packets_rx = s(M_PACKETS, tx), s(M_PACKETS, rx)
        self.opened = s(M_CONNS, (*attrs, (A.FLOW_STATE, "opened")))
        self.failed = s(M_CONNS, (*attrs, (A.FLOW_STATE, "failed")))
        self.closed = s(M_CONNS, (*attrs, (A.FLOW_STATE, "closed")))
        self.duration, self.size = h(M_DURATION, attrs), h(M_SIZE, attrs)
        self.rtt = h(M_RTT, attrs)


def _add_volume(pair: _Pair, now: Counters, before: Counters) -> None:
    """What a flow sent and received since the counters last counted for it."""
    pair.bytes_tx.value += max(0, now.payload_out - before.payload_out)
    pair.bytes_rx.value += max(0, now.payload_in - before.payload_in)
    pair.packets_tx.value += max(0, now.packets_out - before.packets_out)
    pair.packets_rx.value += max(0, now.packets_in - before.packets_in)


def build_metric_reader(config: ExportConfig, env: Mapping[str, str] | None = None,
                        exporter: MetricExporter | None = None) -> MetricReader | None:
    """A periodic reader for the configured metric exporter; None: no metrics at all.

    The interval is OTEL_METRIC_EXPORT_INTERVAL (ms) when set, else export.metrics_interval_s.
    """
    if exporter is None:
        exporter = build_metric_exporter(config, env)
    if exporter is None:
        return None
    env = os.environ if env is None else env
    interval_ms = config.metrics_interval_s * 1000
    raw = env.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip()
    if raw:
        try:
            interval_ms = max(100.0, float(raw))
        except ValueError:
            raise ConfigError(f"OTEL_METRIC_EXPORT_INTERVAL={raw!r} is not a number of "
                              "milliseconds") from None
    return PeriodicExportingMetricReader(exporter, export_interval_millis=interval_ms)


def build_prometheus_reader(config: ExportConfig) -> MetricReader | None:
    """export.prometheus: the OTel Prometheus reader, served on address:port/metrics with
    a registry of its own (only otelpeers' metrics), stopped when the reader shuts down."""
    p = config.prometheus
    if not p.enabled:
        return None
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:
        raise ConfigError("export.prometheus needs the opentelemetry-exporter-prometheus "
                          "package (scripts/setup.sh installs it)") from exc

    class ServedPrometheusReader(PrometheusMetricReader):
        def __init__(self) -> None:
            registry = CollectorRegistry()
            super().__init__(registry=registry)
            try:
                self._server, _ = start_http_server(p.port, addr=p.address, registry=registry)
            except OSError as exc:
                raise ConfigError(f"export.prometheus: cannot listen on {p.address}:{p.port}: "
                                  f"{exc.strerror}; choose another port") from None

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            super().shutdown(timeout_millis, **kwargs)
            self._server.shutdown()
            self._server.server_close()

    return ServedPrometheusReader()


def is_gauge(name: str) -> bool:
    return name.rsplit(".", 1)[-1].endswith(GAUGE_SUFFIXES)


class _Labels:
    """Bounded label values: past max, new values become "other" (counted)."""

    def __init__(self, max_values: int) -> None:
        self.max_values = max_values
        self.seen: set[str] = set()
        self.overflowed = 0

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) < self.max_values - 1:
            self.seen.add(value)
            return value
        self.overflowed += 1
        return A.PEER_OTHER


class MetricsSink:
    name: ClassVar[str] = "metrics"

    def __init__(self, readers: Sequence[MetricReader] | MetricReader, host_resource: Resource,
                 *, agent_counters: AgentCounters | None = None,
                 config: MetricsConfig | None = None, ids: SpanIds | None = None,
                 describe: ProcessDescriber | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.resource = host_resource.merge(Resource({A.SERVICE_NAME: "otelpeers"}))
        self.readers = [readers] if isinstance(readers, MetricReader) else list(readers)
        cfg = config if config is not None else MetricsConfig()
        self._pair_attrs = tuple(a for a in PAIR_ATTRIBUTES if a in cfg.pair_attributes)
        self._max_pairs = cfg.max_pairs
        self._ids = ids if ids is not None else SpanIds()
        self._describe = describe
        self._agent = agent_counters
        self._clock = clock
        self._start_ns = clock()
        self._lock = threading.Lock()  # pipeline thread writes, reader threads collect
        self._streams: dict[tuple[_Def, Attrs], _Sum | _Hist] = {}  # each made once
        self._sums: list[_Sum] = []
        self._hists: list[_Hist] = []
        self._pairs: dict[tuple[Any, ...], _Pair] = {}  # pair key -> its stream keys
        self._other: dict[Attrs, _Pair] = {}  # past max_pairs: the "other" accumulators
        self._exes: dict[tuple[int, str], tuple[str, str | None]] = {}  # (tgid, comm) -> exe
        # Open flows counted so far (seen in a progress record, not completed yet): each
        # record carries what its previous one reported (FlowRecord.reported), so no table
        self._open_flows = 0
        self._last: dict[int, dict[object, Any]] = {}  # reader -> last points (delta)
        self._last_ns: dict[int, int] = {}
        self._seen: dict[int, set[object]] = {}  # reader -> streams given to it
        self.pairs_overflowed = 0  # flows counted under the "other" pair
        self._rcodes = _Labels(MAX_LABELS)
        self._qtypes = _Labels(MAX_LABELS)
        for reader in self.readers:
            reader._set_collect_callback(self._collect)

    # ---- pipeline input -----------------------------------------------------------------
    def consume(self, out: Outputs) -> None:
        if not (out.flows or out.progress or out.dns or out.detections):
            return
        with self._lock:
            for r in out.progress:
                self._progress(r)
            for r in out.flows:
                self._completed(r)
            for lk in out.dns:
                self._lookup(lk)
            for d in out.detections:
                self._add(M_DETECTIONS, ((A.SECURITY_RULE_NAME, d.rule.name),
                                         (A.DETECTION_SEVERITY, d.severity.text),
                                         (A.PROCESS_EXECUTABLE_NAME,
                                          d.actor.executable or A.UNKNOWN_SERVICE)), 1)

    def _exe(self, owner: Owner | None) -> tuple[str, str | None]:
        if owner is None:
            return A.UNKNOWN_SERVICE, None
        key = (owner.tgid, owner.comm)
        hit = self._exes.get(key)
        if hit is not None:
            return hit
        described = self._describe(owner.tgid) if self._describe is not None else None
        if described is not None and described[0]:
            result = (described[0], described[1])
        else:
            result = (owner.comm or A.UNKNOWN_SERVICE, None)
        if described is not None or self._describe is None:  # not yet read: ask again later
            if len(self._exes) >= 8192:
                self._exes.clear()
            self._exes[key] = result
        return result

    def _pair(self, r: FlowRecord) -> _Pair:
        exe, cid = self._exe(r.owner)
        if r.direction == Direction.INBOUND:
            lst = r.listener
            server = lst.local_addr if lst is not None and lst.local_addr else r.local_addr
            port = r.local_port
        else:
            dns = r.dns
            server = dns.question_name if dns is not None and dns.resolved and \
                dns.question_name else r.peer_addr
            port = r.peer_port
        key = (exe, cid, server, r.peer_addr, port, r.transport, r.direction)
        pair = self._pairs.get(key)
        if pair is not None:
            return pair
        direction = _DIRECTION.get(r.direction, "unknown")
        if len(self._pairs) >= self._max_pairs:
            self.pairs_overflowed += 1
            server = peer = A.PEER_OTHER
            port = 0
        else:
            peer = r.peer_addr
        values = {A.PROCESS_EXECUTABLE_NAME: exe, A.CONTAINER_ID: cid, A.SERVER_ADDRESS: server,
                  A.NETWORK_PEER_ADDRESS: peer, A.SERVER_PORT: port,
                  A.NETWORK_TRANSPORT: r.transport, A.FLOW_DIRECTION: direction}
        attrs = tuple((k, values[k]) for k in self._pair_attrs if values[k] is not None)
        pair = self._other.get(attrs) or _Pair(self, attrs)
        if len(self._pairs) < self._max_pairs:
            self._pairs[key] = pair
            new = tuple(x for x in attrs if x[0] in (A.PROCESS_EXECUTABLE_NAME,
                                                     A.NETWORK_TRANSPORT, A.FLOW_DIRECTION))
            self._add(M_NEW_PEERS, new, 1)
        else:  # the overflow pairs share one accumulator per attribute set
            self._other[attrs] = pair
        return pair

    def sum_stream(self, d: _Def, attrs: Attrs) -> _Sum:
        st = self._streams.get((d, attrs))
        if st is None:
            st = self._streams[(d, attrs)] = _Sum(d, attrs)
            self._sums.append(st)
        return st  # type: ignore[return-value]

    def hist_stream(self, d: _Def, attrs: Attrs) -> _Hist:
        st = self._streams.get((d, attrs))
        if st is None:
            st = self._streams[(d, attrs)] = _Hist(d, attrs)
            self._hists.append(st)
        return st  # type: ignore[return-value]

    def _add(self, d: _Def, attrs: Attrs, n: int) -> None:
        self.sum_stream(d, attrs).value += n

    def _progress(self, r: FlowRecord) -> None:
        c = r.counters
        before = r.reported
        pair = self._pair(r)
        if before is None:
            pair.opened.value += 1
            self._open_flows += 1
            before = ZERO_COUNTERS
        _add_volume(pair, c, before)

    def _completed(self, r: FlowRecord) -> None:
        c = r.counters
        pair = self._pair(r)
        before = r.reported
        n = max(1, r.summary)  # a summary record stands for that many connections
        if before is None:
            pair.opened.value += n
            before = ZERO_COUNTERS
        else:
            self._open_flows -= 1
        _add_volume(pair, c, before)
        (pair.failed if r.close_reason == CloseReason.CONNECT_FAILED else pair.closed).value += n
        if r.summary or not r.complete:
            return  # no per-connection shape for summaries or flows cut at shutdown
        fid = r.flow_id
        self._observe(pair.duration, max(0, r.end_ns - r.start_ns) / 1e9, r.end_ns, fid)
        self._observe(pair.size, float(c.payload_out + c.payload_in), r.end_ns, fid)
        if r.tcp is not None and r.tcp.srtt_us:
            self._observe(pair.rtt, r.tcp.srtt_us / 1e6, r.end_ns, fid)

    def _observe(self, h: _Hist, value: float, time_ns: int, span_of: str | None,
                 dns: bool = False) -> None:
        # The span ids are derived only when this value becomes the interval's exemplar.
        ex = h.exemplar
        ids = None
        if span_of is not None and (ex is None or value > ex[0]):
            ids = self._ids.dns(span_of) if dns else self._ids.flow(span_of)
        h.record(value, time_ns, ids)

    def _lookup(self, lk: DnsLookup) -> None:
        txn = lk.txn
        exe, _ = self._exe(txn.owner)
        rcode = self._rcodes(txn.rcode)
        attrs: tuple[tuple[str, Any], ...] = (
            (A.PROCESS_EXECUTABLE_NAME, exe), (A.DNS_QUESTION_TYPE, self._qtypes(txn.qtype)),
            (A.DNS_RESPONSE_CODE, rcode))
        if is_error(txn.rcode):
            attrs = (*attrs, (A.ERROR_TYPE, rcode.lower()))
        self._add(M_DNS_QUERIES, attrs, 1)
        self._observe(self.hist_stream(M_DNS_DURATION, attrs), txn.duration_s, txn.end_ns,
                      txn.txn_id, dns=True)

    # ---- collection (reader threads) -----------------------------------------------------
    def _collect(self, reader: MetricReader, timeout_millis: float = 10_000,
                 **_kw: Any) -> MetricsData:
        """The MetricsData for one reader, in its temporality.

        A cumulative stream that a reader has not seen before is given to it at zero first,
        and with its real value from the next collection on: Prometheus-style stores compute
        rate() and increase() from consecutive samples, so a series whose first sample
        already held its first increments would never show them."""
        delta = reader._instrument_class_temporality.get(_Counter) == \
            AggregationTemporality.DELTA
        hist_delta = reader._instrument_class_temporality.get(_Histogram) == \
            AggregationTemporality.DELTA
        now = self._clock()
        rid = id(reader)
        last = self._last.setdefault(rid, {})
        seen = self._seen.setdefault(rid, set())
        start = self._last_ns.get(rid, self._start_ns) if delta else self._start_ns
        hist_start = self._last_ns.get(rid, self._start_ns) if hist_delta else self._start_ns
        temporality = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
        htemp = AggregationTemporality.DELTA if hist_delta else AggregationTemporality.CUMULATIVE
        metrics: list[Metric] = []
        with self._lock:
            sums: dict[_Def, list[NumberDataPoint]] = {}
            for st in self._sums:
                value = st.value
                if delta:
                    v = value - last.get(st, 0)
                    last[st] = value
                elif st in seen:
                    v = value
                else:  # first time this reader sees it: zero, see _collect's docstring
                    v = 0
                    seen.add(st)
                if v or not delta:
                    sums.setdefault(st.d, []).append(
                        NumberDataPoint(dict(st.attrs), start, now, v))
            hists: dict[_Def, list[HistogramDataPoint]] = {}
            for h in self._hists:
                if not h.count:
                    continue  # made with its pair, never observed (e.g. no RTT for UDP)
                if not hist_delta and h not in seen:
                    seen.add(h)
                    hists.setdefault(h.d, []).append(HistogramDataPoint(
                        dict(h.attrs), hist_start, now, 0, 0.0, [0] * len(h.counts),
                        h.d.bounds, 0.0, 0.0, []))
                    continue  # the exemplar stays for the next interval
                hists.setdefault(h.d, []).append(self._hist_point(
                    h, hist_start, now, last if hist_delta else None))
                h.exemplar = None  # one exemplar per point and interval
        self._last_ns[rid] = now
        for d in SUMS:
            if d in sums:
                metrics.append(Metric(d.name, d.description, d.unit,
                                      Sum(sums[d], temporality, is_monotonic=True)))
        for d in HISTOGRAMS:
            if d in hists:
                metrics.append(Metric(d.name, d.description, d.unit, Histogram(hists[d], htemp)))
        metrics.extend(self._agent_metrics(start, now, delta, last))
        return MetricsData([ResourceMetrics(self.resource, [ScopeMetrics(_SCOPE, metrics, "")],
                                            "")])

    @staticmethod
    def _hist_point(h: _Hist, start: int, now: int,
                    last: dict[object, Any] | None) -> HistogramDataPoint:
        counts, count, total = list(h.counts), h.count, h.sum
        if last is not None:  # delta: minus what this reader was given last time
            prev = last.get(h)
            last[h] = (counts, count, total)
            if prev is not None:
                counts = [a - b for a, b in zip(counts, prev[0], strict=True)]
                count, total = count - prev[1], total - prev[2]
        exemplars = []
        if h.exemplar is not None:
            value, t, ids = h.exemplar
            trace_id, span_id = ids if ids is not None else (None, None)
            exemplars.append(Exemplar({}, value, t, span_id=span_id, trace_id=trace_id))
        return HistogramDataPoint(dict(h.attrs), start, now, count, total, counts, h.d.bounds,
                                  h.min if h.count else 0.0, h.max if h.count else 0.0,
                                  exemplars)

    def _agent_metrics(self, start: int, now: int, delta: bool,
                       last: dict[object, Any]) -> list[Metric]:
        if self._agent is None:
            return []
        try:
            values = dict(self._agent())
        except Exception:  # the agent's stats must never break metric export
            return []
        out = []
        for name in sorted(values):
            v = int(values[name])
            full = A.METRIC_AGENT_PREFIX + name
            if is_gauge(name):
                out.append(Metric(full, f"agent self-telemetry: {name}", "",
                                  Gauge([NumberDataPoint({}, start, now, v)])))
                continue
            if delta:
                v, last[("agent", name)] = v - last.get(("agent", name), 0), v
            out.append(Metric(full, f"agent self-telemetry: {name}", "", Sum(
                [NumberDataPoint({}, start, now, v)],
                AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE,
                is_monotonic=True)))
        return out

    # ---- control ------------------------------------------------------------------------
    def counters(self) -> Mapping[str, int]:
        with self._lock:
            return {"pairs": len(self._pairs), "open_flows_live": self._open_flows,
                    "pairs_overflowed": self.pairs_overflowed,
                    "label_overflowed": self._rcodes.overflowed + self._qtypes.overflowed}

    def force_flush(self, timeout_s: float = 30) -> bool:
        ok = True
        for reader in self.readers:
            ok = reader.force_flush(int(timeout_s * 1000)) and ok
        return ok

    def close(self) -> None:
        for reader in self.readers:
            with contextlib.suppress(Exception):  # one failing must not keep the others open
                reader.shutdown()


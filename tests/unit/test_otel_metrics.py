"""Metrics per peer pair (live volume, named pairs, frequency, shape with exemplars), DNS,
detections and agent self-telemetry, produced by the sink for any SDK reader."""

from __future__ import annotations

import json
from dataclasses import replace

from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from otelpeers import attributes as A
from otelpeers.config import ExportConfig, FilesConfig, MetricsConfig, OtlpConfig
from otelpeers.dns.lookups import DnsLookup
from otelpeers.events import Counters, Direction, TcpInfo
from otelpeers.flows import CloseReason, DnsAnnotation, Listener
from otelpeers.ids import SpanIds
from otelpeers.otel.metrics import MetricsSink, build_metric_reader
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import T0, Snapshots, flow, owner

IDS = SpanIds(b"m" * 16)


def sink(reader=None, **kw):  # noqa: ANN001, ANN201
    reader = reader or InMemoryMetricReader()
    return reader, MetricsSink(reader, Resource({A.HOST_NAME: "h"}), ids=IDS, **kw)


def metrics(reader) -> dict:  # noqa: ANN001
    out = {}
    for rm in reader.get_metrics_data().resource_metrics:
        assert rm.resource.attributes[A.SERVICE_NAME] == "otelpeers"
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = m
    return out


def settle(reader) -> None:  # noqa: ANN001
    """One collection: streams new to the reader are given at zero first (the sink's rule
    for Prometheus-style stores, tested below); after it they show their real values."""
    reader.get_metrics_data()


def points(reader) -> dict:  # noqa: ANN001
    return {name: {tuple(sorted(p.attributes.items())): p for p in m.data.data_points}
            for name, m in metrics(reader).items()}


def value(reader, name: str, **attrs) -> int:  # noqa: ANN001
    """Sum of the points of name whose attributes include attrs."""
    want = {k.replace("__", "."): v for k, v in attrs.items()}
    return sum(p.value for key, p in points(reader)[name].items()
               if all(dict(key).get(k) == v for k, v in want.items()))


def c(out: int, inn: int, pout: int = 1, pin: int = 1) -> Counters:
    return Counters(packets_out=pout, payload_out=out, packets_in=pin, payload_in=inn)


def test_live_volume_adds_up_to_the_span_totals_exactly():
    reader, m = sink()
    snap = Snapshots()
    live = replace(flow("1"), complete=False)
    m.consume(Outputs(progress=[snap.progress(replace(live, counters=c(1000, 50, 3, 2)))]))
    settle(reader)
    assert value(reader, A.METRIC_FLOW_BYTES, network__io__direction="transmit") == 1000
    assert m.counters()["open_flows_live"] == 1
    m.consume(Outputs(progress=[snap.progress(replace(live, counters=c(1000, 50, 3, 2)))]))
    m.consume(Outputs(progress=[snap.progress(replace(live, counters=c(5000, 80, 9, 4)))]))
    assert value(reader, A.METRIC_FLOW_BYTES, network__io__direction="transmit") == 5000
    final = snap.final(replace(flow("1"), counters=c(7000, 90, 12, 5)))  # what the span says
    m.consume(Outputs(flows=[final]))
    settle(reader)
    assert value(reader, A.METRIC_FLOW_BYTES, network__io__direction="transmit") == 7000
    assert value(reader, A.METRIC_FLOW_BYTES, network__io__direction="receive") == 90
    assert value(reader, A.METRIC_FLOW_PACKETS, network__io__direction="transmit") == 12
    assert value(reader, A.METRIC_FLOW_CONNECTIONS, otelpeers__flow__state="opened") == 1
    assert value(reader, A.METRIC_FLOW_CONNECTIONS, otelpeers__flow__state="closed") == 1
    assert m.counters()["open_flows_live"] == 0


def test_named_pairs_outbound_by_dns_name_inbound_by_service_port():
    reader, m = sink()
    named = replace(flow("1", peer="192.0.2.10", peer_port=443),
                    dns=DnsAnnotation(True, "api.example.com", ("api.example.com",), "host",
                                      "t"))
    direct = flow("2", peer="192.0.2.11", peer_port=8443)
    lst = Listener("0.0.0.0", 8080, T0, T0, owner(9, "nginx"))
    inbound = flow("3", direction=Direction.INBOUND, proc=owner(9, "nginx"), peer="10.1.1.1",
                   peer_port=51000, local="10.0.0.2", local_port=8080, listener=lst)
    m.consume(Outputs(flows=[named, direct, inbound]))
    settle(reader)
    conns = points(reader)[A.METRIC_FLOW_CONNECTIONS]
    keys = [dict(k) for k in conns if dict(k)[A.FLOW_STATE] == "closed"]
    by_server = {k[A.SERVER_ADDRESS]: k for k in keys}
    assert by_server["api.example.com"][A.NETWORK_PEER_ADDRESS] == "192.0.2.10"
    assert by_server["api.example.com"][A.SERVER_PORT] == 443
    assert by_server["192.0.2.11"][A.SERVER_PORT] == 8443
    inb = by_server["0.0.0.0"]
    assert inb[A.SERVER_PORT] == 8080 and inb[A.FLOW_DIRECTION] == "inbound"
    assert inb[A.PROCESS_EXECUTABLE_NAME] == "nginx" and inb[A.NETWORK_PEER_ADDRESS] == "10.1.1.1"
    assert value(reader, A.METRIC_PEERS_NEW) == 3


def test_failed_connections_summaries_and_exe_name_from_the_process_table():
    reader, m = sink(describe=lambda tgid: ("curl-8.5", "c0ffee" * 10) if tgid == 4242
                     else None)
    failed = flow("1", close_reason=CloseReason.CONNECT_FAILED, counters=c(0, 0, 1, 0))
    summary = replace(flow("2"), summary=40, complete=False)
    m.consume(Outputs(flows=[failed, summary]))
    settle(reader)
    assert value(reader, A.METRIC_FLOW_CONNECTIONS, otelpeers__flow__state="failed") == 1
    assert value(reader, A.METRIC_FLOW_CONNECTIONS, otelpeers__flow__state="closed") == 40
    assert value(reader, A.METRIC_FLOW_CONNECTIONS, otelpeers__flow__state="opened") == 41
    keys = [dict(k) for k in points(reader)[A.METRIC_FLOW_CONNECTIONS]]
    assert {k[A.PROCESS_EXECUTABLE_NAME] for k in keys} == {"curl-8.5"}
    assert {k[A.CONTAINER_ID] for k in keys} == {"c0ffee" * 10}
    # summaries have no per-connection shape
    assert A.METRIC_FLOW_DURATION in points(reader)
    (dur,) = points(reader)[A.METRIC_FLOW_DURATION].values()
    assert dur.count == 1


def test_histograms_carry_an_exemplar_pointing_at_the_span():
    reader, m = sink()
    fast = flow("1", duration_ns=2_000_000)
    slow = flow("2", duration_ns=9 * 10**9, tcp=TcpInfo(1, 2, 0, 25_000))
    m.consume(Outputs(flows=[fast, slow]))
    settle(reader)
    (dur,) = points(reader)[A.METRIC_FLOW_DURATION].values()
    assert dur.count == 2 and abs(dur.sum - 9.002) < 1e-9 and dur.max == 9.0
    (ex,) = dur.exemplars
    assert ex.value == 9.0 and (ex.trace_id, ex.span_id) == IDS.flow("2")
    rtt = points(reader)[A.METRIC_TCP_SRTT]
    assert sum(p.count for p in rtt.values()) == 2
    size = next(iter(points(reader)[A.METRIC_FLOW_SIZE].values()))
    assert size.sum == 2 * (1200 + 5300)
    # next interval: the exemplar is the new interval's, none when nothing new came
    (dur,) = points(reader)[A.METRIC_FLOW_DURATION].values()
    assert dur.exemplars == [] and dur.count == 2  # cumulative


def test_pair_bound_and_configurable_attributes():
    reader, m = sink(config=MetricsConfig(max_pairs=3,
                                          pair_attributes=(A.PROCESS_EXECUTABLE_NAME,
                                                           A.SERVER_ADDRESS, A.SERVER_PORT)))
    m.consume(Outputs(flows=[flow(f"{i + 1:x}", peer=f"10.0.0.{i}") for i in range(10)]))
    settle(reader)
    conns = points(reader)[A.METRIC_FLOW_CONNECTIONS]
    servers = {dict(k)[A.SERVER_ADDRESS] for k in conns}
    assert servers == {"10.0.0.0", "10.0.0.1", "10.0.0.2", "other"}
    assert all(A.NETWORK_PEER_ADDRESS not in dict(k) for k in conns)
    assert m.counters()["pairs_overflowed"] == 7


def _txn(rcode: str, ms: int, name: str = "a.example", comm: str = "curl"):  # noqa: ANN202
    from otelpeers.dns.transactions import DnsTransaction

    return DnsTransaction(
        txn_id=f"t-{name}-{rcode}-{ms}", cookie=1, owner=owner(5, comm), resolver_addr="10.0.0.53",
        resolver_port=53, client_addr="10.0.0.2", client_port=5353, question_name=name,
        qtype="A", rcode=rcode, answers=(), addresses=(), cname_chain=(), ttl_min=None,
        start_ns=T0, end_ns=T0 + ms * 1_000_000, retries=0, truncated=False,
        timed_out=rcode == "TIMEOUT", protocol="udp")


def test_dns_per_process_with_latency_exemplar_and_detections():
    from otelpeers.detect.model import Actor, ActorKind, Detection
    from otelpeers.detect.rules import meta

    reader, m = sink()
    slow = _txn("NXDOMAIN", 40)
    m.consume(Outputs(dns=[DnsLookup(_txn("NOERROR", 2)), DnsLookup(slow),
                           DnsLookup(_txn("TIMEOUT", 5000, comm="python3"))]))
    settle(reader)
    pts = points(reader)  # one collection: exemplars are per interval
    q = pts[A.METRIC_DNS_QUERIES]
    assert {(dict(k)[A.PROCESS_EXECUTABLE_NAME], dict(k)[A.DNS_RESPONSE_CODE])
            for k in q} == {("curl", "NOERROR"), ("curl", "NXDOMAIN"), ("python3", "TIMEOUT")}
    timeout = next(p for k, p in pts[A.METRIC_DNS_LOOKUP_DURATION].items()
                   if dict(k)[A.DNS_RESPONSE_CODE] == "TIMEOUT")
    assert dict(timeout.attributes)[A.ERROR_TYPE] == "timeout" and timeout.sum == 5.0
    nx = next(p for k, p in pts[A.METRIC_DNS_LOOKUP_DURATION].items()
              if dict(k)[A.DNS_RESPONSE_CODE] == "NXDOMAIN")
    assert (nx.exemplars[0].trace_id, nx.exemplars[0].span_id) == IDS.dns(slow.txn_id)
    actor = Actor(ActorKind.PROCESS, "curl", executable="curl")
    d = Detection(meta.DGA, T0, 0.9, meta.DGA.severity, "x", actor, None)
    m.consume(Outputs(detections=[d, d]))
    settle(reader)
    assert value(reader, A.METRIC_DETECTIONS, security_rule__name="dga",
                 otelpeers__detection__severity="high") == 2


def test_agent_counters_and_gauges_appear_when_they_appear():
    stats = {"source.kernel_drops": 3, "export.queue_size": 7}
    reader, m = sink(agent_counters=lambda: dict(stats))
    ms = metrics(reader)
    assert ms["otelpeers.agent.source.kernel_drops"].data.is_monotonic
    assert ms["otelpeers.agent.export.queue_size"].data.__class__.__name__ == "Gauge"
    stats["source.kernel_drops.ringbuf_tcp_close"] = 5  # a new slot, after start
    ms = metrics(reader)
    assert ms["otelpeers.agent.source.kernel_drops.ringbuf_tcp_close"].data.data_points[
        0].value == 5


def test_delta_temporality_per_reader():
    from opentelemetry.sdk.metrics import Counter, Histogram

    delta = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
    reader, m = sink(InMemoryMetricReader(preferred_temporality=delta))
    m.consume(Outputs(flows=[flow("1", counters=c(100, 0))]))
    assert value(reader, A.METRIC_FLOW_BYTES, network__io__direction="transmit") == 100
    m.consume(Outputs(flows=[flow("2", counters=c(30, 0))]))
    ms = metrics(reader)
    assert ms[A.METRIC_FLOW_BYTES].data.aggregation_temporality == AggregationTemporality.DELTA
    tx = [p for p in ms[A.METRIC_FLOW_BYTES].data.data_points
          if p.attributes[A.NETWORK_IO_DIRECTION] == "transmit"]
    assert [p.value for p in tx] == [30]
    ms = metrics(reader)  # nothing new: no sum points, a histogram point of count 0
    assert A.METRIC_FLOW_BYTES not in ms
    (dur,) = ms[A.METRIC_FLOW_DURATION].data.data_points
    assert dur.count == 0


def test_metrics_file_is_otlp_json(tmp_path):
    reader = build_metric_reader(ExportConfig(files=FilesConfig(directory=str(tmp_path))))
    _, m = sink(reader)
    m.consume(Outputs(flows=[flow("1")]))
    m.force_flush()  # the new streams, at zero
    m.close()  # the periodic reader exports once more at shutdown: the real values
    lines = (tmp_path / "otelpeers-metrics.jsonl").read_text().splitlines()
    doc = json.loads(lines[-1])
    names = {mt["name"] for rm in doc["resourceMetrics"] for sm in rm["scopeMetrics"]
             for mt in sm["metrics"]}
    assert {A.METRIC_FLOW_BYTES, A.METRIC_FLOW_DURATION} <= names
    dp = next(mt for rm in doc["resourceMetrics"] for sm in rm["scopeMetrics"]
              for mt in sm["metrics"] if mt["name"] == A.METRIC_FLOW_DURATION)
    ex = dp["histogram"]["dataPoints"][0]["exemplars"][0]
    assert ex["traceId"] == f"{IDS.flow('1')[0]:032x}"  # hex, as OTLP/JSON wants


def test_metric_reader_follows_span_endpoint_rules(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", raising=False)
    assert build_metric_reader(ExportConfig(files=FilesConfig(enabled=False))) is None
    r = build_metric_reader(ExportConfig(otlp=OtlpConfig(endpoint="http://127.0.0.1:1")))
    assert r is not None
    r.shutdown()


def test_prometheus_endpoint_serves_the_pair_bytes():
    import socket
    import urllib.request

    from otelpeers.config import PrometheusConfig
    from otelpeers.otel.metrics import build_prometheus_reader

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reader = build_prometheus_reader(ExportConfig(
        prometheus=PrometheusConfig(enabled=True, address="127.0.0.1", port=port)))
    _, m = sink(reader)
    try:
        m.consume(Outputs(flows=[flow("1", counters=c(4321, 0))]))
        url = f"http://127.0.0.1:{port}/metrics"
        first = urllib.request.urlopen(url, timeout=5).read()  # new streams: zero first
        body = urllib.request.urlopen(url, timeout=5).read()
    finally:
        m.close()
    lines = [ln for ln in body.decode().splitlines()
             if ln.startswith("otelpeers_flow_bytes") and 'network_io_direction="transmit"' in ln]
    assert lines and float(lines[0].rsplit(" ", 1)[1]) == 4321.0
    assert 'server_address="93.184.216.34"' in lines[0]
    zero = [ln for ln in first.decode().splitlines() if ln.startswith(lines[0].rsplit(" ", 1)[0])]
    assert zero and float(zero[0].rsplit(" ", 1)[1]) == 0.0


def test_new_streams_start_at_zero_so_rates_see_their_first_increments():
    reader, m = sink()
    m.consume(Outputs(flows=[flow("1", counters=c(100, 0))]))
    assert value(reader, A.METRIC_FLOW_BYTES, network__io__direction="transmit") == 0
    assert value(reader, A.METRIC_FLOW_BYTES, network__io__direction="transmit") == 100
    m.consume(Outputs(flows=[flow("2", counters=c(30, 0), peer="192.0.2.1")]))
    tx = {dict(k)[A.NETWORK_PEER_ADDRESS]: p.value
          for k, p in points(reader)[A.METRIC_FLOW_BYTES].items()
          if dict(k)[A.NETWORK_IO_DIRECTION] == "transmit"}
    assert tx == {"93.184.216.34": 100, "192.0.2.1": 0}  # only the new one starts at zero

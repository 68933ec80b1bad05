"""Per-peer volume metrics and agent self-telemetry."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from otelpeers import attributes as A
from otelpeers.config import ExportConfig, FilesConfig, OtlpConfig
from otelpeers.events import Counters, Direction
from otelpeers.flows import CloseReason
from otelpeers.otel.metrics import FlowMetrics, build_metric_reader
from otelpeers.otel.synthetic import flow, owner


def points(reader):
    out = {}
    for rm in reader.get_metrics_data().resource_metrics:
        assert rm.resource.attributes[A.SERVICE_NAME] == "otelpeers"
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = {tuple(sorted(p.attributes.items())): p.value
                               for p in m.data.data_points}
    return out


def test_bytes_and_connections_per_process_and_peer():
    reader = InMemoryMetricReader()
    stats = {"ringbuf_drops": 3, "decode_errors": 1}
    fm = FlowMetrics(reader, Resource({A.HOST_NAME: "h"}), agent_counters=lambda: stats)
    c = Counters(payload_out=100, payload_in=1000)
    fm.record_flows([flow("1", counters=c), flow("2", counters=c),
                     flow("3", counters=c, close_reason=CloseReason.CONNECT_FAILED),
                     flow("4", direction=Direction.INBOUND, proc=owner(2, "nginx"),
                          peer="10.0.0.9", counters=c)])
    stats["ringbuf_drops"] = 5
    p = points(reader)
    base = ((A.NETWORK_PEER_ADDRESS, "93.184.216.34"), (A.NETWORK_TRANSPORT, "tcp"),
            (A.PROCESS_EXECUTABLE_NAME, "curl"))
    tx = tuple(sorted((*base, (A.NETWORK_IO_DIRECTION, "transmit"))))
    assert p[A.METRIC_FLOW_BYTES][tx] == 300
    conns = p[A.METRIC_FLOW_CONNECTIONS]
    ok = tuple(sorted((*base, (A.FLOW_DIRECTION, "outbound"), (A.FLOW_CLOSE_REASON, "closed"))))
    assert conns[ok] == 2
    assert sum(conns.values()) == 4
    assert p["otelpeers.agent.ringbuf_drops"] == {(): 5}
    assert p["otelpeers.agent.decode_errors"] == {(): 1}
    fm.shutdown()


def test_peer_cardinality_is_bounded():
    reader = InMemoryMetricReader()
    fm = FlowMetrics(reader, Resource({}), max_pairs=3)
    fm.record_flows(flow(f"{i + 1:x}", peer=f"10.0.0.{i}") for i in range(10))
    conns = points(reader)[A.METRIC_FLOW_CONNECTIONS]
    peers = {dict(k)[A.NETWORK_PEER_ADDRESS] for k in conns}
    assert peers == {"10.0.0.0", "10.0.0.1", "10.0.0.2", "other"}
    assert fm.pairs_overflowed == 7
    fm.shutdown()


def test_metric_reader_follows_span_endpoint_rules(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert build_metric_reader(ExportConfig(files=FilesConfig(enabled=False))) is None
    r = build_metric_reader(ExportConfig(otlp=OtlpConfig(endpoint="http://127.0.0.1:1")))
    assert r is not None
    r.shutdown()

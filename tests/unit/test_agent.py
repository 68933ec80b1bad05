"""The agent as built for `run` and `replay`, driven by the one loop from a recording-like
event list: stages, sinks, counters."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from otelpeers.agent import build_agent
from otelpeers.config import Config
from otelpeers.drive import EventClock, drive
from otelpeers.events import Counters, Direction, Kind, Owner, ProcessEvent, SocketEvent
from otelpeers.otel.metrics import MetricsSink
from otelpeers.pipeline import Outputs
from otelpeers.recording import RecordingWriter
from otelpeers.sources import RecordingSource
from otelpeers.testing.dns_wire import packet, query_wire, response_wire

CURL = Owner(77, 77, 0, 0, 1, "curl")
S = 10**9


class Collect:
    name = "collect"

    def __init__(self) -> None:
        self.outputs: list[Outputs] = []

    def consume(self, out: Outputs) -> None:
        self.outputs.append(out)

    @property
    def flows(self):  # noqa: ANN201
        return [f for o in self.outputs for f in o.flows]

    @property
    def dns(self):  # noqa: ANN201
        return [d for o in self.outputs for d in o.dns]

    def counters(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


def lookup_and_connect() -> list:
    q = query_wire("api.example.com", "A", msg_id=7)
    r = response_wire("api.example.com", "A", msg_id=7, cnames=["edge.example.net"],
                      addresses=["192.0.2.10"], ttl=60)
    return [
        packet(q, cookie=5, outbound=True, time_ns=1 * S, owner=CURL),
        packet(r, cookie=5, outbound=False, time_ns=int(1.01 * S), owner=CURL),
        ProcessEvent(kind=Kind.FILE_OPEN, time_ns=int(1.5 * S), tgid=77, pid=77, uid=0, gid=0,
                     cgroup_id=1, comm="curl", path="/root/.aws/credentials"),
        SocketEvent(kind=Kind.CONNECT, time_ns=2 * S, cookie=9, owner=CURL,
                    peer_addr="192.0.2.10", peer_port=443, direction=Direction.OUTBOUND),
        SocketEvent(kind=Kind.ESTABLISHED, time_ns=int(2.1 * S), cookie=9, owner=CURL,
                    local_addr="10.0.0.1", local_port=40000, peer_addr="192.0.2.10",
                    peer_port=443, direction=Direction.OUTBOUND),
        SocketEvent(kind=Kind.TCP_CLOSE, time_ns=3 * S, cookie=9, old_state=4, new_state=7,
                    counters=Counters(5, 900, 700, 4, 2000, 1800)),
    ]


def record(path: Path, events: list) -> None:
    w = RecordingWriter(path)
    for ev in events:
        w.write(ev)
    w.close()


def test_replay_joins_dns_files_and_flows(tmp_path: Path) -> None:
    """A resolution, a sensitive open and a connection, replayed through the real stages."""
    got = Collect()
    agent = build_agent(Config(), live_host=False, export=False, extra_sinks=[got])
    record(tmp_path / "r.jsonl", lookup_and_connect())
    drive(RecordingSource(tmp_path / "r.jsonl"), agent.pipeline, EventClock())
    (flow,) = [f for f in got.flows if f.cookie == 9]
    assert flow.dns is not None and flow.dns.resolved
    assert flow.dns.question_name == "api.example.com" and flow.dns.how == "same_process"
    assert list(flow.dns.cname_chain) == ["api.example.com", "edge.example.net"]
    assert [f.path for f in flow.files] == ["/root/.aws/credentials"]
    (lk,) = got.dns
    assert flow.dns.txn_id == lk.txn.txn_id  # the link names this lookup's span
    assert agent.graph is not None
    kinds = {e.kind.value for e in agent.graph.snapshot().edges}
    assert {"resolved", "cname_of", "accessed_file"} <= kinds


def test_replay_records_dns_latency_metrics(tmp_path: Path) -> None:
    """The same loop as `run`: a replay with export records DNS lookup durations too."""
    reader = InMemoryMetricReader()
    agent = build_agent(Config(), live_host=False, export=False)
    metrics = MetricsSink(reader, Resource.get_empty(), agent_counters=agent.counters)
    agent.pipeline.sinks.append(metrics)
    record(tmp_path / "r.jsonl", lookup_and_connect())
    drive(RecordingSource(tmp_path / "r.jsonl"), agent.pipeline, EventClock())
    reader.get_metrics_data()  # new streams are given at zero first
    data = reader.get_metrics_data()
    by_name = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics
               for m in sm.metrics}
    (point,) = by_name["dns.lookup.duration"].data.data_points
    assert point.count == 1 and abs(point.sum - 0.01) < 1e-6
    assert point.attributes["dns.response_code"] == "NOERROR"


def test_agent_counters_appearing_later_are_exported() -> None:
    """Counters that first appear after start (a kernel drop slot, a DNS rcode) still get an
    instrument, under their stable prefixed names."""
    agent = build_agent(Config(), live_host=False, export=False)
    extra: dict[str, int] = {}

    class LateSource:
        def counters(self) -> dict[str, int]:
            return dict(extra)

    agent.sources.append(LateSource())  # type: ignore[arg-type]
    reader = InMemoryMetricReader()
    metrics = MetricsSink(reader, Resource.get_empty(), agent_counters=agent.counters)
    extra["kernel_drops.ringbuf_tcp_close"] = 42
    extra["kernel_drops"] = 42
    metrics.consume(Outputs())  # each round syncs the instruments
    data = reader.get_metrics_data()
    points = {m.name: m.data.data_points[0].value
              for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              if m.name.startswith("otelpeers.agent.")}
    assert points["otelpeers.agent.source.kernel_drops.ringbuf_tcp_close"] == 42
    assert points["otelpeers.agent.source.kernel_drops"] == 42
    assert "otelpeers.agent.dns.parse.errors" in points or any(
        n.startswith("otelpeers.agent.dns.") for n in points)
    assert "otelpeers.agent.flows.flows_completed" in points
    metrics.close()

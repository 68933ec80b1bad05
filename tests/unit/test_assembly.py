"""The assembled agent: what `run` and `replay` build, fed from a recording."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from otelpeers.assembly import SOURCE_COUNTERS, assemble
from otelpeers.cli import replay_into
from otelpeers.config import Config
from otelpeers.dns.synth import packet, query_wire, response_wire
from otelpeers.events import Counters, Direction, Kind, Owner, ProcessEvent, SocketEvent
from otelpeers.otel.metrics import FlowMetrics

CURL = Owner(77, 77, 0, 0, 1, "curl")
S = 10**9


def test_agent_counters_name_the_source_counters_before_the_source_exists() -> None:
    agent = assemble(Config(), live_host=False, export=False)
    names = agent.agent_counters()
    assert set(SOURCE_COUNTERS) <= set(names)
    reader = InMemoryMetricReader()
    metrics = FlowMetrics(reader, Resource.get_empty(), agent_counters=agent.agent_counters)
    # The source's real values arrive later (run_live appends them) and win over the zeros.
    agent.counters.append(lambda: {"source.kernel_drops": 42})
    data = reader.get_metrics_data()
    points = {m.name: m.data.data_points[0].value
              for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              if m.name.startswith("otelpeers.agent.source.")}
    assert points["otelpeers.agent.source.kernel_drops"] == 42
    metrics.shutdown()


def test_replay_joins_dns_files_and_flows(tmp_path: Path) -> None:
    """A resolution, a sensitive open and a connection, replayed through the real stages."""
    got = []

    class Sink:
        def export_flows(self, records):  # noqa: ANN001, ANN202
            got.extend(records)

    agent = assemble(Config(), live_host=False, export=False, extra_sinks=[Sink()])
    q = query_wire("api.example.com", "A", msg_id=7)
    r = response_wire("api.example.com", "A", msg_id=7, cnames=["edge.example.net"],
                      addresses=["192.0.2.10"], ttl=60)
    events = [
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
    replay_into(agent.pipeline, events)
    (flow,) = [f for f in got if f.cookie == 9]
    assert flow.dns is not None and flow.dns.resolved
    assert flow.dns.question_name == "api.example.com" and flow.dns.how == "same_process"
    assert list(flow.dns.cname_chain) == ["api.example.com", "edge.example.net"]
    assert [f.path for f in flow.files] == ["/root/.aws/credentials"]
    snap = agent.graph.graph.snapshot()
    kinds = {e.kind.value if hasattr(e.kind, "value") else e.kind for e in snap.edges}
    assert {"resolved", "cname_of", "accessed_file"} <= kinds

"""The relationship graph built from flows (real FlowTable output), DNS transactions
(real packets through the DNS tracker) and process context."""

from __future__ import annotations

import socket
import time

import pytest

from otelpeers.config import DnsConfig
from otelpeers.dns.lookups import DnsLookup
from otelpeers.dns.tracker import DnsTracker
from otelpeers.dns.transactions import DnsTransaction
from otelpeers.events import Counters, Direction, Kind, Owner, SocketEvent
from otelpeers.flows import CloseReason, FlowRecord, FlowTable
from otelpeers.graph import EdgeKind, GraphSink, NodeKind, RelationshipGraph
from otelpeers.graph.model import MAX_KEY
from otelpeers.pipeline import Outputs
from otelpeers.process.table import ProcessInfo
from otelpeers.testing.dns_wire import packet, query_wire, response_wire

S = 10**9
MS = 10**6
T0 = 1_700_000_000 * S
CURL = Owner(100, 100, 1000, 1000, 7, "curl")
NGINX = Owner(200, 200, 33, 33, 8, "nginx")


def ev(kind: Kind, t: float, cookie: int, **kw: object) -> SocketEvent:
    return SocketEvent(kind=kind, time_ns=T0 + int(t * S), cookie=cookie, **kw)  # type: ignore[arg-type]


def outbound_flow(t: FlowTable, cookie: int, peer: str, port: int = 443, at: float = 1.0,
                  owner: Owner = CURL, lport: int = 40000) -> FlowRecord:
    t.process(ev(Kind.CONNECT, at, cookie, owner=owner, peer_addr=peer, peer_port=port,
                 direction=Direction.OUTBOUND))
    t.process(ev(Kind.ESTABLISHED, at + 0.01, cookie, owner=owner, local_addr="10.0.0.1",
                 local_port=lport, peer_addr=peer, peer_port=port,
                 direction=Direction.OUTBOUND))
    t.process(ev(Kind.SOCK_STATS, at + 0.5, cookie, counters=Counters(3, 300, 120, 2, 900, 800)))
    (r,) = t.process(ev(Kind.TCP_CLOSE, at + 1, cookie, old_state=4, new_state=7))
    return r


def local_pair(t: FlowTable) -> tuple[FlowRecord, FlowRecord]:
    """curl connects to nginx on this host: two records linked by local_peer_flow_id."""
    t.process(ev(Kind.SOCK_CREATE, 0, 50, owner=NGINX))
    t.process(ev(Kind.BIND, 0.1, 50, owner=NGINX, local_addr="0.0.0.0", local_port=80))
    t.process(ev(Kind.LISTEN, 0.2, 0, owner=NGINX, local_addr="0.0.0.0", local_port=80))
    t.process(ev(Kind.CONNECT, 1, 1, owner=CURL, peer_addr="127.0.0.1", peer_port=80,
                 direction=Direction.OUTBOUND))
    t.process(ev(Kind.ESTABLISHED, 1.1, 1, owner=CURL, local_addr="127.0.0.1",
                 local_port=40000, peer_addr="127.0.0.1", peer_port=80,
                 direction=Direction.OUTBOUND))
    t.process(ev(Kind.ESTABLISHED, 1.2, 51, local_addr="127.0.0.1", local_port=80,
                 peer_addr="127.0.0.1", peer_port=40000, direction=Direction.INBOUND,
                 owner=Owner(200, 200, 33, 33, 8, "nginx", joined=True)))
    t.process(ev(Kind.SOCK_STATS, 1.5, 1, counters=Counters(2, 200, 77, 2, 500, 400)))
    (server,) = t.process(ev(Kind.TCP_CLOSE, 2, 51, old_state=9, new_state=7))
    (client,) = t.process(ev(Kind.TCP_CLOSE, 2.1, 1, old_state=6, new_state=7))
    return client, server


def info(pid: int, comm: str, *, start: int = 1000, ppid: int = 1, uid: int = 1000,
         exe: str | None = None, container: str | None = None,
         ancestry: tuple[tuple[int, str], ...] = ()) -> ProcessInfo:
    return ProcessInfo(
        pid=pid, ppid=ppid, start_time_ticks=start, comm=comm, exe_path=exe,
        exe_name=exe.rsplit("/", 1)[-1] if exe else None, command_line=f"{comm} --x",
        command_line_truncated=False, uid=uid, euid=uid, gid=uid, egid=uid,
        user_name="alice", real_user_name="alice", group_name="alice", vpid=None,
        creation_time_ns=T0, cgroup_path="/", cgroup_line="0::/", container_id=container,
        container_runtime="containerd" if container else None, pid_ns=None, net_ns=None,
        mnt_ns=None, exe_sha256=None, ancestry=ancestry)


def lookup_txn(name: str, cnames: list[str], addrs: list[str], at: float = 0.5,
               msg_id: int = 7, owner: Owner = CURL) -> DnsTransaction:
    tr = DnsTracker(DnsConfig())
    tr.handle(packet(query_wire(name, "A", msg_id), time_ns=T0 + int(at * S), owner=owner))
    (txn,) = tr.handle(packet(response_wire(name, "A", msg_id, cnames=cnames, addresses=addrs),
                              time_ns=T0 + int(at * S) + 5 * MS, outbound=False))
    return txn


def edges_of(g: RelationshipGraph, kind: EdgeKind) -> list:
    return [e for e in g.snapshot().edges if e.kind == kind]


def node_ids(g: RelationshipGraph, kind: NodeKind) -> set[str]:
    return {n.id for n in g.snapshot().nodes if n.kind == kind}


def test_outbound_flow_with_process_context() -> None:
    g = RelationshipGraph()
    r = outbound_flow(FlowTable(), 1, "192.0.2.7")
    g.add_flow(r, info(100, "curl", exe="/usr/bin/curl", container="c" * 64,
                       ancestry=((90, "bash"), (1, "systemd"))))
    snap = g.snapshot()
    proc = "process:100@1000"
    (conn,) = edges_of(g, EdgeKind.CONNECTED_TO)
    assert (conn.source, conn.target) == (proc, "remote_endpoint:192.0.2.7:443/tcp")
    assert (conn.bytes_sent, conn.bytes_received) == (120, 800)
    assert (conn.first_seen_ns, conn.last_seen_ns) == (r.start_ns, r.end_ns)
    pairs = {(e.kind, e.source, e.target) for e in snap.edges}
    assert (EdgeKind.EXECUTED, proc, "binary:/usr/bin/curl") in pairs
    assert (EdgeKind.RUNS_AS, proc, "user:1000") in pairs
    assert (EdgeKind.IN_CONTAINER, proc, "container:" + "c" * 64) in pairs
    assert (EdgeKind.SPAWNED, "process:90:bash", proc) in pairs
    assert (EdgeKind.SPAWNED, "process:1:systemd", "process:90:bash") in pairs
    user = next(n for n in snap.nodes if n.id == "user:1000")
    assert user.label == "alice"
    # Non-traffic edges carry no byte counts.
    assert all(e.bytes_sent is None for e in snap.edges if e.kind != EdgeKind.CONNECTED_TO)


def test_repeated_flows_aggregate_on_one_edge_and_reuse_the_process_node() -> None:
    g = RelationshipGraph()
    t = FlowTable()
    g.add_flow(outbound_flow(t, 1, "192.0.2.7", at=1), info(100, "curl"))
    g.add_flow(outbound_flow(t, 2, "192.0.2.7", at=5, lport=40001))  # no context this time
    (conn,) = edges_of(g, EdgeKind.CONNECTED_TO)
    assert conn.count == 2 and conn.bytes_sent == 240
    assert conn.first_seen_ns == T0 + 1 * S and conn.last_seen_ns == T0 + 6 * S
    assert node_ids(g, NodeKind.PROCESS) == {"process:100@1000"}


def test_process_info_for_another_pid_is_not_used() -> None:
    g = RelationshipGraph()
    g.add_flow(outbound_flow(FlowTable(), 1, "192.0.2.7"), info(999, "other"))
    assert node_ids(g, NodeKind.PROCESS) == {"process:100:curl"}
    assert g.stats["process_info_mismatch"] == 1


def test_local_pair_becomes_one_process_to_process_edge() -> None:
    client, server = local_pair(FlowTable())
    assert client.local_peer_flow_id == server.flow_id  # the flow table linked them
    for order in ((server, client), (client, server)):
        g = RelationshipGraph()
        for r in order:
            g.add_flow(r)
        (conn,) = edges_of(g, EdgeKind.CONNECTED_TO)
        assert (conn.source, conn.target) == ("process:100:curl", "process:200:nginx")
        assert (conn.bytes_sent, conn.bytes_received) == (77, 400)
        assert dict(conn.attrs)["server_port"] == 80
        assert node_ids(g, NodeKind.REMOTE_ENDPOINT) == set()  # no dangling endpoints
        assert edges_of(g, EdgeKind.ACCEPTED_FROM) == []
        (lst,) = edges_of(g, EdgeKind.LISTENED_ON)
        assert (lst.source, lst.target) == ("process:200:nginx",
                                            "local_endpoint:0.0.0.0:80/tcp")
        assert g.stats["local_pairs_merged"] == 1 and g.stats["local_pairs_pending"] == 0


def test_unmatched_local_end_is_added_after_the_wait_or_on_flush() -> None:
    client, _server = local_pair(FlowTable())
    g = RelationshipGraph(pair_wait_ns=10 * S)
    g.add_flow(client)
    assert g.stats["local_pairs_pending"] == 1 and edges_of(g, EdgeKind.CONNECTED_TO) == []
    g.add_flow(outbound_flow(FlowTable(), 9, "192.0.2.9", at=30))  # time moves on
    assert g.stats["local_pairs_unmatched"] == 1 and g.stats["local_pairs_pending"] == 0
    assert "remote_endpoint:127.0.0.1:80/tcp" in node_ids(g, NodeKind.REMOTE_ENDPOINT)
    g2 = RelationshipGraph()
    g2.add_flow(client)
    assert g2.flush_pending() == 1 and len(edges_of(g2, EdgeKind.CONNECTED_TO)) == 1


def test_inbound_from_remote_peer() -> None:
    t = FlowTable()
    t.process(ev(Kind.BIND, 0.1, 50, owner=NGINX, local_addr="0.0.0.0", local_port=80))
    t.process(ev(Kind.LISTEN, 0.2, 0, owner=NGINX, local_addr="0.0.0.0", local_port=80))
    t.process(ev(Kind.ESTABLISHED, 1, 51, local_addr="10.0.0.1", local_port=80,
                 peer_addr="198.51.100.4", peer_port=51515, direction=Direction.INBOUND,
                 owner=Owner(200, 200, 33, 33, 8, "nginx", joined=True)))
    (r,) = t.process(ev(Kind.TCP_CLOSE, 2, 51, old_state=9, new_state=7))
    g = RelationshipGraph()
    g.add_flow(r)
    (acc,) = edges_of(g, EdgeKind.ACCEPTED_FROM)
    # The ephemeral client port is not part of the peer's identity.
    assert (acc.source, acc.target) == ("local_endpoint:0.0.0.0:80/tcp",
                                        "remote_endpoint:198.51.100.4")
    (lst,) = edges_of(g, EdgeKind.LISTENED_ON)
    assert lst.source == "process:200:nginx" and dict(lst.attrs)["listening"] is True


def test_dns_resolved_cname_chain_in_order_and_resolves_to() -> None:
    g = RelationshipGraph()
    txn = lookup_txn("www.example.com", ["a.cdn.example.net", "b.edge.example.org"],
                     ["192.0.2.7", "192.0.2.8"])
    assert txn.cname_chain[0] == "www.example.com"
    g.add_dns(txn)
    snap = g.snapshot()
    kinds = [(e.kind, e.source, e.target) for e in snap.edges
             if e.kind in (EdgeKind.CNAME_OF, EdgeKind.RESOLVES_TO, EdgeKind.RESOLVED)]
    assert kinds == [
        (EdgeKind.RESOLVED, "process:100:curl", "domain:www.example.com"),
        (EdgeKind.CNAME_OF, "domain:www.example.com", "domain:a.cdn.example.net"),
        (EdgeKind.CNAME_OF, "domain:a.cdn.example.net", "domain:b.edge.example.org"),
        (EdgeKind.RESOLVES_TO, "domain:b.edge.example.org", "remote_endpoint:192.0.2.7"),
        (EdgeKind.RESOLVES_TO, "domain:b.edge.example.org", "remote_endpoint:192.0.2.8"),
    ]
    resolved = next(e for e in snap.edges if e.kind == EdgeKind.RESOLVED)
    assert dict(resolved.attrs) == {"qtype": "A", "rcode": "NOERROR", "failures": 0}


def test_failed_lookup_counts_failures_and_has_no_addresses() -> None:
    g = RelationshipGraph()
    tr = DnsTracker(DnsConfig(query_timeout_s=1))
    tr.handle(packet(query_wire("nx.example", "A", 9), time_ns=T0, owner=CURL))
    (txn,) = tr.expire(T0 + 5 * S)
    g.add_dns(txn)
    (resolved,) = edges_of(g, EdgeKind.RESOLVED)
    assert dict(resolved.attrs)["rcode"] == "TIMEOUT" and dict(resolved.attrs)["failures"] == 1
    assert edges_of(g, EdgeKind.RESOLVES_TO) == []


def test_stage_feeds_flows_and_transactions_with_lookup() -> None:
    seen: list[int] = []

    def lookup(tgid: int) -> ProcessInfo | None:
        seen.append(tgid)
        return info(100, "curl", exe="/usr/bin/curl") if tgid == 100 else None

    stage = GraphSink(RelationshipGraph(), process_lookup=lookup)
    stage.consume(Outputs(dns=[DnsLookup(lookup_txn("api.example.com", [], ["192.0.2.7"]))],
                          flows=[outbound_flow(FlowTable(), 1, "192.0.2.7")]))
    assert seen == [100, 100]
    g = stage.graph
    assert node_ids(g, NodeKind.PROCESS) == {"process:100@1000"}
    assert {e.kind for e in g.snapshot().edges} >= {
        EdgeKind.RESOLVED, EdgeKind.RESOLVES_TO, EdgeKind.CONNECTED_TO, EdgeKind.EXECUTED}


def test_add_process_and_file_access() -> None:
    g = RelationshipGraph()
    nid = g.add_process(info(300, "sshd", exe="/usr/sbin/sshd", ppid=1,
                             ancestry=((1, "systemd"),)))
    g.add_file_access(300, "/etc/shadow", T0 + 3 * S, comm="sshd")
    g.add_file_access(301, "/tmp/x", T0 + 4 * S, comm="cat")  # a process seen first here
    pairs = {(e.kind, e.source, e.target) for e in g.snapshot().edges}
    assert (EdgeKind.ACCESSED_FILE, nid, "file:/etc/shadow") in pairs
    assert (EdgeKind.ACCESSED_FILE, "process:301:cat", "file:/tmp/x") in pairs
    assert (EdgeKind.SPAWNED, "process:1:systemd", nid) in pairs


def test_since_filter_keeps_recent_edges_and_their_nodes() -> None:
    g = RelationshipGraph()
    t = FlowTable()
    g.add_flow(outbound_flow(t, 1, "192.0.2.1", at=1))
    g.add_flow(outbound_flow(t, 2, "192.0.2.2", at=100, lport=40001))
    snap = g.snapshot(since_ns=T0 + 50 * S)
    targets = {e.target for e in snap.edges if e.kind == EdgeKind.CONNECTED_TO}
    assert targets == {"remote_endpoint:192.0.2.2:443/tcp"}
    ids = {n.id for n in snap.nodes}
    assert "remote_endpoint:192.0.2.1:443/tcp" not in ids
    assert {e.source for e in snap.edges} | {e.target for e in snap.edges} <= ids
    assert len(g.snapshot().edges) > len(snap.edges)


def test_edges_are_listed_in_first_seen_order() -> None:
    g = RelationshipGraph()
    t = FlowTable()
    late = outbound_flow(t, 1, "192.0.2.1", at=50)
    early = outbound_flow(t, 2, "192.0.2.2", at=10, lport=40001)
    g.add_flow(late)
    g.add_flow(early)  # arrives second, started first
    firsts = [e.first_seen_ns for e in g.snapshot().edges]
    assert firsts == sorted(firsts)
    conns = [e.target for e in edges_of(g, EdgeKind.CONNECTED_TO)]
    assert conns == ["remote_endpoint:192.0.2.2:443/tcp", "remote_endpoint:192.0.2.1:443/tcp"]


def _flood_record(i: int) -> FlowRecord:
    addr = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    return FlowRecord(
        flow_id=f"{i:x}", cookie=i, transport="udp", family=socket.AF_INET,
        sock_type=socket.SOCK_DGRAM, direction=Direction.OUTBOUND, local_addr="10.0.0.1",
        local_port=5000, peer_addr=addr, peer_port=53, start_ns=T0 + i * MS,
        end_ns=T0 + i * MS + 1, owner=CURL, netns_cookie=1, counters=Counters(1, 60, 32),
        tcp=None, close_reason=CloseReason.IDLE_TIMEOUT)


def test_flood_of_unique_peers_is_bounded_and_counted() -> None:
    g = RelationshipGraph(max_nodes=5_000, max_edges=8_000)
    start = time.monotonic()
    for i in range(100_000):
        g.add_flow(_flood_record(i))
    elapsed = time.monotonic() - start
    st = g.stats
    assert len(g) <= 5_000 and g.edge_count <= 8_000
    assert st["nodes"] == len(g) and st["edges"] == g.edge_count
    # 100k endpoints + process, binary and user nodes went through a 5k-node graph.
    assert st["nodes_evicted"] == 100_003 - len(g)
    assert st["edges_removed_with_node"] + st["edges_evicted"] == 100_002 - g.edge_count
    # The busy process stays (recently seen); the newest peers are present, the oldest not.
    ids = {n.id for n in g.snapshot().nodes}
    assert "process:100:curl" in ids
    assert f"remote_endpoint:{_flood_record(99_999).peer_addr}:53/udp" in ids
    assert f"remote_endpoint:{_flood_record(0).peer_addr}:53/udp" not in ids
    # Every edge in a snapshot joins nodes that are in it.
    snap = g.snapshot()
    assert {e.source for e in snap.edges} | {e.target for e in snap.edges} <= ids
    assert elapsed < 30, f"100k flows took {elapsed:.1f}s"


def test_flood_with_default_bounds() -> None:
    g = RelationshipGraph()
    for i in range(100_000):
        g.add_flow(_flood_record(i))
    assert len(g) == g.max_nodes == 50_000
    assert g.stats["nodes_evicted"] == 100_003 - 50_000


def test_edge_eviction_when_edges_are_the_limit() -> None:
    g = RelationshipGraph(max_nodes=10_000, max_edges=200)
    for i in range(1_000):
        g.add_flow(_flood_record(i))
    assert g.edge_count == 200 and g.stats["edges_evicted"] > 0
    kinds = {e.kind for e in g.snapshot().edges}
    assert EdgeKind.EXECUTED in kinds  # refreshed by every flow, never the oldest


def test_hostile_long_names_are_bounded() -> None:
    g = RelationshipGraph()
    huge = "x" * 1_000_000
    g.add_file_access(1, "/" + huge, T0)
    (f,) = [n for n in g.snapshot().nodes if n.kind == NodeKind.FILE]
    assert len(f.id) <= len("file:") + MAX_KEY and f.id.endswith("…")
    assert g.stats["strings_truncated"] >= 1


def test_bounds_are_validated() -> None:
    with pytest.raises(ValueError, match="max_nodes"):
        RelationshipGraph(max_nodes=1)

"""The flow table on synthetic event sequences."""

from __future__ import annotations

import socket

from otelpeers.events import Counters, Direction, Kind, Owner, PairStats, SocketEvent, TcpInfo
from otelpeers.flows import CloseReason, FlowTable, flow_to_dict

CURL = Owner(100, 100, 1000, 1000, 7, "curl")
NGINX = Owner(200, 200, 33, 33, 8, "nginx")
S = 10**9


def ev(kind: Kind, t: float, cookie: int, **kw: object) -> SocketEvent:
    return SocketEvent(kind=kind, time_ns=int(t * S), cookie=cookie, **kw)  # type: ignore[arg-type]


def tcp_client(table: FlowTable, cookie: int = 1, port: int = 40000) -> list:
    out = []
    out += table.process(ev(Kind.SOCK_CREATE, 0, cookie, owner=CURL))
    out += table.process(ev(Kind.CONNECT, 1, cookie, owner=CURL, peer_addr="10.0.0.2",
                            peer_port=80, direction=Direction.OUTBOUND))
    out += table.process(ev(Kind.ESTABLISHED, 1.1, cookie, local_addr="10.0.0.1",
                            local_port=port, peer_addr="10.0.0.2", peer_port=80,
                            direction=Direction.OUTBOUND, owner=CURL))
    return out


def test_tcp_lifecycle_one_record() -> None:
    t = FlowTable()
    assert tcp_client(t) == []
    assert t.process(ev(Kind.RELEASE, 2, 1, counters=Counters(5, 500, 300, 4, 400, 200))) == []
    done = t.process(ev(Kind.TCP_CLOSE, 2.5, 1, old_state=4, new_state=7,
                        counters=Counters(6, 540, 300, 5, 440, 200),
                        tcp=TcpInfo(301, 201, 0, 40)))
    assert len(done) == 1
    r = done[0]
    assert r.close_reason == CloseReason.CLOSED and r.complete
    assert (r.start_ns, r.end_ns) == (1 * S, int(2.5 * S))
    assert r.owner == CURL and r.direction == Direction.OUTBOUND
    assert (r.local_addr, r.local_port, r.peer_addr, r.peer_port) == ("10.0.0.1", 40000,
                                                                      "10.0.0.2", 80)
    assert r.counters.packets_out == 6 and r.counters.payload_out == 300
    assert r.tcp is not None and r.tcp.srtt_us == 40
    assert len(t) == 0
    assert flow_to_dict(r)["bytes_sent"] == 300


def test_close_reasons_from_tcp_state() -> None:
    for old_state, reason in [(2, CloseReason.CONNECT_FAILED), (1, CloseReason.RESET),
                              (9, CloseReason.CLOSED), (4, CloseReason.CLOSED)]:
        t = FlowTable()
        tcp_client(t)
        (r,) = t.process(ev(Kind.TCP_CLOSE, 3, 1, old_state=old_state, new_state=7))
        assert r.close_reason == reason, old_state


def test_connect_then_release_without_established_is_failed() -> None:
    t = FlowTable()
    t.process(ev(Kind.CONNECT, 1, 5, owner=CURL, peer_addr="10.0.0.9", peer_port=1))
    (r,) = t.process(ev(Kind.RELEASE, 2, 5))
    assert r.close_reason == CloseReason.CONNECT_FAILED and r.peer_port == 1


def test_tcp_socket_gone_without_close_expires_after_grace() -> None:
    t = FlowTable(tcp_close_grace_ns=10 * S)
    tcp_client(t)
    t.process(ev(Kind.SOCK_GONE, 2, 1))  # the kernel entry vanished; CLOSE was lost
    assert t.expire(11 * S) == []
    (r,) = t.expire(13 * S)
    assert r.close_reason == CloseReason.RELEASED and r.end_ns == 2 * S


def test_inbound_owned_through_listener_and_local_pair_matched() -> None:
    t = FlowTable()
    t.process(ev(Kind.SOCK_CREATE, 0, 50, owner=NGINX))
    t.process(ev(Kind.BIND, 0.1, 50, owner=NGINX, local_addr="0.0.0.0", local_port=80))
    t.process(ev(Kind.LISTEN, 0.2, 0, owner=NGINX, local_addr="0.0.0.0", local_port=80))
    tcp_client(t, cookie=1, port=40000)
    joined = Owner(200, 200, 33, 33, 8, "nginx", joined=True)
    t.process(ev(Kind.ESTABLISHED, 1.2, 51, local_addr="10.0.0.2", local_port=80,
                 peer_addr="10.0.0.1", peer_port=40000, direction=Direction.INBOUND,
                 owner=joined))
    (server,) = t.process(ev(Kind.TCP_CLOSE, 2, 51, old_state=9, new_state=7))
    (client,) = t.process(ev(Kind.TCP_CLOSE, 2.1, 1, old_state=6, new_state=7))
    assert server.direction == Direction.INBOUND and server.owner == joined
    assert server.listener is not None and server.listener.local_port == 80
    assert server.listener.listen_ns == int(0.2 * S)
    assert server.local_peer_flow_id == client.flow_id
    assert client.local_peer_flow_id == server.flow_id


def udp_peer(t: FlowTable, cookie: int, peer: str, t0: float, direction=Direction.OUTBOUND):
    return t.process(ev(Kind.PEER, t0, cookie, protocol=socket.IPPROTO_UDP,
                        sock_type=socket.SOCK_DGRAM, owner=CURL, local_addr="10.0.0.1",
                        local_port=5000, peer_addr=peer, peer_port=53, direction=direction))


def stats(t: FlowTable, cookie: int, peer: str, at: float, c: Counters):
    return t.process(ev(Kind.PEER_STATS, at, cookie, protocol=socket.IPPROTO_UDP,
                        peer_addr=peer, peer_port=53, counters=c))


def test_unconnected_udp_is_one_flow_per_peer() -> None:
    t = FlowTable()
    udp_peer(t, 7, "192.0.2.1", 1)
    udp_peer(t, 7, "192.0.2.2", 1.5)
    stats(t, 7, "192.0.2.1", 2, Counters(2, 100, 44, 2, 300, 244))
    stats(t, 7, "192.0.2.2", 2, Counters(1, 50, 22, 0, 0, 0))
    done = t.process(ev(Kind.RELEASE, 3, 7, protocol=socket.IPPROTO_UDP))
    by_peer = {r.peer_addr: r for r in done}
    assert set(by_peer) == {"192.0.2.1", "192.0.2.2"}
    assert by_peer["192.0.2.1"].counters.payload_in == 244
    assert by_peer["192.0.2.2"].counters.packets_in == 0
    assert all(r.close_reason == CloseReason.CLOSED and r.transport == "udp" for r in done)


def test_udp_idle_timeout_then_new_traffic_starts_a_new_flow() -> None:
    t = FlowTable(udp_idle_timeout_ns=5 * S)
    udp_peer(t, 7, "192.0.2.1", 0)
    stats(t, 7, "192.0.2.1", 1, Counters(1, 50, 22, 1, 60, 32))
    stats(t, 7, "192.0.2.1", 4, Counters(1, 50, 22, 1, 60, 32))  # no change: still idle
    assert t.expire(5.5 * S) == []
    (first,) = t.expire(6.5 * S)
    assert first.close_reason == CloseReason.IDLE_TIMEOUT and first.end_ns == 1 * S
    stats(t, 7, "192.0.2.1", 8, Counters(1, 50, 22, 1, 60, 32))  # unchanged: nothing new
    assert len(t) == 0
    stats(t, 7, "192.0.2.1", 9, Counters(3, 150, 66, 2, 120, 64))
    (second,) = t.process(ev(Kind.RELEASE, 10, 7, protocol=socket.IPPROTO_UDP,
                             counters=Counters(3, 150, 66, 2, 120, 64)))
    assert second.flow_id != first.flow_id
    assert second.counters == Counters(2, 100, 44, 1, 60, 32)  # only the new volume


def test_flow_table_is_bounded_and_counts_evictions() -> None:
    t = FlowTable(max_flows=100)
    out = []
    for i in range(250):
        out += tcp_client(t, cookie=i + 1, port=10000 + i)
    assert len(t) == 100
    assert len(out) == 150 and t.stats.flows_evicted == 150
    assert all(r.close_reason == CloseReason.EVICTED and not r.complete for r in out)


def test_a_big_full_table_evicts_its_oldest_flows_a_batch_at_a_time() -> None:
    """1/256 of the capacity per pass: one at a time would walk the dict's deleted entries
    at every new flow (otelpeers.oldest). Every evicted flow is still a counted record."""
    t = FlowTable(max_flows=1024)
    for i in range(1024):
        assert tcp_client(t, cookie=i + 1, port=10000 + i) == []
    out = tcp_client(t, cookie=5000, port=30000)  # one over: the 4 oldest go
    assert [r.cookie for r in out] == [1, 2, 3, 4] and len(t) == 1021
    assert all(r.close_reason == CloseReason.EVICTED and not r.complete for r in out)
    assert t.stats.flows_evicted == 4
    for i in range(3):  # room again: nothing more until the table is over its bound
        assert tcp_client(t, cookie=6000 + i, port=31000 + i) == []
    assert len(t) == 1024 and 5000 in t._flows


def test_drain_marks_open_flows_incomplete() -> None:
    t = FlowTable()
    tcp_client(t)
    udp_peer(t, 9, "192.0.2.1", 1)
    done = t.drain(50 * S)
    assert len(done) == 2 and all(not r.complete for r in done)
    assert all(r.close_reason == CloseReason.SHUTDOWN and r.end_ns == 50 * S for r in done)


def test_orphan_close_is_counted_not_raised() -> None:
    t = FlowTable()
    assert t.process(ev(Kind.TCP_CLOSE, 1, 99, old_state=1, new_state=7)) == []
    assert t.stats.orphan_events == 1


def test_periodic_sock_stats_update_long_lived_flow() -> None:
    t = FlowTable()
    tcp_client(t)
    t.process(ev(Kind.SOCK_STATS, 30, 1, counters=Counters(100, 10**6, 9 * 10**5, 50, 5000, 2000)))
    (live,) = t.live_flows()
    assert live.counters.payload_out == 9 * 10**5 and not live.complete


def test_close_after_gone_still_ends_the_flow_normally() -> None:
    t = FlowTable(tcp_close_grace_ns=10 * S)
    tcp_client(t)
    t.process(ev(Kind.SOCK_GONE, 2, 1))
    (r,) = t.process(ev(Kind.TCP_CLOSE, 2.1, 1, old_state=6, new_state=7))
    assert r.close_reason == CloseReason.CLOSED and t.expire(100 * S) == []


# ---- format 2: one complete record per connection, scans, aggregates ----------------------
def close_record(cookie: int, t0: float, t1: float, **kw: object) -> SocketEvent:
    base: dict[str, object] = dict(
        start_ns=int(t0 * S), owner=CURL, direction=Direction.OUTBOUND, local_addr="10.0.0.1",
        local_port=40000, peer_addr="10.0.0.2", peer_port=80, old_state=4, new_state=7,
        counters=Counters(3, 300, 100, 2, 200, 50), tcp=TcpInfo(101, 51, 0, 20))
    base.update(kw)
    return ev(Kind.TCP_CLOSE, t1, cookie, **base)


def test_one_complete_record_is_one_flow_never_stored() -> None:
    t = FlowTable()
    (r,) = t.process(close_record(0x2A, 1, 1.5, peer_cookie=0x2B))
    assert (r.flow_id, r.start_ns, r.end_ns) == ("2a", 1 * S, int(1.5 * S))
    assert r.close_reason == CloseReason.CLOSED and r.complete and r.summary == 0
    assert r.owner == CURL and r.counters.payload_out == 100 and r.tcp is not None
    assert r.local_peer_flow_id == "2b"  # the kernel paired the two local ends
    assert len(t) == 0 and t.take_progress() == []
    assert t.stats.flows_started == t.stats.flows_completed == 1
    (failed,) = t.process(close_record(3, 1, 2, old_state=2))
    assert failed.close_reason == CloseReason.CONNECT_FAILED


def test_long_connection_announced_by_the_scan_then_closed() -> None:
    t = FlowTable()
    t.process(ev(Kind.TCP_OPEN, 5, 9, start_ns=1 * S, owner=CURL, new_state=1,
                 direction=Direction.OUTBOUND, local_addr="10.0.0.1", local_port=40001,
                 peer_addr="10.0.0.2", peer_port=80, counters=Counters(1, 60, 0, 1, 60, 0)))
    (live,) = t.live_flows()
    assert live.start_ns == 1 * S and not live.complete and live.flow_id == "9"
    (first,) = t.take_progress()
    assert first.flow_id == "9" and first.reported is None  # its first record
    assert t.take_progress() == []  # nothing changed since
    t.process(ev(Kind.SOCK_STATS, 10, 9, counters=Counters(5, 5000, 4000, 3, 200, 0)))
    (p,) = t.take_progress()
    assert p.counters.payload_out == 4000 and p.end_ns == 10 * S  # cumulative, last activity
    assert p.reported == first.counters  # what the previous record said: deltas need no table
    assert t.live_flows()[0].reported == p.counters  # a snapshot does not move the baseline
    (r,) = t.process(close_record(9, 1, 12, local_port=40001,
                                  counters=Counters(6, 5100, 4000, 4, 260, 0)))
    assert r.flow_id == "9" and r.start_ns == 1 * S and r.counters.packets_out == 6
    assert r.reported == p.counters
    assert r.tcp is not None and len(t) == 0 and t.take_progress() == []


def test_adopted_connection_is_announced_then_ended_by_its_release_record() -> None:
    """A connection older than the agent: seeded (adopted), announced by the scan, ended by
    the record its release sends (no TCP state known: closed, no TCP info)."""
    t = FlowTable()
    t.process(ev(Kind.TCP_OPEN, 5, 0x41, start_ns=1 * S, owner=NGINX, new_state=1,
                 direction=Direction.INBOUND, local_addr="10.0.0.1", local_port=22,
                 peer_addr="10.0.0.9", peer_port=50000, adopted=True))
    (live,) = t.live_flows()
    assert live.adopted and live.start_ns == 1 * S
    (r,) = t.process(close_record(0x41, 1, 9, old_state=0, tcp=None, owner=NGINX,
                                  direction=Direction.INBOUND, released=True, adopted=True,
                                  counters=Counters(4, 4400, 4000, 2, 200, 80)))
    assert r.adopted and r.close_reason == CloseReason.CLOSED and r.tcp is None
    assert r.counters.payload_out == 4000 and r.start_ns == 1 * S
    assert flow_to_dict(r)["adopted"] is True
    # ended before the scan announced it: one complete record, still adopted
    (short,) = t.process(close_record(0x42, 1, 1.2, old_state=0, tcp=None, adopted=True))
    assert short.adopted and short.close_reason == CloseReason.CLOSED
    (plain,) = t.process(close_record(0x43, 1, 1.2))
    assert not plain.adopted and flow_to_dict(plain)["adopted"] is False


def test_connect_that_never_sent_a_syn_is_one_failed_flow() -> None:
    t = FlowTable()
    (r,) = t.process(ev(Kind.RELEASE, 2, 4, start_ns=1 * S, owner=CURL, old_state=2,
                        direction=Direction.OUTBOUND, peer_addr="192.0.2.1", peer_port=9,
                        released=True))
    assert r.close_reason == CloseReason.CONNECT_FAILED and r.peer_port == 9
    # a plain release of an unconnected TCP socket is no flow
    assert t.process(ev(Kind.RELEASE, 3, 5, released=True)) == []


def test_listeners_are_per_network_namespace() -> None:
    """Two containers listening on :8080 each get their own listener (kernel keys them by
    (netns cookie, port) too)."""
    a = Owner(300, 300, 0, 0, 1, "svc-a")
    b = Owner(400, 400, 0, 0, 2, "svc-b")
    t = FlowTable()
    for cookie, netns, owner, at in ((60, 111, a, 0.1), (70, 222, b, 0.2)):
        t.process(ev(Kind.BIND, at, cookie, netns_cookie=netns, owner=owner,
                     local_addr="0.0.0.0", local_port=8080))
        t.process(ev(Kind.LISTEN, at + 0.01, cookie, netns_cookie=netns, owner=owner,
                     local_addr="0.0.0.0", local_port=8080))
    got = {}
    for cookie, netns, owner in ((61, 111, a), (71, 222, b)):
        (r,) = t.process(close_record(cookie, 1, 2, netns_cookie=netns, owner=owner,
                                      direction=Direction.INBOUND, local_port=8080,
                                      peer_port=50000 + cookie))
        got[netns] = r.listener
    assert got[111] is not None and got[111].owner == a and got[111].listen_ns == int(0.11 * S)
    assert got[222] is not None and got[222].owner == b and got[222].listen_ns == int(0.21 * S)
    # the listener of namespace 111 closing leaves namespace 222's alone
    t.process(ev(Kind.RELEASE, 3, 60, netns_cookie=111, released=True))
    (r,) = t.process(close_record(72, 3, 4, netns_cookie=222, owner=b,
                                  direction=Direction.INBOUND, local_port=8080))
    assert r.listener is not None and r.listener.owner == b
    (r,) = t.process(close_record(62, 3, 4, netns_cookie=111, owner=a,
                                  direction=Direction.INBOUND, local_port=8080))
    assert r.listener is None


def pair(lost: int, **kw: object) -> PairStats:
    base: dict[str, object] = dict(
        time_ns=10 * S, start_ns=5 * S, netns_cookie=0, owner=CURL, family=socket.AF_INET,
        protocol=socket.IPPROTO_TCP, direction=Direction.OUTBOUND, peer_addr="10.0.0.2",
        port=80, opened=lost + 5, closed=lost + 5, lost=lost,
        lost_volume=Counters(lost, 60 * lost, 0, lost, 60 * lost, 0))
    base.update(kw)
    return PairStats(**base)  # type: ignore[arg-type]


def test_lost_records_become_one_summary_record_per_pair_and_interval() -> None:
    t = FlowTable()
    assert t.process(pair(0)) == []
    (r,) = t.process(pair(7))
    assert r.summary == 7 and r.cookie == 0 and r.complete
    assert (r.start_ns, r.end_ns) == (5 * S, 10 * S)
    assert (r.peer_addr, r.peer_port, r.local_port) == ("10.0.0.2", 80, 0)
    assert r.counters.packets_out == 7 and r.owner == CURL and r.transport == "tcp"
    (inbound,) = t.process(pair(2, direction=Direction.INBOUND, port=8080))
    assert (inbound.local_port, inbound.peer_port) == (8080, 0)
    assert inbound.flow_id != r.flow_id
    (over,) = t.process(pair(3, overflow=True, peer_addr="", port=0, protocol=0, family=0,
                             direction=Direction.UNKNOWN))
    assert over.summary == 3 and over.peer_addr == ""
    assert t.stats.summary_records == 3 and t.stats.summarized_connections == 12
    assert flow_to_dict(r)["summary"] == 7


def test_flow_ended_by_sock_gone_is_not_counted_again_by_the_summary() -> None:
    t = FlowTable()
    t.process(ev(Kind.TCP_OPEN, 5, 9, start_ns=1 * S, owner=CURL, new_state=1,
                 direction=Direction.OUTBOUND, local_addr="10.0.0.1", local_port=40001,
                 peer_addr="10.0.0.2", peer_port=80))
    (gone,) = t.process(ev(Kind.SOCK_GONE, 9, 9, released=True))  # its CLOSE record was lost
    assert gone.close_reason == CloseReason.RELEASED and gone.end_ns == 9 * S
    (r,) = t.process(pair(3))  # the kernel counted 3 lost records for the pair: that one too
    assert r.summary == 2 and t.stats.gone_reconciled == 1
    assert t.process(pair(1)) and t.stats.gone_reconciled == 1  # nothing left to reconcile


def test_sock_gone_without_released_still_waits_for_the_grace_period() -> None:
    t = FlowTable(tcp_close_grace_ns=10 * S)
    tcp_client(t)
    t.process(ev(Kind.SOCK_GONE, 2, 1))
    assert t.expire(11 * S) == []


def test_open_flows_share_their_kind_and_the_shared_table_is_bounded() -> None:
    """A long-lived connection's flow keeps one reference to its (transport, family, socket
    type, direction), shared with every flow of that kind: three slots fewer per flow."""
    from otelpeers import flows

    t = FlowTable()
    for cookie in (9, 10):
        t.process(ev(Kind.TCP_OPEN, 5, cookie, start_ns=1 * S, owner=CURL, new_state=1,
                     direction=Direction.OUTBOUND, local_addr="10.0.0.1",
                     local_port=40000 + cookie, peer_addr="10.0.0.2", peer_port=80))
    a, b = (t._flows[c] for c in (9, 10))
    assert a.shape is b.shape and "protocol" not in type(a).__slots__
    assert (a.protocol, a.family, a.sock_type, a.direction) == (
        socket.IPPROTO_TCP, socket.AF_INET, socket.SOCK_STREAM, Direction.OUTBOUND)
    r = t.live_flows()[0]
    assert (r.transport, r.family, r.sock_type, r.direction) == (
        "tcp", socket.AF_INET, socket.SOCK_STREAM, Direction.OUTBOUND)
    before = len(flows._SHAPES)
    odd = [flows._shape(200, 99, i, Direction.UNKNOWN) for i in range(2 * flows.MAX_SHAPES)]
    assert len(flows._SHAPES) == flows.MAX_SHAPES >= before  # full: new kinds not kept
    assert odd[-1].sock_type == 2 * flows.MAX_SHAPES - 1  # but still right
    for key in [k for k in flows._SHAPES if k[0] == 200]:
        del flows._SHAPES[key]

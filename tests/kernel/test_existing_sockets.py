"""Sockets older than the agent (issue 11): a server listening before the agent starts owns
the connections it accepts afterwards, and a connection opened before the agent is followed
(adopted) until it closes. Real processes, real programs, loopback and a test namespace."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

import pytest
from harness import Agent, NetNs, assert_tcp_lifetime, peer

from otelpeers.config import Config
from otelpeers.events import Direction, Kind
from otelpeers.flows import CloseReason, FlowRecord
from otelpeers.kernel.sockdiag import TCP_TIME_WAIT, enumerate_sockets

pytestmark = pytest.mark.kernel

HEADERS_PER_PACKET = 120  # IP + TCP headers with options, generously


def _inbound_to(port: int, server_pid: int, agent: Agent) -> FlowRecord:
    r = agent.wait_flow(lambda r: r.direction == Direction.INBOUND and r.local_port == port
                        and r.transport == "tcp")
    assert r.owner is not None, f"inbound flow to the old server has no owner: {r}"
    assert r.owner.tgid == server_pid
    assert r.owner.joined  # taken from the (seeded) listener
    assert not r.adopted  # the connection itself is new
    # the flow table knows the seeded listener too (a LISTEN event at the snapshot's time)
    assert r.listener is not None and r.listener.local_port == port
    assert r.listener.owner is not None and r.listener.owner.tgid == server_pid
    return r


def test_listener_started_before_the_agent_owns_new_inbound_connections() -> None:
    server = peer("tcp-sink", "127.0.0.1", "0")
    try:
        port = server.ready()
        agent = Agent()
        try:
            assert agent.sensors.adoption is not None
            assert agent.sensors.adoption.listeners_seeded >= 1
            client = peer("tcp-connect-each", str(port), "1000", "127.0.0.1")
            assert client.finish().strip() == "DONE"
            r = _inbound_to(port, server.p.pid, agent)
            assert r.counters.payload_in == 1000
            assert r.listener is not None and r.listener.local_addr == "127.0.0.1"
        finally:
            agent.stop()
    finally:
        server.kill()


def test_without_adoption_the_old_servers_connections_have_no_owner() -> None:
    """The control: what the seeded listener changes (issue 11's first finding)."""
    server = peer("tcp-sink", "127.0.0.1", "0")
    try:
        port = server.ready()
        cfg = Config()
        agent = Agent(replace(cfg, kernel=replace(cfg.kernel, adopt_existing=False)))
        try:
            assert agent.sensors.adoption is None
            client = peer("tcp-connect-each", str(port), "1000", "127.0.0.1")
            assert client.finish().strip() == "DONE"
            r = agent.wait_flow(lambda r: r.direction == Direction.INBOUND
                                and r.local_port == port and r.transport == "tcp")
            assert r.owner is None
        finally:
            agent.stop()
    finally:
        server.kill()


def test_listener_in_a_test_namespace_started_before_the_agent(ns: NetNs) -> None:
    server = peer("tcp-sink", ns.ns_ip, "0", ns=ns)
    try:
        port = server.ready()
        agent = Agent()
        try:
            client = peer("tcp-connect-each", str(port), "1000", ns.ns_ip)
            assert client.finish().strip() == "DONE"
            r = _inbound_to(port, server.p.pid, agent)
            assert r.local_addr == ns.ns_ip and r.peer_addr == ns.host_ip
            root = agent.wait_flow(lambda x: x.direction == Direction.OUTBOUND
                                   and x.peer_port == port and x.peer_addr == ns.ns_ip)
            assert r.netns_cookie != root.netns_cookie  # the listener's key is its namespace
        finally:
            agent.stop()
    finally:
        server.kill()


def test_udp_socket_bound_before_the_agent_owns_its_flows() -> None:
    server = peer("udp-echo", "127.0.0.1", "3")
    try:
        port = server.ready()
        agent = Agent()
        try:
            assert agent.sensors.adoption is not None
            assert agent.sensors.adoption.udp_sockets_seeded >= 1
            client = peer("udp-client", "127.0.0.1", str(port), "3", "100", "unconnected")
            assert client.finish().strip() == "DONE"
            server.finish()
            r = agent.wait_flow(lambda r: r.transport == "udp" and r.local_port == port
                                and r.direction == Direction.INBOUND)
            assert r.owner is not None and r.owner.tgid == server.p.pid, r
            assert r.counters.payload_in == 300 and r.counters.payload_out == 300
        finally:
            agent.stop()
    finally:
        server.kill()


SIZE = 200_000
PHASE = 100_000


def test_connection_open_before_the_agent_is_adopted_until_it_closes() -> None:
    server = peer("tcp-server-accepted", "127.0.0.1", str(SIZE), str(SIZE))
    client = None
    try:
        port = server.ready()
        client = peer("tcp-client-on-signal", "127.0.0.1", str(port), str(SIZE), str(SIZE))
        cport = client.ready()
        assert server._line(15) == "ACCEPTED"  # both ends are held by their processes now
        agent = Agent()
        try:
            assert agent.sensors.adoption is not None
            assert agent.sensors.adoption.connections_adopted >= 2
            os.kill(client.p.pid, signal.SIGUSR1)
            assert client.finish().strip() == f"DONE {SIZE}"
            server.finish()
            out = agent.wait_flow(lambda r: r.direction == Direction.OUTBOUND
                                  and r.local_port == cport and r.peer_port == port
                                  and r.complete)
            inb = agent.wait_flow(lambda r: r.direction == Direction.INBOUND
                                  and r.local_port == port and r.peer_port == cport
                                  and r.complete)
        finally:
            agent.stop()
        for r, owner_pid in ((out, client.p.pid), (inb, server.p.pid)):
            same = [x for x in agent.records if x.cookie == r.cookie]
            assert len(same) == 1, f"one flow per connection end, got {same}"
            assert r.adopted
            assert r.owner is not None and r.owner.tgid == owner_pid
            assert r.close_reason == CloseReason.CLOSED
            # No sock_ops CLOSE for an adopted socket: the kernel's totals come from its last
            # packet (count_skb), here the whole connection's.
            assert_tcp_lifetime(r.tcp, SIZE, SIZE)
            c = r.counters
            # Everything was transferred after adoption: payload exact, wire within headers.
            assert c.payload_out == SIZE and c.payload_in == SIZE, c
            assert SIZE <= c.bytes_out <= SIZE + c.packets_out * HEADERS_PER_PACKET, c
            assert SIZE <= c.bytes_in <= SIZE + c.packets_in * HEADERS_PER_PACKET, c
            assert r.start_ns <= r.end_ns
        # The two ends of a connection made on this host know each other.
        assert out.local_peer_flow_id == inb.flow_id
        assert inb.local_peer_flow_id == out.flow_id
    finally:
        server.kill()
        if client is not None:
            client.kill()


def _wait_closed(cookies: set[int], timeout: float = 10.0) -> None:
    """Until sock_diag lists none of these sockets in a state before CLOSE (TIME_WAIT is
    after it). A condition polled, not a guessed delay."""
    deadline = time.monotonic() + timeout
    while True:
        snap = enumerate_sockets(protocols=("tcp",), all_namespaces=False, owners=False,
                                 tcp_info=False)
        left = [s for s in snap.sockets if s.cookie in cookies and s.state != TCP_TIME_WAIT]
        if not left:
            return
        assert time.monotonic() < deadline, f"not closed: {left}"
        time.sleep(0.05)


def _marker_connection(agent: Agent) -> None:
    sink = peer("tcp-sink", "127.0.0.1", "0")
    try:
        port = sink.ready()
        assert peer("tcp-connect-each", str(port), "1", "127.0.0.1").finish().strip() == "DONE"
        agent.wait_flow(lambda r: r.peer_port == port and r.direction == Direction.OUTBOUND)
    finally:
        sink.kill()


def test_connection_across_an_agent_restart_is_counted_once_per_lifetime() -> None:
    """Tracked by one agent, which stops (its flow ends incomplete with what it counted);
    the next agent adopts the connection and counts only what follows. The state callbacks
    the first agent asked for still fire for the next one: the CLOSE after the adopted
    record's release must not make a second record."""
    server = peer("tcp-echo-accepted", "127.0.0.1")
    client = None
    try:
        port = server.ready()
        first = Agent()
        try:
            client = peer("tcp-client-phases", "127.0.0.1", str(port), str(PHASE))
            cport = client.ready()
            assert server._line(15) == "ACCEPTED"
            os.kill(client.p.pid, signal.SIGUSR1)
            assert client._line(15) == f"SENT {PHASE}"
        finally:
            first.stop()
        before = next(r for r in first.records if r.local_port == cport
                      and r.peer_port == port)
        assert not before.complete and not before.adopted
        assert before.counters.payload_out == PHASE

        second = Agent()
        try:
            os.kill(client.p.pid, signal.SIGUSR1)
            assert client._line(15) == f"SENT {PHASE}"
            os.kill(client.p.pid, signal.SIGUSR2)
            assert client.finish().strip() == "DONE"
            server.finish()
            ends = [second.wait_flow(lambda r, lp=lp, pp=pp: r.local_port == lp
                                     and r.peer_port == pp and r.complete)
                    for lp, pp in ((cport, port), (port, cport))]
            # Both ends' sock_ops CLOSE comes after their release (FIN exchange): wait until
            # the kernel has closed both, then for a later connection's record, which the
            # ring buffer delivers after anything those CLOSEs sent.
            _wait_closed({r.cookie for r in ends})
            _marker_connection(second)
        finally:
            second.stop()
        for r in ends:
            assert r.adopted and r.counters.payload_out == PHASE, r
            # Both lifetimes in the kernel's totals: the first agent's phase too.
            assert_tcp_lifetime(r.tcp, 2 * PHASE, 2 * PHASE)
            assert len([x for x in second.records if x.cookie == r.cookie]) == 1
            closes = [e for e in second.events if getattr(e, "kind", None) == Kind.TCP_CLOSE
                      and e.cookie == r.cookie]
            assert len(closes) == 1 and closes[0].adopted, closes
        assert before.counters.payload_out + ends[0].counters.payload_out == 2 * PHASE
    finally:
        server.kill()
        if client is not None:
            client.kill()

"""Sockets older than the agent (issue 11): a server listening before the agent starts owns
the connections it accepts afterwards, and a connection opened before the agent is followed
(adopted) until it closes. Real processes, real programs, loopback and a test namespace."""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import pytest
from harness import Agent, NetNs, peer

from otelpeers.config import Config
from otelpeers.events import Direction
from otelpeers.flows import CloseReason, FlowRecord

pytestmark = pytest.mark.kernel

HEADERS_PER_PACKET = 120  # IP + TCP headers with options, generously


def _inbound_to(port: int, server_pid: int, agent: Agent) -> FlowRecord:
    r = agent.wait_flow(lambda r: r.direction == Direction.INBOUND and r.local_port == port
                        and r.transport == "tcp")
    assert r.owner is not None, f"inbound flow to the old server has no owner: {r}"
    assert r.owner.tgid == server_pid
    assert r.owner.joined  # taken from the (seeded) listener
    assert not r.adopted  # the connection itself is new
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
            assert r.tcp is None  # no sock_ops state callbacks on an adopted socket
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

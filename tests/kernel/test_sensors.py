"""The real sensors with real traffic: TCP, UDP, ICMP, IPv6, listeners, refused connects."""

from __future__ import annotations

import socket
import subprocess

import pytest
from harness import Agent, NetNs, peer, tcp_exchange

from otelpeers.events import Direction, Kind
from otelpeers.flows import CloseReason

pytestmark = pytest.mark.kernel


def test_tcp_across_veth_counts_bytes_both_ends(agent: Agent, ns: NetNs) -> None:
    send, reply = 1_000_000, 250_000
    ex = tcp_exchange(ns.ns_ip, send, reply, ns=ns)
    assert ex.client_said == f"DONE {reply}"
    client, server, port = ex.client, ex.server, ex.port

    c = agent.wait_flow(lambda r: r.owner is not None and r.owner.tgid == client.p.pid
                        and r.transport == "tcp")
    s = agent.wait_flow(lambda r: r.owner is not None and r.owner.tgid == server.p.pid
                        and r.direction == Direction.INBOUND)
    assert c.direction == Direction.OUTBOUND
    assert (c.peer_addr, c.peer_port) == (ns.ns_ip, port)
    assert c.local_addr == ns.host_ip
    # cgroup_skb counts payload as it crosses the socket, retransmissions included; sock_ops
    # counts acknowledged bytes, plus one each for SYN and FIN.
    assert c.tcp is not None and s.tcp is not None
    assert c.tcp.bytes_acked - send in (1, 2) and s.tcp.bytes_received - send in (1, 2)
    assert s.tcp.bytes_acked - reply in (1, 2) and c.tcp.bytes_received - reply in (1, 2)
    retrans_bound = c.tcp.total_retrans * 1500
    assert send <= c.counters.payload_out <= send + retrans_bound, (c.counters, c.tcp)
    assert send <= s.counters.payload_in <= send + retrans_bound, (s.counters, c.tcp)
    reply_bound = s.tcp.total_retrans * 1500
    assert reply <= c.counters.payload_in <= reply + reply_bound, (c.counters, s.tcp)
    assert reply <= s.counters.payload_out <= reply + reply_bound, (s.counters, s.tcp)
    # Wire bytes: payload plus 40..80 bytes of IP+TCP headers per packet.
    headers = c.counters.bytes_out - c.counters.payload_out
    assert 40 * c.counters.packets_out <= headers <= 80 * c.counters.packets_out
    assert s.owner is not None and s.owner.joined  # accepted: owned through the listener
    assert s.listener is not None and s.listener.local_port == port
    assert s.listener.listen_ns is not None
    assert (s.peer_addr, s.peer_port) == (c.local_addr, c.local_port)
    assert c.close_reason == CloseReason.CLOSED and s.close_reason == CloseReason.CLOSED
    # Both ends on this host, in different network namespaces: matched as one relation.
    assert s.local_peer_flow_id == c.flow_id and c.local_peer_flow_id == s.flow_id
    assert c.netns_cookie != s.netns_cookie


@pytest.mark.parametrize("mode", ["connected", "unconnected"])
def test_udp_request_response_packets(agent: Agent, ns: NetNs, mode: str) -> None:
    count, size = 5, 300
    server = peer("udp-echo", ns.ns_ip, str(count), ns=ns)
    port = server.ready()
    client = peer("udp-client", ns.ns_ip, str(port), str(count), str(size), mode)
    client.finish()
    server.finish()
    c = agent.wait_flow(lambda r: r.owner is not None and r.owner.tgid == client.p.pid)
    s = agent.wait_flow(lambda r: r.owner is not None and r.owner.tgid == server.p.pid)
    assert c.transport == "udp" and c.direction == Direction.OUTBOUND
    assert (c.peer_addr, c.peer_port) == (ns.ns_ip, port)
    assert c.counters.packets_out == count and c.counters.packets_in == count
    assert c.counters.payload_out == count * size == c.counters.payload_in
    assert c.counters.bytes_out == count * (size + 28)  # IPv4 + UDP headers
    assert s.direction == Direction.INBOUND and s.local_port == port
    assert s.counters.packets_in == count and s.counters.packets_out == count
    assert (s.peer_addr, s.peer_port) == (c.local_addr, c.local_port)


def test_ping_is_an_icmp_flow(agent: Agent, ns: NetNs) -> None:
    p = subprocess.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", ns.ns_ip],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    f = agent.wait_flow(lambda r: r.transport == "icmp" and r.peer_addr == ns.ns_ip)
    assert f.owner is not None and f.owner.comm == "ping"
    assert f.direction == Direction.OUTBOUND
    assert f.counters.packets_out == 3 and f.counters.packets_in == 3


def test_ipv6_loopback_tcp(agent: Agent) -> None:
    ex = tcp_exchange("::1", 1000, 2000)
    client, port = ex.client, ex.port
    c = agent.wait_flow(lambda r: r.owner is not None and r.owner.tgid == client.p.pid)
    assert c.network_type == "ipv6" and c.family == socket.AF_INET6
    assert (c.peer_addr, c.peer_port) == ("::1", port)
    assert c.counters.payload_out == 1000 and c.counters.payload_in == 2000
    assert 60 * c.counters.packets_out <= c.counters.bytes_out - 1000


def test_ipv6_over_veth_udp(agent: Agent, ns: NetNs) -> None:
    server = peer("udp-echo", ns.ns_ip6, "2", ns=ns)
    port = server.ready()
    client = peer("udp-client", ns.ns_ip6, str(port), "2", "100", "unconnected")
    client.finish()
    c = agent.wait_flow(lambda r: r.owner is not None and r.owner.tgid == client.p.pid)
    assert c.peer_addr == ns.ns_ip6 and c.network_type == "ipv6"
    assert c.counters.bytes_out == 2 * (100 + 48)  # IPv6 + UDP headers


def test_v4_mapped_address_is_reported_as_ipv4(agent: Agent) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    c.connect(("::ffff:127.0.0.1", port))
    conn, _ = srv.accept()
    cookie_port = c.getsockname()[1]
    c.close()
    conn.close()
    srv.close()
    f = agent.wait_flow(lambda r: r.local_port == cookie_port and r.direction == Direction.OUTBOUND)
    assert f.peer_addr == "127.0.0.1" and f.family == socket.AF_INET6
    assert f.network_type == "ipv4"


def test_listener_bind_and_listen_are_seen(agent: Agent) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    srv.listen(4)
    try:
        bind = agent.wait_event(lambda e: getattr(e, "kind", None) == Kind.BIND
                                and e.local_port == port)
        listen = agent.wait_event(lambda e: getattr(e, "kind", None) == Kind.LISTEN
                                  and e.local_port == port)
    finally:
        srv.close()
    import os

    assert bind.owner is not None and bind.owner.tgid == os.getpid()
    assert bind.local_addr == "127.0.0.1"
    assert listen.owner is not None and listen.owner.tgid == os.getpid()


def test_refused_connection_is_a_failed_flow(agent: Agent, ns: NetNs) -> None:
    p = subprocess.run(["curl", "-s", "--max-time", "5", f"http://{ns.ns_ip}:9/"],
                       capture_output=True)
    assert p.returncode == 7  # curl: failed to connect
    f = agent.wait_flow(lambda r: r.owner is not None and r.owner.comm == "curl"
                        and r.peer_addr == ns.ns_ip)
    assert f.close_reason == CloseReason.CONNECT_FAILED
    assert f.counters.packets_out >= 1 and f.counters.payload_out == 0

"""Packets the kernel sends on its own (issue 11): the RST that refuses a connect to a closed
port and the ICMP port unreachable that answers a UDP datagram are attributed to a `kernel`
owner, never left `unknown`, while the client's own flow keeps the client as owner. Real
processes and real programs; the closed ports are in a namespace the test creates."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace

import pytest
from harness import Agent, NetNs, peer

from otelpeers.config import Config
from otelpeers.events import Direction, PairStats
from otelpeers.flows import FlowRecord

pytestmark = pytest.mark.kernel

CLOSED_TCP = 47  # nothing listens in a fresh namespace
CLOSED_UDP = 48


@pytest.fixture
def agent() -> Iterator[Agent]:
    """ICMP and UDP flows end after 1 s idle, so the kernel's ICMP flows are reported soon."""
    cfg = Config()
    a = Agent(replace(cfg, flows=replace(cfg.flows, icmp_idle_timeout_s=1.0,
                                         udp_idle_timeout_s=1.0)))
    try:
        yield a
    finally:
        a.stop()


def _kernel_icmp_packets(agent: Agent, ns: NetNs, want: int) -> int:
    """ICMP packets the namespace's kernel sent to this host, from its own raw reply sockets
    (one per CPU: the packets may be split over several flows)."""
    def flows() -> list[FlowRecord]:
        return [r for r in list(agent.records) if r.transport == "icmp"
                and r.local_addr == ns.ns_ip and r.peer_addr == ns.host_ip]

    def sent() -> int:
        return sum(r.counters.packets_out for r in flows())

    agent._wait("kernel ICMP flows", lambda: sent() >= want or None, 15.0)
    for r in flows():
        assert r.owner is not None and r.owner.is_kernel, f"unowned kernel ICMP: {r}"
    return sent()


def _no_unknown_owner(agent: Agent, ns: NetNs) -> None:
    addrs = {ns.ns_ip, ns.host_ip}
    unknown = [r for r in list(agent.records) if r.owner is None
               and (r.local_addr in addrs or r.peer_addr in addrs)]
    assert not unknown, unknown


def _client_flow(agent: Agent, transport: str, ns: NetNs, port: int, pid: int) -> FlowRecord:
    r = agent.wait_flow(lambda r: r.direction == Direction.OUTBOUND and r.transport == transport
                        and r.peer_addr == ns.ns_ip and r.peer_port == port)
    assert r.owner is not None and r.owner.tgid == pid, r
    return r


def _kernel_flow(agent: Agent, transport: str, ns: NetNs, port: int) -> FlowRecord:
    r = agent.wait_flow(lambda r: r.direction == Direction.INBOUND and r.transport == transport
                        and r.local_addr == ns.ns_ip and r.local_port == port)
    assert r.owner is not None, f"the kernel's reply is unowned: {r}"
    assert r.owner.is_kernel and r.owner.tgid == 0 and r.owner.comm == "kernel"
    assert r.failed and r.peer_addr == ns.host_ip and r.peer_port > 0
    return r


def _kernel_pair_count(agent: Agent, transport: str, ns: NetNs, port: int, want: int) -> int:
    """Every reply is counted in the kernel's aggregates (one flow record per interval)."""
    def failed() -> int:
        return sum(e.failed for e in list(agent.events)
                   if isinstance(e, PairStats) and e.owner is not None and e.owner.is_kernel
                   and e.transport == transport and e.peer_addr == ns.host_ip
                   and e.port == port and e.direction == Direction.INBOUND)

    agent._wait("kernel pair counts", lambda: failed() >= want or None, 15.0)
    return failed()


def test_connect_to_a_closed_port_the_kernels_rst_is_attributed(agent: Agent,
                                                                 ns: NetNs) -> None:
    client = peer("connect-closed", "tcp", ns.ns_ip, str(CLOSED_TCP), "3")
    assert client.finish().split() == ["REFUSED"] * 3
    mine = _client_flow(agent, "tcp", ns, CLOSED_TCP, client.p.pid)
    assert mine.failed
    rst = _kernel_flow(agent, "tcp", ns, CLOSED_TCP)
    assert rst.netns_cookie == 0  # not in the tracepoint's args (documented)
    assert _kernel_pair_count(agent, "tcp", ns, CLOSED_TCP, 3) == 3
    _no_unknown_owner(agent, ns)


def test_udp_to_a_closed_port_the_kernels_icmp_error_is_attributed(agent: Agent,
                                                                   ns: NetNs) -> None:
    client = peer("connect-closed", "udp", ns.ns_ip, str(CLOSED_UDP), "1")
    assert client.finish().split() == ["REFUSED"]
    mine = _client_flow(agent, "udp", ns, CLOSED_UDP, client.p.pid)
    unreachable = _kernel_flow(agent, "udp", ns, CLOSED_UDP)
    assert unreachable.peer_port == mine.local_port
    assert _kernel_pair_count(agent, "udp", ns, CLOSED_UDP, 1) == 1
    # The ICMP error packet itself leaves through the kernel's raw ICMP socket.
    assert _kernel_icmp_packets(agent, ns, 1) == 1
    _no_unknown_owner(agent, ns)


def test_echo_replies_sent_by_the_kernel_are_attributed(agent: Agent, ns: NetNs) -> None:
    out = subprocess.run(["ping", "-c", "3", "-i", "0.2", "-W", "5", ns.ns_ip],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    mine = agent.wait_flow(lambda r: r.transport == "icmp" and r.peer_addr == ns.ns_ip
                           and r.owner is not None and r.owner.comm == "ping")
    assert mine.counters.packets_out == 3
    assert _kernel_icmp_packets(agent, ns, 3) == 3
    _no_unknown_owner(agent, ns)

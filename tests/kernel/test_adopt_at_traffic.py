"""Connections the kernel's tables do not know are adopted at their next packet (issue 11):
with the start-up snapshot off, a loopback connection opened before the agent, that then
transfers and closes while it runs, is one flow per end, marked adopted, with its owner
(found by the resolver, kernel/owner_resolver.py), its direction and its bytes since adoption."""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import pytest
from harness import Agent, assert_tcp_lifetime, peer

from otelpeers.config import Config
from otelpeers.events import Direction, Kind, SocketEvent

pytestmark = pytest.mark.kernel

SIZE = 150_000
HEADERS_PER_PACKET = 120  # IP + TCP headers with options, generously


def test_connection_unknown_to_the_tables_is_adopted_at_its_next_packet() -> None:
    server = peer("tcp-echo-accepted", "127.0.0.1")
    client = None
    try:
        port = server.ready()
        client = peer("tcp-client-phases", "127.0.0.1", str(port), str(SIZE))
        cport = client.ready()
        assert server._line(15) == "ACCEPTED"
        cfg = Config()
        agent = Agent(replace(cfg, kernel=replace(cfg.kernel, adopt_existing=False)))
        try:
            assert agent.sensors.adoption is None  # no snapshot: only traffic can tell
            os.kill(client.p.pid, signal.SIGUSR1)
            assert client._line(30) == f"SENT {SIZE}"

            def announced(local_port: int) -> SocketEvent | None:
                return next((e for e in list(agent.events)
                             if isinstance(e, SocketEvent) and e.kind == Kind.TCP_OPEN
                             and e.local_port == local_port), None)

            # The scan announces each end once the resolver has looked for its owner.
            for lport in (cport, port):
                agent._wait(f"announcement of :{lport}", lambda lp=lport: announced(lp), 20)
            os.kill(client.p.pid, signal.SIGUSR2)
            assert client._line(30) == "DONE"
            out = agent.wait_flow(lambda r: r.local_port == cport and r.peer_port == port)
            inb = agent.wait_flow(lambda r: r.local_port == port and r.peer_port == cport)
        finally:
            agent.stop()
        counters = agent.built.counters()
        assert counters["source.adoption.owners.found"] >= 2
        for r, owner_pid, direction in ((out, client.p.pid, Direction.OUTBOUND),
                                        (inb, server.p.pid, Direction.INBOUND)):
            same = [x for x in agent.records if x.cookie == r.cookie]
            assert len(same) == 1, f"one flow per connection end, got {same}"
            assert r.adopted and r.complete
            assert r.owner is not None and r.owner.tgid == owner_pid, r.owner
            assert r.direction == direction
            c = r.counters
            # Everything was transferred after adoption: payload exact, wire within headers.
            assert c.payload_out == SIZE and c.payload_in == SIZE, c
            assert SIZE <= c.bytes_out <= SIZE + c.packets_out * HEADERS_PER_PACKET, c
            assert r.start_ns <= r.end_ns
            assert_tcp_lifetime(r.tcp, SIZE, SIZE)
    finally:
        server.kill()
        if client is not None:
            client.kill()

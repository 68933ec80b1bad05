"""beacon and port_scan live: the real sensors, real tools, namespace hosts.

- nmap -sT (a connect scan) of 200 ports of a namespace host fires port_scan, vertical,
  with nmap as the actor and the refused ports as evidence;
- nmap -sS (a SYN scan from a raw socket, as root): the kernel reports each probe as a
  PEER event per (raw socket, peer address, peer port), TCP, sock_type SOCK_RAW (checked
  here); port_scan fires on such flows whatever the share answered (the replies go to the
  kernel's TCP stack and nmap's packet capture, never to that socket); the flow table
  makes them flows like a UDP socket's peers. --send-ip makes nmap send through a raw IP
  socket: on an Ethernet device (the test's veth) it would otherwise write whole frames to
  a packet socket, which no cgroup hook sees;
- a loop connecting to a namespace server every second (a copy of the Python interpreter
  named beaconloop, so that it is its own executable) fires beacon after its 12th
  connection (about 12 s: the smallest period the rule takes is 0.8 s, and it decides
  from 12 beats);
- in each run a benign control, curl fetching from a namespace http.server a few times at
  irregular intervals, yields no detection at all.

Each test runs 15-30 s (nmap's scans take a second or two; the beacon test 12-20 s).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import PEERS, Agent, NetNs, Proc

from otelpeers.detect.model import Detection
from otelpeers.events import Kind, SocketEvent

pytestmark = pytest.mark.kernel

NMAP = shutil.which("nmap") or "/usr/bin/nmap"
CURL = shutil.which("curl") or "/usr/bin/curl"
PORTS = "1-200"

BEACON = """
import socket, sys, time
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    c = socket.create_connection((addr, port), timeout=5)
    c.sendall(b"check-in %d" % i)
    c.shutdown(socket.SHUT_WR)
    c.recv(1)
    c.close()
    time.sleep(1.0)
print("DONE", flush=True)
"""


@pytest.fixture
def web(ns: NetNs) -> Iterator[int]:
    """python -m http.server on the namespace address; yields its port."""
    p = subprocess.Popen(ns.cmd(sys.executable, "-u", "-m", "http.server", "--bind",
                                ns.ns_ip, "0"), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        m = re.search(r" port (\d+)", line)
        assert m, f"http.server did not start: {line!r}"
        yield int(m.group(1))
    finally:
        p.kill()
        p.wait()


def curl_a_few_times(ns: NetNs, port: int) -> None:
    """The benign control: a person fetching a page now and then."""
    for pause in (0.3, 1.7, 0.6, 2.2, 0.9):
        r = subprocess.run([CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            f"http://{ns.ns_ip}:{port}/"], capture_output=True, text=True,
                           timeout=20)
        assert r.stdout == "200", r
        time.sleep(pause)


def about(agent: Agent, exe: str) -> list[Detection]:
    return [d for d in list(agent.detections) if d.actor.executable == exe]


def wait_control_flows(agent: Agent, ns: NetNs, port: int) -> None:
    """Wait until the agent completed every control connection, so that 'no detection for
    curl' is checked after the rules saw all of its traffic."""
    def done() -> bool:
        return sum(1 for r in list(agent.records) if r.owner is not None
                   and r.owner.comm == "curl" and r.peer_port == port) >= 5
    agent._wait("curl flows", lambda: True if done() else None, 20)


def nmap(*args: str) -> None:
    r = subprocess.run([NMAP, "-Pn", "-n", "--max-retries", "0", "-p", PORTS, *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_nmap_connect_scan_is_a_vertical_port_scan(agent: Agent, ns: NetNs, web: int) -> None:
    nmap("-sT", ns.ns_ip)
    curl_a_few_times(ns, web)
    d = agent.wait_detection(lambda d: d.rule.name == "port_scan"
                             and d.actor.executable == "nmap", timeout=30)
    assert d.peer is not None and d.peer.address == ns.ns_ip
    ev = d.evidence
    assert ev["kind"] == "vertical" and ev["refused"] >= 8 and not ev["raw_socket"]
    assert ev["unanswered_share"] >= 0.25 and all(1 <= p <= 200 for p in ev["ports"])
    assert d.actor.pid is not None and d.actor.owner is not None
    wait_control_flows(agent, ns, web)
    assert {x.rule.name for x in about(agent, "nmap")} == {"port_scan"}
    assert about(agent, "curl") == []


def test_nmap_syn_scan_reaches_the_agent_as_raw_socket_peers(agent: Agent, ns: NetNs) -> None:
    """The kernel side of a SYN scan: one PEER event per (raw socket, host, port) probed,
    TCP, sock_type SOCK_RAW, owned by nmap."""
    assert os.geteuid() == 0
    nmap("-sS", "--send-ip", ns.ns_ip)

    def probes() -> set[int] | None:
        ports = {e.peer_port for e in list(agent.events)
                 if isinstance(e, SocketEvent) and e.kind == Kind.PEER
                 and e.sock_type == socket.SOCK_RAW and e.protocol == socket.IPPROTO_TCP
                 and e.owner is not None and e.owner.comm == "nmap"
                 and e.peer_addr == ns.ns_ip}
        return ports if len(ports) >= 150 else None

    ports = agent._wait("raw-socket probes", probes, 20)
    assert isinstance(ports, set) and ports <= set(range(1, 201))


def test_nmap_syn_scan_from_a_raw_socket_is_a_port_scan(agent: Agent, ns: NetNs,
                                                        web: int) -> None:
    assert os.geteuid() == 0
    nmap("-sS", "--send-ip", ns.ns_ip)
    curl_a_few_times(ns, web)
    d = agent.wait_detection(lambda d: d.rule.name == "port_scan"
                             and d.actor.executable == "nmap", timeout=10)
    ev = d.evidence
    assert ev["raw_socket"] and ev["unknown"] >= 8
    assert ev["replies"] == "not visible (raw socket)" and "raw socket" in d.summary
    raw = [r for r in list(agent.records) if r.owner is not None and r.owner.comm == "nmap"
           and r.sock_type == socket.SOCK_RAW and r.transport == "tcp"]
    assert len({r.peer_port for r in raw}) >= 8 and all(r.peer_addr == ns.ns_ip for r in raw)
    wait_control_flows(agent, ns, web)
    assert {x.rule.name for x in about(agent, "nmap")} == {"port_scan"}
    assert about(agent, "curl") == []


def test_a_loop_connecting_every_second_is_a_beacon(agent: Agent, ns: NetNs, web: int,
                                                    tmp_path: Path) -> None:
    exe = tmp_path / "beaconloop"
    shutil.copy(os.path.realpath(sys.executable), exe)
    sink = Proc(ns.cmd(sys.executable, PEERS, "tcp-sink", ns.ns_ip, "0"))
    try:
        port = sink.ready()
        loop = Proc([str(exe), "-c", BEACON, ns.ns_ip, str(port), "16"])
        try:
            curl_a_few_times(ns, web)
            d = agent.wait_detection(lambda d: d.rule.name == "beacon"
                                     and d.actor.executable == "beaconloop", timeout=40)
        finally:
            loop.kill()
    finally:
        sink.kill()
    assert d.peer is not None and d.peer.address == ns.ns_ip and d.peer.port == port
    ev = d.evidence
    assert 0.9 <= ev["period_s"] <= 1.3 and ev["beats"] >= 12 and ev["llr"] >= 12
    assert ev["failed"] == 0 and ev["transports"] == ("tcp",)
    assert d.actor.pid == loop.p.pid
    wait_control_flows(agent, ns, web)
    assert {x.rule.name for x in about(agent, "beaconloop")} == {"beacon"}
    assert about(agent, "curl") == []

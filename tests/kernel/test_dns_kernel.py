"""DNS captured in the kernel, parsed, matched, and linked to the connections it named.

A real dnsmasq in a test network namespace serves a CNAME chain of three to A and AAAA
records, an NXDOMAIN zone, and relays SERVFAIL from an upstream; real clients ask it: dig,
curl and Python's getaddrinfo through glibc, with /etc/resolv.conf replaced only inside a
private mount namespace.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import Agent, NetNs, netns, peer

from otelpeers.events import Direction

pytestmark = pytest.mark.kernel

CHAIN = ["www.otp.test", "a.otp.test", "b.otp.test", "c.otp.test"]


@dataclass(frozen=True)
class DnsHost:
    ns: NetNs
    resolv_conf: Path


@contextlib.contextmanager
def dnsmasq(ns: NetNs, tmp: Path) -> Iterator[None]:
    upstream = peer("dns-servfail", "127.0.0.9", "5353", ns=ns)
    upstream.ready()
    args = ns.cmd(shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--no-daemon",
                  "--log-facility=-", "--no-resolv", "--no-hosts", "--bind-interfaces",
                  f"--listen-address={ns.ns_ip}", "--port=53", "--user=root",
                  f"--pid-file={tmp / 'dnsmasq.pid'}",
                  f"--host-record=c.otp.test,{ns.ns_ip},{ns.ns_ip6}",
                  "--cname=b.otp.test,c.otp.test", "--cname=a.otp.test,b.otp.test",
                  "--cname=www.otp.test,a.otp.test", "--local=/otp.test/",
                  "--server=/fail.test/127.0.0.9#5353", "--log-queries")
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # dnsmasq logs "started" once its socket is bound: wait for that line.
        started = threading.Event()

        def watch() -> None:
            for line in p.stdout:
                if "started" in line:
                    started.set()

        threading.Thread(target=watch, daemon=True).start()
        assert started.wait(15), "dnsmasq did not start"
        yield
    finally:
        p.kill()
        p.wait()
        upstream.kill()


@pytest.fixture
def dns_host(tmp_path: Path) -> Iterator[DnsHost]:
    with netns() as ns, dnsmasq(ns, tmp_path):
        conf = tmp_path / "resolv.conf"
        conf.write_text(f"nameserver {ns.ns_ip}\noptions timeout:2 attempts:1\n")
        yield DnsHost(ns, conf)


@dataclass(frozen=True)
class Ran:
    pid: int
    stdout: str


def dig(host: DnsHost, name: str, qtype: str = "A") -> Ran:
    p = subprocess.Popen(["dig", "+tries=1", "+time=5", f"@{host.ns.ns_ip}", name, qtype],
                         stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=30)
    return Ran(p.pid, out)


def with_resolver(host: DnsHost, *argv: str) -> list[str]:
    """Run argv with /etc/resolv.conf replaced in a private mount namespace only."""
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
            str(host.resolv_conf), *argv]


def test_dig_cname_chain_a_and_aaaa(agent: Agent, dns_host: DnsHost) -> None:
    ns = dns_host.ns
    ran = dig(dns_host, "www.otp.test", "A")
    assert ns.ns_ip in ran.stdout
    a = agent.wait_txn(lambda t: t.question_name == "www.otp.test" and t.qtype == "A")
    assert a.rcode == "NOERROR" and list(a.cname_chain) == CHAIN
    assert a.addresses == (ns.ns_ip,)
    assert a.owner is not None and a.owner.tgid == ran.pid  # dig's network thread
    assert (a.resolver_addr, a.resolver_port) == (ns.ns_ip, 53)
    assert 0 < a.end_ns - a.start_ns < 5 * 10**9 and not a.timed_out
    assert a.ttl_min is not None and a.ttl_min >= 0

    dig(dns_host, "www.otp.test", "AAAA")
    aaaa = agent.wait_txn(lambda t: t.question_name == "www.otp.test" and t.qtype == "AAAA")
    assert aaaa.addresses == (ns.ns_ip6,) and list(aaaa.cname_chain) == CHAIN


def test_nxdomain_and_servfail(agent: Agent, dns_host: DnsHost) -> None:
    assert "NXDOMAIN" in dig(dns_host, "nope.otp.test").stdout
    nx = agent.wait_txn(lambda t: t.question_name == "nope.otp.test")
    assert nx.rcode == "NXDOMAIN" and nx.addresses == ()
    assert "SERVFAIL" in dig(dns_host, "x.fail.test").stdout
    sf = agent.wait_txn(lambda t: t.question_name == "x.fail.test")
    assert sf.rcode == "SERVFAIL"


def test_curl_connection_is_named_by_its_resolution(agent: Agent, dns_host: DnsHost,
                                                    tmp_path: Path) -> None:
    ns = dns_host.ns
    (tmp_path / "blob").write_bytes(b"z" * 1_000_000)
    server = subprocess.Popen(
        ns.cmd(sys.executable, "-m", "http.server", "--bind", ns.ns_ip, "--directory",
               str(tmp_path), "8080"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Wait for the listener through the agent itself: the LISTEN event names the port.
        agent.wait_event(lambda e: getattr(e, "kind", None) is not None
                         and e.kind.name == "LISTEN" and e.local_port == 8080)
        p = subprocess.run(with_resolver(dns_host, "curl", "-s", "-o", "/dev/null",
                                         "-w", "%{size_download}",
                                         "http://www.otp.test:8080/blob"),
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and p.stdout == "1000000", p.stderr
    finally:
        server.kill()
        server.wait()
    flow = agent.wait_flow(lambda r: r.owner is not None and r.owner.comm == "curl"
                           and (r.peer_addr, r.peer_port) == (ns.ns_ip, 8080))
    assert flow.direction == Direction.OUTBOUND
    assert flow.counters.payload_in > 1_000_000  # body plus HTTP headers
    assert flow.dns is not None and flow.dns.resolved
    assert flow.dns.question_name == "www.otp.test"
    assert list(flow.dns.cname_chain) == CHAIN and flow.dns.how == "same_process"
    txn = next(t for t in agent.transactions if t.txn_id == flow.dns.txn_id)
    assert txn.owner is not None and txn.owner.comm == "curl"
    # glibc asks A and AAAA in parallel on one socket: two transactions, both answered.
    types = {t.qtype for t in agent.transactions
             if t.question_name == "www.otp.test" and t.owner and t.owner.comm == "curl"}
    assert types == {"A", "AAAA"}


def test_getaddrinfo_through_glibc(agent: Agent, dns_host: DnsHost) -> None:
    code = ("import socket; print(sorted({a[4][0] for a in "
            "socket.getaddrinfo('www.otp.test', 80, proto=socket.IPPROTO_TCP)}))")
    p = subprocess.run(with_resolver(dns_host, sys.executable, "-c", code),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert dns_host.ns.ns_ip in p.stdout
    t = agent.wait_txn(lambda t: t.question_name == "www.otp.test" and t.qtype == "A"
                       and t.owner is not None and t.owner.comm.startswith("python"))
    assert list(t.cname_chain) == CHAIN


def test_direct_ip_connection_is_marked_unresolved(agent: Agent, ns: NetNs) -> None:
    subprocess.run(["curl", "-s", "--max-time", "5", f"http://{ns.ns_ip}:9/"],
                   capture_output=True)
    f = agent.wait_flow(lambda r: r.owner is not None and r.owner.comm == "curl")
    assert f.dns is not None and not f.dns.resolved

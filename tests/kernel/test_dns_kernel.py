"""DNS captured in the kernel, parsed, matched, and linked to the connections it named.

A real dnsmasq in a test network namespace serves a CNAME chain of three to A and AAAA
records, an NXDOMAIN zone, and relays SERVFAIL from an upstream; real clients ask it: dig,
curl and Python's getaddrinfo through glibc, with /etc/resolv.conf replaced only inside a
private mount namespace.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import (
    CHAIN,
    DNSMASQ,
    Agent,
    DnsHost,
    NetNs,
    dns_environment,
    running_dnsmasq,
    with_resolver,
)

from otelpeers.events import Direction

pytestmark = pytest.mark.kernel


@pytest.fixture
def dns_host(tmp_path: Path) -> Iterator[DnsHost]:
    with dns_environment(tmp_path) as host:
        yield host


@dataclass(frozen=True)
class Ran:
    pid: int
    stdout: str


def dig(host: DnsHost, name: str, qtype: str = "A") -> Ran:
    p = subprocess.Popen(["dig", "+tries=1", "+time=5", f"@{host.ns.ns_ip}", name, qtype],
                         stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=30)
    return Ran(p.pid, out)


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


def test_dns_over_tcp(agent: Agent, dns_host: DnsHost) -> None:
    p = subprocess.Popen(["dig", "+tcp", "+tries=1", "+time=5", f"@{dns_host.ns.ns_ip}",
                          "www.otp.test", "AAAA"], stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=30)
    assert dns_host.ns.ns_ip6 in out
    t = agent.wait_txn(lambda t: t.protocol == "tcp" and t.question_name == "www.otp.test")
    assert t.qtype == "AAAA" and t.addresses == (dns_host.ns.ns_ip6,)
    assert list(t.cname_chain) == CHAIN and t.owner is not None and t.owner.tgid == p.pid


def test_local_stub_query_is_linked_to_the_stub_upstream_query(agent: Agent,
                                                               dns_host: DnsHost) -> None:
    """An application asks a local stub (dnsmasq on loopback), which asks the namespace's
    server: the application's transaction names its connection, the stub's is linked."""
    stub_addr = "127.0.0.77"
    argv = [DNSMASQ, "--no-daemon", "--log-facility=-", "--no-resolv", "--no-hosts",
            "--bind-interfaces", f"--listen-address={stub_addr}", "--port=53", "--user=root",
            "--pid-file=", "--cache-size=0", f"--server={dns_host.ns.ns_ip}"]
    with running_dnsmasq(argv) as stub:
        p = subprocess.Popen(["dig", "+tries=1", "+time=5", f"@{stub_addr}", "www.otp.test"],
                             stdout=subprocess.PIPE, text=True)
        out, _ = p.communicate(timeout=30)
        assert dns_host.ns.ns_ip in out
        app = agent.wait_txn(lambda t: t.resolver_addr == stub_addr
                             and t.question_name == "www.otp.test")
        upstream = agent.wait_txn(lambda t: t.resolver_addr == dns_host.ns.ns_ip
                                  and t.owner is not None and t.owner.tgid == stub.pid)
        assert app.owner is not None and app.owner.tgid == p.pid
        assert agent.dns.cache.stub_upstream_of(app) == upstream.txn_id

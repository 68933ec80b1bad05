"""The DNS detection rules on real traffic: the agent's own pipeline with the real sensors.

A test namespace runs dnsmasq (no cache, so every query goes through) serving ordinary
names, a CNAME chain across three registered domains, and forwarding two zones to a small
authoritative server (dns_threat_peers.py zone) that answers like a DNS tunnel server (TXT
data for any name under tunnel-test.net) and like a fast-flux botnet (new addresses from all
over the IPv4 space on each resolution of login.flux-test.com). Real clients ask it: a
tunnel client (long base32 labels, TXT queries), Python resolving the flux name and the
chain, and the controls dig and curl doing ordinary lookups, which must trigger nothing.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    DNSMASQ,
    PYTHON,
    Agent,
    DnsHost,
    NetNs,
    Proc,
    netns,
    running_dnsmasq,
    with_resolver,
)

from otelpeers.detect.model import Detection, EvidenceKind

pytestmark = pytest.mark.kernel

PEERS = str(Path(__file__).with_name("dns_threat_peers.py"))
DNS_RULES = {"dga", "dns_tunnel", "fast_flux", "dns_redirection_chain"}
CHAIN = ["update.start-test.com", "r1.hop-one.net", "edge.hop-two.info", "h7.hop-three.org"]


@contextlib.contextmanager
def threat_dns(tmp: Path) -> Iterator[NetNs]:
    """A namespace with dnsmasq on its address; the zone server behind it on 127.0.0.9."""
    with netns() as ns:
        zone = Proc(ns.cmd(PYTHON, PEERS, "zone", "127.0.0.9", "5353"))
        try:
            zone.ready()
            args = ns.cmd(
                DNSMASQ, "--no-daemon", "--log-facility=-", "--no-resolv", "--no-hosts",
                "--bind-interfaces", f"--listen-address={ns.ns_ip}", "--port=53",
                "--user=root", f"--pid-file={tmp / 'dnsmasq.pid'}", "--cache-size=0",
                f"--host-record=www.otp.test,{ns.ns_ip},{ns.ns_ip6}", "--local=/otp.test/",
                f"--host-record={CHAIN[3]},{ns.ns_ip}",
                f"--cname={CHAIN[2]},{CHAIN[3]}", f"--cname={CHAIN[1]},{CHAIN[2]}",
                f"--cname={CHAIN[0]},{CHAIN[1]}",
                "--server=/tunnel-test.net/127.0.0.9#5353",
                "--server=/flux-test.com/127.0.0.9#5353",
                # DGA-style names: the zone server answers NXDOMAIN for names it does not have
                "--server=/biz/127.0.0.9#5353", "--server=/xyz/127.0.0.9#5353",
                "--server=/top/127.0.0.9#5353")
            with running_dnsmasq(args):
                yield ns
        finally:
            zone.kill()


@pytest.fixture
def dns_host(tmp_path: Path) -> Iterator[DnsHost]:
    with threat_dns(tmp_path) as ns:
        conf = tmp_path / "resolv.conf"
        conf.write_text(f"nameserver {ns.ns_ip}\noptions timeout:2 attempts:1\n")
        yield DnsHost(ns, conf)


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (argv, p.stderr)
    return p


def spawn(*args: str) -> tuple[int, str]:
    """Run a dns_threat_peers.py client; (its pid, its DONE value)."""
    p = subprocess.Popen([PYTHON, PEERS, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and out.startswith("DONE"), err
    return p.pid, out.split()[1]


def dns_detections(agent: Agent) -> list[Detection]:
    return [d for d in agent.detections if d.rule.name in DNS_RULES]


def ordinary_lookups(agent: Agent, host: DnsHost) -> None:
    """dig and curl doing what they usually do; wait until the agent has their lookups."""
    ns = host.ns
    pids = []
    for name, qtype in (("www.otp.test", "A"), ("www.otp.test", "AAAA"),
                        ("nope.otp.test", "A"), ("www.otp.test", "TXT")):
        p = subprocess.Popen(["dig", "+tries=1", "+time=5", f"@{ns.ns_ip}", name, qtype],
                             stdout=subprocess.PIPE, text=True)
        p.communicate(timeout=30)
        pids.append(p.pid)
    # curl resolves through glibc (a private resolv.conf) and connects: refused is fine
    curl = subprocess.Popen(with_resolver(host, "curl", "-s", "--max-time", "5",
                                          "http://www.otp.test:9/"), stdout=subprocess.PIPE)
    curl.communicate(timeout=60)
    for pid in (*pids, curl.pid):  # dig's and curl's lookups run in helper threads: by tgid
        agent.wait_txn(lambda t, pid=pid: t.owner is not None and t.owner.tgid == pid)


def test_a_dns_tunnel_fires_for_its_client_and_dig_and_curl_trigger_nothing(
        agent: Agent, dns_host: DnsHost) -> None:
    ordinary_lookups(agent, dns_host)
    pid, answered = spawn("tunnel", dns_host.ns.ns_ip, "80")
    assert answered == "80"  # every query got its TXT data back through dnsmasq
    d = agent.wait_detection(lambda d: d.rule.name == "dns_tunnel")
    assert d.actor.pid == pid and d.actor.executable is not None
    assert d.actor.executable.startswith("python")
    assert d.peer is not None and d.peer.name == "tunnel-test.net"
    ev = d.evidence
    assert ev["alphabet"] == "base32" and ev["longest_label"] == 50
    assert ev["answer_bits"] > 0 and ev["qtypes"][0].startswith("TXT:")
    assert ev["unique_names"] >= 12 and ev["evidence_bits"] >= 16000
    # the evidence span is the client's DNS transaction that completed the evidence
    assert d.evidence_span is not None and d.evidence_span.kind == EvidenceKind.DNS
    txn = next(t for t in agent.transactions if t.txn_id == d.evidence_span.ident)
    assert txn.owner is not None and txn.owner.tgid == pid and txn.qtype == "TXT"
    assert txn.question_name.endswith(".tunnel-test.net") and d.time_ns == txn.end_ns
    # exactly that: nothing on dig's or curl's lookups, no other DNS rule on the tunnel
    assert not [x for x in agent.detections if x.actor.executable in ("dig", "curl")]
    assert {x.rule.name for x in dns_detections(agent)} == {"dns_tunnel"}


def test_fast_flux_and_a_redirection_chain_fire_for_the_process_that_resolved_them(
        agent: Agent, dns_host: DnsHost) -> None:
    ordinary_lookups(agent, dns_host)
    pid, distinct = spawn("resolve", dns_host.ns.ns_ip, "login.flux-test.com", "5")
    assert int(distinct) >= 20  # five resolutions, new addresses each time
    flux = agent.wait_detection(lambda d: d.rule.name == "fast_flux")
    assert flux.actor.pid == pid and flux.peer is not None
    assert flux.peer.name == "login.flux-test.com"
    assert flux.evidence["resolutions"] == 4 and flux.evidence["networks_16"] >= 6
    assert flux.evidence["ttl_max_s"] == 120

    code = ("import socket; print(sorted({a[4][0] for a in socket.getaddrinfo("
            f"'{CHAIN[0]}', 80, socket.AF_INET, socket.SOCK_STREAM)}}))")
    p = subprocess.Popen(with_resolver(dns_host, PYTHON, "-c", code), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and dns_host.ns.ns_ip in out, err
    chain = agent.wait_detection(lambda d: d.rule.name == "dns_redirection_chain")
    assert chain.actor.executable is not None and chain.actor.executable.startswith("python")
    assert list(chain.evidence["chain"]) == CHAIN
    assert chain.evidence["domains"] == ("hop-one.net", "hop-two.info", "hop-three.org")
    txn = next(t for t in agent.transactions if t.txn_id == chain.evidence_span.ident)
    assert txn.question_name == CHAIN[0] and list(txn.cname_chain) == CHAIN
    assert not [x for x in agent.detections if x.actor.executable in ("dig", "curl")]
    assert {x.rule.name for x in dns_detections(agent)} == {"fast_flux",
                                                            "dns_redirection_chain"}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))


def test_dga_fires_for_the_process_hunting_random_names_not_for_dig_and_curl(
        agent: Agent, dns_host: DnsHost) -> None:
    ordinary_lookups(agent, dns_host)
    pid, nx = spawn("dga", dns_host.ns.ns_ip, "25")
    assert int(nx) == 25  # every generated name ended NXDOMAIN through dnsmasq
    d = agent.wait_detection(lambda d: d.rule.name == "dga")
    assert d.actor.pid == pid and d.actor.executable is not None
    assert d.actor.executable.startswith("python")
    ev = d.evidence
    assert ev["nxdomain_registered_domains"] >= 8 and ev["nxdomain_share"] >= 0.75
    assert all(n.endswith((".biz", ".xyz", ".top")) for n in ev["names"])
    assert d.evidence_span is not None and d.evidence_span.kind == EvidenceKind.DNS
    txn = next(t for t in agent.transactions if t.txn_id == d.evidence_span.ident)
    assert txn.owner is not None and txn.owner.tgid == pid and txn.rcode == "NXDOMAIN"
    assert not [x for x in agent.detections if x.actor.executable in ("dig", "curl")]
    assert {x.rule.name for x in dns_detections(agent)} == {"dga"}

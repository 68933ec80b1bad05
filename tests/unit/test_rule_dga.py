"""The `dga` rule on the shipped model: an infected process fires once with its evidence;
ordinary lookups do not."""

from __future__ import annotations

import random

from otelpeers.config import parse_config
from otelpeers.detect.engine import Engine
from otelpeers.detect.model import EvidenceKind
from otelpeers.detect.rules.dga import Dga
from otelpeers.dns.lookups import DnsLookup
from otelpeers.dns.transactions import DnsTransaction
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import T0, owner

S = 10**9


def lookup(name: str, t: int, rcode: str = "NXDOMAIN", comm: str = "malware",
           tgid: int = 66) -> DnsLookup:
    addrs = ("192.0.2.1",) if rcode == "NOERROR" else ()
    return DnsLookup(DnsTransaction(
        txn_id=f"t-{name}-{t}", cookie=1, owner=owner(tgid, comm), resolver_addr="10.0.0.53",
        resolver_port=53, client_addr="10.0.0.2", client_port=5353, question_name=name,
        qtype="A", rcode=rcode, answers=(), addresses=addrs, cname_chain=(), ttl_min=None,
        start_ns=t, end_ns=t + 5_000_000, retries=0, truncated=False, timed_out=False,
        protocol="udp"))


def engine() -> Engine:
    return Engine(parse_config({}).detect, [Dga])


def random_names(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(10, 16)))
            + rng.choice([".com", ".net", ".biz", ".info", ".ru"]) for _ in range(n)]


def test_an_infected_process_fires_once_with_its_evidence() -> None:
    e = engine()
    found = []
    for i, name in enumerate(random_names(30)):
        found += e.evaluate(Outputs(dns=[lookup(name, T0 + i * 3 * S)]))
    assert len(found) == 1, [d.summary for d in found]
    d = found[0]
    assert d.rule.name == "dga" and d.actor.executable == "malware"
    assert d.evidence["nxdomain_registered_domains"] >= 8
    assert d.evidence["nxdomain_share"] >= 0.75
    assert all(n in random_names(30) for n in d.evidence["names"])
    assert d.evidence_span is not None and d.evidence_span.kind == EvidenceKind.DNS
    assert 0.5 <= d.score <= 1.0 and "did not exist" in d.summary


def test_ordinary_lookups_and_a_few_typos_do_not_fire() -> None:
    e = engine()
    ordinary = ["www.google.com", "api.github.com", "pypi.org", "files.pythonhosted.org",
                "deb.debian.org", "security.debian.org", "cdn.jsdelivr.net",
                "fonts.googleapis.com", "www.wikipedia.org", "example.com"]
    typos = ["gooogle.com", "githbu.com", "wikipedai.org"]
    found = []
    t = T0
    for _ in range(20):
        for name in ordinary:
            found += e.evaluate(Outputs(dns=[lookup(name, t, "NOERROR", comm="firefox")]))
            t += S
    for name in typos:
        found += e.evaluate(Outputs(dns=[lookup(name, t, comm="firefox")]))
        t += S
    assert found == []

"""dns_redirection_chain: chains across unfamiliar domains, long or churning chains fire;
the chains of CDNs and ordinary sites do not."""

from __future__ import annotations

import random
import string

import pytest
from dns_rule_inputs import engine, lookup, run

from otelpeers.config import ConfigError, parse_config
from otelpeers.detect.model import Actor, ActorKind, EvidenceKind
from otelpeers.detect.rules.dns_redirection_chain import DnsRedirectionChain
from otelpeers.testing.flows import T0

ADDR = ("203.0.113.7",)


def test_a_chain_across_three_unfamiliar_domains_fires_on_first_sight() -> None:
    chain = ("r1.hop-one.net", "edge.hop-two.info", "h7.hop-three.org")
    lk = lookup("update.start-example.com", cnames=chain, addresses=ADDR, comm="implant")
    (d,) = run(engine(DnsRedirectionChain), [lk])
    assert d.evidence_span.kind == EvidenceKind.DNS and d.evidence_span.ident == lk.txn.txn_id
    assert d.time_ns == lk.txn.end_ns and d.peer.name == "update.start-example.com"
    ev = d.evidence
    assert ev["chain"] == ("update.start-example.com", *chain) and ev["hops"] == 3
    assert ev["domains"] == ("hop-one.net", "hop-two.info", "hop-three.org")
    assert ev["unfamiliar_domains"] == 3 and ev["chain_score"] == 3.0
    assert ev["peers"] == ADDR and d.actor.executable == "implant"
    assert "3 other registered domains" in d.summary


def test_cdn_and_site_chains_stay_quiet() -> None:
    chains = [
        ("www.shop-example.com", ("shop-example.com.cdn.cloudflare.net",)),
        ("www.apple-example.com", ("www.apple-example.com.edgekey.net",
                                   "e6858.dscx.akamaiedge.net")),
        ("www.ms-example.com", ("www.ms-example.com-c-3.edgekey.net",
                                "www.ms-example.com-c-3.edgekey.net.globalredir.akadns.net",
                                "e13678.dscb.akamaiedge.net")),
        ("img.news-example.com", ("news-example-com.edge3.kelmarcdn.net",)),  # unlisted CDN
        ("blog.wp-example.org", ("wp-example.wphost.com", "wp-example.wphostpowered.com")),
        ("api.multi-example.io", ("api.multi-example.io.cdn.cloudflare.net",)),
        ("api.multi-example.io", ("d123.cloudfront.net",)),
        ("api.multi-example.io", ("multi-example.global.ssl.fastly.net",)),
        ("www.amazon-example.com", ("tp.47cf2c8c9-frontier.amazon-example.com",
                                    "d3ag4hukkh62yn.cloudfront.net")),
    ]
    r = random.Random(1)
    lookups = [lookup(name, cnames=cn, addresses=ADDR, t=i * 30, comm="firefox",
                      tgid=r.randrange(100, 200))
               for i in range(300) for name, cn in [chains[i % len(chains)]]]
    assert run(engine(DnsRedirectionChain), lookups) == []


def test_a_long_chain_inside_one_or_two_domains_fires() -> None:
    hops = tuple(f"s{i}.{'loop-example.com' if i % 3 else 'loop-other.net'}"
                 for i in range(8))
    (d,) = run(engine(DnsRedirectionChain),
               [lookup("a.loop-example.com", cnames=hops, addresses=ADDR)])
    assert d.evidence["hops"] == 8 and d.evidence["length_score"] == 3.0


def test_a_chain_moving_to_new_domains_fires_when_the_third_one_shows() -> None:
    r = random.Random(2)
    lookups = [lookup("cdn.churn-example.com", addresses=ADDR, t=i * 300,
                      cnames=(f"{''.join(r.choices(string.ascii_lowercase, k=6))}."
                              f"fresh{i}-example.net",)) for i in range(6)]
    ds = run(engine(DnsRedirectionChain), lookups)
    assert len(ds) == 1 and ds[0].evidence["resolutions"] == 3
    assert ds[0].evidence["distinct_chains"] == 3


def test_familiar_and_customer_named_domains_count_less() -> None:
    providers = ("gslb-eu.net", "geodns-us.com", "trafficdir-ap.io")

    def switching(gap: float, hop: str) -> list:
        return [lookup("api.geo-example.com", cnames=(f"{hop}.{providers[i % 3]}",),
                       addresses=ADDR, t=i * gap) for i in range(12)]

    # three unfamiliar providers within minutes: fires
    (d,) = run(engine(DnsRedirectionChain), switching(60, "edge1"))
    assert d.evidence["unfamiliar_domains"] == 3 and d.evidence["named_domains"] == 0
    # a switch every 90 minutes: the earlier providers have settled for this name
    assert run(engine(DnsRedirectionChain), switching(5400, "edge1")) == []
    # providers naming their customer (api.geo-example-com.<provider>) count half
    assert run(engine(DnsRedirectionChain), switching(60, "api.geo-example-com")) == []


def test_a_chain_many_actors_resolve_is_scored_down() -> None:
    chain = ("r1.hop-one.net", "edge.hop-two.info", "h7.hop-three.org")
    lookups = [lookup("www.popular-example.com", cnames=chain, addresses=ADDR, t=i,
                      comm=None, client=f"10.0.{i // 200}.{i % 200}") for i in range(50)]
    ds = run(engine(DnsRedirectionChain), lookups)
    assert {d.actor.key for d in ds} == {"10.0.0.0", "10.0.0.1", "10.0.0.2"}
    allowed = engine(DnsRedirectionChain, allow={"domain_suffixes": ["popular-example.com"]})
    assert run(allowed, lookups) == []


def test_state_stays_bounded_under_a_million_unique_names() -> None:
    e = engine(DnsRedirectionChain, max_names=1000, max_domains_per_name=4)
    rule = e.rules[0][0]
    actors = [Actor(ActorKind.ADDRESS, f"10.1.0.{i}", address=f"10.1.0.{i}")
              for i in range(100)]
    lk = lookup("x.example.com", cnames=("y.example.net",), addresses=ADDR)
    txn, set_ = lk.txn, object.__setattr__
    hops = [f"h.hop{i}-example.net" for i in range(64)]
    for i in range(1_000_000):  # the rule directly, one lookup rewritten in place
        name = f"n{i:x}.start-example.com" if i % 8 else "hot.start-example.com"
        set_(txn, "cname_chain", (name, hops[i % 64], hops[(i * 7) % 64]))
        set_(txn, "end_ns", T0 + i * 1000)
        for _ in rule.on_dns(actors[i % 100], lk):
            pass
    assert len(rule._names) <= 1000 and len(rule._cache) <= 8192
    assert all(len(st.domains) <= 4 and len(st.signatures) <= 4 and len(st.actors) <= 32
               for st in rule._names.values())
    assert e.counters()["dns_redirection_chain.names.state_evicted"] > 0


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match="dns_redirection_chain.min_score"):
        parse_config({"detect": {"rules": {"dns_redirection_chain": {"min_score": 0}}}})
    with pytest.raises(ConfigError, match="dns_redirection_chain.settled_weight"):
        parse_config({"detect": {"rules": {"dns_redirection_chain": {"settled_weight": 2}}}})

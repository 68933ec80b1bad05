"""fast_flux: botnet-answered names fire; CDNs, load balancers, pools and long TTLs do not."""

from __future__ import annotations

import random

import pytest
from dns_rule_inputs import engine, lookup, run

from otelpeers.config import ConfigError, parse_config
from otelpeers.detect.model import Actor, ActorKind, EvidenceKind
from otelpeers.detect.rules.fast_flux import FastFlux
from otelpeers.testing.flows import T0

FIRSTS = (24, 31, 41, 46, 59, 62, 71, 77, 82, 89, 95, 101, 112, 117, 151, 177, 186, 190,
          201, 213)


def world(r: random.Random) -> str:
    return f"{r.choice(FIRSTS)}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"


def flux(name: str, n: int, r: random.Random, per: int = 5, ttl: int = 180,
         gap: float = 300.0, **kw: object) -> list:
    return [lookup(name, addresses=tuple(world(r) for _ in range(per)), ttl=ttl, t=i * gap,
                   **kw) for i in range(n)]


def test_a_botnet_answered_name_fires_at_the_fourth_resolution() -> None:
    lookups = flux("login.flux-example.com", 10, random.Random(1), comm="implant")
    ds = run(engine(FastFlux), lookups)
    assert len(ds) == 1
    (d,) = ds
    assert d.evidence_span.kind == EvidenceKind.DNS
    assert d.evidence_span.ident == lookups[3].txn.txn_id and d.time_ns == lookups[3].txn.end_ns
    ev = d.evidence
    assert d.peer is not None and d.peer.name == "login.flux-example.com"
    assert ev["resolutions"] == 4 and ev["addresses"] == 20 and ev["networks_16"] >= 6
    assert ev["ttl_max_s"] == 180 and ev["novelty"] == 1.0
    assert len(ev["peers"]) == 16 and len(ev["networks"]) == min(16, ev["networks_16"])
    assert ev["registered_domain"] == "flux-example.com"
    assert "fast flux" in d.summary and d.actor.executable == "implant"


def test_cdn_rotation_and_load_balancers_do_not_fire() -> None:
    r = random.Random(2)
    cdn_pool = [f"13.224.{10 + i % 2}.{i}" for i in range(16)]
    lb_pool = [f"{a}.{b}.7.{i}" for i, (a, b) in enumerate(
        [(3, 208), (34, 195), (52, 1), (54, 85), (18, 204), (44, 192), (35, 170), (100, 24)])]
    lookups = []
    for i in range(200):
        lookups.append(lookup("d1234abcd.cloudfront.net", ttl=60, t=i * 60,
                              addresses=tuple(r.sample(cdn_pool, 2))))
        # a load balancer: 8 fixed nodes spread over 8 /16s, 3 a time, TTL 60
        lookups.append(lookup("api.shop-example.com", ttl=60, t=i * 60 + 1,
                              addresses=tuple(lb_pool[(i + j) % 8] for j in range(3))))
    assert run(engine(FastFlux), lookups) == []


def test_long_ttls_and_known_pools_do_not_fire() -> None:
    r = random.Random(3)
    assert run(engine(FastFlux), flux("rr.example-hosting.net", 20, r, ttl=3600)) == []
    assert run(engine(FastFlux), flux("2.debian.pool.ntp.org", 50, r, per=4, ttl=150)) == []
    # pool_weight > 0 scores them down instead of ignoring them
    assert run(engine(FastFlux, pool_weight=1.0),
               flux("2.debian.pool.ntp.org", 50, r, per=4, ttl=150)) != []


def test_a_chain_ending_at_a_listed_cdn_needs_far_more_networks() -> None:
    r = random.Random(4)
    lookups = [lookup("www.shop-example.com", cnames=("shop.cdn.cloudflare.net",), ttl=60,
                      addresses=tuple(world(r) for _ in range(2)), t=i * 60) for i in range(6)]
    assert run(engine(FastFlux), lookups) == []
    plain = [lookup("www.shop-example.com", ttl=60, t=i * 60,
                    addresses=tuple(world(r) for _ in range(2))) for i in range(6)]
    assert len(run(engine(FastFlux), plain)) == 1


def test_many_resolving_actors_need_more_networks_and_one_actor_fires() -> None:
    r = random.Random(5)
    one = flux("cdn.flux-example.org", 6, r, per=2, comm=None, client="10.0.0.9")
    assert len(run(engine(FastFlux), one)) == 1
    crowd = [lookup("cdn.flux-example.org", addresses=tuple(world(r) for _ in range(2)),
                    ttl=180, t=i * 10, comm=None, client=f"10.0.1.{i % 40}")
             for i in range(6)]
    e = engine(FastFlux, shared_actors=1, prevalence_weight=1.0)
    assert run(e, crowd) == []  # 6 actors: 12 addresses are not enough
    assert (e.rules[0][0]._names.get(("cdn.flux-example.org", False)).resolutions == 6)


def test_ipv4_and_ipv6_answers_are_separate_stories() -> None:
    lookups = []
    for i in range(10):
        lookups.append(lookup("www.dual-example.com", ttl=60, t=i * 60,
                              addresses=(f"93.184.{i % 2}.{i}",)))
        lookups.append(lookup("www.dual-example.com", qtype="AAAA", ttl=60, t=i * 60,
                              addresses=(f"2a0{i % 3}:4700:{i % 2}::{i}",)))
    assert run(engine(FastFlux), lookups) == []


def test_names_sharing_bots_are_named_in_the_evidence() -> None:
    r = random.Random(6)
    bots = [world(r) for _ in range(60)]
    lookups = []
    for i in range(8):
        for j, name in enumerate(("a.flux-one.com", "b.flux-two.net", "c.flux-three.org")):
            lookups.append(lookup(name, addresses=tuple(r.sample(bots, 6)), ttl=120,
                                  t=i * 300 + j))
    ds = run(engine(FastFlux), lookups)
    last = [d for d in ds if d.peer.name == "c.flux-three.org"]
    assert last and set(last[0].evidence["shared_names"]) >= {"a.flux-one.com",
                                                              "b.flux-two.net"}
    assert last[0].evidence["weight_shared"] == 1.25


def test_state_stays_bounded_under_a_million_unique_names() -> None:
    e = engine(FastFlux, max_names=1000, max_addresses_per_name=8, max_address_index=2000)
    rule = e.rules[0][0]
    actor = Actor(ActorKind.ADDRESS, "10.0.0.2", address="10.0.0.2")
    lk = lookup("x.example.com", addresses=("192.0.2.1",), ttl=60)
    txn, set_ = lk.txn, object.__setattr__
    for i in range(1_000_000):  # the rule directly, one lookup rewritten in place
        name = f"n{i}.example.com" if i % 10 else "hot.example.com"
        set_(txn, "question_name", name)
        set_(txn, "cname_chain", (name,))
        set_(txn, "addresses", (f"{1 + (i >> 16) % 200}.{(i >> 8) & 255}.{i & 255}.1",
                                f"{1 + (i >> 15) % 200}.{(i >> 7) & 255}.{i & 127}.2"))
        set_(txn, "end_ns", T0 + i * 1000)
        for _ in rule.on_dns(actor, lk):
            pass
    assert len(rule._names) <= 1000 and len(rule._by_addr) <= 2000
    assert all(len(st.addrs) <= 8 and len(st.wide) <= 8 and len(st.narrow) <= 8
               for st in rule._names.values())
    assert all(len(v) <= 8 for v in rule._by_addr.values())
    assert e.counters()["fast_flux.names.state_evicted"] > 0


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match="fast_flux.min_networks"):
        parse_config({"detect": {"rules": {"fast_flux": {"min_networks": 1}}}})
    with pytest.raises(ConfigError, match="fast_flux.pool_suffixes"):
        parse_config({"detect": {"rules": {"fast_flux": {"pool_suffixes": ["a b"]}}}})

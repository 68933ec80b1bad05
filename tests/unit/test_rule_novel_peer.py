"""novel_peer through the real engine: stable baselines, DNS names, slow learning,
persistence, bounded state."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from otelpeers.config import ConfigError, parse_config
from otelpeers.detect.engine import Engine
from otelpeers.detect.model import ActorKind, EvidenceKind
from otelpeers.detect.rules.novel_peer import NovelPeer
from otelpeers.detect.store import BaselineStore
from otelpeers.dns.lookups import DnsLookup
from otelpeers.dns.transactions import DnsTransaction
from otelpeers.flows import DnsAnnotation, FlowRecord
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import T0, flow, owner

S = 10**9
H = 3600 * S
DAY = 24 * H
LEARN_S = 86400.0
AFTER = T0 + DAY + H
_ids = iter(range(0x10000, 1 << 40))


def engine(**rule: object) -> Engine:
    cfg = parse_config({"detect": {"learning_period_s": LEARN_S,
                                   "rules": {"novel_peer": rule}}}).detect
    return Engine(cfg, [NovelPeer])


def conn(peer: str, t: int, *, comm: str = "backupd", name: str | None = None,
         port: int = 443) -> FlowRecord:
    """An outbound flow as the DNS stage annotates it: named, or direct-IP (resolved False)."""
    f = flow(f"{next(_ids):x}", proc=owner(300, comm), peer=peer, peer_port=port, start_ns=t)
    dns = (DnsAnnotation(resolved=True, question_name=name) if name
           else DnsAnnotation(resolved=False))
    return replace(f, dns=dns)


def zeek(src: str, peer: str, t: int) -> FlowRecord:
    return replace(flow(f"{next(_ids):x}", proc=None, local=src, peer=peer, start_ns=t),
                   owner=None)


def lookup(src: str, name: str, addrs: tuple[str, ...], t: int) -> DnsLookup:
    return DnsLookup(DnsTransaction(
        txn_id=f"t{next(_ids):x}", cookie=0, owner=None, resolver_addr="10.0.0.53",
        resolver_port=53, client_addr=src, client_port=5353, question_name=name, qtype="A",
        rcode="NOERROR", answers=(), addresses=addrs, cname_chain=(), ttl_min=300,
        start_ns=t, end_ns=t + 1000, retries=0, truncated=False, timed_out=False,
        protocol="udp"))


def run(e: Engine, *flows: FlowRecord, progress: bool = False) -> list:
    out = []
    for f in flows:
        out += e.evaluate(Outputs(progress=[f]) if progress else Outputs(flows=[f]))
    return out


def stable_day(e: Engine, comm: str = "backupd") -> None:
    """A server's learning day: a mirror by name and an API by address, all day long."""
    got = []
    for hour in range(24):
        t = T0 + hour * H
        got += run(e, conn("198.51.100.7", t, comm=comm, name="mirror.example.org"),
                   conn("203.0.113.20", t + S, comm=comm))
    assert got == []


def test_a_stable_server_reaching_a_new_network_by_address_fires() -> None:
    e = engine()
    stable_day(e)
    assert run(e, conn("198.51.100.7", AFTER, name="mirror.example.org"),
               conn("203.0.113.99", AFTER)) == []  # same /24 as the API: known
    f = conn("192.0.2.44", AFTER + S, port=8080)
    (d,) = run(e, f)
    assert d.rule.name == "novel_peer" and d.actor.key == "backupd"
    ev = d.evidence
    assert ev["peer"] == "192.0.2.0/24" and ev["direct_ip"] is True
    assert ev["baseline_peers"] == 2 and ev["baseline_new_per_day"] == 0.0
    assert ev["first_seen_ns"] == f.start_ns and ev["port"] == 8080
    assert d.peer is not None and d.peer.cidr == "192.0.2.0/24" and d.peer.address == f.peer_addr
    assert d.evidence_span is not None and d.evidence_span.kind == EvidenceKind.FLOW
    assert d.score >= 0.9
    # Further connections to that network alert no more.
    assert run(e, conn("192.0.2.45", AFTER + 2 * H), conn("192.0.2.44", AFTER + 3 * H)) == []


def test_a_new_domain_scores_lower_than_a_new_address_and_names_are_registered() -> None:
    e = engine()
    stable_day(e)
    (named,) = run(e, conn("192.0.2.10", AFTER, name="cdn1.files.example.co.uk"))
    (direct,) = run(e, conn("192.0.2.11", AFTER + S, comm="backupd"))
    assert named.evidence["peer"] == "example.co.uk" and named.evidence["direct_ip"] is False
    assert named.peer is not None and named.peer.name == "example.co.uk"
    assert direct.score > named.score


def test_a_known_name_at_a_new_address_is_not_new() -> None:
    """The package mirror moved to another network: same DNS name, no alert."""
    e = engine()
    stable_day(e)
    assert run(e, conn("192.0.2.200", AFTER, name="deb.mirror.example.org")) == []


def test_an_actor_whose_peers_kept_changing_is_no_baseline() -> None:
    e = engine()
    got = run(e, *[conn(f"{20 + i % 200}.{i % 7}.{i % 11}.1", T0 + i * 10 * 60 * S,
                        comm="firefox") for i in range(140)])
    assert got == []
    assert run(e, conn("192.0.2.5", AFTER, comm="firefox")) == []
    assert e.counters()["novel_peer.unstable_skipped"] + e.counters()[
        "novel_peer.broad_actors"] >= 1


def test_nothing_fires_during_learning_or_for_internal_peers() -> None:
    e = engine()
    stable_day(e)
    assert run(e, conn("10.1.2.3", AFTER), conn("192.168.7.7", AFTER + S),
               conn("127.0.0.1", AFTER + 2 * S), conn("fe80::1", AFTER + 3 * S)) == []
    e2 = engine(internal_peers=True)
    stable_day(e2)
    assert len(run(e2, conn("10.1.2.3", AFTER))) == 1


def test_a_short_baseline_is_no_baseline() -> None:
    e = engine(min_baseline_s=4 * 3600)
    run(e, conn("203.0.113.20", T0), conn("203.0.113.20", T0 + H))
    assert run(e, conn("192.0.2.5", AFTER)) == []


def test_an_actor_born_after_learning_learns_first() -> None:
    e = engine(new_actor_learning_s=8 * 3600)
    stable_day(e)
    later = AFTER + DAY
    for hour in range(8):
        assert run(e, conn("198.51.100.9", later + hour * H, comm="newd")) == []
    (d,) = run(e, conn("192.0.2.1", later + 9 * H, comm="newd"))
    assert d.actor.key == "newd"


def test_an_actor_seen_briefly_while_learning_learns_on() -> None:
    e = engine(min_baseline_s=4 * 3600, new_actor_learning_s=12 * 3600)
    stable_day(e)  # starts the clock at T0
    late = T0 + 22 * H  # the last two hours of learning only
    run(e, conn("203.0.113.20", late, comm="cron-agent"),
        conn("203.0.113.20", late + H, comm="cron-agent"))
    # Its own learning runs until late + 12 h: this new network is learned, not an alert.
    assert run(e, conn("192.0.2.1", late + 2 * H, comm="cron-agent"),
               conn("203.0.113.20", late + 6 * H, comm="cron-agent")) == []
    assert run(e, conn("192.0.2.1", late + 13 * H, comm="cron-agent")) == []
    (d,) = run(e, conn("198.18.0.1", late + 13 * H, comm="cron-agent"))
    assert d.evidence["baseline_peers"] == 2 and d.evidence["baseline_new_per_day"] == 0


def test_a_new_peer_seen_on_two_days_joins_the_baseline_after_one_alert() -> None:
    e = engine(promote_days=2)
    stable_day(e)
    assert len(run(e, conn("192.0.2.1", AFTER))) == 1
    assert run(e, conn("192.0.2.1", AFTER + DAY)) == []
    assert e.counters()["novel_peer.promoted"] == 1
    assert run(e, conn("192.0.2.1", AFTER + 5 * DAY)) == []


def test_open_connections_alert_from_their_first_snapshot() -> None:
    e = engine()
    stable_day(e)
    f = replace(conn("192.0.2.1", AFTER), complete=False, dns=None)
    (d,) = run(e, f, progress=True)
    assert d.evidence["direct_ip"] is True
    assert run(e, replace(f, complete=True)) == []


def test_zeek_rows_are_named_by_the_sources_own_lookups() -> None:
    e = engine()
    got = []
    for hour in range(24):
        t = T0 + hour * H
        got += e.evaluate(Outputs(dns=[lookup("10.0.0.9", "pkgs.example.net",
                                              ("198.51.100.1",), t)]))
        got += run(e, zeek("10.0.0.9", "198.51.100.1", t + S))
    assert got == []
    # The mirror moved (new network, same name, looked up first): quiet.
    e.evaluate(Outputs(dns=[lookup("10.0.0.9", "pkgs.example.net", ("192.0.2.50",), AFTER)]))
    assert run(e, zeek("10.0.0.9", "192.0.2.50", AFTER + S)) == []
    # Another address nobody looked up: a new network reached directly.
    (d,) = run(e, zeek("10.0.0.9", "203.0.113.5", AFTER + 2 * S))
    assert d.actor.kind == ActorKind.ADDRESS and d.actor.key == "10.0.0.9"
    assert d.evidence["direct_ip"] is True and d.evidence["peer"] == "203.0.113.0/24"


def test_ipv6_peers_are_judged_by_their_48() -> None:
    e = engine()
    for hour in range(24):
        run(e, conn("2001:db8:1:2::7", T0 + hour * H))
    assert run(e, conn("2001:db8:1:ffff::1", AFTER)) == []
    (d,) = run(e, conn("2001:db8:2::1", AFTER + S))
    assert d.evidence["peer"] == "2001:db8:2::/48"


def test_baseline_survives_a_restart_and_is_not_learned_again(tmp_path: Path) -> None:
    e = engine()
    stable_day(e)
    run(e, conn("198.51.100.7", AFTER, name="mirror.example.org"))  # computes the rate
    BaselineStore(tmp_path, e).save()
    state = e.rules[0][0].save_state()
    assert set(state["actors"]["backupd"]["peers"]) == {"example.org", "203.0.113.0/24"}

    e2 = engine()
    store = BaselineStore(tmp_path, e2)
    store.load()
    assert store.stats["loaded"] == 1 and e2.rules[0][0].save_state() == state
    assert run(e2, conn("198.51.100.7", AFTER + H, name="mirror.example.org")) == []
    assert len(run(e2, conn("192.0.2.1", AFTER + H))) == 1
    e3 = engine()  # without the file: learning again, no alert
    assert run(e3, conn("192.0.2.1", AFTER + H)) == []


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match="novel_peer.ipv4_prefix"):
        parse_config({"detect": {"rules": {"novel_peer": {"ipv4_prefix": 40}}}})
    with pytest.raises(ConfigError, match="novel_peer.internal_cidrs"):
        parse_config({"detect": {"rules": {"novel_peer": {"internal_cidrs": ["10.0.0.0/99"]}}}})


def test_state_stays_bounded_under_a_million_unique_peers() -> None:
    e = engine(max_actors=64, max_peers_per_actor=16, max_dns_join=1024)
    rule = e.rules[0][0]
    assert isinstance(rule, NovelPeer)
    stable_day(e)
    actors = [e.actors.of_owner(owner(i, f"p{i}")) for i in range(10_000)]
    f = conn("192.0.2.1", T0)
    set_ = object.__setattr__  # one record rewritten in place: the rule keeps no flows
    n = 1_000_000
    for i in range(n):
        set_(f, "peer_addr", f"{1 + i % 200}.{(i >> 12) & 255}.{(i >> 4) & 255}.{i & 15}")
        set_(f, "start_ns", (T0 if i < n // 2 else AFTER) + i * 1000)
        # 50 actors share a million peers; every 100th flow is a new actor (the LRU).
        for _ in rule.on_flow(actors[i % 50 if i % 100 else i // 100], f):  # type: ignore[arg-type]
            pass
        if i % 1000 == 0:
            rule.on_dns(actors[i % 50], lookup("x", f"n{i}.example.com",  # type: ignore[arg-type]
                                               tuple(f"192.0.{j}.{i & 255}"
                                                     for j in range(20)), T0))
    assert len(rule.actors) <= 64
    for st in rule.actors.values():
        assert len(st.peers) + len(st.nets) <= 16 and len(st.candidates) <= 16
    assert len(rule.join._map) <= 1024
    assert len(rule.addresses._cls) <= 65_536 and len(rule.addresses._net) <= 65_536

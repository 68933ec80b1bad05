"""The beacon rule through the real engine: periodic connections with jitter, missed beats and
failures fire; random, bursty and long-lived traffic, shared services and pollers do not."""

from __future__ import annotations

import math
import random
from dataclasses import fields, replace

import pytest

from otelpeers.config import parse_config
from otelpeers.detect.engine import Engine
from otelpeers.detect.model import ActorKind, EvidenceKind
from otelpeers.detect.periodicity import fit, random_loglik
from otelpeers.detect.rules.beacon import Beacon
from otelpeers.events import Counters
from otelpeers.flows import CloseReason, DnsAnnotation, FlowRecord
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import T0, flow, owner

S = 10**9
C2 = "198.51.100.7"


def engine(rules: dict | None = None, **detect: object) -> Engine:
    cfg = parse_config({"detect": {**detect, "rules": {"beacon": rules or {}}}}).detect
    return Engine(cfg, [Beacon])


def beat_times(rng: random.Random, n: int, period: float, jitter: float = 0.0,
               miss: float = 0.0, start: float = 0.0) -> list[float]:
    """n beats (seconds): gaps period * (1 +- jitter), each beat missed with probability miss."""
    out: list[float] = []
    t = start + rng.random() * period
    while len(out) < n:
        if rng.random() >= miss:
            out.append(t)
        t += period * (1 + jitter * (2 * rng.random() - 1))
    return out


_ids = iter(range(0x10000, 1 << 40))


def flows_at(times: list[float], *, peer: str = C2, port: int = 443, comm: str = "implant",
             transport: str = "tcp", local: str = "10.0.0.2", zeek: bool = False,
             failed: bool = False, size: int = 300, name: str | None = None) -> list[FlowRecord]:
    out = []
    for t in times:
        f = flow(f"{next(_ids):x}", peer=peer, peer_port=port, transport=transport,
                 proc=None if zeek else owner(777, comm), local=local,
                 start_ns=T0 + int(t * S), duration_ns=50_000_000,
                 counters=Counters(packets_out=4, bytes_out=size + 200, payload_out=size,
                                   packets_in=0 if failed else 4, bytes_in=600,
                                   payload_in=0 if failed else 400),
                 close_reason=CloseReason.CONNECT_FAILED if failed else CloseReason.CLOSED)
        if name:
            f = replace(f, dns=DnsAnnotation(resolved=True, question_name=name))
        out.append(f)
    return out


def run(e: Engine, flows: list[FlowRecord]) -> list:
    flows = sorted(flows, key=lambda f: f.start_ns)
    found = []
    for i in range(0, len(flows), 64):  # rounds, as the pipeline delivers them
        found += e.evaluate(Outputs(flows=flows[i:i + 64]))
    return found


# ---- the periodicity test itself ----------------------------------------------------------
def test_fit_finds_the_period_through_jitter_and_missed_beats() -> None:
    rng = random.Random(3)
    p = fit(beat_times(rng, 48, 60.0, jitter=0.3, miss=0.2))
    assert p is not None and abs(p.period_s - 60) < 6
    assert 0.08 < p.jitter < 0.3 and 0.05 < p.miss < 0.4 and p.llr > 12
    # at 50 % jitter and 20 % missed beats the period is vaguer, the evidence still clear
    wild = fit(beat_times(rng, 48, 60.0, jitter=0.5, miss=0.2))
    assert wild is not None and wild.llr > 12 and 40 < wild.period_s < 80
    exact = fit([i * 10.0 for i in range(20)])
    assert exact is not None and abs(exact.period_s - 10) < 1e-6 and exact.llr > 60


def test_poisson_arrivals_have_no_evidence() -> None:
    rng = random.Random(5)
    worst = -1e9
    for _ in range(200):
        t, times = 0.0, []
        for _ in range(30):
            t += rng.expovariate(1 / 60)
            times.append(t)
        p = fit(times)
        worst = max(worst, p.llr if p else -1e9)
    assert worst < 12  # min_llr's default: random arrivals stay below it


def test_bursts_count_as_one_beat_and_bursty_browsing_is_random() -> None:
    rng = random.Random(7)
    two_per_beat = [t + d for t in beat_times(rng, 30, 120.0, jitter=0.2) for d in (0, 0.3)]
    p = fit(two_per_beat)
    assert p is not None and p.merged == 30 and abs(p.period_s - 120) < 10 and p.llr > 12
    sessions, t = [], 0.0
    for _ in range(8):  # a person visits a site: a few connections, then hours of nothing
        t += rng.expovariate(1 / 5000)
        sessions += [t + rng.uniform(0, 15) for _ in range(rng.randint(2, 8))]
    q = fit(sessions)
    assert q is None or q.llr < 12
    gaps = [rng.expovariate(1.0) for _ in range(50)]
    n = len(gaps)
    poisson = n * math.log(n / sum(gaps)) - n
    assert random_loglik(gaps) >= poisson - 1e-9  # the bursty model includes Poisson


# ---- the rule, through the engine ---------------------------------------------------------
def test_a_regular_beacon_fires_once_with_its_evidence() -> None:
    e = engine()
    flows = flows_at([i * 60.0 for i in range(40)])
    ds = run(e, flows)
    assert len(ds) == 1
    d = ds[0]
    assert d.rule.name == "beacon" and d.actor.key == "implant" and d.actor.pid == 777
    assert d.peer is not None and d.peer.address == C2
    ev = d.evidence
    assert abs(ev["period_s"] - 60) < 0.5 and ev["beats"] >= 12 and ev["llr"] >= 12
    assert ev["failed"] == 0 and ev["transports"] == ("tcp",) and ev["ports"] == (443,)
    assert d.evidence_span is not None and d.evidence_span.kind == EvidenceKind.FLOW
    assert d.evidence_span.ident in {f.flow_id for f in flows}
    assert "every 60 s" in d.summary and 0.6 <= d.score <= 1.0
    assert d.time_ns <= flows[11].end_ns + 5 * 60 * S  # decided within the first beats


@pytest.mark.parametrize(("period", "jitter", "miss", "transport", "seed"), [
    (1.0, 0.5, 0.0, "tcp", 1), (5.0, 0.5, 0.1, "udp", 2), (15.0, 0.2, 0.3, "tcp", 3),
    (300.0, 0.3, 0.2, "udp", 4), (3600.0, 0.1, 0.1, "tcp", 5), (45.0, 0.5, 0.3, "tcp", 6)])
def test_jitter_missed_beats_and_periods_from_1_s_to_1_h(period: float, jitter: float,
                                                          miss: float, transport: str,
                                                          seed: int) -> None:
    rng = random.Random(seed)
    flows = flows_at(beat_times(rng, 120, period, jitter, miss), transport=transport)
    ds = run(engine(), flows)
    assert ds, f"no beacon at period {period} jitter {jitter} miss {miss}"
    ev = ds[0].evidence
    assert abs(ev["period_s"] - period) < (0.3 if jitter >= 0.5 else 0.15) * period
    assert ev["transports"] == (transport,)


def test_failed_attempts_to_a_dead_c2_are_a_beacon() -> None:
    rng = random.Random(11)
    ds = run(engine(), flows_at(beat_times(rng, 40, 5.0, 0.1), failed=True, size=0))
    assert len(ds) == 1 and ds[0].evidence["failed"] >= 12
    assert "failed" in ds[0].summary


def test_random_bursty_and_long_lived_traffic_is_not_a_beacon() -> None:
    e = engine()
    rng = random.Random(13)
    flows: list[FlowRecord] = []
    for k in range(20):  # Poisson clients of 20 different services
        t, times = 0.0, []
        for _ in range(150):
            t += rng.expovariate(1 / 90)
            times.append(t)
        flows += flows_at(times, peer=f"203.0.113.{k + 1}", comm=f"client{k}")
    t = 0.0
    sessions: list[float] = []
    for _ in range(40):  # browsing one favourite site
        t += rng.expovariate(1 / 3000)
        sessions += [t + rng.uniform(0, 20) for _ in range(rng.randint(1, 10))]
    flows += flows_at(sessions, peer="192.0.2.80", comm="firefox")
    long_lived = replace(flows_at([0.0], peer="192.0.2.99", comm="chat")[0],
                         end_ns=T0 + 86400 * S)
    assert run(e, [*flows, long_lived]) == []
    assert e.counters()["beacon.tests"] > 0


def test_named_peer_is_one_pair_across_addresses_and_named_in_the_alert() -> None:
    times = [i * 30.0 for i in range(30)]
    flows = [replace(f, peer_addr=f"198.51.100.{1 + i % 3}")
             for i, f in enumerate(flows_at(times, name="c2.example.net"))]
    (d,) = run(engine(), flows)
    assert d.peer is not None and d.peer.name == "c2.example.net"
    assert d.evidence["name"] == "c2.example.net" and "c2.example.net" in d.summary


def zeek_population(n: int) -> list[FlowRecord]:
    """n hosts (Zeek actors: addresses), each talking once to something of its own."""
    return [f for i in range(n) for f in flows_at([0.0], peer=f"203.0.113.{i % 250 + 1}",
                                                  local=f"10.9.{i // 250}.{i % 250 + 1}",
                                                  zeek=True, port=80)]


def test_a_service_most_hosts_poll_is_scored_down_by_prevalence() -> None:
    e = engine()
    flows = zeek_population(40)
    for h in range(12):  # 12 of 40 hosts poll one collector every 30 s, past the warm-up
        rng = random.Random(h)
        flows += flows_at(beat_times(rng, 40, 30.0, 0.05, start=13 * 3600.0),
                          peer="10.1.0.10", local=f"10.9.0.{h + 1}", zeek=True)
    assert run(e, flows) == []
    assert e.counters()["beacon.suppressed_prevalence"] > 0


def test_a_c2_a_few_hosts_share_still_fires_and_prevalence_is_relative() -> None:
    e = engine()
    flows = zeek_population(200)
    infected = [f"10.9.0.{h + 1}" for h in range(3)]
    hours = 3600.0

    def beacons(start: float) -> list[FlowRecord]:
        out = []
        for h, host in enumerate(infected):
            rng = random.Random(100 + h + int(start))
            out += flows_at(beat_times(rng, 60, 180.0, 0.3, 0.15, start=start), local=host,
                            zeek=True)
        return out

    # In the first 12 h of input a peer several actors reach waits: the population of a
    # day has not shown yet whether it is a shared service.
    assert run(e, flows + beacons(0.0)) == []
    assert e.counters()["beacon.deferred_shared"] > 0
    ds = run(e, beacons(13 * hours))
    assert sorted({d.actor.key for d in ds}) == infected
    assert all(d.actor.kind == ActorKind.ADDRESS and d.evidence["peer_actors"] == 3
               for d in ds)
    # the same ten hosts: a shared service among 40, a campaign among 400
    for population, expect in ((40, 0), (400, 10)):
        e = engine({"prevalence_warmup_s": 0})
        flows = zeek_population(population)
        for h in range(10):
            rng = random.Random(200 + h)
            flows += flows_at(beat_times(rng, 60, 120.0, 0.2), local=f"10.9.0.{h + 1}",
                              zeek=True)
        assert len({d.actor.key for d in run(e, flows)}) == expect, population


def test_an_actor_polling_many_peers_at_one_period_is_a_poller() -> None:
    e = engine()
    flows = []
    for k in range(5):  # a monitoring server checks 5 hosts every 60 s
        rng = random.Random(k)
        flows += flows_at(beat_times(rng, 40, 60.0, 0.02), peer=f"10.2.0.{k + 1}",
                          comm="prometheus")
    assert run(e, flows) == []
    assert e.counters()["beacon.suppressed_poller"] > 0


def test_a_beacon_among_bursty_browsing_on_the_same_port_is_no_poller() -> None:
    rng = random.Random(21)
    flows = flows_at(beat_times(rng, 40, 60.0, 0.2), comm="firefox")
    for k in range(6):  # the same browser visits six sites on 443 in bursts
        t, times = 0.0, []
        while len(times) < 40:
            t += rng.expovariate(1 / 600)
            times += [t + rng.uniform(0, 20) for _ in range(rng.randint(2, 8))]
        flows += flows_at(times, peer=f"192.0.2.{k + 10}", comm="firefox")
    ds = run(engine(), flows)
    assert {d.peer.address for d in ds if d.peer is not None} == {C2}


def test_ignored_ports_sweeps_transfers_and_allow_lists() -> None:
    times = [i * 64.0 for i in range(40)]
    assert run(engine(), flows_at(times, port=123, transport="udp")) == []  # NTP
    sweep = [replace(f, peer_port=1000 + i) for i, f in enumerate(flows_at(times))]
    assert run(engine(), sweep) == []  # a slow port scan is port_scan's business
    assert run(engine(), flows_at(times, size=20_000_000)) == []  # chunked upload
    allowed = engine({"allow": {"executables": ["implant"]}})
    assert run(allowed, flows_at(times)) == []
    by_peer = engine(allow={"peer_cidrs": ["198.51.100.0/24"]})
    assert run(by_peer, flows_at(times)) == []
    assert run(engine(), flows_at(times, peer="127.0.0.1")) == []


def test_deduplicated_per_window_and_reported_again_after_it() -> None:
    e = engine(dedup_window_s=3600)
    ds = run(e, flows_at([i * 60.0 for i in range(200)]))  # 200 minutes
    assert 2 <= len(ds) <= 4
    assert all(b.time_ns - a.time_ns >= 3600 * S for a, b in zip(ds, ds[1:], strict=False))
    assert ds[1].repeats >= 1  # the tests in between were suppressed and counted


def test_state_stays_bounded_under_a_million_unique_peers() -> None:
    cfg = parse_config({"detect": {"rules": {"beacon": {
        "max_pairs": 2000, "max_peers": 2000, "max_peers_per_actor": 16}}}}).detect
    e = Engine(cfg, [Beacon])
    rule = e.rules[0][0]
    assert isinstance(rule, Beacon)
    base = flows_at([0.0])[0]
    actor = e.actors.of_flow(base)
    assert actor is not None
    names = [f.name for f in fields(FlowRecord)]
    values = [getattr(base, n) for n in names]
    addr_at, start_at = names.index("peer_addr"), names.index("start_ns")
    for i in range(1_000_000):  # one actor, a new peer every second
        values[addr_at] = f"100.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        values[start_at] = T0 + i * S
        rule.on_flow(actor, FlowRecord(*values))
    assert len(rule.pairs) <= 2000 and len(rule.peer_actors) <= 2000
    assert all(len(r) <= 16 for r in rule.population.values())
    assert e.counters()["beacon.pairs.state_evicted"] >= 1_000_000 - 2000

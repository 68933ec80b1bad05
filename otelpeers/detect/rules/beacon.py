"""beacon: an actor connects to the same peer at regular intervals (command and control).

Per (actor, peer) the rule keeps a ring of the last ``ring_size`` connection start times and
bytes sent; the peer is the name the application resolved (flow.dns.question_name) when
there was one, else the address. Every outbound TCP and UDP flow is a beat, failed
attempts too (a loop reconnecting to a dead C2 is a beacon). Loopback, link-local and
multicast peers, DNS and NTP ports (``ignore_ports``), summary and adopted records are
not beats.

Per flow the work is a few dict operations (the ring, the peer's actor set, the actor's
recent peers). From ``min_beats`` on, every ``eval_every`` beats and only when the mean gap
lies within [min_period_s / 2, max_period_s * 3], the ring is tested for periodicity
(otelpeers.detect.periodicity: a beacon model with jitter and missed beats against random
arrivals, as a log-likelihood ratio). A pair fires when the evidence reaches ``min_llr``
(from 15 gaps on; with fewer gaps the bar rises as 15 / gaps) with a period, jitter,
missed-beat share and inlier share inside the configured bounds, and when none of these
explains it:

- prevalence: a peer that at least ``prevalence_min_actors`` actors talk to, and at least
  ``prevalence_share`` of all actors the rule has seen (the population, LRU-bounded), is a
  shared service (NTP pool, monitoring collector, mail server). Relative to the population,
  with an absolute floor, so that a C2 three infected hosts share always fires (and one
  that a few per cent of a network share), and a handful of actors never makes a peer
  "shared". The population needs time to show itself (overnight, the few hosts left on
  poll their mail server like three infected hosts poll a C2): on network input (actors
  are addresses) a periodic peer of two or more actors is judged only after
  ``prevalence_warmup_s`` of event time from the rule's first flow (12 h; RITA computes
  prevalence over 24 h); a single actor's beacon at once, and live actors (a host's
  executables, present from the start) at once;
- polling: an actor that reaches ``poller_min_peers`` or more peers on the same port at
  about the same period (within a factor 1.5) is a poller (a monitoring server scraping
  exporters, a Kubernetes control plane polling kubelets), not an implant;
- transfer: the median connection sends more than ``max_beat_bytes``: a chunked upload on
  a timer (volume_anomaly's business), not a check-in.

The score is 0.85 * timing (0.6 at min_llr, 1.0 at four times as much) + 0.15 * data-size
regularity (1 - MAD / median of the bytes sent). After an alert the pair is tested again
only after half a ring of new beats (the engine deduplicates alerts per window).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any

from otelpeers.detect.engine import BoundedMap, Finding, Rule, RuleContext
from otelpeers.detect.model import Actor, ActorKind, EvidenceKind, EvidenceRef, Peer
from otelpeers.detect.periodicity import Periodicity, fit
from otelpeers.detect.rules import meta
from otelpeers.detect.rules.local import is_local
from otelpeers.detect.settings import BeaconRule as Settings
from otelpeers.events import Direction
from otelpeers.flows import CloseReason, FlowRecord

NS = 1_000_000_000
_OUTBOUND = Direction.OUTBOUND
_FAILED = CloseReason.CONNECT_FAILED
_LOCAL_CACHE_MAX = 65_536
MAX_PORTS = 8  # destination ports remembered per pair; this many is a port sweep
POLLER_FACTOR = 1.5  # siblings within this factor of the period poll together
FULL_GAPS = 15  # from this many gaps on, min_llr applies as set; below, it rises


class _Pair:
    """One (actor, peer): the last start times and sizes, and when to decide next."""

    __slots__ = ("times", "sizes", "count", "failed", "next_eval", "ports", "transports",
                 "address", "alerts", "negatives")

    def __init__(self, ring: int, first_eval: int) -> None:
        self.times: deque[int] = deque(maxlen=ring)
        self.sizes: deque[int] = deque(maxlen=ring)
        self.count = 0
        self.failed = 0
        self.next_eval = first_eval
        self.ports: list[int] = []
        self.transports: set[str] = set()
        self.address = ""
        self.alerts = 0
        self.negatives = 0  # tests in a row that found no period: test less and less often


def _size_regularity(sizes: Iterable[int]) -> tuple[float, float]:
    """(median bytes sent, 1 - MAD / median): 1 for constant sizes, 0 for scattered ones."""
    xs = sorted(sizes)
    if not xs:
        return 0.0, 0.0
    med = _median(xs)
    if med < 1:
        return med, 1.0 if xs[-1] == 0 else 0.0
    mad = _median(sorted(abs(x - med) for x in xs))
    return med, max(0.0, 1.0 - mad / med)


def _median(xs: list[float] | list[int]) -> float:
    n = len(xs)
    h = n // 2
    return float(xs[h]) if n % 2 else 0.5 * (xs[h - 1] + xs[h])


class Beacon(Rule):
    meta = meta.BEACON
    settings_type = Settings
    takes_flows = True

    def __init__(self, settings: Settings, ctx: RuleContext) -> None:  # type: ignore[override]
        super().__init__(settings, ctx)
        s: Settings = settings
        self.s = s
        self.ignore_ports = frozenset(s.ignore_ports)
        self.pairs: BoundedMap[tuple[str, str], _Pair] = ctx.bounded("beacon.pairs",
                                                                      s.max_pairs)
        # prevalence: peer -> actors seen talking to it; the population of actors
        self.peer_actors: BoundedMap[str, dict[str, None]] = ctx.bounded("beacon.peers",
                                                                         s.max_peers)
        self.population: BoundedMap[str, OrderedDict[str, None]] = ctx.bounded(
            "beacon.actors", ctx.config.max_actors)
        self._local: dict[str, bool] = {}
        self.warmup_ns = int(s.prevalence_warmup_s * NS)
        self.first_ns = 0  # event time of the first flow the rule saw
        self.min_gap_ns = s.min_period_s / 2 * NS
        self.max_gap_ns = s.max_period_s * 3 * NS
        self.stats = {"beats": 0, "tests": 0, "periodic": 0, "suppressed_prevalence": 0,
                      "suppressed_poller": 0, "suppressed_transfer": 0, "deferred_shared": 0,
                      "skipped": 0, "skipped_many_ports": 0}

    # ---- input ---------------------------------------------------------------------
    def on_flow(self, actor: Actor, flow: FlowRecord) -> Iterable[Finding]:
        transport = flow.transport
        if (flow.direction is not _OUTBOUND or (transport != "tcp" and transport != "udp")
                or flow.peer_port in self.ignore_ports):
            return ()
        addr = flow.peer_addr
        local = self._local.get(addr)
        if local is None:
            local = self._classify(addr)
        if local or flow.summary or flow.adopted:
            self.stats["skipped"] += 1
            return ()
        if not self.first_ns:
            self.first_ns = flow.start_ns
        dns = flow.dns
        peer = dns.question_name if dns is not None and dns.resolved and dns.question_name \
            else addr
        akey = actor.key
        s = self.s
        # prevalence (actors per peer) and the actor's recent peers: O(1) each
        actors = self.peer_actors.get(peer)
        if actors is None:
            self.peer_actors.put(peer, actors := {})
        if akey not in actors and len(actors) < s.max_actors_per_peer:
            actors[akey] = None
        recent = self.population.get(akey)
        if recent is None:
            self.population.put(akey, recent := OrderedDict())
        else:
            self.population.move_to_end(akey)
        if peer in recent:
            recent.move_to_end(peer)
        else:
            recent[peer] = None
            if len(recent) > s.max_peers_per_actor:
                recent.popitem(last=False)
        key = (akey, peer)
        pair = self.pairs.get(key)
        if pair is None:
            self.pairs.put(key, pair := _Pair(s.ring_size, s.min_beats))
        else:
            self.pairs.move_to_end(key)
        pair.times.append(flow.start_ns)
        pair.sizes.append(flow.counters.payload_out)
        pair.count += 1
        pair.address = addr
        if transport not in pair.transports:
            pair.transports.add(transport)
        if flow.close_reason is _FAILED:
            pair.failed += 1
        if flow.peer_port not in pair.ports and len(pair.ports) < MAX_PORTS:
            pair.ports.append(flow.peer_port)
        self.stats["beats"] += 1
        if pair.count < pair.next_eval:
            return ()
        return self._gate(actor, peer, pair, flow, len(actors))

    def _classify(self, addr: str) -> bool:
        if len(self._local) >= _LOCAL_CACHE_MAX:
            self._local.clear()
        hit = self._local[addr] = is_local(addr)
        return hit

    # ---- the decision (gated: a few cheap tests first, the fit only past them) --------
    def _gate(self, actor: Actor, peer: str, pair: _Pair, flow: FlowRecord,
              n_actors: int) -> Iterable[Finding]:
        s = self.s
        pair.next_eval = pair.count + s.eval_every
        if len(pair.ports) >= MAX_PORTS:  # many ports of one host: port_scan's business
            self.stats["skipped_many_ports"] += 1
            return ()
        population = len(self.population)
        if self._prevalent(n_actors, population):  # a shared service: look again much later
            self.stats["suppressed_prevalence"] += 1
            pair.next_eval = pair.count + s.ring_size
            return ()
        times = pair.times
        mean_gap = (max(times) - min(times)) / (len(times) - 1)
        if not self.min_gap_ns <= mean_gap <= self.max_gap_ns:
            return ()
        self.stats["tests"] += 1
        fitted = fit([t / NS for t in times], min_llr=s.min_llr)
        if fitted is None or not self._periodic(fitted):
            # back off: random traffic is tested every eval_every, 2x, 4x ... ring_size / 2
            pair.negatives = min(pair.negatives + 1, 16)
            pair.next_eval = pair.count + min(s.ring_size // 2,
                                              s.eval_every << pair.negatives - 1)
            return ()
        pair.negatives = 0
        self.stats["periodic"] += 1
        pair.next_eval = pair.count + s.ring_size // 2  # alert or not: look again later
        size_med, size_reg = _size_regularity(pair.sizes)
        if size_med > s.max_beat_bytes:  # a chunked transfer: volume_anomaly's business
            self.stats["suppressed_transfer"] += 1
            return ()
        if (n_actors >= 2 and actor.kind is ActorKind.ADDRESS
                and flow.start_ns - self.first_ns < self.warmup_ns):
            # shared by a few hosts, before the population of a day has shown whether the
            # peer is a shared service (mail polled overnight by the few hosts left on);
            # a host's executables (live actors) are there from the start
            self.stats["deferred_shared"] += 1
            return ()
        siblings = self._siblings(actor.key, pair, peer, fitted.period_s)
        if siblings + 1 >= s.poller_min_peers:
            self.stats["suppressed_poller"] += 1
            return ()
        pair.alerts += 1
        return (self._finding(actor, peer, pair, flow, fitted, n_actors, population,
                              siblings, size_med, size_reg),)

    def _periodic(self, p: Periodicity) -> bool:
        s = self.s
        # Few gaps: random arrivals reach a given evidence more easily (simulated Poisson
        # series of 12 connections reach 12 nats about once in 2,000), so below FULL_GAPS
        # gaps the bar rises in proportion.
        need = s.min_llr * max(1.0, FULL_GAPS / max(p.gaps, 1))
        return (p.llr >= need and p.jitter <= s.max_jitter and p.miss <= s.max_miss
                and p.inliers >= s.min_inliers and p.gaps + 1 >= s.min_beats
                and s.min_period_s <= p.period_s <= s.max_period_s)

    def _prevalent(self, n_actors: int, population: int) -> bool:
        s = self.s
        return n_actors >= s.prevalence_min_actors and n_actors >= s.prevalence_share * population

    def _siblings(self, akey: str, pair: _Pair, peer: str, period_s: float) -> int:
        """Other peers this actor reaches on the same port at about the same period, with
        enough beats: the targets of a poller (kubelets on 10250, exporters on 9100)."""
        recent = self.population.get(akey)
        if not recent:
            return 0
        need = max(4, self.s.min_beats // 2)
        ports = set(pair.ports)
        lo, hi = period_s / POLLER_FACTOR * NS, period_s * POLLER_FACTOR * NS
        n = 0
        for other in recent:
            if other == peer:
                continue
            sib = self.pairs.get((akey, other))
            if sib is None or len(sib.times) < need or ports.isdisjoint(sib.ports):
                continue
            ts = sorted(sib.times)
            gaps = sorted(b - a for a, b in zip(ts, ts[1:], strict=False))
            gap = _median(gaps)
            # polled like this one: about the same period, and steadily (browsing the same
            # site in bursts also has a median gap, but a scattered one)
            if lo <= gap <= hi and _median(sorted(abs(g - gap) for g in gaps)) <= 0.25 * gap:
                n += 1
        return n

    def _finding(self, actor: Actor, peer: str, pair: _Pair, flow: FlowRecord,
                 p: Periodicity, n_actors: int, population: int, siblings: int,
                 size_med: float, size_reg: float) -> Finding:
        s = self.s
        timing = 0.6 + 0.4 * min(1.0, max(0.0, (p.llr - s.min_llr) / (3 * s.min_llr)))
        score = round(0.85 * timing + 0.15 * size_reg, 4)
        beats = len(pair.times)
        span_s = (max(pair.times) - min(pair.times)) / NS
        spread = p.jitter * math.sqrt(3) * 100  # as a uniform +-jitter
        name = peer if peer != pair.address else None
        target = f"{name} ({pair.address})" if name else pair.address
        failed = f", {pair.failed} failed" if pair.failed else ""
        summary = (f"{actor.executable or actor.key} connects to {target} every "
                   f"{_period_text(p.period_s)} +-{spread:.0f}% ({beats} connections over "
                   f"{_period_text(span_s)}, {p.miss:.0%} beats missed{failed}); "
                   f"periodic {p.llr:.0f} nats likelier than random arrivals")
        evidence: dict[str, Any] = {
            "period_s": round(p.period_s, 3), "jitter": round(p.jitter, 4),
            "miss": round(p.miss, 3), "inliers": round(p.inliers, 3),
            "llr": round(p.llr, 2), "llr_per_gap": round(p.llr_per_gap, 3),
            "beats": beats, "connections": pair.count, "failed": pair.failed,
            "merged": p.merged, "span_s": round(span_s, 1),
            "first_ns": min(pair.times), "last_ns": max(pair.times),
            "size_median": round(size_med, 1), "size_regularity": round(size_reg, 3),
            "peer_actors": n_actors, "population": population, "polled_siblings": siblings,
            "ports": tuple(pair.ports), "transports": tuple(sorted(pair.transports)),
            "address": pair.address, "timing_score": round(timing, 4),
        }
        if name:
            evidence["name"] = name
        return Finding(actor, max(flow.end_ns, flow.start_ns), score, summary,
                       peer=Peer(pair.address, flow.peer_port, name), evidence=evidence,
                       evidence_span=EvidenceRef(EvidenceKind.FLOW, flow.flow_id),
                       target=peer)

    def counters(self) -> dict[str, int]:
        return dict(self.stats)


def _period_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"

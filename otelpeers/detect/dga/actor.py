"""Per-actor DGA decision: does this process look like it is hunting for its C2 domain?

A string model alone cannot tell a word-based DGA from a typo, nor a CDN hash from a random
family. What an infected process does that ordinary ones do not: within minutes it asks for
many names it never asked for before, under *different* registered domains, with address
query types, and most of them do not exist (NXDOMAIN). This module keeps, per actor (an opaque
hashable key: executable + container, or a source address), the registered domains it looked
up in a sliding event-time window, and weighs each new non-existent domain by how generated its
name looks (the per-domain model) and by its TLD prior.

Decision, per actor and window (all thresholds in ``DgaActorConfig``):

- each *new* registered domain (not answered for this actor before the window, not known to
  exist from any actor's answers) whose lookups all ended NXDOMAIN adds
  ``floor + (1 - floor) * ramp(score)`` to the evidence, where ramp goes from 0 at
  ``low_score`` to 1 at ``score_threshold``; a TLD the model leans on adds ``tld_bonus``;
  an answered but high-scoring new domain adds ``answered_weight``;
- it fires when the evidence reaches ``min_evidence``, at least ``min_unique`` new registered
  domains were NXDOMAIN, and they are at least ``min_nxdomain_share`` of the new ones, or at
  least ``min_high_unique`` of them score at or above ``score_threshold`` (a DGA inside a busy
  process such as a browser, whose own lookups dilute the share).

With the defaults a purely behavioural burst (names that look human-made, weight ``floor``)
needs 15 new NXDOMAIN registered domains within the window at 75% NXDOMAIN, and at most
``burst_cap`` failures per ``burst_s`` interval earn the floor (a browser prefetching the links
of an old page fails on many dead domains within a second; a DGA hunts over time); lexically
generated names need 8, at any pace.

Names that cannot be a DGA rendezvous are ignored and counted: non-address query types (MX,
TXT, PTR, SRV: mail servers check spam senders that way), single-label names (browser probes),
special-use TLDs, CDN / cloud / reputation-service parents. A name under a registered domain
that is known to exist (answered before, for any actor) is not evidence either: search-domain
and typo NXDOMAINs under real domains look like that.

Everything is bounded: at most ``max_actors`` actors (LRU), ``max_names_per_actor`` window
entries and known domains per actor, ``max_known_domains`` globally, ``score_cache`` scored
names; every eviction is counted in ``stats``. Time is the events' own time, never the clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple, Protocol

from otelpeers.detect.dga import domains

NS = 1_000_000_000
ADDRESS_QTYPES = frozenset({1, 28, 255})  # A, AAAA, ANY
_QTYPE_NAMES = {"A": 1, "AAAA": 28, "ANY": 255, "*": 255}
NXDOMAIN = 3


class Scorer(Protocol):
    def score_parsed(self, parsed: Sequence[domains.DomainName | None]) -> Sequence[float]: ...


@dataclass(frozen=True)
class DgaActorConfig:
    """Thresholds and bounds of the per-actor decision (validated on construction)."""

    window_s: float = 900.0
    min_unique: int = 8
    min_nxdomain_share: float = 0.75
    min_high_unique: int = 10  # high-scoring NXDOMAIN domains that fire at any NXDOMAIN share
    min_evidence: float = 6.0
    score_threshold: float = 0.0  # 0: the model's own 1%-false-positive threshold
    low_score: float = 0.1
    floor: float = 0.4
    answered_weight: float = 0.25
    tld_bonus: float = 0.15
    tld_bonus_min_weight: float = 0.5  # model TLD weight (logit) above which the bonus applies
    burst_s: float = 10.0  # failures are counted in intervals of this length ...
    burst_cap: int = 3  # ... and at most this many per interval earn the floor
    max_actors: int = 10_000
    max_names_per_actor: int = 512
    max_known_domains: int = 100_000
    score_cache: int = 16_384
    max_samples: int = 10

    def __post_init__(self) -> None:
        positive = ("window_s", "min_evidence")
        if not 0 < self.burst_s < self.window_s:
            raise ValueError(
                f"dga.burst_s must be > 0 and below dga.window_s, got {self.burst_s!r}"
            )
        at_least_one = (
            "min_unique", "min_high_unique", "burst_cap", "max_actors", "max_names_per_actor",
            "max_known_domains", "score_cache", "max_samples",
        )
        unit = (
            "min_nxdomain_share", "score_threshold", "low_score", "floor", "answered_weight",
            "tld_bonus",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"dga.{name} must be > 0, got {getattr(self, name)!r}")
        for name in at_least_one:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"dga.{name} must be an integer >= 1, got {value!r}")
        for name in unit:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"dga.{name} must be within [0, 1], got {getattr(self, name)!r}")
        if self.score_threshold and self.score_threshold <= self.low_score:
            raise ValueError(
                f"dga.score_threshold ({self.score_threshold}) must be above dga.low_score "
                f"({self.low_score})"
            )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


class DnsResult(NamedTuple):
    """One finished lookup as the scorer needs it."""

    time_ns: int
    name: str
    qtype: int | str
    rcode: int | str
    answered: bool


@dataclass(frozen=True)
class DgaDecision:
    """An actor that looks infected, with the evidence that decided."""

    actor: Hashable
    time_ns: int  # event time of the lookup that completed the evidence
    score: float  # 0..1; 0.5 is reached exactly at min_evidence
    evidence: float
    new_domains: int  # distinct new registered domains in the window
    nxdomain_domains: int  # of those, how many never resolved
    nxdomain_share: float
    high_scoring: int  # new registered domains with a name at or above score_threshold
    score_threshold: float
    window_s: float
    samples: tuple[tuple[str, float, bool], ...]  # (name, name score, NXDOMAIN), top first
    tlds: tuple[tuple[str, int], ...]
    first_time_ns: int

    def as_evidence(self) -> dict[str, Any]:
        return {
            "evidence": round(self.evidence, 3),
            "new_registered_domains": self.new_domains,
            "nxdomain_registered_domains": self.nxdomain_domains,
            "nxdomain_share": round(self.nxdomain_share, 3),
            "high_scoring": self.high_scoring,
            "score_threshold": round(self.score_threshold, 4),
            "window_s": self.window_s,
            "first_time_ns": self.first_time_ns,
            "names": [
                {"name": n, "score": round(s, 4), "nxdomain": nx} for n, s, nx in self.samples
            ],
            "tlds": dict(self.tlds),
        }


@dataclass(slots=True)
class _Domain:
    first_ns: int
    last_ns: int
    name: str
    score: float
    weight: float  # evidence if NXDOMAIN
    lexical: float  # evidence if NXDOMAIN within a sub-second burst (no floor)
    tld: str
    nx: bool = True  # every lookup so far ended NXDOMAIN
    high: bool = False  # score at or above the threshold


@dataclass
class _Actor:
    window: OrderedDict[str, _Domain] = field(default_factory=OrderedDict)  # by last_ns
    known: OrderedDict[str, int] = field(default_factory=OrderedDict)  # answered domains
    clock_ns: int = 0
    quiet_until_ns: int = 0
    nx_count: int = 0  # window entries with nx set, kept so most events cost O(1)
    high_nx_count: int = 0  # ... of which score at or above the threshold

    def drop_oldest(self) -> None:
        _, entry = self.window.popitem(last=False)
        self.nx_count -= entry.nx
        self.high_nx_count -= entry.nx and entry.high


def _qtype(value: int | str) -> int:
    if isinstance(value, str):
        return _QTYPE_NAMES.get(value.upper(), 0) if not value.isdigit() else int(value)
    return int(value)


def _is_nxdomain(rcode: int | str) -> bool:
    if isinstance(rcode, str):
        return rcode.upper() == "NXDOMAIN" or rcode == "3"
    return int(rcode) == NXDOMAIN


class DgaActorScorer:
    """Feeds DNS results per actor; returns a DgaDecision when an actor looks infected."""

    def __init__(self, model: Scorer | None = None, config: DgaActorConfig | None = None):
        if model is None:
            from otelpeers.detect.dga.scalar import load_scalar_model

            model = load_scalar_model()
        self.model = model
        self.config = config or DgaActorConfig()
        cfg = self.config
        self.threshold = cfg.score_threshold or float(getattr(model, "threshold_1pct", 0.9))
        self._window_ns = int(cfg.window_s * NS)
        self.low = min(cfg.low_score, self.threshold / 2)
        tld_w = getattr(model, "tld_w", None)
        tld_index = getattr(model, "tld_index", {})
        self.bonus_tlds = frozenset(
            t
            for t, i in tld_index.items()
            if tld_w is not None and tld_w[i] >= cfg.tld_bonus_min_weight
        )
        self._actors: OrderedDict[Hashable, _Actor] = OrderedDict()
        self._known: OrderedDict[str, None] = OrderedDict()  # exists for some actor
        self._cache: OrderedDict[str, tuple[domains.DomainName | None, float]] = OrderedDict()
        self.stats: dict[str, int] = {
            "events": 0,
            "ignored_invalid": 0,
            "ignored_qtype": 0,
            "ignored_unscored": 0,
            "ignored_known_domain": 0,
            "decisions": 0,
            "actors_evicted": 0,
            "window_entries_evicted": 0,
            "actor_known_evicted": 0,
            "known_domains_evicted": 0,
            "score_cache_evicted": 0,
        }

    # -- bounded tables ------------------------------------------------------------------

    def _score(self, name: str) -> tuple[domains.DomainName | None, float]:
        hit = self._cache.get(name)
        if hit is not None:
            self._cache.move_to_end(name)
            return hit
        parsed = domains.parse(name)
        score = 0.0
        if parsed is not None and not parsed.skip and not parsed.single_label:
            score = float(self.model.score_parsed([parsed])[0])
        self._cache[name] = (parsed, score)
        if len(self._cache) > self.config.score_cache:
            self._cache.popitem(last=False)
            self.stats["score_cache_evicted"] += 1
        return parsed, score

    def _actor(self, key: Hashable) -> _Actor:
        state = self._actors.get(key)
        if state is None:
            state = self._actors[key] = _Actor()
            if len(self._actors) > self.config.max_actors:
                self._actors.popitem(last=False)
                self.stats["actors_evicted"] += 1
        else:
            self._actors.move_to_end(key)
        return state

    def _remember_known(self, registered: str) -> None:
        self._known[registered] = None
        self._known.move_to_end(registered)
        if len(self._known) > self.config.max_known_domains:
            self._known.popitem(last=False)
            self.stats["known_domains_evicted"] += 1

    @property
    def actors(self) -> int:
        return len(self._actors)

    def table_sizes(self) -> dict[str, int]:
        """Current sizes of every table (for bounds checks and agent gauges)."""
        return {
            "actors": len(self._actors),
            "max_window_entries": max((len(a.window) for a in self._actors.values()), default=0),
            "max_actor_known": max((len(a.known) for a in self._actors.values()), default=0),
            "known_domains": len(self._known),
            "score_cache": len(self._cache),
        }

    # -- decision ------------------------------------------------------------------------

    def _weights(self, score: float, tld: str) -> tuple[float, float]:
        """(weight, lexical weight) of a new NXDOMAIN domain; the latter has no floor."""
        cfg = self.config
        ramp = (score - self.low) / max(self.threshold - self.low, 1e-9)
        ramp = min(1.0, max(0.0, ramp))
        bonus = cfg.tld_bonus if tld in self.bonus_tlds else 0.0
        weight = cfg.floor + (1.0 - cfg.floor) * ramp + bonus
        return min(1.0, weight), min(1.0, ramp + bonus)

    def observe(
        self,
        actor: Hashable,
        time_ns: int,
        name: str,
        qtype: int | str,
        rcode: int | str,
        answered: bool,
    ) -> DgaDecision | None:
        """Account one DNS result; a decision when this result completes the evidence."""
        self.stats["events"] += 1
        if (qtype if type(qtype) is int else _qtype(qtype)) not in ADDRESS_QTYPES:
            self.stats["ignored_qtype"] += 1
            return None
        parsed, score = self._score(name)
        if parsed is None:
            self.stats["ignored_invalid"] += 1
            return None
        if parsed.skip or parsed.single_label or not parsed.registered:
            self.stats["ignored_unscored"] += 1
            return None
        cfg = self.config
        state = self._actor(actor)
        now = max(state.clock_ns, int(time_ns))
        state.clock_ns = now
        self._expire(state, now)
        registered = parsed.registered
        nx = _is_nxdomain(rcode) and not answered
        if not nx and answered:
            # This domain exists: later NXDOMAINs under it are not DGA evidence.
            self._remember_known(registered)
            state.known[registered] = now
            state.known.move_to_end(registered)
            if len(state.known) > cfg.max_names_per_actor:
                state.known.popitem(last=False)
                self.stats["actor_known_evicted"] += 1
        entry = state.window.get(registered)
        if entry is None:
            if registered in self._known and nx:
                self.stats["ignored_known_domain"] += 1
                return None
            before = state.known.get(registered)
            if before is not None and before < now:
                return None  # answered for this actor earlier: not new
            high = score >= self.threshold
            weight, lexical = self._weights(score, parsed.tld)
            entry = _Domain(now, now, parsed.name, score, weight, lexical, parsed.tld, nx, high)
            state.window[registered] = entry
            state.nx_count += nx
            state.high_nx_count += nx and high
            if len(state.window) > cfg.max_names_per_actor:
                state.drop_oldest()
                self.stats["window_entries_evicted"] += 1
        else:
            entry.last_ns = now
            was_high_nx = entry.nx and entry.high
            if entry.nx and not nx:
                entry.nx = False
                state.nx_count -= 1
            if score > entry.score:
                entry.score, entry.name = score, parsed.name
                entry.weight, entry.lexical = self._weights(score, parsed.tld)
                entry.high = score >= self.threshold
            state.high_nx_count += (entry.nx and entry.high) - was_high_nx
            state.window.move_to_end(registered)
        if now < state.quiet_until_ns:
            return None
        return self._decide(actor, state, now)

    def observe_many(
        self, actor: Hashable, results: Iterable[DnsResult | tuple]
    ) -> list[DgaDecision]:
        out = []
        for r in results:
            decision = self.observe(actor, *r)
            if decision is not None:
                out.append(decision)
        return out

    def _expire(self, state: _Actor, now: int) -> None:
        window = state.window
        if not window:
            return
        cutoff = now - self._window_ns
        while window:
            first = next(iter(window.values()))
            if first.last_ns >= cutoff:
                break
            state.drop_oldest()

    def _decide(self, actor: Hashable, state: _Actor, now: int) -> DgaDecision | None:
        cfg = self.config
        if state.nx_count < cfg.min_unique:
            return None
        share = state.nx_count / len(state.window)
        if share < cfg.min_nxdomain_share and state.high_nx_count < cfg.min_high_unique:
            return None
        entries = list(state.window.values())
        nx_entries = [e for e in entries if e.nx]
        # The floor rewards a steady hunt, not a burst: a browser prefetching the links of an
        # old page fails on many dead domains within a second. Per burst_s interval only the
        # first burst_cap failures earn it; the rest count by their names' look alone.
        per_interval: dict[int, int] = {}
        burst_ns = int(cfg.burst_s * NS)
        evidence = 0.0
        for e in nx_entries:  # in order of last lookup, close to first-seen order
            slot = e.first_ns // burst_ns
            seen = per_interval.get(slot, 0)
            per_interval[slot] = seen + 1
            evidence += e.weight if seen < cfg.burst_cap else e.lexical
        evidence += cfg.answered_weight * sum(
            1 for e in entries if not e.nx and e.score >= self.threshold
        )
        if evidence < cfg.min_evidence:
            return None
        score = 1.0 - math.pow(2.0, -evidence / cfg.min_evidence)
        top = sorted(entries, key=lambda e: (-e.score, e.first_ns))[: cfg.max_samples]
        tlds: dict[str, int] = {}
        for e in entries:
            tlds[e.tld] = tlds.get(e.tld, 0) + 1
        decision = DgaDecision(
            actor=actor,
            time_ns=now,
            score=score,
            evidence=evidence,
            new_domains=len(entries),
            nxdomain_domains=len(nx_entries),
            nxdomain_share=share,
            high_scoring=sum(1 for e in entries if e.score >= self.threshold),
            score_threshold=self.threshold,
            window_s=cfg.window_s,
            samples=tuple((e.name, e.score, e.nx) for e in top),
            tlds=tuple(sorted(tlds.items(), key=lambda kv: (-kv[1], kv[0]))[:10]),
            first_time_ns=min(e.first_ns for e in entries),
        )
        # One decision per window per actor: the engine deduplicates further.
        state.quiet_until_ns = now + self._window_ns
        state.window.clear()
        state.nx_count = 0
        state.high_nx_count = 0
        self.stats["decisions"] += 1
        return decision

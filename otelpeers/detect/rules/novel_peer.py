"""novel_peer: a binary talks to a peer outside the baseline it learned.

The peer of an outbound flow is its registered domain when the flow was resolved (the DNS
stage's annotation live; the actor's own lookups for Zeek logs and open flows), else its
/24 (IPv4) or /48 (IPv6) network. Internal peers are lateral_movement's business and are
left out unless ``internal_peers`` is set.

Baseline, per actor, during the learning period: the peers it reached (a resolved flow
teaches both its domain and its network, so a later direct connection to the same network
is not new), and how stable that set was: the rate at which new peers still appeared in
the second half of the actor's time under observation (new peers per day). A server whose
five peers all showed up in its first hour and never changed is stable; a browser finds
new peers all day. After learning, a new peer alerts only for actors whose rate is at most
``max_new_peers_per_day`` and that were observed for at least ``min_baseline_s``; the
score grows with stability and when the peer was reached by address without DNS. Actors
whose baseline exceeds ``max_peers_per_actor`` are not stable: they keep no peer list.
An actor first seen after the learning period, or seen for less than ``min_baseline_s``
during it, learns for ``new_actor_learning_s`` from its first flow.

Slow learning: a new peer seen on ``promote_days`` distinct days joins the baseline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from otelpeers.detect.engine import BoundedMap, Finding, Rule, RuleContext
from otelpeers.detect.model import Actor, EvidenceKind, EvidenceRef, Peer
from otelpeers.detect.rules import meta
from otelpeers.detect.rules.baseline import (
    EXTERNAL,
    INTERNAL,
    NS,
    AddressClasses,
    DnsJoin,
    Registered,
    day_of,
    flow_domain,
)
from otelpeers.detect.settings import NovelPeerRule as Settings
from otelpeers.dns.lookups import DnsLookup
from otelpeers.events import Direction
from otelpeers.flows import FlowRecord

STATE_VERSION = 1
MAX_CANDIDATE_DAYS = 8
MAX_SAVED_ENTRIES = 250_000  # peers, networks and candidates written, all actors together


@dataclass(slots=True)
class _Actor:
    first_ns: int  # first flow seen
    last_ns: int  # last flow seen while learning
    learn_until_ns: int | None = None  # own learning period (actors born after learning)
    peers: dict[str, int] = field(default_factory=dict)  # peer key -> first seen (ns)
    nets: set[str] = field(default_factory=set)  # networks of resolved peers
    broad: bool = False  # too many peers while learning: no baseline kept
    rate: float | None = None  # new peers per day late in learning (None: not yet known)
    candidates: dict[str, list[int]] = field(default_factory=dict)  # peer -> distinct days


class NovelPeer(Rule):
    meta = meta.NOVEL_PEER
    settings_type = Settings
    takes_flows = True
    takes_progress = True
    takes_dns = True

    def __init__(self, settings: Settings, ctx: RuleContext) -> None:  # type: ignore[override]
        super().__init__(settings, ctx)
        s: Settings = settings
        self.s = s
        self.addresses = AddressClasses(s.internal_cidrs, s.ipv4_prefix, s.ipv6_prefix,
                                        networks_of_external=True)
        self.registered = Registered()
        self.join = DnsJoin(self.registered, s.max_dns_join)
        self.actors: BoundedMap[str, _Actor] = ctx.bounded("novel_peer.actors", s.max_actors)
        self.new_actor_ns = int(s.new_actor_learning_s * NS)
        self.stats = {"peers_learned": 0, "new_peers": 0, "promoted": 0, "broad_actors": 0,
                      "unstable_skipped": 0, "saved_truncated": 0}

    # ---- inputs ---------------------------------------------------------------------
    def on_dns(self, actor: Actor, lookup: DnsLookup) -> Iterable[Finding]:
        self.join.learn(actor.key, lookup)
        return ()

    def on_flow(self, actor: Actor, flow: FlowRecord) -> Iterable[Finding]:
        return self._flow(actor, flow)

    def on_progress(self, actor: Actor, flow: FlowRecord) -> Iterable[Finding]:
        return self._flow(actor, flow)

    def _flow(self, actor: Actor, flow: FlowRecord) -> Iterable[Finding]:
        if flow.direction != Direction.OUTBOUND:
            return ()
        kind = self.addresses.kind(flow.peer_addr)
        if kind != EXTERNAL and not (kind == INTERNAL and self.s.internal_peers):
            return ()
        t = flow.start_ns
        st = self.actors.get(actor.key)
        if st is None:
            st = _Actor(t, t)
            if not self.ctx.learning(t):  # born after the learning period: learn first
                st.learn_until_ns = t + self.new_actor_ns
            self.actors.put(actor.key, st)
        else:
            self.actors.move_to_end(actor.key)
        domain, direct = flow_domain(flow, actor.key, self.registered, self.join)
        net = self.addresses.network(flow.peer_addr)
        if self._learning(st, t):
            st.last_ns = max(st.last_ns, t)
            if not st.broad:
                self._learn(st, domain if domain is not None else net, t)
                if (domain is not None and not st.broad and net not in st.nets
                        and len(st.peers) + len(st.nets) < self.s.max_peers_per_actor):
                    st.nets.add(net)
            return ()
        if st.broad:
            return ()
        key = domain if domain is not None else net
        if key in st.peers or (domain is None and net in st.nets):
            return ()
        return self._new_peer(actor, st, flow, key, domain, net, direct, t)

    def _learning(self, st: _Actor, t: int) -> bool:
        if st.learn_until_ns is not None:
            if t < st.learn_until_ns:
                return True
            if st.rate is None:
                st.rate = self._rate(st)
            return False
        if self.ctx.learning(t):
            return True
        if st.rate is None:
            if st.last_ns - st.first_ns < self.s.min_baseline_s * NS and not st.broad:
                # Seen too briefly while learning (it appeared near the end): it learns
                # on, as an actor born after the learning period would.
                st.learn_until_ns = st.first_ns + self.new_actor_ns
                return self._learning(st, t)
            st.rate = self._rate(st)
        return False

    def _learn(self, st: _Actor, peer: str, t: int) -> None:
        if peer in st.peers:
            return
        if len(st.peers) + len(st.nets) >= self.s.max_peers_per_actor:
            st.broad = True  # too many peers to call it a baseline: never alert on it
            st.peers.clear()
            st.nets.clear()
            st.candidates.clear()
            self.stats["broad_actors"] += 1
            return
        st.peers[peer] = t
        self.stats["peers_learned"] += 1

    def _rate(self, st: _Actor) -> float:
        """New peers per day in the second half of the actor's observed learning time."""
        span = st.last_ns - st.first_ns
        if st.broad or span < self.s.min_baseline_s * NS:
            return float("inf")  # no usable baseline
        mid = st.first_ns + span // 2
        late = sum(1 for first in st.peers.values() if first >= mid)
        return late / (span / 2 / (86_400 * NS))

    def _new_peer(self, actor: Actor, st: _Actor, flow: FlowRecord, key: str,
                  domain: str | None, net: str, direct: bool, t: int) -> Iterable[Finding]:
        self.stats["new_peers"] += 1
        if self._slow_learn(st, key, t):
            return ()
        rate = st.rate if st.rate is not None else float("inf")
        if rate > self.s.max_new_peers_per_day:
            self.stats["unstable_skipped"] += 1
            return ()
        stability = 1.0 / (1.0 + rate)
        score = min(1.0, 0.35 + 0.4 * stability + (0.25 if direct else 0.0))
        size = len(st.peers)
        how = "by address, without DNS" if direct else f"resolved as {domain}"
        summary = (f"{actor.executable or actor.key} reached {key} ({how}), outside its "
                   f"baseline of {size} peers (new peers per day while learning: "
                   f"{rate:.1f})")
        return (Finding(
            actor=actor, time_ns=t, score=score, summary=summary,
            peer=Peer(address=flow.peer_addr, port=flow.peer_port, name=domain,
                      cidr=None if domain else net),
            evidence={"peer": key, "network": net, "address": flow.peer_addr,
                      "port": flow.peer_port, "transport": flow.transport,
                      "direct_ip": direct, "baseline_peers": size,
                      "baseline_new_per_day": round(rate, 3),
                      "first_seen_ns": t, "baseline_since_ns": st.first_ns},
            evidence_span=EvidenceRef(EvidenceKind.FLOW, flow.flow_id), target=key),)

    def _slow_learn(self, st: _Actor, key: str, t: int) -> bool:
        """Count the distinct days a new peer is seen; False only at its first sighting
        (the one that alerts). On its promote_days-th day it joins the baseline."""
        days = st.candidates.get(key)
        day = day_of(t)
        if days is None:
            if len(st.candidates) >= self.s.max_peers_per_actor:
                st.candidates.pop(next(iter(st.candidates)))
            st.candidates[key] = [day]
            return False
        if day not in days:
            days.append(day)
            del days[:-MAX_CANDIDATE_DAYS]
            if len(days) >= self.s.promote_days:
                del st.candidates[key]
                if len(st.peers) + len(st.nets) < self.s.max_peers_per_actor:
                    st.peers[key] = t
                    self.stats["promoted"] += 1
        return True

    # ---- persistence ------------------------------------------------------------------
    def save_state(self) -> dict[str, Any]:
        actors: dict[str, Any] = {}
        budget = MAX_SAVED_ENTRIES
        for key in reversed(self.actors):  # most recently seen first, within the budget
            st = self.actors[key]
            budget -= 1 + len(st.peers) + len(st.nets) + len(st.candidates)
            if budget < 0:
                self.stats["saved_truncated"] += 1
                break
            actors[key] = {"first": st.first_ns, "last": st.last_ns,
                           "until": st.learn_until_ns, "broad": st.broad, "rate": st.rate
                           if st.rate is None or st.rate != float("inf") else -1.0,
                           "peers": st.peers, "nets": sorted(st.nets),
                           "candidates": st.candidates}
        return {"version": STATE_VERSION, "actors": dict(reversed(actors.items()))}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            return
        cap = self.s.max_peers_per_actor
        for key, a in list((state.get("actors") or {}).items())[-self.s.max_actors:]:
            rate = a.get("rate")
            st = _Actor(int(a["first"]), int(a["last"]),
                        None if a.get("until") is None else int(a["until"]),
                        broad=bool(a.get("broad")),
                        rate=None if rate is None else (float("inf") if rate < 0
                                                        else float(rate)))
            st.peers = {str(p): int(v) for p, v in list(a.get("peers", {}).items())[:cap]}
            st.nets = {str(n) for n in a.get("nets", [])[:max(0, cap - len(st.peers))]}
            st.candidates = {str(p): [int(d) for d in v][-MAX_CANDIDATE_DAYS:]
                             for p, v in list(a.get("candidates", {}).items())[:cap]}
            self.actors.put(str(key), st)

    def counters(self) -> dict[str, int]:
        return dict(self.stats)

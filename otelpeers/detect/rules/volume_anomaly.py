"""volume_anomaly: bytes from an actor to one peer within a window, far above its baseline.

The peer is the registered domain when the flow was resolved, else the address. Bytes sent
(payload out) are summed per (actor, peer) over a window of ``window_s`` that opens with
the first byte, over every connection, so an upload split into chunks counts whole. Open
connections count as they go: each live snapshot (cumulative counters) adds its delta
since the previous one (the record carries the previous snapshot's counters: no table of
open flows here), so a large upload fires while the connection is still open. A Zeek row
(one record per connection) counts at its start.

Baseline: the totals of the actor's closed windows per peer (the last ``history_windows``)
and, for peers it never sent to, the actor's windows to all peers together. The reference
is robust: max(the ``reference_quantile`` quantile, median + ``mad_k`` x 1.4826 x MAD) of
those totals; with few windows the quantile is their maximum, so a nightly backup or a daily
video call to the same host is its own baseline. For a new peer the window must also exceed
``same_hour_factor`` x the largest window the actor opened at that hour of day (+-1 h) to the
same zone (internal or outside): a regular job moved to a new host stays quiet, the same
volume sent outside does not. A window alerts when it reaches both
``min_bytes`` (small numbers never alarm) and ``min_ratio`` x the reference. Windows that
opened during learning never alert; after learning every window that did not alert joins
the baseline (slow learning), alerting ones do not.

Per flow: a dict lookup for the pair and an addition; statistics only past min_bytes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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
    flow_domain,
    median_mad,
    quantile,
)
from otelpeers.detect.settings import VolumeAnomalyRule as Settings
from otelpeers.dns.lookups import DnsLookup
from otelpeers.events import Direction
from otelpeers.flows import FlowRecord

STATE_VERSION = 1
ACTOR_HISTORY = 128  # windows to all peers together, per actor (reference for new peers)
MAX_SAVED_VALUES = 250_000  # window totals written to the baseline file, all actors


class _Ref(NamedTuple):
    """The baseline a window is judged against."""

    reference: float  # bytes; the window alerts at min_ratio times this
    median: float
    mad: float
    quantile: float
    windows: int  # past windows it is computed from
    known: bool  # from this peer's windows (else the actor's windows to any peer)
    same_hour: float  # new peer: the actor's largest window opened at this hour of day


@dataclass(slots=True)
class _Pair:
    hist: list[int] = field(default_factory=list)  # closed windows' totals (bounded)
    start_ns: int = -1  # current window
    total: int = 0
    flows: int = 0
    learning: bool = True  # the current window opened during learning
    alerted: bool = False
    ref: _Ref | None = None  # cached per window
    outside: bool = True  # the peer is outside (not internal): the zone of its hours
    peak: int = 0  # the largest window in hist


@dataclass(slots=True)
class _Actor:
    peers: OrderedDict[str, _Pair] = field(default_factory=OrderedDict)  # LRU order
    hist: list[int] = field(default_factory=list)
    # The largest window by the UTC hour of day it opened, to internal peers (0..23) and
    # to outside ones (24..47): a regular job (the nightly backup) moved to a new host in
    # the same zone is not an anomaly at its usual hour; the same volume sent outside is.
    hours: list[int] = field(default_factory=lambda: [0] * 48)


class VolumeAnomaly(Rule):
    meta = meta.VOLUME_ANOMALY
    settings_type = Settings
    takes_flows = True
    takes_progress = True
    takes_dns = True

    def __init__(self, settings: Settings, ctx: RuleContext) -> None:  # type: ignore[override]
        super().__init__(settings, ctx)
        s: Settings = settings
        self.s = s
        self.addresses = AddressClasses(s.internal_cidrs)
        self.registered = Registered()
        self.join = DnsJoin(self.registered, s.max_dns_join)
        self.window_ns = int(s.window_s * NS)
        self.actors: BoundedMap[str, _Actor] = ctx.bounded("volume_anomaly.actors",
                                                           s.max_actors)
        self.stats = {"windows_learned": 0, "checks": 0, "peers_replaced": 0,
                      "saved_truncated": 0}

    # ---- inputs ---------------------------------------------------------------------
    def on_dns(self, actor: Actor, lookup: DnsLookup) -> Iterable[Finding]:
        self.join.learn(actor.key, lookup)
        return ()

    def on_progress(self, actor: Actor, flow: FlowRecord) -> Iterable[Finding]:
        sent = flow.counters.payload_out
        before = flow.reported
        # A first snapshot counts from zero, except an adopted flow's: its counters include
        # what it sent before the agent saw it
        base = before.payload_out if before is not None else (sent if flow.adopted else 0)
        delta = sent - base
        if delta <= 0 or not self._counts(flow):
            return ()
        return self._add(actor, flow, self._peer_key(actor, flow), delta, flow.end_ns)

    def on_flow(self, actor: Actor, flow: FlowRecord) -> Iterable[Finding]:
        sent = flow.counters.payload_out
        before = flow.reported
        if before is None:  # never seen open (a short flow, a Zeek row): its bytes from its start
            if sent <= 0 or not self._counts(flow):
                return ()
            return self._add(actor, flow, self._peer_key(actor, flow), sent, flow.start_ns)
        delta = sent - before.payload_out
        if delta <= 0 or not self._counts(flow):
            return ()
        return self._add(actor, flow, self._peer_key(actor, flow), delta, flow.end_ns)

    def _counts(self, flow: FlowRecord) -> bool:
        if flow.direction != Direction.OUTBOUND:
            return False
        kind = self.addresses.kind(flow.peer_addr)
        return kind == EXTERNAL or (kind == INTERNAL and self.s.internal_peers)

    def _peer_key(self, actor: Actor, flow: FlowRecord) -> str:
        domain, _ = flow_domain(flow, actor.key, self.registered, self.join)
        return domain if domain is not None else flow.peer_addr

    # ---- windows ----------------------------------------------------------------------
    def _add(self, actor: Actor, flow: FlowRecord, peer: str, delta: int,
             t: int) -> Iterable[Finding]:
        st = self.actors.get(actor.key)
        if st is None:
            st = _Actor()
            self.actors.put(actor.key, st)
        else:
            self.actors.move_to_end(actor.key)
        pair = st.peers.get(peer)
        if pair is None:
            pair = _Pair(outside=self.addresses.kind(flow.peer_addr) == EXTERNAL)  # cached
            self._put_peer(st, peer, pair)
        else:
            st.peers.move_to_end(peer)
        if (pair.start_ns < 0 or t >= pair.start_ns + self.window_ns
                or (pair.learning and not self.ctx.learning(t))):  # learning has ended
            self._close(st, pair)
            pair.start_ns, pair.total, pair.flows = t, 0, 0
            pair.learning = self.ctx.learning(t)
            pair.alerted, pair.ref = False, None
        pair.total += delta
        pair.flows += 1
        if pair.learning or pair.alerted or pair.total < self.s.min_bytes:
            return ()
        return self._check(actor, st, pair, flow, peer)

    def _put_peer(self, st: _Actor, peer: str, pair: _Pair) -> None:
        """Add a peer; when full, evict the least recently seen peer whose windows were all
        small (its history cannot raise a reference past min_bytes: the actor-wide one
        stands in for it), else the least recently seen one. A browser's many small peers
        never push out the video service or the backup host it sends gigabytes to."""
        peers = st.peers
        if len(peers) >= self.s.max_peers_per_actor:
            heavy = self.s.min_bytes / self.s.min_ratio
            victim = next((k for k, p in peers.items() if p.total < heavy and p.peak < heavy),
                          None)
            if victim is None:
                victim = next(iter(peers))
            del peers[victim]
            self.stats["peers_replaced"] += 1
        peers[peer] = pair

    def _close(self, st: _Actor, pair: _Pair) -> None:
        if pair.start_ns < 0 or pair.alerted or pair.total <= 0:
            return
        for hist, cap in ((pair.hist, self.s.history_windows), (st.hist, ACTOR_HISTORY)):
            hist.append(pair.total)
            if len(hist) > cap:
                del hist[0]
        pair.peak = max(pair.hist)
        hour = _hour(pair.start_ns) + (24 if pair.outside else 0)
        if pair.total > st.hours[hour]:
            st.hours[hour] = pair.total
        self.stats["windows_learned"] += 1

    def _close_expired(self, st: _Actor, t: int) -> None:
        """Windows close when their pair next sends; one that went quiet (last night's
        backup) is closed here, so the baseline counts it. At most max_peers_per_actor."""
        learning = self.ctx.learning(t)
        for p in st.peers.values():
            if p.start_ns >= 0 and p.total > 0 and (
                    t >= p.start_ns + self.window_ns or (p.learning and not learning)):
                self._close(st, p)
                p.start_ns, p.total, p.flows, p.ref = -1, 0, 0, None

    def _reference(self, st: _Actor, pair: _Pair) -> _Ref:
        if pair.ref is None:
            known = bool(pair.hist)
            hist = pair.hist if known else st.hist
            same_hour = 0.0
            if not known:
                h, zone = _hour(pair.start_ns), (24 if pair.outside else 0)
                same_hour = float(max(st.hours[zone + (h - 1) % 24], st.hours[zone + h],
                                      st.hours[zone + (h + 1) % 24]))
            if not hist:
                pair.ref = _Ref(0.0, 0.0, 0.0, 0.0, 0, False, same_hour)
            else:
                values = sorted(hist)
                q = self.s.reference_quantile if known else self.s.new_peer_quantile
                med, mad = median_mad(values)
                qv = quantile(values, q)
                ref = max(qv, med + self.s.mad_k * 1.4826 * mad)
                pair.ref = _Ref(ref, med, mad, qv, len(values), known, same_hour)
            if same_hour:  # alert only past same_hour_factor x the usual job at this hour
                ref = same_hour * self.s.same_hour_factor / self.s.min_ratio
                if ref > pair.ref.reference:
                    pair.ref = pair.ref._replace(reference=ref)
        return pair.ref

    def _check(self, actor: Actor, st: _Actor, pair: _Pair, flow: FlowRecord,
               peer: str) -> Iterable[Finding]:
        self.stats["checks"] += 1
        if pair.ref is None:  # first check in this window: bring the actor's windows up to date
            self._close_expired(st, pair.start_ns)
        ref, med, mad, qv, n, known, same_hour = self._reference(st, pair)
        ratio = pair.total / max(ref, 1.0)
        if ratio < self.s.min_ratio:
            return ()
        pair.alerted = True
        open_ = not flow.complete
        elapsed_s = max(0, max(flow.end_ns, flow.start_ns) - pair.start_ns) / NS
        if same_hour and same_hour * self.s.same_hour_factor / self.s.min_ratio >= ref:
            basis = f"{_size(same_hour)} is the most it sends at this hour"
        elif known:
            basis = f"from {n} windows to this peer"
        else:
            basis = f"from {n} windows to any peer" if n else "no baseline"
        summary = (f"{actor.executable or actor.key} sent {_size(pair.total)} to {peer} in "
                   f"{elapsed_s / 60:.0f} min ({pair.flows} connection records)"
                   f"{' (still open)' if open_ else ''}: {ratio:.0f}x the baseline reference "
                   f"of {_size(ref)} ({basis})")
        score = min(1.0, 0.5 + 0.1 * math.log2(max(1.0, ratio / self.s.min_ratio))
                    + (0.1 if not known else 0.0))
        domain = None if peer == flow.peer_addr else peer
        return (Finding(
            actor=actor, time_ns=max(flow.end_ns, flow.start_ns), score=score,
            summary=summary, peer=Peer(address=flow.peer_addr, port=flow.peer_port,
                                       name=domain),
            evidence={"peer": peer, "bytes": pair.total, "window_s": self.s.window_s,
                      "window_start_ns": pair.start_ns, "flows": pair.flows,
                      "open": open_, "baseline_windows": n, "baseline_peer_known": known,
                      "baseline_median": round(med), "baseline_mad": round(mad),
                      "baseline_quantile": round(qv), "baseline_reference": round(ref),
                      "baseline_same_hour_max": round(same_hour),
                      "ratio": round(ratio, 2), "min_bytes": self.s.min_bytes},
            evidence_span=EvidenceRef(EvidenceKind.FLOW, flow.flow_id), target=peer),)

    # ---- persistence ------------------------------------------------------------------
    def save_state(self) -> dict[str, Any]:
        actors: dict[str, Any] = {}
        budget = MAX_SAVED_VALUES
        for key in reversed(self.actors):  # most recently seen first
            st = self.actors[key]
            peers = {p: list(pair.hist) for p, pair in reversed(st.peers.items())
                     if pair.hist}
            size = len(st.hist) + sum(len(h) for h in peers.values())
            if size > budget:
                self.stats["saved_truncated"] += 1
                break
            budget -= size
            actors[key] = {"hist": list(st.hist), "hours": list(st.hours), "peers": peers}
        return {"version": STATE_VERSION, "actors": dict(reversed(actors.items()))}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            return
        s = self.s
        for key, a in list((state.get("actors") or {}).items())[-s.max_actors:]:
            st = _Actor(hist=[int(v) for v in a.get("hist", [])][-ACTOR_HISTORY:])
            hours = [int(v) for v in a.get("hours", [])]
            if len(hours) == 48:
                st.hours = hours
            for peer, hist in list((a.get("peers") or {}).items())[-s.max_peers_per_actor:]:
                pair = _Pair([int(v) for v in hist][-s.history_windows:],
                             outside=self.addresses.kind(str(peer)) != INTERNAL)  # or a name
                pair.peak = max(pair.hist, default=0)
                st.peers[str(peer)] = pair
            self.actors.put(str(key), st)

    def counters(self) -> dict[str, int]:
        return dict(self.stats)


def _hour(t_ns: int) -> int:
    return t_ns // (3600 * NS) % 24


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"

"""lateral_movement: an actor newly fans out to internal hosts on remote-administration ports.

Baseline (learned during ctx.learning, then slowly): per actor, which admin ports it used
and which internal hosts it reached on each. After learning, a contact (host, port) is new
when the port is new for the actor, or when the host is new on that port and the actor was
not already an administrator (one that reached at least ``broad_hosts`` internal hosts on
admin ports during its baseline: admin hosts that SSH to different servers every day are
the baseline, not alerts). The rule fires when new contacts reach ``min_hosts`` distinct
hosts within ``window_s``. Failed attempts (refused, timed out) count: reaching out is what
matters. Open connections count from their first live snapshot, so a fan-out of long SSH
sessions fires while they are still open.

Slow learning: a new (host, port) seen on ``promote_days`` distinct days joins the baseline.
Per flow: one frozenset test for the port; everything else only for admin-port flows.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from otelpeers.detect.engine import BoundedMap, Finding, Rule, RuleContext
from otelpeers.detect.model import Actor, EvidenceKind, EvidenceRef, Peer
from otelpeers.detect.rules import meta
from otelpeers.detect.rules.baseline import INTERNAL, NS, AddressClasses, day_of
from otelpeers.detect.settings import LateralMovementRule as Settings
from otelpeers.events import Direction
from otelpeers.flows import FlowRecord

STATE_VERSION = 1
MAX_CANDIDATE_DAYS = 8
MAX_SAVED_ENTRIES = 250_000  # hosts and candidates written to the baseline file, all actors
MAX_EVIDENCE_PEERS = 64  # hosts listed in an alert (evidence "hosts" has the count)


@dataclass(slots=True)
class _Actor:
    # baseline: admin port -> internal hosts reached on it (bounded by max_hosts_per_actor)
    ports: dict[int, set[str]] = field(default_factory=dict)
    hosts: int = 0  # hosts in the baseline, all ports together
    # after learning: new contacts in the window, host -> (first time, port, failed)
    recent: dict[str, tuple[int, int, bool]] = field(default_factory=dict)
    # slow learning: (host, port) -> distinct days it was seen on
    candidates: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    reported: int = 0  # new hosts in the window at the last alert (re-alert on doubling)


class LateralMovement(Rule):
    meta = meta.LATERAL_MOVEMENT
    settings_type = Settings
    takes_flows = True
    takes_progress = True

    def __init__(self, settings: Settings, ctx: RuleContext) -> None:  # type: ignore[override]
        super().__init__(settings, ctx)
        s: Settings = settings
        self.s = s
        self.ports = frozenset(s.admin_ports)
        self.addresses = AddressClasses(s.internal_cidrs)
        self.window_ns = int(s.window_s * NS)
        self.actors: BoundedMap[str, _Actor] = ctx.bounded("lateral_movement.actors",
                                                           s.max_actors)
        self.stats = {"contacts_learned": 0, "new_contacts": 0, "baseline_full": 0,
                      "promoted": 0, "saved_truncated": 0}

    # ---- inputs ---------------------------------------------------------------------
    def on_flow(self, actor: Actor, flow: FlowRecord) -> Iterable[Finding]:
        if flow.peer_port not in self.ports or flow.direction != Direction.OUTBOUND:
            return ()
        return self._contact(actor, flow)

    def on_progress(self, actor: Actor, flow: FlowRecord) -> Iterable[Finding]:
        if flow.peer_port not in self.ports or flow.direction != Direction.OUTBOUND:
            return ()
        return self._contact(actor, flow)

    def _contact(self, actor: Actor, flow: FlowRecord) -> Iterable[Finding]:
        host, port, t = flow.peer_addr, flow.peer_port, flow.start_ns
        if self.addresses.kind(host) != INTERNAL:
            return ()
        st = self.actors.touch(actor.key, _Actor)
        known = st.ports.get(port)
        if self.ctx.learning(t):
            self._learn(st, host, port)
            return ()
        if known is not None and (host in known or st.hosts >= self.s.broad_hosts):
            return ()
        return self._new_contact(actor, st, flow, host, port, t)

    def _learn(self, st: _Actor, host: str, port: int) -> None:
        hosts = st.ports.get(port)
        if hosts is None:
            if len(st.ports) >= len(self.ports):
                return
            hosts = st.ports[port] = set()
        if host in hosts:
            return
        if st.hosts >= self.s.max_hosts_per_actor:
            self.stats["baseline_full"] += 1
            return
        hosts.add(host)
        st.hosts += 1
        self.stats["contacts_learned"] += 1

    def _new_contact(self, actor: Actor, st: _Actor, flow: FlowRecord, host: str, port: int,
                     t: int) -> Iterable[Finding]:
        self._slow_learn(st, host, port, t)
        recent = st.recent
        # Drop contacts older than the window (few: only new contacts are kept here).
        horizon = t - self.window_ns
        for h in [h for h, (first, _, _) in recent.items() if first < horizon]:
            del recent[h]
        if len(recent) < self.s.min_hosts:
            st.reported = 0  # the earlier fan-out has left the window
        if host in recent:
            first, p, failed = recent[host]
            if not flow.failed and failed:
                recent[host] = (first, p, False)
            return ()
        if len(recent) >= self.s.max_hosts_per_actor:
            recent.pop(next(iter(recent)))
        recent[host] = (t, port, flow.failed)
        self.stats["new_contacts"] += 1
        # Alert at min_hosts, then again only when the fan-out has doubled since.
        if len(recent) < max(self.s.min_hosts, 2 * st.reported):
            return ()
        st.reported = len(recent)
        return (self._finding(actor, st, flow),)

    def _slow_learn(self, st: _Actor, host: str, port: int, t: int) -> None:
        key = (host, port)
        days = st.candidates.get(key)
        day = day_of(t)
        if days is None:
            if len(st.candidates) >= self.s.max_hosts_per_actor:
                st.candidates.pop(next(iter(st.candidates)))
            st.candidates[key] = [day]
            return
        if day in days:
            return
        days.append(day)
        del days[:-MAX_CANDIDATE_DAYS]
        if len(days) >= self.s.promote_days:
            del st.candidates[key]
            self._learn(st, host, port)
            self.stats["promoted"] += 1

    def _finding(self, actor: Actor, st: _Actor, flow: FlowRecord) -> Finding:
        contacts = sorted(st.recent.items(), key=lambda kv: kv[1][0])
        hosts = tuple(h for h, _ in contacts)
        ports = tuple(sorted({p for _, (_, p, _) in contacts}))
        new_ports = tuple(p for p in ports if p not in st.ports)
        failed = sum(1 for _, (_, _, f) in contacts if f)
        span_s = (contacts[-1][1][0] - contacts[0][1][0]) / NS
        # More hosts, ports never used before, and mostly answered: stronger.
        score = min(1.0, 0.55 + 0.07 * (len(hosts) - self.s.min_hosts)
                    + (0.2 if new_ports else 0.0) + 0.15 * (1 - failed / len(hosts)))
        baseline_ports = tuple(sorted(st.ports))
        summary = (f"{actor.executable or actor.key} reached {len(hosts)} internal hosts it "
                   f"never administered on port(s) {', '.join(map(str, ports))} within "
                   f"{span_s / 60:.0f} min ({failed} failed); baseline: "
                   f"{st.hosts} hosts on port(s) "
                   f"{', '.join(map(str, baseline_ports)) or 'none'}")
        return Finding(
            actor=actor, time_ns=max(flow.start_ns, contacts[-1][1][0]), score=score,
            summary=summary, peer=Peer(cidr=_covering(hosts)),
            evidence={"peers": hosts[:MAX_EVIDENCE_PEERS], "ports": ports, "new_ports": new_ports,
                      "hosts": len(hosts), "failed": failed, "span_s": round(span_s, 1),
                      "baseline_ports": baseline_ports, "baseline_hosts": st.hosts,
                      "window_s": self.s.window_s, "min_hosts": self.s.min_hosts},
            evidence_span=EvidenceRef(EvidenceKind.FLOW, flow.flow_id),
            target="fan-out")

    # ---- persistence ------------------------------------------------------------------
    def save_state(self) -> dict[str, Any]:
        actors: dict[str, Any] = {}
        budget = MAX_SAVED_ENTRIES
        for key in reversed(self.actors):  # most recently seen first, within the budget
            st = self.actors[key]
            if not st.ports and not st.candidates:
                continue
            budget -= st.hosts + len(st.candidates)
            if budget < 0:
                self.stats["saved_truncated"] += 1
                break
            actors[key] = {
                "ports": {str(p): sorted(h) for p, h in st.ports.items()},
                "candidates": [[h, p, d] for (h, p), d in st.candidates.items()]}
        return {"version": STATE_VERSION, "actors": dict(reversed(actors.items()))}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            return
        cap = self.s.max_hosts_per_actor
        for key, a in list((state.get("actors") or {}).items())[-self.s.max_actors:]:
            st = _Actor()
            for p, hosts in list(a.get("ports", {}).items())[:len(self.ports)]:
                port = int(p)
                if port not in self.ports:
                    continue
                keep = [str(h) for h in hosts][:max(0, cap - st.hosts)]
                st.ports[port] = set(keep)
                st.hosts += len(st.ports[port])
            for h, p, days in a.get("candidates", [])[:cap]:
                st.candidates[(str(h), int(p))] = [int(d) for d in days][-MAX_CANDIDATE_DAYS:]
            self.actors.put(str(key), st)

    def counters(self) -> dict[str, int]:
        return dict(self.stats)


def _covering(hosts: tuple[str, ...]) -> str:
    """The smallest network holding every host (for the alert's peer)."""
    ips = [ipaddress.ip_address(h.split("%", 1)[0]) for h in hosts]
    if any(ip.version != ips[0].version for ip in ips):
        return "::/0"
    bits = 32 if ips[0].version == 4 else 128
    lo, hi = int(min(ips)), int(max(ips))
    prefix = bits - (lo ^ hi).bit_length()
    return str(ipaddress.ip_network((lo, prefix), strict=False))

"""Ground truth for generated traffic, and the scorer that judges detections against it.

An *incident* is one malicious activity: its rule (the one that must catch it), its actor
(for Zeek input, the source address), its peers (one C2, or every host a scan touched), a
time window, and the other rules that may fire on it without counting as false alerts
(``accept``: a beacon that starts on day 2 also reaches a never-seen network, so
``novel_peer`` firing on it is right, yet it is not that rule's positive).

Scoring, per rule:

- recall: an incident is caught when a detection of its rule for its actor (and, for
  per-peer rules, naming one of its peers: the address, a CIDR holding it, or its DNS
  name) has a time inside [start - early_s, end + late_s];
- false alerts: every detection that matches no incident (of its own rule or an accepted
  one) counts once per (rule, actor, peer) after deduplication, divided by the number of
  benign (source, peer) pairs in the data, per 1,000. Detections on a malicious pair but
  outside its window count as false, marked "outside window" for debugging.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FORMAT = "otelpeers-detect-truth/1"
# Rules whose detections are about one peer; the others (scans, lateral movement) are
# about an actor's fan-out and may name no peer, or a CIDR.
PER_PEER_RULES = frozenset({"beacon", "volume_anomaly", "novel_peer", "exfiltration",
                            "reverse_shell"})
DEFAULT_LATE_S = 3600.0  # a rule that sums over a window may fire when the window closes
MAX_LISTED = 50  # misses / false alerts kept per rule for debugging


@dataclass(frozen=True)
class Incident:
    id: str
    rule: str
    actor: str
    peers: tuple[str, ...]
    per_peer: bool
    start_ns: int
    end_ns: int
    names: tuple[str, ...] = ()  # DNS names of the peers, when they were resolved
    networks: tuple[str, ...] = ()  # CIDRs the peers belong to (novel_peer: the new /24)
    accept: tuple[str, ...] = ()  # other rules that may rightly fire on this incident
    note: str = ""
    params: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "rule": self.rule, "actor": self.actor, "peers": list(self.peers),
            "per_peer": self.per_peer, "start_ns": self.start_ns, "end_ns": self.end_ns,
            "start": _rfc3339(self.start_ns), "end": _rfc3339(self.end_ns),
            "names": list(self.names), "networks": list(self.networks),
            "accept": list(self.accept), "note": self.note, "params": dict(self.params),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Incident:
        return cls(
            id=str(d["id"]), rule=str(d["rule"]), actor=str(d["actor"]),
            peers=tuple(d.get("peers", ())), per_peer=bool(d["per_peer"]),
            start_ns=int(d["start_ns"]), end_ns=int(d["end_ns"]),
            names=tuple(d.get("names", ())), networks=tuple(d.get("networks", ())),
            accept=tuple(d.get("accept", ())), note=str(d.get("note", "")),
            params=dict(d.get("params", {})))


@dataclass(frozen=True)
class GroundTruth:
    seed: int
    start_ns: int
    end_ns: int
    learning_end_ns: int  # baselines learn until here (the first day)
    benign_pairs: int  # distinct (source, peer) address pairs with no malicious traffic
    incidents: tuple[Incident, ...]
    internal: tuple[str, ...] = ("10.0.0.0/8",)
    lookalikes: Mapping[str, Any] = field(default_factory=dict, compare=False)
    counts: Mapping[str, int] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "seed": self.seed,
            "start_ns": self.start_ns, "end_ns": self.end_ns,
            "learning_end_ns": self.learning_end_ns,
            "start": _rfc3339(self.start_ns), "end": _rfc3339(self.end_ns),
            "internal": list(self.internal), "benign_pairs": self.benign_pairs,
            "counts": dict(self.counts), "lookalikes": dict(self.lookalikes),
            "incidents": [i.to_json() for i in self.incidents],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GroundTruth:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a ground truth file: format {d.get('format')!r}, "
                             f"expected {FORMAT!r}")
        return cls(
            seed=int(d["seed"]), start_ns=int(d["start_ns"]), end_ns=int(d["end_ns"]),
            learning_end_ns=int(d["learning_end_ns"]), benign_pairs=int(d["benign_pairs"]),
            incidents=tuple(Incident.from_json(i) for i in d["incidents"]),
            internal=tuple(d.get("internal", ("10.0.0.0/8",))),
            lookalikes=dict(d.get("lookalikes", {})), counts=dict(d.get("counts", {})))

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=1, sort_keys=True)
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GroundTruth:
        with open(path, encoding="utf-8") as f:
            return cls.from_json(json.load(f))

    def rules(self) -> list[str]:
        return sorted({i.rule for i in self.incidents})


@dataclass(frozen=True, slots=True)
class Detection:
    rule: str
    actor: str
    peer: str | None  # an address, a CIDR, a DNS name, or None (rules about many targets)
    time_ns: int
    score: float = 1.0


@dataclass(frozen=True, slots=True)
class FalseAlert:
    rule: str
    actor: str
    peer: str | None
    first_ns: int
    detections: int  # how many detections this (rule, actor, peer) stands for
    why: str  # "no incident" | "outside window"


@dataclass
class RuleScore:
    rule: str
    benign_pairs: int
    positives: int = 0
    caught: int = 0
    false_alerts: int = 0  # deduplicated (rule, actor, peer)
    accepted: int = 0  # detections that hit an incident of another rule that accepts this one
    misses: list[Incident] = field(default_factory=list)
    false_list: list[FalseAlert] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        return self.caught / self.positives if self.positives else None

    @property
    def false_per_1000(self) -> float:
        return 1000.0 * self.false_alerts / self.benign_pairs if self.benign_pairs else 0.0


@dataclass
class Report:
    rules: dict[str, RuleScore]
    benign_pairs: int

    @property
    def false_alerts(self) -> int:
        return sum(r.false_alerts for r in self.rules.values())

    @property
    def false_per_1000(self) -> float:
        return 1000.0 * self.false_alerts / self.benign_pairs if self.benign_pairs else 0.0

    def table(self, label: str = "") -> str:
        rows = [f"{'method':<22} {'rule':<17} {'caught':>9} {'recall':>7} {'false':>6} "
                f"{'per 1k pairs':>12}"]
        for name in sorted(self.rules):
            r = self.rules[name]
            recall = f"{r.recall:.2f}" if r.recall is not None else "-"
            rows.append(f"{label:<22} {name:<17} {r.caught:>4}/{r.positives:<4} {recall:>7} "
                        f"{r.false_alerts:>6} {r.false_per_1000:>12.2f}")
        return "\n".join(rows)

    def debug(self, limit: int = 10) -> str:
        """Misses and false alerts per rule, for finding out why."""
        out: list[str] = []
        for name in sorted(self.rules):
            r = self.rules[name]
            for inc in r.misses[:limit]:
                out.append(f"{name}: MISSED {inc.id} actor={inc.actor} "
                           f"peers={list(inc.peers[:3])} {inc.note}")
            for fa in r.false_list[:limit]:
                out.append(f"{name}: FALSE actor={fa.actor} peer={fa.peer} at "
                           f"{_rfc3339(fa.first_ns)} x{fa.detections} ({fa.why})")
        return "\n".join(out)


def _rfc3339(ns: int) -> str:
    stamp = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def peer_matches(inc: Incident, peer: str | None) -> bool:
    """Does a detection's peer point at this incident's peers?"""
    if peer is None:
        return not inc.per_peer
    if "/" in peer:
        try:
            net = ipaddress.ip_network(peer, strict=False)
        except ValueError:
            return False
        if any((a := _ip(p)) is not None and a in net for p in inc.peers):
            return True
        return any(net.overlaps(ipaddress.ip_network(n, strict=False)) for n in inc.networks
                   if ipaddress.ip_network(n, strict=False).version == net.version)
    addr = _ip(peer)
    if addr is not None:
        if peer in inc.peers or str(addr) in inc.peers:
            return True
        return any(addr in ipaddress.ip_network(n, strict=False) for n in inc.networks)
    name = peer.lower().rstrip(".")
    # the same name, or one inside the other (a registered domain for a host name, or a
    # host name under the C2's domain), never a bare top-level label
    return "." in name and any(
        n == name or n.endswith("." + name) or (name.endswith("." + n) and "." in n)
        for n in inc.names)


def score(detections: Iterable[Detection], truth: GroundTruth, *,
          rules: Iterable[str] | None = None, late_s: float = DEFAULT_LATE_S,
          early_s: float = 0.0) -> Report:
    """Score detections against the truth; ``rules`` limits the report (default: all seen)."""
    by_actor: dict[str, list[Incident]] = defaultdict(list)
    for inc in truth.incidents:
        by_actor[inc.actor].append(inc)
    late, early = int(late_s * 1e9), int(early_s * 1e9)
    caught: set[str] = set()
    accepted: dict[str, int] = defaultdict(int)
    # (rule, actor, peer) -> [first time, count, why]
    false: dict[tuple[str, str, str | None], list[Any]] = {}
    wanted = set(rules) if rules is not None else None
    seen_rules: set[str] = set()
    for d in detections:
        if wanted is not None and d.rule not in wanted:
            continue
        seen_rules.add(d.rule)
        matched = outside = False
        for inc in by_actor.get(d.actor, ()):
            if d.rule != inc.rule and d.rule not in inc.accept:
                continue
            if not peer_matches(inc, d.peer):
                continue
            if not inc.start_ns - early <= d.time_ns <= inc.end_ns + late:
                outside = True
                continue
            matched = True
            if d.rule == inc.rule:
                caught.add(inc.id)
            else:
                accepted[d.rule] += 1
        if matched:
            continue
        key = (d.rule, d.actor, d.peer)
        entry = false.get(key)
        if entry is None:
            false[key] = [d.time_ns, 1, "outside window" if outside else "no incident"]
        else:
            entry[0] = min(entry[0], d.time_ns)
            entry[1] += 1
    names = wanted if wanted is not None else seen_rules | {i.rule for i in truth.incidents}
    report = Report({n: RuleScore(n, truth.benign_pairs) for n in sorted(names)},
                    truth.benign_pairs)
    for inc in truth.incidents:
        r = report.rules.get(inc.rule)
        if r is None:
            continue
        r.positives += 1
        if inc.id in caught:
            r.caught += 1
        elif len(r.misses) < MAX_LISTED:
            r.misses.append(inc)
    for (rule, actor, peer), (first, count, why) in sorted(
            false.items(), key=lambda kv: (kv[0][0], kv[1][0], kv[0][1], str(kv[0][2]))):
        r = report.rules[rule]
        r.false_alerts += 1
        if len(r.false_list) < MAX_LISTED:
            r.false_list.append(FalseAlert(rule, actor, peer, first, count, why))
    for rule, n in accepted.items():
        report.rules[rule].accepted = n
    return report

"""port_scan: one actor probes many ports of one host (vertical) or one port of many hosts
(horizontal), and a substantial share of the targets does not answer.

Per actor the rule keeps, within a sliding window of event time (``window_s``), the distinct
targets of each (actor, host) — its ports — and of each (actor, transport, port) — its
hosts — with what became of each target:

- answered: a TCP connection was established (also when the prober reset it at once: a
  SYN scan's open port in Zeek, RSTO), a UDP flow got a packet back;
- refused: connect failed and a packet came back (the RST of a closed port; Zeek REJ);
- timed out: connect failed with nothing back (a filtered port, an unused address; Zeek S0);
- unknown: TCP sent from a raw socket (a SYN scan as root, nmap -sS --send-ip): the kernel
  reports such traffic per (socket, peer address, peer port) with sock_type SOCK_RAW, and the
  replies go to the kernel's TCP stack or a packet capture, never to that socket.

A target counts once (answered wins over any failure). Vertical fires at ``min_ports``
unanswered ports of a host, horizontal at ``min_hosts`` unanswered hosts on a port, both
only when the unanswered targets are at least ``min_unanswered_share`` of all targets of
that host / port in the window: a sweep where a third of the hosts do not answer is a scan,
a crawler reaching hundreds of sites on 443 with a few failures is not. Raw-socket TCP
fires at ``raw_min_targets`` distinct targets whatever the share (applications do not
speak TCP through raw sockets; the evidence says that replies were not visible). An entry
fires again when its unanswered count has doubled (the engine deduplicates per window).

Per flow: two LRU touches and O(1) dict work; the window is trimmed from the oldest end.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from otelpeers.detect.engine import BoundedMap, Finding, Rule, RuleContext
from otelpeers.detect.model import Actor, EvidenceKind, EvidenceRef, Peer
from otelpeers.detect.rules import meta
from otelpeers.detect.rules.local import is_local
from otelpeers.detect.settings import PortScanRule as Settings
from otelpeers.events import Direction
from otelpeers.flows import CloseReason, FlowRecord

NS = 1_000_000_000
ANSWERED, REFUSED, TIMED_OUT, UNKNOWN = 0, 1, 2, 3
_OUTBOUND = Direction.OUTBOUND
_FAILED = CloseReason.CONNECT_FAILED
_RAW = socket.SOCK_RAW
_LOCAL_CACHE_MAX = 65_536
MIN_V4_PREFIX, MIN_V6_PREFIX = 8, 32  # a horizontal scan's CIDR, when its targets share one


class _Entry:
    """The targets of one (actor, host) or (actor, transport, port) within the window."""

    __slots__ = ("targets", "counts", "fired_at", "first_ns")

    def __init__(self) -> None:
        self.targets: OrderedDict[Any, tuple[int, int]] = OrderedDict()  # -> (time, outcome)
        self.counts = [0, 0, 0, 0]  # distinct targets by outcome
        self.fired_at = 0  # unanswered (or unknown) count at the last finding
        self.first_ns = 0  # time of the oldest target kept

    def add(self, target: Any, t: int, result: int, window_ns: int, cap: int) -> bool:
        """Note a probe; False when nothing changed that a decision could depend on."""
        targets = self.targets
        prev = targets.get(target)
        if prev is not None:
            old = prev[1]
            if old in (result, ANSWERED) and t - prev[0] < window_ns >> 3:
                return False  # the common case: the same target again, recently
            del targets[target]
            self.counts[old] -= 1
            if old == ANSWERED:
                result = ANSWERED
        elif not targets:
            self.first_ns = t
        targets[target] = (t, result)
        self.counts[result] += 1
        if t - self.first_ns > window_ns or len(targets) > cap:
            self._trim(t - window_ns, cap)
        return True

    def _trim(self, oldest_ns: int, cap: int) -> None:
        targets, counts = self.targets, self.counts
        while targets:
            first_t, first_o = next(iter(targets.values()))
            if first_t >= oldest_ns and len(targets) <= cap:
                self.first_ns = first_t
                return
            targets.popitem(last=False)
            counts[first_o] -= 1

    @property
    def unanswered(self) -> int:
        return self.counts[REFUSED] + self.counts[TIMED_OUT]


def outcome(flow: FlowRecord) -> int:
    """What became of one probe (see the module docstring)."""
    if flow.transport == "tcp":
        if flow.sock_type == _RAW:
            return UNKNOWN
        if flow.close_reason is _FAILED:
            return REFUSED if flow.counters.packets_in > 0 else TIMED_OUT
        return ANSWERED
    return ANSWERED if flow.counters.packets_in > 0 else TIMED_OUT


def covering_cidr(addrs: Iterable[str]) -> str | None:
    """The smallest network holding every address, when it is at least a /8 (IPv6 /32)."""
    ips = []
    for a in addrs:
        try:
            ips.append(ipaddress.ip_address(a))
        except ValueError:
            return None
    if not ips or len({ip.version for ip in ips}) != 1:
        return None
    bits = ips[0].max_prefixlen
    ints = [int(ip) for ip in ips]
    diff = 0
    for x in ints[1:]:
        diff |= x ^ ints[0]
    prefix = bits - diff.bit_length()
    if prefix < (MIN_V4_PREFIX if bits == 32 else MIN_V6_PREFIX):
        return None
    base = ints[0] >> (bits - prefix) << (bits - prefix)
    net = ipaddress.IPv4Network if bits == 32 else ipaddress.IPv6Network
    return str(net((base, prefix)))


class PortScan(Rule):
    meta = meta.PORT_SCAN
    settings_type = Settings
    takes_flows = True

    def __init__(self, settings: Settings, ctx: RuleContext) -> None:  # type: ignore[override]
        super().__init__(settings, ctx)
        s: Settings = settings
        self.s = s
        self.window_ns = int(s.window_s * NS)
        self.entries: BoundedMap[tuple[Any, ...], _Entry] = ctx.bounded("port_scan.entries",
                                                                         s.max_entries)
        self._local: dict[str, bool] = {}
        # (actor, host, port, transport) -> when last seen answered (bounded: cleared when full)
        self._answered: dict[tuple[str, str, int, str], int] = {}
        self.stats = {"probes": 0, "unanswered": 0, "raw_probes": 0}

    def on_flow(self, actor: Actor, flow: FlowRecord) -> Iterable[Finding]:
        transport = flow.transport
        if (flow.direction is not _OUTBOUND or flow.summary
                or (transport != "tcp" and transport != "udp")):
            return ()
        local = self._local.get(flow.peer_addr)
        if local is None:
            local = self._classify(flow.peer_addr)
        if local:
            return ()
        result = outcome(flow)
        t = flow.start_ns
        if result == ANSWERED:
            # the common case: an answered connection to a target seen answered lately
            key = (actor.key, flow.peer_addr, flow.peer_port, transport)
            seen = self._answered.get(key)
            if seen is not None and t - seen < self.window_ns >> 3:
                return ()
            if len(self._answered) >= self.s.max_entries:
                self._answered.clear()
            self._answered[key] = t
        self.stats["probes"] += 1
        if result == UNKNOWN:
            self.stats["raw_probes"] += 1
        elif result != ANSWERED:
            self.stats["unanswered"] += 1
        s, entries = self.s, self.entries
        akey, host, port = actor.key, flow.peer_addr, flow.peer_port
        found: list[Finding] = []
        key = (akey, "v", flow.transport, host)
        v = entries.get(key)
        if v is None:
            entries.put(key, v := _Entry())
        else:
            entries.move_to_end(key)
        if v.add(port, t, result, self.window_ns, s.max_targets) and self._due(v, s.min_ports):
            found.append(self._finding(actor, flow, v, vertical=True))
        key = (akey, "h", flow.transport, port)
        h = entries.get(key)
        if h is None:
            entries.put(key, h := _Entry())
        else:
            entries.move_to_end(key)
        if h.add(host, t, result, self.window_ns, s.max_targets) and self._due(h, s.min_hosts):
            found.append(self._finding(actor, flow, h, vertical=False))
        return found

    def _classify(self, addr: str) -> bool:
        if len(self._local) >= _LOCAL_CACHE_MAX:
            self._local.clear()
        hit = self._local[addr] = is_local(addr)
        return hit

    def _due(self, e: _Entry, minimum: int) -> bool:
        """Cheap: counts only. Fires first at the threshold, again when it has doubled."""
        s = self.s
        raw = e.counts[UNKNOWN]
        if raw >= s.raw_min_targets and raw >= 2 * e.fired_at:
            e.fired_at = raw
            return True
        bad = e.unanswered
        if bad < minimum or bad < 2 * e.fired_at:
            return False
        if bad < s.min_unanswered_share * len(e.targets):
            return False
        e.fired_at = bad
        return True

    def _finding(self, actor: Actor, flow: FlowRecord, e: _Entry, *,
                 vertical: bool) -> Finding:
        s = self.s
        answered, refused, timed_out, raw = e.counts
        targets = len(e.targets)
        listed = tuple(list(e.targets)[-s.evidence_targets:])
        kind = "vertical" if vertical else "horizontal"
        who = actor.executable or actor.key
        raw_socket = raw > 0 and raw >= refused + timed_out
        evidence: dict[str, Any] = {
            "kind": kind, "targets": targets, "answered": answered, "refused": refused,
            "timed_out": timed_out, "unknown": raw, "raw_socket": raw_socket,
            "unanswered_share": round((refused + timed_out) / targets, 3) if targets else 0.0,
            "window_s": s.window_s, "first_ns": e.first_ns, "last_ns": flow.start_ns,
            "transport": flow.transport,
        }
        if raw_socket:
            evidence["replies"] = "not visible (raw socket)"
        if vertical:
            ports = tuple(sorted(int(p) for p in listed))
            evidence["ports"] = ports
            evidence["peers"] = (flow.peer_addr,)
            peer = Peer(address=flow.peer_addr)
            target = flow.peer_addr
            what = f"{targets} {flow.transport} ports of {flow.peer_addr}"
        else:
            hosts = tuple(str(h) for h in listed)
            evidence["peers"] = hosts
            evidence["ports"] = (flow.peer_port,)
            cidr = covering_cidr(list(e.targets))
            if cidr:
                evidence["cidr"] = cidr
            peer = Peer(port=flow.peer_port, cidr=cidr)
            target = f"{flow.transport}/{flow.peer_port}"
            what = f"{targets} hosts on {flow.transport}/{flow.peer_port}" + \
                (f" in {cidr}" if cidr else "")
        span_s = (flow.start_ns - e.first_ns) / NS
        if raw_socket:
            how = f"{raw} probes from a raw socket, replies not visible"
            score = 0.9
        else:
            share = (refused + timed_out) / targets
            how = (f"{refused + timed_out} unanswered ({refused} refused, {timed_out} timed "
                   f"out, {share:.0%})")
            need = s.min_ports if vertical else s.min_hosts
            score = min(1.0, 0.6 + 0.2 * min(1.0, share) +
                        0.2 * min(1.0, (refused + timed_out) / (4 * need)))
        summary = f"{who} probed {what} within {span_s:.0f} s: {how} ({kind} scan)"
        return Finding(actor, max(flow.end_ns, flow.start_ns), round(score, 4), summary,
                       peer=peer, evidence=evidence,
                       evidence_span=EvidenceRef(EvidenceKind.FLOW, flow.flow_id),
                       target=target)

    def counters(self) -> dict[str, int]:
        return dict(self.stats)

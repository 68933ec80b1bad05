"""Naive per-hour rules: the reference the project's detection rules must beat.

These are the rules people write first, each over one-hour buckets of conn.log:

- beacon: a (source, destination) pair with at least 6 connections in the hour whose gaps
  have a coefficient of variation of at most 0.25 ("regular gaps");
- port_scan: a source with at least 20 failed (refused, unanswered, reset before
  established) connections in the hour to distinct ports of one host (vertical), or to
  distinct hosts on one port (horizontal);
- volume_anomaly: at least 100 MB sent from a source to one destination in the hour;
- lateral_movement: after the learning day, a source reaching at least 3 internal hosts in
  the hour on remote-administration ports it never used towards them before;
- novel_peer: after the learning day, a source reaching an outside /24 it never reached
  before (the naive form of a baseline).

Input: ZeekConn rows in event-time order (otelpeers.detect.zeek.iter_events_sorted).
"""

from __future__ import annotations

import ipaddress
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from bench.detect.truth import Detection
from otelpeers.detect.zeek import ZeekConn

HOUR_NS = 3600 * 10**9
ADMIN_PORTS = frozenset({22, 135, 445, 3389, 5985, 5986, 2375, 2376, 6443, 10250})


def internal_test(cidrs: Iterable[str]) -> Callable[[str], bool]:
    """addr -> is it inside one of the CIDRs (cached: the same addresses recur)."""
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    cache: dict[str, bool] = {}

    def test(addr: str) -> bool:
        hit = cache.get(addr)
        if hit is None:
            ip = ipaddress.ip_address(addr)
            hit = cache[addr] = any(ip in n for n in nets if n.version == ip.version)
        return hit

    return test


def naive_beacon(conns: Sequence[ZeekConn], *, min_conns: int = 6,
                 max_cv: float = 0.25) -> list[Detection]:
    buckets: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for c in conns:
        r = c.record
        buckets[(r.local_addr, r.peer_addr, r.start_ns // HOUR_NS)].append(r.start_ns)
    out = []
    for (src, dst, _), times in buckets.items():
        if len(times) < min_conns:
            continue
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        mean = statistics.fmean(gaps)
        if mean <= 0:
            continue
        if statistics.pstdev(gaps) / mean <= max_cv:
            out.append(Detection("beacon", src, dst, times[-1]))
    return out


def naive_scan(conns: Sequence[ZeekConn], *, min_failed: int = 20) -> list[Detection]:
    ports: dict[tuple[str, str, int], set[int]] = defaultdict(set)
    hosts: dict[tuple[str, int, int], set[str]] = defaultdict(set)
    out = []
    fired: set[tuple[str, str | int, int]] = set()
    for c in conns:
        r = c.record
        if not r.failed:
            continue
        hour = r.start_ns // HOUR_NS
        v = ports[(r.local_addr, r.peer_addr, hour)]
        v.add(r.peer_port)
        if len(v) >= min_failed and (r.local_addr, r.peer_addr, hour) not in fired:
            fired.add((r.local_addr, r.peer_addr, hour))
            out.append(Detection("port_scan", r.local_addr, r.peer_addr, r.start_ns))
        h = hosts[(r.local_addr, r.peer_port, hour)]
        h.add(r.peer_addr)
        if len(h) >= min_failed and (r.local_addr, r.peer_port, hour) not in fired:
            fired.add((r.local_addr, r.peer_port, hour))
            out.append(Detection("port_scan", r.local_addr, None, r.start_ns))
    return out


def naive_volume(conns: Sequence[ZeekConn], *,
                 min_bytes: int = 100_000_000) -> list[Detection]:
    sums: dict[tuple[str, str, int], int] = defaultdict(int)
    fired: set[tuple[str, str, int]] = set()
    out = []
    for c in conns:
        r = c.record
        key = (r.local_addr, r.peer_addr, r.start_ns // HOUR_NS)
        sums[key] += r.counters.payload_out
        if sums[key] >= min_bytes and key not in fired:
            fired.add(key)
            out.append(Detection("volume_anomaly", r.local_addr, r.peer_addr, r.start_ns))
    return out


def naive_lateral(conns: Sequence[ZeekConn], *, learning_end_ns: int,
                  internal: Callable[[str], bool], min_new: int = 3) -> list[Detection]:
    seen: set[tuple[str, str, int]] = set()
    new: dict[tuple[str, int], set[str]] = defaultdict(set)
    fired: set[tuple[str, int]] = set()
    out = []
    for c in conns:
        r = c.record
        if r.peer_port not in ADMIN_PORTS or not internal(r.peer_addr):
            continue
        key = (r.local_addr, r.peer_addr, r.peer_port)
        if key in seen:
            continue
        seen.add(key)
        if r.start_ns < learning_end_ns:
            continue
        bucket = (r.local_addr, r.start_ns // HOUR_NS)
        hosts = new[bucket]
        hosts.add(r.peer_addr)
        if len(hosts) >= min_new and bucket not in fired:
            fired.add(bucket)
            out.append(Detection("lateral_movement", r.local_addr, None, r.start_ns))
    return out


def naive_novel(conns: Sequence[ZeekConn], *, learning_end_ns: int,
                internal: Callable[[str], bool]) -> list[Detection]:
    seen: set[tuple[str, str]] = set()
    out = []
    for c in conns:
        r = c.record
        if internal(r.peer_addr) or ":" in r.peer_addr:
            continue
        net = r.peer_addr.rsplit(".", 1)[0] + ".0/24"
        key = (r.local_addr, net)
        if key in seen:
            continue
        seen.add(key)
        if r.start_ns >= learning_end_ns:
            out.append(Detection("novel_peer", r.local_addr, net, r.start_ns))
    return out


def run_naive(conns: Sequence[ZeekConn], *, learning_end_ns: int,
              internal_cidrs: Iterable[str]) -> list[Detection]:
    """Every naive rule over the connections (in event-time order)."""
    internal = internal_test(internal_cidrs)
    return (naive_beacon(conns) + naive_scan(conns) + naive_volume(conns)
            + naive_lateral(conns, learning_end_ns=learning_end_ns, internal=internal)
            + naive_novel(conns, learning_end_ns=learning_end_ns, internal=internal))

"""Which DNS resolution produced an address: the link from a connection to its name.

Each answered transaction records, for every address it returned, a Resolution kept twice:
under (process, address) and under the address alone (host-wide). A connection's peer
address is looked up at connect time: the connecting process's own most recent resolution
wins ("same_process"); otherwise the host's most recent one ("host": the name came through
nscd, a cache in another process, or the process was not seen resolving). Entries expire
TTL + grace after the response, on the caller's clock (event time), and both tables are
bounded LRU: a flood of unique names evicts old entries, it never grows memory.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from cachetools import LRUCache, TLRUCache

from otelpeers.config import DnsConfig
from otelpeers.dns.transactions import DnsTransaction

PER_KEY = 8  # resolutions kept per address (a CDN address serves many names)
STUB_SLACK_NS = 50_000_000  # clock slack when matching a stub's upstream query to the app's


@dataclass(frozen=True, slots=True)
class Resolution:
    address: str
    question_name: str
    qtype: str
    cname_chain: tuple[str, ...]
    time_ns: int  # when the response arrived
    ttl: int  # smallest TTL along the answer (CNAMEs included)
    txn_id: str
    tgid: int | None

    def expires_ns(self, grace_ns: int) -> int:
        return self.time_ns + self.ttl * 1_000_000_000 + grace_ns


@dataclass(frozen=True, slots=True)
class Match:
    resolution: Resolution
    how: str  # "same_process" | "host"


@dataclass(frozen=True, slots=True)
class _Brief:
    txn_id: str
    cookie: int
    start_ns: int
    end_ns: int
    resolver_addr: str


@functools.lru_cache(maxsize=16384)  # asked for every completed flow's peer: parse once
def normalize_addr(addr: str) -> str | None:
    """Canonical text; IPv4-mapped IPv6 as IPv4 (as events.format_addr writes it)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)


def is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


class ResolutionCache:
    def __init__(self, config: DnsConfig | None = None,
                 local_resolvers: Iterable[str] = ()) -> None:
        cfg = config or DnsConfig()
        if cfg.cache_max_entries < 1 or cfg.history_max_entries < 1 or cfg.cache_grace_s < 0:
            raise ValueError("ResolutionCache: dns.cache_max_entries and "
                             "dns.history_max_entries must be >= 1, dns.cache_grace_s >= 0")
        self.grace_ns = int(cfg.cache_grace_s * 1e9)
        self._now = 0  # high-water mark of the caller's clock; drives TLRU expiry
        self._host: TLRUCache[str, tuple[Resolution, ...]] = TLRUCache(
            cfg.cache_max_entries, self._ttu, timer=self._timer)
        self._proc: TLRUCache[tuple[int, str], tuple[Resolution, ...]] = TLRUCache(
            cfg.cache_max_entries, self._ttu, timer=self._timer)
        self.history: deque[Resolution] = deque(maxlen=cfg.history_max_entries)
        self._by_question: LRUCache[tuple[str, str], tuple[_Brief, ...]] = LRUCache(
            min(cfg.cache_max_entries, 16384))
        self.local_resolvers = {a for a in (normalize_addr(x) for x in local_resolvers) if a}
        self.recorded = 0
        self.rejected = 0  # answer values that are not addresses (never expected)

    def _timer(self) -> int:
        return self._now

    def _ttu(self, _key: object, value: tuple[Resolution, ...], _now: int) -> int:
        return max(r.expires_ns(self.grace_ns) for r in value)

    def _advance(self, t: int) -> None:
        if t > self._now:
            self._now = t

    # ---- recording -----------------------------------------------------------------------
    def record(self, txn: DnsTransaction) -> int:
        """Remember what txn resolved; returns how many addresses were recorded."""
        self._advance(txn.end_ns)
        key = (txn.question_name, txn.qtype)
        brief = _Brief(txn.txn_id, txn.cookie, txn.start_ns, txn.end_ns, txn.resolver_addr)
        self._by_question[key] = (self._by_question.get(key, ()) + (brief,))[-PER_KEY:]
        if txn.timed_out or not txn.addresses:
            return 0
        tgid = txn.owner.tgid if txn.owner is not None else None
        n = 0
        for raw in txn.addresses:
            addr = normalize_addr(raw)
            if addr is None:
                self.rejected += 1
                continue
            r = Resolution(addr, txn.question_name, txn.qtype, txn.cname_chain, txn.end_ns,
                           max(0, txn.ttl_min or 0), txn.txn_id, tgid)
            self._put(self._host, addr, r)
            if tgid is not None:
                self._put(self._proc, (tgid, addr), r)
            self.history.append(r)
            n += 1
        self.recorded += n
        return n

    def _put(self, table: TLRUCache, key: object, r: Resolution) -> None:
        old = table.get(key, ())
        # One entry per (name, process): a repeated lookup refreshes, never crowds out.
        kept = tuple(o for o in old
                     if (o.question_name, o.tgid) != (r.question_name, r.tgid)
                     and o.expires_ns(self.grace_ns) > self._now)
        table[key] = (kept + (r,))[-PER_KEY:]

    # ---- lookups -------------------------------------------------------------------------
    def _best(self, rs: tuple[Resolution, ...], at_ns: int) -> Resolution | None:
        best = None
        for r in rs:
            if r.time_ns <= at_ns < r.expires_ns(self.grace_ns) and (
                    best is None or r.time_ns >= best.time_ns):
                best = r
        return best

    def lookup(self, addr: str, tgid: int | None, at_ns: int) -> Match | None:
        """The resolution that most likely gave a connection made at at_ns its peer addr."""
        a = normalize_addr(addr)
        if a is None:
            return None
        self._advance(at_ns)
        if tgid is not None:
            r = self._best(self._proc.get((tgid, a), ()), at_ns)
            if r is not None:
                return Match(r, "same_process")
        r = self._best(self._host.get(a, ()), at_ns)
        return Match(r, "host") if r is not None else None

    def unresolved(self, addr: str, at_ns: int) -> bool:
        """True when no live resolution on this host produced addr (direct-IP egress)."""
        return self.lookup(addr, None, at_ns) is None

    def stub_upstream_of(self, txn: DnsTransaction) -> str | None:
        """For an application's query to a local stub (127.0.0.53, dnsmasq): the txn_id of
        the stub's own upstream query for the same question, made while the application
        waited. None when the stub answered from its cache or txn did not go to a stub."""
        if not (is_loopback(txn.resolver_addr) or txn.resolver_addr in self.local_resolvers):
            return None
        best: _Brief | None = None
        for b in self._by_question.get((txn.question_name, txn.qtype), ()):
            if b.cookie == txn.cookie or b.txn_id == txn.txn_id:
                continue
            if is_loopback(b.resolver_addr) or b.resolver_addr in self.local_resolvers:
                continue  # another application's query to the stub, not the upstream one
            if (txn.start_ns - STUB_SLACK_NS <= b.start_ns
                    and b.end_ns <= txn.end_ns + STUB_SLACK_NS
                    and (best is None or b.start_ns < best.start_ns)):
                best = b
        return best.txn_id if best is not None else None

    def __len__(self) -> int:
        return len(self._host)

    @property
    def stats(self) -> dict[str, int]:
        return {
            "host_entries": len(self._host),
            "process_entries": len(self._proc),
            "history_entries": len(self.history),
            "recorded": self.recorded,
            "rejected": self.rejected,
        }

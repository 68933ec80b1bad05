"""What the baseline rules (lateral_movement, novel_peer, volume_anomaly) share: where an
address lies (local, internal, outside), the peer key of a flow (registered domain when it
was resolved, else its /24 or /48 network or its address), a per-actor DNS join for flows
nobody annotated (Zeek conn.log, open flows), quantiles, and the day of an event time.

Every cache here is bounded; lookups are one dict access in the common case.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Iterable, Sequence

from otelpeers.detect.dga import domains
from otelpeers.detect.engine import BoundedMap
from otelpeers.dns.lookups import DnsLookup
from otelpeers.flows import FlowRecord

NS = 1_000_000_000
DAY_NS = 86_400 * NS
# RFC 1918 and RFC 4193: what "internal" means unless more networks are configured.
PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")

LOCAL = 0  # loopback, link-local, multicast, unspecified: never a peer of these rules
INTERNAL = 1
EXTERNAL = 2
_CACHE_MAX = 65_536  # addresses / names remembered; cleared whole when full (cheap, bounded)


def day_of(t_ns: int) -> int:
    """The UTC day number of an event time (for "seen on N distinct days")."""
    return t_ns // DAY_NS


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of a sorted, non-empty sequence (q=1: the maximum)."""
    n = len(sorted_values)
    return float(sorted_values[min(n - 1, max(0, math.ceil(q * n) - 1))])


def median_mad(sorted_values: Sequence[float]) -> tuple[float, float]:
    """Median and median absolute deviation of a sorted, non-empty sequence."""
    n = len(sorted_values)
    mid = n // 2
    med = (float(sorted_values[mid]) if n % 2 else
           (sorted_values[mid - 1] + sorted_values[mid]) / 2.0)
    dev = sorted(abs(v - med) for v in sorted_values)
    mad = float(dev[mid]) if n % 2 else (dev[mid - 1] + dev[mid]) / 2.0
    return med, mad


_V4 = socket.AF_INET
_V6 = socket.AF_INET6
# (network, mask) as integers: checks are two integer operations, not ipaddress objects.
_V4_LOCAL = tuple((int(n.network_address), int(n.netmask)) for n in map(ipaddress.ip_network, (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32")))
_V6_LOCAL = tuple((int(n.network_address), int(n.netmask)) for n in map(ipaddress.ip_network, (
    "::/128", "::1/128", "fe80::/10", "ff00::/8")))
_V4_MAPPED = (0xFFFF << 32, ((1 << 96) - 1) << 32)


def _parse(addr: str) -> tuple[int, int] | None:
    """(family, address as an integer); IPv4-mapped IPv6 as IPv4; None if not an address."""
    try:
        if ":" not in addr:
            return _V4, int.from_bytes(socket.inet_pton(_V4, addr), "big")
        v = int.from_bytes(socket.inet_pton(_V6, addr.split("%", 1)[0]), "big")
    except (OSError, ValueError):
        return None
    if v & _V4_MAPPED[1] == _V4_MAPPED[0]:
        return _V4, v & 0xFFFFFFFF
    return _V6, v


class AddressClasses:
    """addr -> LOCAL | INTERNAL | EXTERNAL, with the network key (/24, /48) of each address.
    Internal: RFC 1918/4193 plus the configured CIDRs (IPv4-mapped IPv6 counts as IPv4)."""

    def __init__(self, extra_internal: Iterable[str] = (), v4_prefix: int = 24,
                 v6_prefix: int = 48, networks_of_external: bool = False) -> None:
        self.networks_of_external = networks_of_external
        nets = [ipaddress.ip_network(c, strict=False)
                for c in (*PRIVATE_NETWORKS, *extra_internal)]
        self._internal = {
            _V4: tuple((int(n.network_address), int(n.netmask)) for n in nets if n.version == 4),
            _V6: tuple((int(n.network_address), int(n.netmask)) for n in nets if n.version == 6)}
        self._local = {_V4: _V4_LOCAL, _V6: _V6_LOCAL}
        self.v4_prefix = v4_prefix
        self.v6_prefix = v6_prefix
        self._masks = {_V4: (0xFFFFFFFF << (32 - v4_prefix)) & 0xFFFFFFFF,
                       _V6: ((1 << 128) - 1) ^ ((1 << (128 - v6_prefix)) - 1)}
        self._cls: dict[str, int] = {}
        self._net: dict[str, str] = {}

    def kind(self, addr: str) -> int:
        k = self._cls.get(addr)
        if k is None:
            k = self._classify(addr)
            if len(self._cls) >= _CACHE_MAX:
                self._cls.clear()
            self._cls[addr] = k
        return k

    def _classify(self, addr: str) -> int:
        parsed = _parse(addr)
        if parsed is None:
            return LOCAL  # not an address: nothing to judge
        fam, v = parsed
        for n, m in self._local[fam]:
            if v & m == n:
                return LOCAL
        for n, m in self._internal[fam]:
            if v & m == n:
                return INTERNAL
        if self.networks_of_external:  # parsed already: the caller will want its network
            self._remember_net(addr, fam, v)
        return EXTERNAL

    def network(self, addr: str) -> str:
        """The /24 (IPv4) or /48 (IPv6) network holding addr, as a CIDR string."""
        net = self._net.get(addr)
        if net is None:
            parsed = _parse(addr)
            if parsed is None:
                return addr
            net = self._remember_net(addr, *parsed)
        return net

    def _remember_net(self, addr: str, fam: int, v: int) -> str:
        base = socket.inet_ntop(fam, (v & self._masks[fam]).to_bytes(4 if fam == _V4 else 16,
                                                                      "big"))
        net = f"{base}/{self.v4_prefix if fam == _V4 else self.v6_prefix}"
        if len(self._net) >= _CACHE_MAX:
            self._net.clear()
        self._net[addr] = net
        return net


class Registered:
    """Query name -> registered domain (public suffix list, as the DGA rule splits names);
    names under listed CDN/cloud parents map to that parent, special-use names to
    themselves."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        r = self._cache.get(name)
        if r is None:
            p = domains.parse(name)
            if p is None:
                r = name.strip().lower().rstrip(".")[:253]
            else:
                r = p.registered or p.parent or p.name
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[name] = r
        return r


class DnsJoin:
    """(actor, address) -> the registered domain the actor's own lookup returned for it.

    The live DNS stage names completed flows itself (flow.dns); this join is for inputs
    nobody named: Zeek conn.log rows (their dns.log is replayed alongside) and open flows'
    progress snapshots. Bounded LRU over (actor, address)."""

    def __init__(self, registered: Registered, maxsize: int) -> None:
        self.registered = registered
        self._map: BoundedMap[tuple[str, str], str] = BoundedMap(maxsize)

    def learn(self, actor_key: str, lookup: DnsLookup, max_addresses: int = 16) -> None:
        txn = lookup.txn
        if not txn.addresses or not txn.question_name:
            return
        dom = self.registered(txn.question_name)
        for addr in txn.addresses[:max_addresses]:
            self._map.put((actor_key, addr), dom)

    def name(self, actor_key: str, addr: str) -> str | None:
        return self._map.get((actor_key, addr))


def flow_domain(flow: FlowRecord, actor_key: str, registered: Registered,
                join: DnsJoin | None) -> tuple[str | None, bool]:
    """(registered domain or None, direct_ip) for an outbound flow.

    direct_ip: the DNS stage looked and found no resolution (flow.dns.resolved False), or,
    where nobody looked (dns None), the actor's own lookups do not name the address."""
    dns = flow.dns
    if dns is not None:
        if dns.resolved and dns.question_name:
            return registered(dns.question_name), False
        if not dns.resolved and join is None:
            return None, True
    if join is not None:
        name = join.name(actor_key, flow.peer_addr)
        if name is not None:
            return name, False
    return None, True

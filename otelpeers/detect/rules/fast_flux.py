"""fast_flux: a name whose answers keep moving over many unrelated networks, with short TTLs.

A fast-flux domain is answered by a botnet's compromised hosts: every resolution returns a
few addresses drawn from thousands of home connections all over the Internet, with TTLs of
minutes so that clients come back for fresh ones, and the same bots answer for many of the
operator's names. Per name (all actors together: flux is a property of the name) within a
window the rule keeps the addresses, their /24 and /16 networks (IPv6: /48 and /32), the
longest TTL, and how new each resolution's addresses are. It fires, for the actor whose
lookup completed the evidence, when the answers span at least min_networks /16 networks over
at least min_resolutions resolutions, every TTL stays at or below max_ttl_s and later
resolutions bring mostly never-seen addresses (min_novelty).

What looks the same and is scored down (docs/detections-dns-rules.md):
- CDNs and cloud load balancers: many addresses but in few /16s, answers that repeat (low
  novelty), and chains that end under a listed CDN or cloud zone (service_weight);
- round-robin pools such as pool.ntp.org: answers really are spread over the world with
  short TTLs and always new. Only knowledge tells them apart: names under pool_suffixes
  count pool_weight, and names many actors resolve are scored down (prevalence). An unlisted
  pool resolved by one actor looks like flux; add it to pool_suffixes or to the rule's allow
  list.
No ASN data is used (no network access at run time): /16 diversity stands in for it.

Cost per lookup: answered lookups with short TTLs touch one LRU entry and split each address
once; the address -> names index is kept only for names already showing spread.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from otelpeers.detect.engine import Finding, Rule, RuleContext
from otelpeers.detect.model import Actor, EvidenceKind, EvidenceRef, Peer
from otelpeers.detect.rules import meta
from otelpeers.detect.rules.dns_names import SERVICE_CDN, NameCache, network_keys
from otelpeers.detect.settings import FastFluxRule as Settings
from otelpeers.dns.lookups import DnsLookup

MAX_ACTORS_PER_NAME = 32
MAX_NAMES_PER_ADDRESS = 8
MAX_LISTED = 16


@dataclass(slots=True)
class _Name:
    first_ns: int
    last_ns: int = 0
    resolutions: int = 0
    ttl_max: int = 0
    ttl_min: int = 1 << 31
    novelty: float = 0.0  # recent share of never-seen addresses (moving average)
    answers_max: int = 0
    addrs: OrderedDict[str, None] = field(default_factory=OrderedDict)
    narrow: dict[str, None] = field(default_factory=dict)  # /24, /48
    wide: dict[str, None] = field(default_factory=dict)  # /16, /32
    actors: OrderedDict[str, None] = field(default_factory=OrderedDict)
    final: str = ""
    indexed: bool = False


class FastFlux(Rule):
    meta = meta.FAST_FLUX
    settings_type = Settings
    takes_dns = True

    def __init__(self, settings: Settings, ctx: RuleContext) -> None:
        super().__init__(settings, ctx)
        self.s = settings
        self._names_cache = NameCache(4096)
        self._names = ctx.bounded("fast_flux.names", settings.max_names)
        self._by_addr = ctx.bounded("fast_flux.addresses", settings.max_address_index)
        self._pools = tuple(p.strip(".").lower() for p in settings.pool_suffixes)
        self._window_ns = int(settings.window_s * 1e9)
        self.stats = {"tracked_lookups": 0, "long_ttl_skipped": 0}

    def on_dns(self, actor: Actor, lookup: DnsLookup) -> Iterable[Finding]:
        txn = lookup.txn
        addrs = txn.addresses
        if not addrs or txn.rcode != "NOERROR":
            return ()
        s = self.s
        ttl = txn.ttl_min if txn.ttl_min is not None else 0
        name = txn.question_name
        # IPv4 and IPv6 answers are separate stories (their networks differ by nature)
        key = (name, ":" in addrs[0])
        st: _Name | None = self._names.get(key)
        if ttl > s.max_ttl_s:
            if st is not None:  # a long TTL for a name we follow: not flux (remember it)
                st.ttl_max = max(st.ttl_max, ttl)
            self.stats["long_ttl_skipped"] += 1
            return ()
        now = txn.end_ns or txn.start_ns
        if st is None or now - st.first_ns > self._window_ns:
            st = _Name(now)
            self._names.put(key, st)
        else:
            self._names.move_to_end(key)
        self.stats["tracked_lookups"] += 1
        self._observe(st, actor, txn.cname_chain[-1] if txn.cname_chain else name, addrs,
                      ttl, now)
        if (st.resolutions < s.min_resolutions or len(st.wide) < s.min_networks
                or st.ttl_max > s.max_ttl_s or st.novelty < s.min_novelty):
            return ()
        return self._judge(actor, lookup, name, st, now)

    def _observe(self, st: _Name, actor: Actor, final: str, addrs: tuple[str, ...],
                 ttl: int, now: int) -> None:
        cap = self.s.max_addresses_per_name
        if st.resolutions == 1:  # most names are resolved once: networks from the second on
            for a in st.addrs:
                self._add_networks(st, a)
        new = 0
        for a in addrs:
            if a in st.addrs:
                continue
            new += 1
            if len(st.addrs) < cap:
                st.addrs[a] = None
                if st.resolutions:
                    self._add_networks(st, a)
        if st.resolutions:  # recent resolutions weigh most: a fixed pool runs dry
            share = new / len(addrs)
            st.novelty = share if st.resolutions == 1 else 0.5 * st.novelty + 0.5 * share
        st.resolutions += 1
        st.last_ns = now
        st.ttl_max = max(st.ttl_max, ttl)
        st.ttl_min = min(st.ttl_min, ttl)
        st.answers_max = max(st.answers_max, len(addrs))
        st.final = final
        if actor.key not in st.actors:
            st.actors[actor.key] = None
            if len(st.actors) > MAX_ACTORS_PER_NAME:
                st.actors.popitem(last=False)
        if st.resolutions >= 2 and len(st.wide) >= 3:  # spreading: index for name sharing
            st.indexed = True
            for a in addrs:
                names: OrderedDict[str, None] = self._by_addr.touch(a, OrderedDict)
                if final not in names:
                    names[final] = None
                    if len(names) > MAX_NAMES_PER_ADDRESS:
                        names.popitem(last=False)

    def _add_networks(self, st: _Name, addr: str) -> None:
        keys = network_keys(addr)
        if keys is not None:
            cap = self.s.max_addresses_per_name
            if len(st.narrow) < cap:
                st.narrow[keys[0]] = None
            if len(st.wide) < cap:
                st.wide[keys[1]] = None

    def _shared_names(self, st: _Name) -> tuple[str, ...]:
        out: dict[str, None] = {}
        for a in st.addrs:
            for n in self._by_addr.get(a) or ():
                if n != st.final:
                    out[n] = None
                    if len(out) >= MAX_LISTED:
                        return tuple(out)
        return tuple(out)

    def _is_pool(self, name: str) -> bool:
        return any(name == p or name.endswith("." + p) for p in self._pools)

    def _judge(self, actor: Actor, lookup: DnsLookup, name: str, st: _Name,
               now: int) -> Iterable[Finding]:
        s = self.s
        final = self._names_cache.split(st.final)
        w_service = s.service_weight if final is not None and final.service == SERVICE_CDN \
            else 1.0
        w_pool = s.pool_weight if self._is_pool(name) or self._is_pool(st.final) else 1.0
        w_prev = 1.0 / (1.0 + s.prevalence_weight * max(0, len(st.actors) - s.shared_actors))
        shared = self._shared_names(st)
        w_shared = s.shared_names_boost if len(shared) >= 2 else 1.0
        value = len(st.wide) / s.min_networks * w_service * w_pool * w_prev * w_shared
        if value < 1.0:
            return ()
        score = min(0.99, 0.5 + 0.25 * math.log2(value))
        txn = lookup.txn
        minutes = (now - st.first_ns) / 60e9
        summary = (f"{name} resolved {st.resolutions} times in {minutes:.0f} min to "
                   f"{len(st.addrs)} addresses in {len(st.wide)} /16 and {len(st.narrow)} /24 "
                   f"networks, TTL <= {st.ttl_max} s, {st.novelty:.0%} new each time"
                   + (f", addresses shared with {len(shared)} other names" if shared else "")
                   + ": fast flux")
        sp = self._names_cache.split(name)
        evidence: dict[str, object] = {
            "name": name,
            "final_name": st.final,
            "registered_domain": sp.registered if sp is not None else "",
            "resolutions": st.resolutions,
            "addresses": len(st.addrs),
            "networks_16": len(st.wide),
            "networks_24": len(st.narrow),
            "peers": tuple(list(st.addrs)[-MAX_LISTED:]),
            "networks": tuple(list(st.wide)[:MAX_LISTED]),
            "ttl_max_s": st.ttl_max,
            "ttl_min_s": st.ttl_min,
            "answers_max": st.answers_max,
            "novelty": round(st.novelty, 3),
            "shared_names": shared,
            "actors_resolving": len(st.actors),
            "weight_service": round(w_service, 3),
            "weight_pool": round(w_pool, 3),
            "weight_prevalence": round(w_prev, 3),
            "weight_shared": round(w_shared, 3),
            "flux_value": round(value, 3),
            "window_s": s.window_s,
            "since_ns": st.first_ns,
        }
        return (Finding(actor, now, score, summary, peer=Peer(name=name), evidence=evidence,  # type: ignore[arg-type]
                        evidence_span=EvidenceRef(EvidenceKind.DNS, txn.txn_id), target=name),)

    def counters(self) -> Mapping[str, int]:
        return {**self.stats, "names": len(self._names), "addresses": len(self._by_addr)}

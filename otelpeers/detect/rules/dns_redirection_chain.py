"""dns_redirection_chain: CNAME chains that hop across several unfamiliar registered domains,
are unusually long, or keep changing for the same name (C2 behind layers of redirection).

Ordinary chains cross into a CDN or cloud zone once or twice (www.example.com ->
example.com.cdn.cloudflare.net; www.apple.com -> www.apple.com.edgekey.net ->
e6858.dscx.akamaiedge.net) and stay the same for a name. Per question name (all actors
together) the rule keeps, within window_s, every registered domain its chains went through,
with when each was first seen there, and the longest chain. The crossing score is

    sum over those domains other than the name's own of
        service_weight  for zones run by a listed CDN or cloud service,
        settled_weight  for domains this name has used for settle_s or longer (learned
                        normal for this name),
        1               otherwise,
    (times named_weight when the hop's name carries the question's own domain label, the
    way CDNs and hosts name their customers: www.example.com -> example-com.provider.net)
    + long_weight per CNAME hop beyond normal_hops,

divided by (1 + prevalence_weight * actors beyond shared_actors) (a chain every host
resolves is a site's setup, not one implant's). A chain that changes to new domains on each
resolution adds a domain each time (churn). The rule fires when the score reaches min_score.

Cost per lookup: nothing for lookups without a CNAME; otherwise one cached split per hop and
one bounded LRU entry per name.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from otelpeers.detect.engine import Finding, Rule, RuleContext
from otelpeers.detect.model import Actor, EvidenceKind, EvidenceRef, Peer
from otelpeers.detect.rules import meta
from otelpeers.detect.rules.dns_names import NameCache
from otelpeers.detect.settings import DnsRedirectionChainRule as Settings
from otelpeers.dns.lookups import DnsLookup

MAX_ACTORS_PER_NAME = 32
MAX_CHAIN_SHOWN = 16


@dataclass(slots=True)
class _Domain:
    first_ns: int
    last_ns: int
    service: bool
    named: bool  # the hop's name carries the question's domain label (customer naming)


@dataclass(slots=True)
class _Name:
    first_ns: int
    resolutions: int = 0
    max_hops: int = 0
    signatures: dict[tuple[str, ...], None] = field(default_factory=dict)
    domains: OrderedDict[str, _Domain] = field(default_factory=OrderedDict)
    actors: OrderedDict[str, None] = field(default_factory=OrderedDict)


class DnsRedirectionChain(Rule):
    meta = meta.DNS_REDIRECTION_CHAIN
    settings_type = Settings
    takes_dns = True

    def __init__(self, settings: Settings, ctx: RuleContext) -> None:
        super().__init__(settings, ctx)
        self.s = settings
        self._cache = NameCache(8192)
        self._names = ctx.bounded("dns_redirection_chain.names", settings.max_names)
        self._window_ns = int(settings.window_s * 1e9)
        self._settle_ns = int(settings.settle_s * 1e9)
        self.stats = {"chains": 0}

    def on_dns(self, actor: Actor, lookup: DnsLookup) -> Iterable[Finding]:
        chain = lookup.txn.cname_chain
        if len(chain) < 2:
            return ()  # no CNAME: the common case
        self.stats["chains"] += 1
        txn = lookup.txn
        now = txn.end_ns or txn.start_ns
        first = self._cache.split(chain[0])
        own = first.registered if first is not None else chain[0]
        label = own.split(".", 1)[0]
        label = label if len(label) >= 4 else ""
        hops: list[str] = []
        services: dict[str, tuple[bool, bool]] = {}
        for hop in chain[1:]:
            sp = self._cache.split(hop)
            reg = sp.registered if sp is not None else hop
            if not hops or hops[-1] != reg:
                hops.append(reg)
            if reg != own:
                named = bool(label and sp is not None and any(label in x for x in sp.sub))
                service = bool(sp is not None and sp.service)
                prev = services.get(reg)
                services[reg] = (service, named or (prev is not None and prev[1]))
        st: _Name | None = self._names.get(chain[0])
        if st is None or now - st.first_ns > self._window_ns:
            st = _Name(now)
            self._names.put(chain[0], st)
        else:
            self._names.move_to_end(chain[0])
        self._observe(st, actor, tuple(hops), services, len(chain) - 1, now)
        return self._judge(actor, lookup, own, st, len(chain) - 1, now)

    def _observe(self, st: _Name, actor: Actor, signature: tuple[str, ...],
                 services: dict[str, tuple[bool, bool]], hops: int, now: int) -> None:
        st.resolutions += 1
        st.max_hops = max(st.max_hops, hops)
        if signature not in st.signatures and len(st.signatures) < self.s.max_domains_per_name:
            st.signatures[signature] = None
        for reg, (service, named) in services.items():
            d = st.domains.get(reg)
            if d is None:
                st.domains[reg] = _Domain(now, now, service, named)
                if len(st.domains) > self.s.max_domains_per_name:
                    st.domains.popitem(last=False)
            else:
                d.last_ns = now
                d.named = d.named or named
                st.domains.move_to_end(reg)
        if actor.key not in st.actors:
            st.actors[actor.key] = None
            if len(st.actors) > MAX_ACTORS_PER_NAME:
                st.actors.popitem(last=False)

    def _judge(self, actor: Actor, lookup: DnsLookup, own: str, st: _Name, hops: int,
               now: int) -> Iterable[Finding]:
        s = self.s
        fresh = settled = service = named = 0
        crossing = 0.0
        for d in st.domains.values():
            if d.service:
                service += 1
                w = s.service_weight
            elif now - d.first_ns >= self._settle_ns:
                settled += 1
                w = s.settled_weight
            else:
                fresh += 1
                w = 1.0
            if d.named:
                named += 1
                w *= s.named_weight
            crossing += w
        long_part = s.long_weight * max(0, st.max_hops - s.normal_hops)
        w_prev = 1.0 / (1.0 + s.prevalence_weight * max(0, len(st.actors) - s.shared_actors))
        value = (crossing + long_part) * w_prev
        if value < s.min_score:
            return ()
        score = min(0.99, 0.5 + 0.25 * math.log2(value / s.min_score) + 0.1)
        txn = lookup.txn
        chain = txn.cname_chain
        name = chain[0]
        summary = (f"{name} redirects through {len(st.domains)} other registered domains "
                   f"({fresh} unfamiliar, {settled} settled, {service} CDN/cloud) over "
                   f"{st.resolutions} resolutions, {len(st.signatures)} different chains, "
                   f"up to {st.max_hops} CNAME hops: redirection chain")
        evidence: dict[str, object] = {
            "name": name,
            "registered_domain": own,
            "chain": tuple(chain[:MAX_CHAIN_SHOWN]),
            "hops": hops,
            "max_hops": st.max_hops,
            "domains": tuple(st.domains),
            "unfamiliar_domains": fresh,
            "settled_domains": settled,
            "service_domains": service,
            "named_domains": named,
            "distinct_chains": len(st.signatures),
            "resolutions": st.resolutions,
            "actors_resolving": len(st.actors),
            "crossing_score": round(crossing, 3),
            "length_score": round(long_part, 3),
            "weight_prevalence": round(w_prev, 3),
            "chain_score": round(value, 3),
            "min_score": s.min_score,
            "peers": tuple(txn.addresses[:MAX_CHAIN_SHOWN]),
            "since_ns": st.first_ns,
        }
        return (Finding(actor, now, score, summary, peer=Peer(name=name),
                        evidence=evidence,  # type: ignore[arg-type]
                        evidence_span=EvidenceRef(EvidenceKind.DNS, txn.txn_id), target=name),)

    def counters(self) -> Mapping[str, int]:
        return {**self.stats, "names": len(self._names)}

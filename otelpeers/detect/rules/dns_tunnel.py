"""dns_tunnel: DNS used as a data channel (iodine, dnscat2, dns2tcp, DNSExfiltrator, ...).

A tunnel has to move its data through names under a zone its server answers for, and
through the answers: many unique, long, random-looking labels under one registered domain,
TXT/NULL/CNAME/MX answers carrying data, at a volume ordinary lookups never reach. It works
whether or not the queries are answered (exfiltration to a server that only logs them).

Per (actor, registered domain) the rule sums, with a half-life in event time, the
information each new name can carry (dns_names.information_bits: alphabet x randomness of
the labels left of the registered domain) and the information in data-carrying answers.
Query information is weighed by the mean bits per query (tunnels fill names; anti-virus hash
lookups send one 32-52 character label), then scored down for zones many actors send such
names to (reputation services, DNSBLs: prevalence) and for zones a listed CDN, cloud or
reputation service runs (nobody else answers there). A sequence counter label (1, 2, 3,
...) scores up. It fires when the weighed information reaches min_bits with at least
min_unique unique names.

Cost per lookup: a length check; names past it are split once (cached) and scored in one
pass over their characters; state is bounded (channels, names per channel, actors per
domain), every eviction counted.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from otelpeers.detect.engine import Finding, Rule, RuleContext
from otelpeers.detect.model import Actor, EvidenceKind, EvidenceRef, Peer
from otelpeers.detect.rules import meta
from otelpeers.detect.rules.dns_names import (
    NameCache,
    NameSplit,
    alphabet,
    information_bits,
)
from otelpeers.detect.settings import DnsTunnelRule as Settings
from otelpeers.dns.lookups import DnsLookup
from otelpeers.dns.records import Answer

_ADDRESS_TYPES = frozenset({"A", "AAAA"})
_NAME_TYPES = frozenset({"CNAME", "MX", "SRV", "NS", "PTR", "DNAME"})
_TXT_PREFIX = re.compile(r"(?:^|\s)(?:TXT|SPF) \d+ ")  # Zeek: "TXT <len> <string>"
_NOT_DATA = re.compile(r"[^a-z0-9+/=_-]")
MAX_SAMPLES = 3
MAX_QTYPES = 8
SAMPLE_CHARS = 63
REPORT_EVERY_NS = 60 * 10**9  # a channel over the threshold reports once a minute at most
# Once the summed evidence has faded below this, a channel's story starts again.
_FADED = 1.0


def _label_data(labels: list[str]) -> tuple[float, str, int, int]:
    """(bits, alphabet of the longest label, characters, longest label length) of data
    labels; the bits are those of the labels read as one string."""
    if not labels:
        return 0.0, "", 0, 0
    data = "".join(labels)
    bits, _ = information_bits(data)
    longest = max(labels, key=len)
    return bits, alphabet(longest)[0], len(data), len(longest)


@dataclass(slots=True)
class _Channel:
    """One actor's lookups under one registered domain (decayed sums + bounded samples)."""

    since_ns: int
    last_ns: int
    queries: float = 0.0
    unique: float = 0.0
    bits: float = 0.0
    answer_bits: float = 0.0
    seq: float = 0.0
    total_queries: int = 0
    total_unique: int = 0
    query_bytes: int = 0
    answer_bytes: int = 0
    nxdomain: int = 0
    longest: int = 0
    last_number: int | None = None
    quiet_until_ns: int = 0  # after a finding, the next one no earlier (the engine dedups)
    alphabet: str = ""
    names: OrderedDict[str, None] = field(default_factory=OrderedDict)
    label_lengths: dict[int, int] = field(default_factory=dict)
    qtypes: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)

    def fade(self, now_ns: int, half_life_ns: float) -> None:
        dt = now_ns - self.last_ns
        if dt > 0:
            k = 0.5 ** (dt / half_life_ns)
            self.queries *= k
            self.unique *= k
            self.bits *= k
            self.answer_bits *= k
            self.seq *= k
            self.last_ns = now_ns
        if self.bits + self.answer_bits < _FADED and self.unique < 1.0:
            # quiet long enough: counts describe the new activity only
            self.since_ns = now_ns
            self.total_queries = self.total_unique = self.query_bytes = 0
            self.answer_bytes = self.nxdomain = self.longest = 0
            self.label_lengths.clear()
            self.qtypes.clear()
            self.samples.clear()


class DnsTunnel(Rule):
    meta = meta.DNS_TUNNEL
    settings_type = Settings
    takes_dns = True

    def __init__(self, settings: Settings, ctx: RuleContext) -> None:
        super().__init__(settings, ctx)
        self.s = settings
        self._names = NameCache(8192)
        self._channels = ctx.bounded("dns_tunnel.channels", settings.max_channels)
        self._prevalence = ctx.bounded("dns_tunnel.domains", settings.max_domains)
        self._half_life_ns = settings.half_life_s * 1e9
        self.stats = {"gated": 0, "scored_names": 0, "answers_with_data": 0}

    # ---- per lookup --------------------------------------------------------------------
    def on_dns(self, actor: Actor, lookup: DnsLookup) -> Iterable[Finding]:
        txn = lookup.txn
        name = txn.question_name
        s = self.s
        data_answers = bool(txn.answers) and txn.qtype not in _ADDRESS_TYPES
        if len(name) < s.min_name_chars and not data_answers:
            return ()  # the cheap gate: most lookups end here
        sp = self._names.split(name)
        if sp is None:
            return ()
        self.stats["gated"] += 1
        now = txn.end_ns or txn.start_ns
        data_chars = len(name) - len(sp.registered) - len(sp.sub)
        counted = data_chars >= s.min_data_chars
        answer_bits, answer_bytes = (self._answer_bits(txn.answers, sp)
                                     if data_answers else (0.0, 0))
        if not counted and answer_bits <= 0:
            return ()
        key = (actor.key, sp.registered)
        ch: _Channel | None = self._channels.get(key)
        if ch is None:
            ch = _Channel(now, now)
            self._channels.put(key, ch)
            self._count_actor(sp.registered, actor.key)
        else:
            self._channels.move_to_end(key)
        ch.fade(now, self._half_life_ns)
        ch.queries += 1
        ch.total_queries += 1
        ch.query_bytes += len(name)
        if txn.rcode == "NXDOMAIN":
            ch.nxdomain += 1
        if len(ch.qtypes) < MAX_QTYPES or txn.qtype in ch.qtypes:
            ch.qtypes[txn.qtype] = ch.qtypes.get(txn.qtype, 0) + 1
        if answer_bits > 0:
            self.stats["answers_with_data"] += 1
            ch.answer_bits += answer_bits
            ch.answer_bytes += answer_bytes
        if counted and name not in ch.names:
            self._new_name(ch, sp, name)
            if not ch.total_unique & 31:  # keep an active domain's actors fresh, cheaply
                self._count_actor(sp.registered, actor.key)
        return self._judge(actor, lookup, sp, ch, now)

    def _new_name(self, ch: _Channel, sp: NameSplit, name: str) -> None:
        s = self.s
        ch.names[name] = None
        if len(ch.names) > s.max_names_per_channel:
            ch.names.popitem(last=False)
        self.stats["scored_names"] += 1
        labels = [x for x in sp.sub if not x.isdigit()]
        bits, cls, chars, longest = _label_data(labels)
        number = next((int(x) for x in sp.sub if x.isdigit() and len(x) <= 9), None)
        if number is not None:
            if ch.last_number is not None and 0 < number - ch.last_number <= 4:
                ch.seq += 1
            ch.last_number = number
        ch.unique += 1
        ch.total_unique += 1
        ch.bits += bits
        if longest > ch.longest:
            ch.longest = longest
            ch.alphabet = cls
        for x in sp.sub:
            n = len(x)
            if n >= 8:
                ch.label_lengths[n] = ch.label_lengths.get(n, 0) + 1
        if chars:  # keep the longest labels seen as samples
            label = max(labels, key=len)[:SAMPLE_CHARS]
            samples = ch.samples
            if len(samples) < MAX_SAMPLES:
                samples.append(label)
            elif len(label) > len(shortest := min(samples, key=len)) and label not in samples:
                samples[samples.index(shortest)] = label

    def _count_actor(self, domain: str, actor_key: str) -> None:
        actors: OrderedDict[str, None] = self._prevalence.touch(domain, OrderedDict)
        if actor_key in actors:
            actors.move_to_end(actor_key)
            return
        actors[actor_key] = None
        if len(actors) > self.s.max_actors_per_domain:
            actors.popitem(last=False)

    def _answer_bits(self, answers: Iterable[Answer], sp: NameSplit) -> tuple[float, int]:
        """Information in answers that carry data (TXT, NULL, names, ...), and their bytes."""
        bits = 0.0
        size = 0
        for a in answers:
            rtype = a.rtype
            if rtype in _ADDRESS_TYPES:
                continue
            v = a.value
            if v.startswith("\\# "):  # generic rdata (NULL, private types): \# <len> <hex>
                parts = v.split(" ", 2)
                n = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
                bits += 8.0 * n
                size += n
            elif v.startswith("<unknown"):  # Zeek cannot show it
                continue
            elif rtype in _NAME_TYPES:
                target = self._names.split(v.split()[-1] if " " in v else v)
                if target is not None and target.sub:
                    b, _, chars, _ = _label_data(list(target.sub))
                    bits += b
                    size += chars
            else:
                text = _NOT_DATA.sub("", _TXT_PREFIX.sub(" ", v).lower())
                b, _ = information_bits(text)
                bits += b
                size += len(text)
        return bits, size

    # ---- the decision ------------------------------------------------------------------
    def _weights(self, ch: _Channel, sp: NameSplit) -> tuple[float, float, float, float]:
        """(query weight from bits per query, prevalence, service, sequence) factors."""
        s = self.s
        per_query = ch.bits / ch.unique if ch.unique > 0 else 0.0
        span = max(1e-9, s.long_query_bits - s.short_query_bits)
        ramp = min(1.0, max(0.0, (per_query - s.short_query_bits) / span))
        w_query = s.short_query_weight + (1.0 - s.short_query_weight) * ramp
        actors = len(self._prevalence.get(sp.registered) or ())
        extra = max(0, actors - s.shared_actors)
        w_prev = 1.0 / (1.0 + s.prevalence_weight * extra)
        w_service = s.service_weight if sp.service else 1.0
        w_seq = s.sequence_boost if ch.unique >= 4 and ch.seq >= 0.5 * ch.unique else 1.0
        return w_query, w_prev, w_service, w_seq

    def _judge(self, actor: Actor, lookup: DnsLookup, sp: NameSplit, ch: _Channel,
               now: int) -> Iterable[Finding]:
        s = self.s
        if now < ch.quiet_until_ns or (ch.unique < s.min_unique and ch.answer_bits < s.min_bits):
            return ()
        if (ch.bits + ch.answer_bits) * max(1.0, s.sequence_boost) < s.min_bits:
            return ()  # every weight is at most 1 (but the sequence boost): cannot reach it
        w_query, w_prev, w_service, w_seq = self._weights(ch, sp)
        evidence_bits = (ch.bits * w_query + ch.answer_bits) * w_prev * w_service * w_seq
        if evidence_bits < s.min_bits:
            return ()
        score = min(0.99, 0.5 + 0.25 * math.log2(evidence_bits / s.min_bits))
        ch.quiet_until_ns = now + REPORT_EVERY_NS
        return (self._finding(actor, lookup, sp, ch, now, score, evidence_bits,
                              (w_query, w_prev, w_service, w_seq)),)

    def _finding(self, actor: Actor, lookup: DnsLookup, sp: NameSplit, ch: _Channel,
                 now: int, score: float, evidence_bits: float,
                 weights: tuple[float, float, float, float]) -> Finding:
        w_query, w_prev, w_service, w_seq = weights
        txn = lookup.txn
        per_query = ch.bits / ch.unique if ch.unique > 0 else 0.0
        actors = len(self._prevalence.get(sp.registered) or ())
        minutes = max(0.0, (now - ch.since_ns) / 60e9)
        lengths = ch.label_lengths
        mode = max(lengths, key=lambda k: (lengths[k], k)) if lengths else 0
        mode_share = lengths[mode] / sum(lengths.values()) if lengths else 0.0
        qtypes = tuple(f"{k}:{v}" for k, v in sorted(ch.qtypes.items(),
                                                        key=lambda kv: -kv[1]))
        summary = (f"{ch.total_unique} unique names under {sp.registered} in {minutes:.1f} min "
                   f"({ch.total_queries} queries, {per_query:.0f} bits each, labels up to "
                   f"{ch.longest} chars, {ch.alphabet or 'no data labels'}"
                   + (f", answers {ch.answer_bytes} bytes of data" if ch.answer_bytes else "")
                   + f"): DNS tunnel, ~{evidence_bits / 8192:.1f} KiB of weighed data")
        evidence: dict[str, object] = {
            "domain": sp.registered,
            "queries": ch.total_queries,
            "unique_names": ch.total_unique,
            "unique_share": round(ch.total_unique / max(1, ch.total_queries), 3),
            "window_queries": round(ch.queries, 1),
            "query_bits": round(ch.bits),
            "answer_bits": round(ch.answer_bits),
            "bits_per_query": round(per_query, 1),
            "evidence_bits": round(evidence_bits),
            "min_bits": self.s.min_bits,
            "query_bytes": ch.query_bytes,
            "answer_bytes": ch.answer_bytes,
            "longest_label": ch.longest,
            "label_length_mode": mode,
            "label_length_mode_share": round(mode_share, 3),
            "alphabet": ch.alphabet,
            "label_samples": tuple(ch.samples),
            "qtypes": qtypes,
            "nxdomain_share": round(ch.nxdomain / max(1, ch.total_queries), 3),
            "actors_using_domain": actors,
            "listed_service": sp.service or "none",
            "sequence_share": round(ch.seq / ch.unique, 3) if ch.unique else 0.0,
            "weight_bits_per_query": round(w_query, 3),
            "weight_prevalence": round(w_prev, 3),
            "weight_service": round(w_service, 3),
            "weight_sequence": round(w_seq, 3),
            "half_life_s": self.s.half_life_s,
            "since_ns": ch.since_ns,
            "question_name": txn.question_name[:253],
        }
        return Finding(actor, now, score, summary, peer=Peer(name=sp.registered),
                       evidence=evidence,  # type: ignore[arg-type]
                       evidence_span=EvidenceRef(EvidenceKind.DNS, txn.txn_id),
                       target=sp.registered)

    def counters(self) -> Mapping[str, int]:
        return {**self.stats, "name_cache_misses": self._names.misses,
                "channels": len(self._channels)}

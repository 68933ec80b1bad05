"""`dga`: a process resolves names that look algorithmically generated.

The per-name model (otelpeers/detect/dga/model.py, trained by scripts/train_dga.py) scores
each name; the per-actor scorer (otelpeers/detect/dga/actor.py) decides when an actor's
lookups within a window add up: many new registered domains, most of them NXDOMAIN, weighed
by how generated each looks and by the TLD prior. See docs/detections.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import ClassVar

from otelpeers.detect.engine import Finding, Rule, RuleContext
from otelpeers.detect.model import Actor, EvidenceKind, EvidenceRef
from otelpeers.detect.rules import meta
from otelpeers.detect.settings import DgaRule, RuleBase
from otelpeers.dns.lookups import DnsLookup


class Dga(Rule):
    meta = meta.DGA
    settings_type: ClassVar[type[RuleBase]] = DgaRule
    takes_dns = True

    def __init__(self, settings: RuleBase, ctx: RuleContext) -> None:
        super().__init__(settings, ctx)
        from otelpeers.detect.dga.actor import DgaActorConfig, DgaActorScorer

        names = {f.name for f in fields(DgaActorConfig)}
        params = {f.name: getattr(settings, f.name) for f in fields(settings)
                  if f.name in names}
        self.scorer = DgaActorScorer(config=DgaActorConfig(**params))

    def on_dns(self, actor: Actor, lookup: DnsLookup) -> Iterable[Finding]:
        t = lookup.txn
        d = self.scorer.observe(actor.key, t.end_ns, t.question_name, t.qtype, t.rcode,
                                bool(t.addresses))
        if d is None:
            return ()
        samples = [n for n, _, _ in d.samples]
        evidence = {
            "new_registered_domains": d.new_domains,
            "nxdomain_registered_domains": d.nxdomain_domains,
            "nxdomain_share": round(d.nxdomain_share, 3),
            "high_scoring": d.high_scoring,
            "evidence": round(d.evidence, 3),
            "score_threshold": round(d.score_threshold, 4),
            "window_s": d.window_s,
            "names": tuple(samples),
            "name_scores": tuple(round(s, 4) for _, s, _ in d.samples),
            "tlds": tuple(f"{tld}:{n}" for tld, n in d.tlds),
        }
        who = actor.executable or actor.key
        summary = (f"{who} looked up {d.new_domains} new domains in "
                   f"{d.window_s / 60:.0f} min, {d.nxdomain_domains} did not exist "
                   f"({d.nxdomain_share:.0%}), {d.high_scoring} look generated, e.g. "
                   f"{', '.join(samples[:3])}")
        return [Finding(actor, d.time_ns, d.score, summary, evidence=evidence,
                        evidence_span=EvidenceRef(EvidenceKind.DNS, t.txn_id), target="dga")]

    def counters(self) -> Mapping[str, int]:
        return {**self.scorer.stats, **{f"table.{k}": v
                                        for k, v in self.scorer.table_sizes().items()}}

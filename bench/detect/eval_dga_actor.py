"""Per-process DGA decision on benign host-days and on infected processes.

    python -m bench.detect.eval_dga_actor BENIGN.txt DGA.tsv [--host-days 1000] [--trials 10]

- Benign: ``--host-days`` seeded host-days of bench.detect.dns_benign (browsers with Chrome
  probes, CDN hashes, AV hash lookups, DNSBL, mail servers, search-domain NXDOMAINs, typos,
  punycode, long names, package managers, NTP), with page-load domains drawn from the benign
  holdout of train_dga.py (never trained on). Each host-day gets a fresh scorer (the agent's
  first day: no history), scored by the shipped model. Every decision is a false alert.
- Infected: for each of the 23 dev families, a process making 20 lookups of that family (85%
  NXDOMAIN, within 3 minutes) on a benign host-day, scored by the fold model that never saw
  the family; for each style of bench.detect.dga_generators, the shipped model. ``--trials``
  runs per family, as a separate process and injected into the host's browser.
- Baselines on the same events: the Slips gate (>= 10 NXDOMAIN per host per clock hour), a
  naive lexical score plus an NXDOMAIN count (>= 10 NXDOMAIN names per host-hour whose
  second-level label looks random by length/entropy/digits/consonant runs), and our model's
  score plus the same count.

Results go to bench/results/dga_eval.json (key "actor") and docs/detections-dga.md.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import eval_dga as E  # noqa: E402
import train_dga as T  # noqa: E402

from bench.detect import dga_generators  # noqa: E402
from bench.detect.dns_benign import (  # noqa: E402
    DAY_S,
    NS,
    NXDOMAIN,
    DnsEvent,
    benign_host_day,
    infected_process,
)
from otelpeers.detect.dga import domains  # noqa: E402
from otelpeers.detect.dga.actor import DgaActorConfig, DgaActorScorer  # noqa: E402
from otelpeers.detect.dga.model import DgaModel, from_file  # noqa: E402

LOOKUPS = 20
NX_SHARE = 0.85
SPREAD_S = 180.0
HOUR_NS = 3600 * NS


class TableScorer:
    """A model's scores for a known set of names, looked up instead of recomputed."""

    def __init__(self, model: DgaModel, names: Iterable[str]) -> None:
        self.model = model
        self.threshold_1pct = model.threshold_1pct
        self.tld_w = model.tld_w
        self.tld_index = model.tld_index
        self.table: dict[str, float] = {}
        self.add(names)

    def add(self, names: Iterable[str]) -> None:
        parsed = [p for p in {domains.parse(n) for n in names if n not in self.table} if p]
        scores = self.model.score_parsed(parsed)
        for p, s in zip(parsed, scores, strict=True):
            self.table[p.name] = float(s)

    def score_parsed(self, parsed: Sequence[domains.DomainName | None]) -> np.ndarray:
        missing = [p for p in parsed if p is not None and p.name not in self.table]
        if missing:
            for p, s in zip(missing, self.model.score_parsed(missing), strict=True):
                self.table[p.name] = float(s)
        return np.array([0.0 if p is None else self.table[p.name] for p in parsed])

    def score(self, names: Sequence[str]) -> np.ndarray:
        return self.score_parsed([domains.parse(n) for n in names])


# -- baselines -----------------------------------------------------------------------------


def naive_lexical(name: str) -> bool:
    """Random-looking second-level label: no public suffix list, no model."""
    labels = name.rstrip(".").lower().split(".")
    if len(labels) < 2:
        return False
    label = labels[-2]
    if len(label) < 8:
        return False
    counts = Counter(label)
    entropy = -sum(c / len(label) * math.log2(c / len(label)) for c in counts.values())
    digits = sum(ch.isdigit() for ch in label) / len(label)
    run = best = 0
    for ch in label:
        run = run + 1 if ch.isalpha() and ch not in "aeiou" else 0
        best = max(best, run)
    return entropy >= 3.2 or digits >= 0.3 or best >= 5


def hourly_alerts(events: Sequence[DnsEvent], flag=None, threshold: int = 10) -> set:
    """(host, hour) buckets with >= threshold NXDOMAIN lookups (flagged names only, if given)."""
    counts: dict[tuple[str, int], set[str] | int] = defaultdict(int)
    names: dict[tuple[str, int], set[str]] = defaultdict(set)
    for e in events:
        if e.rcode != NXDOMAIN:
            continue
        key = (e.host, e.time_ns // HOUR_NS)
        if flag is None:
            counts[key] += 1
        elif flag(e.name):
            names[key].add(e.name)
    if flag is None:
        return {k for k, v in counts.items() if v >= threshold}
    return {k for k, v in names.items() if len(v) >= threshold}


# -- runs ----------------------------------------------------------------------------------


def run_scorer(model, events: Sequence[DnsEvent], config: DgaActorConfig) -> list:
    scorer = DgaActorScorer(model, config)
    out = []
    for e in events:
        decision = scorer.observe(e.actor, e.time_ns, e.name, e.qtype, e.rcode, e.answered)
        if decision is not None:
            out.append(decision)
    return out


def pools(test_b: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    names = list(test_b)
    random.Random(seed).shuffle(names)
    return names[:3000], names[3000:]


def evaluate(
    benign_path: str, dga_path: str, host_days: int, trials: int, seed: int,
    config: DgaActorConfig,
) -> dict[str, Any]:
    params = T.Params(seed=seed)
    models, test_b, dga = E.fold_models(benign_path, dga_path, 5, params, E.FOLD_DIR)
    shipped = from_file(T.DEFAULT_OUT)
    popular, rare = pools(test_b, seed)
    model_threshold = shipped.threshold_1pct

    # benign host-days, shipped model
    t0 = time.monotonic()
    shipped_table = TableScorer(shipped, [])
    false_alerts, alert_days = [], 0
    slips, naive, modelcount = 0, 0, 0
    slips_days = naive_days = model_days = 0
    events_total = 0
    for i in range(host_days):
        events = benign_host_day(seed, host=f"host-{i}", start_ns=i * DAY_S * NS,
                                 popular=popular, rare=rare)
        events_total += len(events)
        shipped_table.add(e.name for e in events)
        decisions = run_scorer(shipped_table, events, config)
        false_alerts += [
            {"host_day": i, "process": d.actor[1], "score": round(d.score, 3),
             "evidence": d.as_evidence()} for d in decisions
        ]
        alert_days += bool(decisions)
        s = hourly_alerts(events)
        n = hourly_alerts(events, naive_lexical)
        m = hourly_alerts(events, lambda name: shipped_table.table.get(
            (domains.parse(name) or domains.parse("x.invalid")).name, 0.0) > model_threshold)
        slips += len(s)
        naive += len(n)
        modelcount += len(m)
        slips_days += bool(s)
        naive_days += bool(n)
        model_days += bool(m)
        if (i + 1) % 100 == 0:
            print(f"benign: {i + 1} host-days, {len(false_alerts)} false alerts so far",
                  flush=True)
    benign_s = time.monotonic() - t0
    print(f"benign: {host_days} host-days, {events_total:,} lookups, "
          f"{len(false_alerts)} false alerts, {benign_s:.0f}s", flush=True)

    # infected processes
    by_family: dict[str, list[str]] = defaultdict(list)
    for fam, name in dga:
        by_family[fam].append(name)
    cases: list[tuple[str, str, Any]] = []
    for held, model in models:
        for fam in held:
            cases.append((fam, "dev family (fold model)", model))
    for style in dga_generators.GENERATORS:
        by_family[f"own:{style}"] = dga_generators.generate(style, 200)
        cases.append((f"own:{style}", "own generator (shipped model)", shipped))
    backgrounds = [
        benign_host_day(seed + 1, host=f"bg-{t}", start_ns=t * DAY_S * NS, popular=popular,
                        rare=rare)
        for t in range(trials)
    ]
    bg_names = {e.name for events in backgrounds for e in events}
    tables: dict[int, TableScorer] = {}
    families: dict[str, Any] = {}
    for fam, kind, model in cases:
        table = tables.get(id(model))
        if table is None:
            table = tables[id(model)] = TableScorer(model, bg_names)
        table.add(by_family[fam])
        row: dict[str, Any] = {"kind": kind}
        for mode in ("process", "browser"):
            hits, latencies, slips_hits, naive_hits, other_alerts = 0, [], 0, 0, 0
            scores = []
            for t in range(trials):
                rng = random.Random(f"{seed}:{fam}:{t}")
                start = t * DAY_S * NS + int(rng.uniform(8 * 3600, 18 * 3600) * NS)
                proc = "infected" if mode == "process" else "browser"
                bad = infected_process(by_family[fam], seed=t, host=f"bg-{t}", process=proc,
                                       start_ns=start, lookups=LOOKUPS, nx_share=NX_SHARE,
                                       spread_s=SPREAD_S)
                bad_names = {e.name for e in bad}
                # later background cannot change whether or when the infection is caught
                cut = bad[-1].time_ns + int(config.window_s * NS)
                events = sorted([e for e in backgrounds[t] if e.time_ns <= cut] + bad,
                                key=lambda e: (e.time_ns, e.name))
                decisions = run_scorer(table, events, config)
                mine = [d for d in decisions if d.actor == (f"bg-{t}", proc)
                        and any(n in bad_names for n, _, _ in d.samples)]
                other_alerts += len(decisions) - len(mine)
                if mine:
                    hits += 1
                    latencies.append((mine[0].time_ns - bad[0].time_ns) / NS)
                    scores.append(mine[0].score)
                hour = (f"bg-{t}", bad[0].time_ns // HOUR_NS)
                hour2 = (f"bg-{t}", bad[-1].time_ns // HOUR_NS)
                slips_hits += bool({hour, hour2} & hourly_alerts(events))
                naive_hits += bool({hour, hour2} & hourly_alerts(events, naive_lexical))
            row[mode] = {
                "detected": hits, "trials": trials,
                "median_latency_s": round(float(np.median(latencies)), 1) if latencies else None,
                "median_score": round(float(np.median(scores)), 3) if scores else None,
                "slips_detected": slips_hits, "naive_detected": naive_hits,
                "other_alerts": other_alerts,
            }
        names = by_family[fam]
        row["median_name_score"] = round(float(np.median(table.score(names[:200]))), 3)
        families[fam] = row
        print(f"{fam}: process {row['process']['detected']}/{trials}, "
              f"browser {row['browser']['detected']}/{trials}", flush=True)

    dev = {f: r for f, r in families.items() if not f.startswith("own:")}
    result = {
        "config": {k: getattr(config, k) for k in DgaActorConfig.field_names()},
        "infection": {"lookups": LOOKUPS, "nx_share": NX_SHARE, "spread_s": SPREAD_S,
                      "trials": trials},
        "benign": {
            "host_days": host_days,
            "lookups": events_total,
            "false_alerts": len(false_alerts),
            "false_alerts_per_1000_host_days": round(1000 * len(false_alerts) / host_days, 2),
            "host_days_with_false_alert": alert_days,
            "false_alert_examples": false_alerts[:10],
            "slips_false_alerts": slips,
            "slips_false_alerts_per_1000_host_days": round(1000 * slips / host_days, 1),
            "slips_host_days": slips_days,
            "naive_false_alerts": naive,
            "naive_false_alerts_per_1000_host_days": round(1000 * naive / host_days, 2),
            "naive_host_days": naive_days,
            "model_count_false_alerts": modelcount,
            "model_count_false_alerts_per_1000_host_days": round(1000 * modelcount / host_days,
                                                                 2),
            "model_count_host_days": model_days,
        },
        "families": families,
        "summary": {
            "dev_families_detected_every_trial": sum(
                r["process"]["detected"] == trials for r in dev.values()),
            "dev_families_detected_any_trial": sum(
                r["process"]["detected"] > 0 for r in dev.values()),
            "dev_families": len(dev),
            "own_styles_detected_every_trial": sum(
                r["process"]["detected"] == trials for f, r in families.items()
                if f.startswith("own:")),
            "own_styles": len(families) - len(dev),
            "dev_families_slips_every_trial": sum(
                r["process"]["slips_detected"] == trials for r in dev.values()),
            "dev_families_naive_every_trial": sum(
                r["process"]["naive_detected"] == trials for r in dev.values()),
            "browser_injected_detected_every_trial": sum(
                r["browser"]["detected"] == trials for r in dev.values()),
        },
    }
    result["markdown"] = render(result)
    return result


def render(r: dict[str, Any]) -> str:
    b, s, inf, c = r["benign"], r["summary"], r["infection"], r["config"]
    out = [
        "## Per process (`otelpeers/detect/dga/actor.py`)",
        "",
        f"Benign: {b['host_days']:,} seeded host-days of `bench/detect/dns_benign.py` "
        f"({b['lookups']:,} lookups), page-load domains from the benign holdout, a fresh "
        "scorer per host-day (no history), shipped model. Infected: a process making "
        f"{inf['lookups']} lookups of one family, {inf['nx_share']:.0%} NXDOMAIN, within "
        f"{inf['spread_s']:.0f} s, on a benign host-day; dev families scored by the fold model "
        f"that never saw them; {inf['trials']} trials per family. Configuration: window "
        f"{c['window_s']:.0f} s, min_unique {c['min_unique']}, min_nxdomain_share "
        f"{c['min_nxdomain_share']}, min_evidence {c['min_evidence']}.",
        "",
        "| rule | false alerts / 1,000 host-days | host-days with one | dev families caught "
        "in every trial |",
        "|---|---|---|---|",
        f"| otelpeers `dga` (per process) | {b['false_alerts_per_1000_host_days']} | "
        f"{b['host_days_with_false_alert']} | {s['dev_families_detected_every_trial']} / "
        f"{s['dev_families']} |",
        f"| Slips gate: >= 10 NXDOMAIN per host-hour | "
        f"{b['slips_false_alerts_per_1000_host_days']} | {b['slips_host_days']} | "
        f"{s['dev_families_slips_every_trial']} / {s['dev_families']} |",
        f"| naive lexical + >= 10 NXDOMAIN names per host-hour | "
        f"{b['naive_false_alerts_per_1000_host_days']} | {b['naive_host_days']} | "
        f"{s['dev_families_naive_every_trial']} / {s['dev_families']} |",
        f"| our model score + >= 10 NXDOMAIN names per host-hour | "
        f"{b['model_count_false_alerts_per_1000_host_days']} | {b['model_count_host_days']} "
        "| |",
        "",
        f"Own generator styles caught in every trial: {s['own_styles_detected_every_trial']} / "
        f"{s['own_styles']}. Infection injected into the host's browser process (its lookups "
        "dilute the NXDOMAIN share): dev families caught in every trial: "
        f"{s['browser_injected_detected_every_trial']} / {s['dev_families']}.",
        "",
        "| family | kind | median name score | caught (own process) | median latency s | "
        "caught (in browser) | Slips | naive |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fam, row in sorted(r["families"].items()):
        p, br = row["process"], row["browser"]
        out.append(
            f"| {fam} | {row['kind']} | {row['median_name_score']} | {p['detected']}/"
            f"{p['trials']} | {p['median_latency_s']} | {br['detected']}/{br['trials']} | "
            f"{p['slips_detected']}/{p['trials']} | {p['naive_detected']}/{p['trials']} |"
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("benign")
    ap.add_argument("dga")
    ap.add_argument("--host-days", type=int, default=1000)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--seed", type=int, default=T.SEED)
    ap.add_argument("--results", default=str(E.RESULTS))
    ap.add_argument("--doc", default=str(E.DOC))
    args = ap.parse_args(argv)
    result = evaluate(args.benign, args.dga, args.host_days, args.trials, args.seed,
                      DgaActorConfig())
    data = E.update_results("actor", result, Path(args.results))
    E.write_doc(data, Path(args.doc))
    print(result["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

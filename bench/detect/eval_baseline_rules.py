"""Quality of the baseline rules (lateral_movement, novel_peer, volume_anomaly) on generated
Zeek logs, next to the naive per-hour rules.

    python -m bench.detect.eval_baseline_rules [--seeds 101,102] [--variants all] [--debug]
        [--tune] [--out bench/results/detect_baseline_rules.json]

For every (seed, variant) it generates two days of Zeek conn.log/dns.log with ground truth
(bench.detect.generate, scenario variants from bench.detect.baseline_scenarios), runs the
three rules through `otelpeers detect`'s own path (ObservedStage + the detection stage,
driven in event-time order by the event clock; the first day is the learning period), and
scores them with bench.detect.truth: recall per rule and false alerts per 1,000 benign
(source, peer) pairs. The naive per-hour rules (bench.detect.naive) run on the same rows.

Tuning used seeds 1 and 2 of the default scenario only (``--tune`` reproduces that run);
the report is on held-out seeds and scenario variants never looked at while tuning.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from bench.detect import generate as gen
from bench.detect.baseline_scenarios import VARIANTS, build
from bench.detect.naive import run_naive
from bench.detect.truth import Detection, GroundTruth, Report, score
from otelpeers.detect.build import build_detect_stage
from otelpeers.detect.engine import settings_defaults
from otelpeers.detect.model import Detection as Alert
from otelpeers.detect.offline import ObservedStage, ZeekSource
from otelpeers.detect.settings import DetectConfig, RulesConfig
from otelpeers.detect.zeek import ZeekConn, iter_events_sorted
from otelpeers.drive import EventClock, drive
from otelpeers.pipeline import Pipeline
from otelpeers.testing.sinks import CollectSink

RULES = ("lateral_movement", "novel_peer", "volume_anomaly")
TUNE_SEEDS = (1, 2)
HELD_OUT_SEEDS = (101, 102, 103)
ROOT = Path(__file__).resolve().parents[2]
# Zeek writes ts with microseconds, the truth keeps nanoseconds: a detection at an incident's
# first connection can read up to half a microsecond early.
EARLY_S = 0.001
DEFAULT_OUT = ROOT / "bench" / "results" / "detect_baseline_rules.json"


def detect_config(learning_period_s: float,
                  overrides: Mapping[str, Mapping[str, Any]] | None = None) -> DetectConfig:
    """The default detection config with only the three baseline rules enabled, and
    overrides {rule: {key: value}} of their settings."""
    base = DetectConfig()
    rules = {f.name: (replace(getattr(base.rules, f.name), **(overrides or {}).get(f.name, {}))
                      if f.name in RULES
                      else replace(getattr(base.rules, f.name), enabled=False))
             for f in fields(RulesConfig)}
    return replace(base, learning_period_s=learning_period_s, rules=RulesConfig(**rules))


def run_rules(data: Path, learning_period_s: float,
              overrides: Mapping[str, Mapping[str, Any]] | None = None
              ) -> tuple[list[Alert], dict[str, int], float]:
    """The rules over DIR/conn.log and DIR/dns.log exactly as `otelpeers detect` runs them."""
    paths = [data / "conn.log", data / "dns.log"]
    sink = CollectSink()
    cfg = detect_config(learning_period_s, overrides)
    cfg.validate()
    pipeline = Pipeline([ObservedStage(), build_detect_stage(cfg)], [sink])
    t = time.perf_counter()
    drive(ZeekSource(paths), pipeline, EventClock())
    elapsed = time.perf_counter() - t
    pipeline.close()
    return sink.detections, pipeline.counters(), elapsed


def as_truth(alerts: Iterable[Alert]) -> list[Detection]:
    """Detections in the scorer's terms: actor = source address; peer = the address (per-peer
    rules), else the CIDR of the targets."""
    out = []
    for a in alerts:
        p = a.peer
        peer = None if p is None else (p.address or p.cidr or p.name)
        if a.rule.name == "lateral_movement":
            peer = p.cidr if p is not None else None
        out.append(Detection(a.rule.name, a.actor.key, peer, a.time_ns, a.score))
    return out


def _rule_json(report: Report) -> dict[str, Any]:
    return {name: {"positives": r.positives, "caught": r.caught, "recall": r.recall,
                   "false_alerts": r.false_alerts,
                   "false_per_1000_pairs": round(r.false_per_1000, 4)}
            for name, r in report.rules.items()}


def evaluate(seed: int, variant: str, debug: bool,
             overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="otelpeers-baseline-") as tmp:
        data = Path(tmp)
        t = time.perf_counter()
        gen.write(build(variant, seed), data)
        gen_s = time.perf_counter() - t
        truth = GroundTruth.load(data / "truth.json")
        alerts, counters, run_s = run_rules(
            data, (truth.learning_end_ns - truth.start_ns) / 1e9, overrides)
        ours = score(as_truth(alerts), truth, rules=RULES, early_s=EARLY_S)
        conns = [x for x in iter_events_sorted([data / "conn.log"]) if isinstance(x, ZeekConn)]
    naive = score(run_naive(conns, learning_end_ns=truth.learning_end_ns,
                            internal_cidrs=truth.internal), truth, rules=RULES,
                  early_s=EARLY_S)
    rows = truth.counts.get("conn_rows", len(conns))
    print(f"\n# seed {seed}, variant {variant}: {rows} connections, {truth.benign_pairs} "
          f"benign pairs; generate {gen_s:.0f} s, rules {run_s:.0f} s "
          f"({1e6 * run_s / max(rows, 1):.1f} us per row)", file=sys.stderr)
    print(ours.table("baseline rules"), file=sys.stderr)
    print("\n".join(naive.table("naive per-hour").splitlines()[1:]), file=sys.stderr)
    if debug:
        print(ours.debug(), file=sys.stderr)
    return {"seed": seed, "variant": variant, "benign_pairs": truth.benign_pairs,
            "conn_rows": rows, "rules_s": round(run_s, 1),
            "ours": _rule_json(ours), "naive": _rule_json(naive),
            "ours_false": ours.false_alerts, "naive_false": naive.false_alerts,
            "rule_errors": counters.get("detect.rule_errors", 0),
            "misses": [i.id + ": " + i.note for r in ours.rules.values() for i in r.misses],
            "false_list": [f"{f.rule} {f.actor} -> {f.peer} ({f.why})"
                           for r in ours.rules.values() for f in r.false_list]}


def totals(runs: list[dict[str, Any]], which: str) -> dict[str, Any]:
    pairs = sum(r["benign_pairs"] for r in runs)
    out: dict[str, Any] = {}
    for rule in RULES:
        pos = sum(r[which][rule]["positives"] for r in runs)
        caught = sum(r[which][rule]["caught"] for r in runs)
        false = sum(r[which][rule]["false_alerts"] for r in runs)
        out[rule] = {"positives": pos, "caught": caught,
                     "recall": round(caught / pos, 4) if pos else None,
                     "false_alerts": false,
                     "false_per_1000_pairs": round(1000 * false / pairs, 4) if pairs else 0}
    out["benign_pairs"] = pairs
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.detect.eval_baseline_rules",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default=",".join(map(str, HELD_OUT_SEEDS)),
                    help="comma-separated generator seeds (default: the held-out ones)")
    ap.add_argument("--variants", default="all",
                    help=f"comma-separated scenario variants or 'all': {', '.join(VARIANTS)}")
    ap.add_argument("--tune", action="store_true",
                    help="the tuning runs instead: seeds 1,2 of the default scenario")
    ap.add_argument("--debug", action="store_true", help="list misses and false alerts")
    ap.add_argument("--set", action="append", default=[], metavar="RULE.KEY=NUMBER",
                    help="override a numeric rule setting (an ablation), e.g. "
                         "volume_anomaly.same_hour_factor=0")
    ap.add_argument("--plan", metavar="SEED:VARIANT,...",
                    help="exactly these runs instead of --seeds x --variants")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="results JSON ('-': none)")
    args = ap.parse_args(argv)
    overrides: dict[str, dict[str, Any]] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        rule, _, name = key.partition(".")
        if rule not in RULES or not name or not value:
            ap.error(f"--set {item!r}: expected RULE.KEY=NUMBER with RULE one of {RULES}")
        overrides.setdefault(rule, {})[name] = float(value) if "." in value else int(value)
    if args.tune:
        plan = [(s, "default") for s in TUNE_SEEDS]
    elif args.plan:
        plan = [(int(x.split(":")[0]), x.split(":")[1]) for x in args.plan.split(",")]
    else:
        variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            ap.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        plan = [(s, v) for v in variants for s in seeds]
    runs = [evaluate(seed, variant, args.debug, overrides) for seed, variant in plan]
    result = {
        "what": "baseline rules on generated Zeek conn.log/dns.log (2 days, first day "
                "learning), scored by bench.detect.truth",
        "tuned_on": {"seeds": list(TUNE_SEEDS), "variant": "default"},
        "held_out": not args.tune, "overrides": overrides,
        "settings": {r: {k: (list(v) if isinstance(v, tuple) else v)
                         for k, v in settings_defaults(type(getattr(RulesConfig(), r))).items()}
                     for r in RULES},
        "ours": totals(runs, "ours"), "naive": totals(runs, "naive"), "runs": runs,
    }
    print("\n# totals (ours | naive)", file=sys.stderr)
    for rule in RULES:
        o, n = result["ours"][rule], result["naive"][rule]
        print(f"{rule:<17} recall {o['recall']} | {n['recall']}   false per 1k pairs "
              f"{o['false_per_1000_pairs']} | {n['false_per_1000_pairs']}", file=sys.stderr)
    if args.out != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

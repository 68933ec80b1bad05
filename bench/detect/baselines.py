"""Score the naive per-hour rules and the RITA-style beacon score on generated Zeek logs.

`python -m bench.detect.baselines [--data DIR | --seed N] [--small] [--debug]`

Without --data it generates the two days (bench.detect.generate) into a temporary
directory first. The logs are read back through otelpeers.detect.zeek (the same reader
`otelpeers detect` uses), sorted by event time, and every method is scored against
truth.json (bench.detect.truth): recall per rule and false alerts per 1,000 benign
(source, peer) pairs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.detect import generate as gen
from bench.detect.naive import internal_test, run_naive
from bench.detect.rita import rita_beacons, score_pairs
from bench.detect.truth import GroundTruth, Report, score
from otelpeers.detect.zeek import ReadStats, ZeekConn, iter_events_sorted

RITA_THRESHOLDS = (0.5, 0.7, 0.9)  # RITA's low / medium / high severities


def load_conns(data: Path) -> tuple[list[ZeekConn], list[ReadStats]]:
    stats: list[ReadStats] = []
    paths = [p for p in (data / "conn.log", data / "conn.log.gz") if p.exists()]
    if not paths:
        raise SystemExit(f"{data}: no conn.log or conn.log.gz")
    conns = [x for x in iter_events_sorted(paths, stats=stats) if isinstance(x, ZeekConn)]
    return conns, stats


def evaluate(data: Path) -> tuple[list[tuple[str, Report]], dict[str, float], list[ReadStats]]:
    """(method label, report) for every baseline, timings, and the reader's counts."""
    truth = GroundTruth.load(data / "truth.json")
    t = time.perf_counter()
    conns, stats = load_conns(data)
    times = {"read_s": time.perf_counter() - t}
    t = time.perf_counter()
    naive = run_naive(conns, learning_end_ns=truth.learning_end_ns,
                      internal_cidrs=truth.internal)
    times["naive_s"] = time.perf_counter() - t
    results = [("naive per-hour", score(naive, truth, rules=truth.rules()))]
    t = time.perf_counter()
    scores = score_pairs(conns, internal=internal_test(truth.internal),
                         start_ns=truth.start_ns, end_ns=truth.end_ns)
    times["rita_s"] = time.perf_counter() - t
    for threshold in RITA_THRESHOLDS:
        results.append((f"RITA-style >= {threshold}",
                        score(rita_beacons(scores, threshold), truth, rules=["beacon"])))
    return results, times, stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.detect.baselines",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--data", metavar="DIR", help="generated logs + truth.json (default: "
                                                  "generate into a temporary directory)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--small", action="store_true", help="the small scenario (tests)")
    ap.add_argument("--debug", action="store_true", help="list misses and false alerts")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="otelpeers-detect-") as tmp:
        data = Path(args.data) if args.data else Path(tmp)
        t = time.perf_counter()
        if not args.data:
            sc = gen.small(args.seed) if args.small else gen.Scenario(seed=args.seed)
            gen.write(gen.generate(sc), data)
        gen_s = time.perf_counter() - t
        results, times, stats = evaluate(data)
        truth = GroundTruth.load(data / "truth.json")
    for s in stats:
        print(s.summary(), file=sys.stderr)
    print(f"seed {truth.seed}: {truth.counts.get('conn_rows', '?')} connections, "
          f"{truth.benign_pairs} benign (source, peer) pairs, "
          f"{len(truth.incidents)} incidents; generate {gen_s:.1f} s, "
          f"read {times['read_s']:.1f} s, naive {times['naive_s']:.1f} s, "
          f"RITA-style {times['rita_s']:.1f} s\n")
    for label, report in results:
        lines = report.table(label).splitlines()
        print("\n".join(lines if label == results[0][0] else lines[1:]))
        if label == results[0][0]:
            print(f"{label:<22} {'(all rules)':<17} {'':>9} {'':>7} {report.false_alerts:>6} "
                  f"{report.false_per_1000:>12.2f}")
    if args.debug:
        for label, report in results:
            print(f"\n## {label}\n{report.debug()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

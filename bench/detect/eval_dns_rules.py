"""Quality of dns_tunnel, fast_flux and dns_redirection_chain on generated Zeek dns.log files.

    python -m bench.detect.eval_dns_rules [--hosts 30] [--days 2] [--per-style 2]
        [--tune-seeds 1 2] [--test-seeds 11 12 13] [--sites FILE] [--out JSON] [--debug]

Data: bench.detect.dns_threats (benign processes of bench.detect.dns_benign answered like the
Internet answers them, CDN chains, cloud load balancers, NTP pools, and the look-alikes it
lists; tunnels, fast flux and redirection chains of several styles). The rules were tuned
on the tuning seeds with only the styles in dns_threats.TUNED; they are reported on the test
seeds with every style, and per style, so the held-out styles show on their own.

Each data set is run through `otelpeers detect`'s own code path (the Zeek source, the
detection stage, every rule as configured) twice:
- network view: one dns.log for all hosts (actors are source addresses; prevalence sees
  every host): what `otelpeers detect dns.log` does with a site's Zeek logs;
- host view: each host's lookups alone (prevalence sees one actor): the closest a Zeek log
  comes to the agent on a single host.
Scoring: bench.detect.truth (recall per rule and style; false alerts = distinct (rule, actor,
peer) detections matching no incident, per 1,000 benign (host, registered domain) pairs).
Naive baselines on the same rows: >= 100 unique names under one registered domain per host
and hour (tunnel), a name answered from >= 5 distinct /24s with TTLs <= 300 s within a day
(flux), a CNAME chain of >= 3 hops or >= 3 registered domains (chain).

Results: bench/results/detect_dns_rules.json; docs/detections-dns-rules.md quotes them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.detect import dns_threats as G  # noqa: E402
from bench.detect import truth as T  # noqa: E402
from otelpeers.config import Config, parse_config  # noqa: E402
from otelpeers.detect.model import Detection  # noqa: E402
from otelpeers.detect.rules.dns_names import NameCache, network_keys  # noqa: E402
from otelpeers.detect.settings import RulesConfig  # noqa: E402
from otelpeers.testing.sinks import CollectSink  # noqa: E402

RULES = ("dns_tunnel", "fast_flux", "dns_redirection_chain")
DEFAULT_OUT = ROOT / "bench" / "results" / "detect_dns_rules.json"
DEFAULT_SITES = "/work/shared/data/dns/benign-train.txt"
HOUR_NS = 3600 * 10**9


def rules_config(extra: dict[str, Any] | None = None) -> Config:
    """Only the DNS rules, with optional per-rule overrides."""
    rules: dict[str, Any] = {f.name: {"enabled": f.name in RULES} for f in fields(RulesConfig)}
    for name, over in (extra or {}).items():
        rules[name].update(over)
    return parse_config({"detect": {"rules": rules}})


def detect(paths: Sequence[Path], config: Config) -> list[Detection]:
    """`otelpeers detect PATHS...` (the command's own function), collecting detections."""
    from otelpeers.commands.detect import _detect_zeek

    sink = CollectSink()
    with contextlib.redirect_stderr(io.StringIO()):
        _detect_zeek(config, [str(p) for p in paths], [sink])
    return sink.detections


def as_truth(ds: Iterable[Detection]) -> list[T.Detection]:
    return [T.Detection(d.rule.name, d.actor.key, d.peer.name if d.peer else None, d.time_ns,
                        d.score) for d in ds]


# ---- naive baselines ---------------------------------------------------------------------
def naive(rows: Sequence[G.Row]) -> list[T.Detection]:
    names = NameCache(200_000)
    subs: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    nets: dict[str, set[str]] = defaultdict(set)
    out: list[T.Detection] = []
    fired: set[tuple[str, str, str]] = set()
    for row in sorted(rows, key=lambda r: r[0]):
        ts, host, query, qtype, answers, ttls = row[0], row[2], row[9].lower(), row[11], \
            row[16], row[17]
        t = int(ts * 1e9)
        sp = names.split(query)
        if sp is not None and sp.sub:
            key = (host, sp.registered, t // HOUR_NS)
            s = subs[key]
            if len(s) < 100:
                s.add(query)
                if len(s) == 100 and ("dns_tunnel", host, sp.registered) not in fired:
                    fired.add(("dns_tunnel", host, sp.registered))
                    out.append(T.Detection("dns_tunnel", host, sp.registered, t))
        addrs = [a for a in answers if a[:1].isdigit() and "." in a and a.count(".") == 3]
        if addrs and ttls and min(ttls) <= 300:
            n = nets[f"{query}|{t // (24 * HOUR_NS)}"]
            for a in addrs:
                k = network_keys(a)
                if k:
                    n.add(k[0])
            if len(n) >= 5 and ("fast_flux", host, query) not in fired:
                fired.add(("fast_flux", host, query))
                out.append(T.Detection("fast_flux", host, query, t))
        cnames = [a for a in answers if not a[:1].isdigit() and ":" not in a] \
            if qtype in ("A", "AAAA") else []
        if cnames:
            regs = {x.registered for x in (names.split(c) for c in [query, *cnames]) if x}
            if (len(cnames) >= 3 or len(regs) >= 3) and \
                    ("dns_redirection_chain", host, query) not in fired:
                fired.add(("dns_redirection_chain", host, query))
                out.append(T.Detection("dns_redirection_chain", host, query, t))
    return out


# ---- one data set ------------------------------------------------------------------------
def _lookalike(peer: str | None, truth: T.GroundTruth) -> str:
    if peer:
        for kind, domains in truth.lookalikes.items():
            if any(peer == d or peer.endswith("." + d) or d.endswith("." + peer)
                   for d in domains):
                return kind
    return f"other:{peer}"


def summarise(report: T.Report, truth: T.GroundTruth, detail: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rule in RULES:
        r = report.rules[rule]
        missed = {m.id for m in r.misses}
        assert r.positives - r.caught == len(missed), "more misses than truth.py lists"
        per_style: dict[str, list[int]] = {}
        for inc in truth.incidents:
            if inc.rule == rule:
                c = per_style.setdefault(inc.note, [0, 0])
                c[1] += 1
                c[0] += inc.id not in missed
        by_kind: dict[str, int] = defaultdict(int)
        for fa in r.false_list:
            by_kind[_lookalike(fa.peer, truth)] += 1
        entry: dict[str, Any] = {
            "positives": r.positives, "caught": r.caught,
            "recall": round(r.recall, 3) if r.recall is not None else None,
            "false_alerts": r.false_alerts, "false_per_1000_pairs": round(r.false_per_1000, 3),
            "per_style": {k: {"caught": v[0], "positives": v[1]}
                          for k, v in sorted(per_style.items())},
            "false_by_lookalike": dict(sorted(by_kind.items())),
        }
        if detail:
            entry["misses"] = [f"{m.id} {m.actor} {list(m.names)}" for m in r.misses]
            entry["false"] = [f"{f.actor} {f.peer} x{f.detections} ({f.why})"
                              for f in r.false_list[:20]]
        out[rule] = entry
    return out


def run_seed(seed: int, styles: dict[str, tuple[str, ...]], args: argparse.Namespace,
             tmp: Path, config: Config) -> dict[str, Any]:
    popular, rare = G.load_pools(args.sites, seed)
    sc = G.DnsScenario(seed=seed, hosts=args.hosts, days=args.days, per_style=args.per_style,
                       styles=styles, popular=popular, rare=rare)
    t = time.perf_counter()
    rows, truth = G.generate(sc)
    d = tmp / f"seed{seed}"
    path = G.write(rows, truth, d)
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    network = as_truth(detect([path], config))
    net_s = time.perf_counter() - t
    t = time.perf_counter()
    by_host: dict[str, list[G.Row]] = defaultdict(list)
    for row in rows:
        by_host[row[2]].append(row)
    host_view: list[T.Detection] = []
    for i, (_, hrows) in enumerate(sorted(by_host.items())):
        p = G.write(hrows, truth, d / "hosts", name=f"dns-{i}.log")
        host_view += as_truth(detect([p], config))
    host_s = time.perf_counter() - t
    base = naive(rows)
    res = {
        "seed": seed, "dns_rows": len(rows), "benign_pairs": truth.benign_pairs,
        "host_days": args.hosts * args.days, "incidents": len(truth.incidents),
        "seconds": {"generate": round(gen_s, 1), "network_view": round(net_s, 1),
                    "host_view": round(host_s, 1)},

        "network_view": summarise(T.score(network, truth, rules=RULES), truth, args.debug),
        "host_view": summarise(T.score(host_view, truth, rules=RULES), truth, args.debug),
        "naive": summarise(T.score(base, truth, rules=RULES), truth, False),
    }
    print(f"seed {seed}: {len(rows)} rows, {truth.benign_pairs} benign pairs, generate "
          f"{gen_s:.0f} s, network view {net_s:.0f} s, host view {host_s:.0f} s", flush=True)
    for view in ("network_view", "host_view", "naive"):
        for rule in RULES:
            e = res[view][rule]
            print(f"  {view:<13} {rule:<22} {e['caught']:>3}/{e['positives']:<3} "
                  f"false {e['false_alerts']:>3} ({e['false_per_1000_pairs']:.2f}/1k) "
                  f"{e['false_by_lookalike'] if e['false_alerts'] else ''}", flush=True)
            if args.debug and view != "naive":
                for line in e.get("misses", []) + e.get("false", []):
                    print(f"      {line}")
    return res


def cost(seed: int, args: argparse.Namespace, tmp: Path, config: Config,
         repeats: int = 3) -> dict[str, Any]:
    """What the three rules add per lookup: `otelpeers detect` over one data set with them
    on and with every rule off, the fastest of `repeats` runs each (shared machines)."""
    popular, rare = G.load_pools(args.sites, seed)
    rows, truth = G.generate(G.DnsScenario(seed=seed, hosts=args.hosts, days=args.days,
                                           per_style=args.per_style, popular=popular,
                                           rare=rare))
    path = G.write(rows, truth, tmp / f"cost{seed}")
    off = rules_config({r: {"enabled": False} for r in RULES})
    times: dict[str, float] = {}
    for label, cfg in (("off", off), ("on", config)) * repeats:
        t = time.perf_counter()
        detect([path], cfg)
        times[label] = min(times.get(label, 1e9), time.perf_counter() - t)
    per = (times["on"] - times["off"]) / len(rows) * 1e6
    print(f"cost: {len(rows)} lookups, rules off {times['off']:.1f} s, on {times['on']:.1f} s: "
          f"{per:.1f} us per lookup", flush=True)
    return {"seed": seed, "lookups": len(rows), "seconds_rules_off": round(times["off"], 2),
            "seconds_rules_on": round(times["on"], 2), "us_per_lookup": round(per, 2),
            "repeats": repeats}


def aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pairs = sum(r["benign_pairs"] for r in results)
    for view in ("network_view", "host_view", "naive"):
        v: dict[str, Any] = {}
        for rule in RULES:
            caught = sum(r[view][rule]["caught"] for r in results)
            pos = sum(r[view][rule]["positives"] for r in results)
            false = sum(r[view][rule]["false_alerts"] for r in results)
            styles: dict[str, list[int]] = {}
            kinds: dict[str, int] = defaultdict(int)
            for r in results:
                for s, c in r[view][rule]["per_style"].items():
                    acc = styles.setdefault(s, [0, 0])
                    acc[0] += c["caught"]
                    acc[1] += c["positives"]
                for k, n in r[view][rule]["false_by_lookalike"].items():
                    kinds[k] += n
            v[rule] = {"caught": caught, "positives": pos,
                       "recall": round(caught / pos, 3) if pos else None,
                       "false_alerts": false,
                       "false_per_1000_pairs": round(1000 * false / pairs, 3) if pairs else 0,
                       "per_style": {s: f"{c[0]}/{c[1]}" for s, c in sorted(styles.items())},
                       "false_by_lookalike": dict(sorted(kinds.items()))}
        out[view] = v
    out["benign_pairs"] = pairs
    out["host_days"] = sum(r["host_days"] for r in results)
    out["dns_rows"] = sum(r["dns_rows"] for r in results)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.detect.eval_dns_rules",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=30)
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--per-style", type=int, default=2)
    ap.add_argument("--tune-seeds", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--test-seeds", type=int, nargs="*", default=[11, 12, 13])
    ap.add_argument("--sites", default=DEFAULT_SITES,
                    help="benign domains for page loads (default: shared/data's benign list "
                         "when present, else dns_benign's built-in one)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--debug", action="store_true", help="list misses and false alerts")
    ap.add_argument("--cost-only", type=int, metavar="SEED",
                    help="only measure what the rules cost per lookup on this seed's data "
                         "and store it under 'cost' in the existing results file")
    ap.add_argument("--keep", type=Path, metavar="DIR", help="keep the generated logs here")
    ap.add_argument("--set", action="append", default=[], metavar="RULE.KEY=VALUE",
                    help="override a rule setting (YAML value), e.g. dns_tunnel.min_bits=8000")
    args = ap.parse_args(argv)
    overrides: dict[str, dict[str, Any]] = defaultdict(dict)
    for item in args.set:
        key, _, value = item.partition("=")
        rule, _, name = key.partition(".")
        overrides[rule][name] = yaml.safe_load(value)
    config = rules_config(overrides)
    if args.cost_only is not None:
        with tempfile.TemporaryDirectory(prefix="otelpeers-dnsrules-") as tmp_dir:
            c = cost(args.cost_only, args, Path(tmp_dir), config)
        if not args.no_write:
            doc = json.loads(args.out.read_text()) if args.out.exists() else {}
            doc["cost"] = c
            args.out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        return 0
    started = time.perf_counter()
    doc: dict[str, Any] = {
        "what": "dns_tunnel, fast_flux, dns_redirection_chain on bench.detect.dns_threats "
                "Zeek dns.log through `otelpeers detect`",
        "hosts": args.hosts, "days": args.days, "per_style": args.per_style,
        "tuned_styles": G.TUNED, "sites": args.sites if Path(args.sites).exists() else None,
        "rule_settings": {r: {k: (list(v) if isinstance(v, tuple) else v)
                              for k, v in vars(getattr(config.detect.rules, r)).items()
                              if k != "allow"} for r in RULES},
    }
    with tempfile.TemporaryDirectory(prefix="otelpeers-dnsrules-") as tmp_dir:
        tmp = args.keep or tmp_dir
        for phase, seeds, styles in (("tune", args.tune_seeds, G.TUNED),
                                     ("test", args.test_seeds, G.STYLES)):
            per_seed = [run_seed(s, dict(styles), args, Path(tmp), config) for s in seeds]
            doc[phase] = {"seeds": seeds, "total": aggregate(per_seed) if per_seed else {},
                          "per_seed": per_seed}
    doc["seconds"] = round(time.perf_counter() - started, 1)
    for phase in ("tune", "test"):
        tot = doc[phase].get("total") or {}
        for view in ("network_view", "host_view", "naive"):
            for rule in RULES:
                e = tot.get(view, {}).get(rule)
                if e:
                    print(f"{phase} {view:<13} {rule:<22} recall {e['recall']} "
                          f"({e['caught']}/{e['positives']}) false {e['false_alerts']} "
                          f"({e['false_per_1000_pairs']}/1k pairs) {e['per_style']}")
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

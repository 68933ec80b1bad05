#!/usr/bin/env python3
"""Leave-families-out validation of the DGA domain model.

    python scripts/eval_dga.py BENIGN.txt DGA.tsv [--folds 5]

Whole DGA families are held out per fold (seeded assignment); each fold's model is trained
exactly as the shipped one (scripts/train_dga.py) on the other families, synthetic positives
and the benign training split, then scored on its held-out families and on the benign holdout
(names never trained on, grouped by label). Reported per fold and overall: ROC AUC, recall at
1% benign false positives, per-family recall; also the shipped model on the generators of
bench/detect/dga_generators.py (styles no training data has) and its scoring speed.

Writes bench/results/dga_eval.json (key "domain") and regenerates docs/detections-dga.md
from the whole JSON (the per-actor evaluation adds key "actor"). Fold models are cached in
build/dga-folds/ for bench/detect/eval_dga_actor.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import train_dga as T  # noqa: E402

from bench.detect import dga_generators  # noqa: E402
from otelpeers.detect.dga.model import DgaModel, from_file, score_lines  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "dga_eval.json"
DOC = ROOT / "docs" / "detections-dga.md"
FOLD_DIR = ROOT / "build" / "dga-folds"
FPR = 0.01
EXTRA_PER_STYLE = 500


# -- metrics -------------------------------------------------------------------------------


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a positive outscores a negative (ties count half)."""
    scores = np.concatenate([pos, neg])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks of ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    r_pos = ranks[: len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def threshold_at(neg: np.ndarray, fpr: float = FPR) -> float:
    """Smallest threshold t with share(neg > t) <= fpr."""
    return float(np.quantile(neg, 1.0 - fpr, method="higher"))


def recall_at(pos: np.ndarray, threshold: float) -> float:
    return float((pos > threshold).mean()) if len(pos) else 0.0


# -- folds ---------------------------------------------------------------------------------


def family_folds(families: Sequence[str], k: int, seed: int) -> list[list[str]]:
    names = sorted(set(families))
    order = np.random.default_rng(seed).permutation(len(names))
    shuffled = [names[i] for i in order]
    return [sorted(shuffled[i::k]) for i in range(k)]


def fold_model(
    k: int, held: Sequence[str], train_b: Sequence[str], dga: Sequence[tuple[str, str]],
    params: T.Params, cache: Path | None,
) -> DgaModel:
    """The fold's model, from the cache when it was trained with the same held-out set."""
    code = hashlib.sha256()
    for source in ("scripts/train_dga.py", "otelpeers/detect/dga/features.py",
                   "otelpeers/detect/dga/domains.py", "otelpeers/detect/dga/lists.py"):
        code.update((ROOT / source).read_bytes())
    code.update(repr(params).encode())
    # the cache is keyed by the code and parameters that shaped the model
    tag = f"fold{k}-{code.hexdigest()[:12]}-" + "-".join(held)
    path = cache / f"{tag}.npz" if cache else None
    if path is not None and path.is_file():
        return from_file(path)
    held_set = set(held)
    arrays = T.fit(train_b, [(f, n) for f, n in dga if f not in held_set], params)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        T.save(arrays, path)
    return DgaModel(arrays)


def load_corpus(benign_path: str, dga_path: str, seed: int):
    benign = T.read_benign(benign_path)
    dga = T.read_dga(dga_path)
    train_b, test_b = T.split_benign(benign, T.HOLDOUT, seed)
    return train_b, test_b, dga


def fold_models(
    benign_path: str, dga_path: str, folds: int, params: T.Params, cache: Path | None
) -> tuple[list[tuple[list[str], DgaModel]], list[str], list[tuple[str, str]]]:
    train_b, test_b, dga = load_corpus(benign_path, dga_path, params.seed)
    out = []
    for k, held in enumerate(family_folds([f for f, _ in dga], folds, params.seed)):
        t0 = time.monotonic()
        out.append((held, fold_model(k, held, train_b, dga, params, cache)))
        print(f"fold {k}: model ready in {time.monotonic() - t0:.0f}s (held out {held})",
              flush=True)
    return out, test_b, dga


# -- evaluation ----------------------------------------------------------------------------


def evaluate(
    benign_path: str, dga_path: str, folds: int, params: T.Params, cache: Path | None,
    shipped: Path | None,
) -> dict[str, Any]:
    models, test_b, dga = fold_models(benign_path, dga_path, folds, params, cache)
    by_family: dict[str, list[str]] = {}
    for fam, name in dga:
        by_family.setdefault(fam, []).append(name)
    fold_rows, families = [], {}
    pooled_pos, pooled_neg, detected = [], [], 0
    for k, (held, model) in enumerate(models):
        neg = model.score(test_b)
        thr = threshold_at(neg)
        pos_parts = []
        for fam in held:
            pos = model.score(by_family[fam])
            pos_parts.append(pos)
            families[fam] = {
                "fold": k,
                "domains": len(pos),
                "recall_at_1pct_fpr": round(recall_at(pos, thr), 4),
                "roc_auc": round(roc_auc(pos, neg), 4),
                "example": by_family[fam][0],
            }
        pos = np.concatenate(pos_parts)
        detected += int((pos > thr).sum())
        pooled_pos.append(pos)
        pooled_neg.append(neg)
        fold_rows.append(
            {
                "fold": k,
                "held_out": held,
                "positives": len(pos),
                "roc_auc": round(roc_auc(pos, neg), 4),
                "recall_at_1pct_fpr": round(recall_at(pos, thr), 4),
                "threshold": round(thr, 4),
            }
        )
    n_pos = sum(len(p) for p in pooled_pos)
    overall = {
        "roc_auc_pooled": round(
            roc_auc(np.concatenate(pooled_pos), np.concatenate(pooled_neg)), 4
        ),
        "roc_auc_mean_of_folds": round(float(np.mean([f["roc_auc"] for f in fold_rows])), 4),
        "recall_at_1pct_fpr": round(detected / n_pos, 4),
        "recall_at_1pct_fpr_family_mean": round(
            float(np.mean([f["recall_at_1pct_fpr"] for f in families.values()])), 4
        ),
        "roc_auc_family_mean": round(
            float(np.mean([f["roc_auc"] for f in families.values()])), 4
        ),
        "positives": n_pos,
        "benign_holdout": len(test_b),
    }
    result: dict[str, Any] = {
        "folds": fold_rows,
        "overall": overall,
        "families": dict(sorted(families.items())),
        "params": {
            "seed": params.seed, "folds": folds, "bits": params.bits, "c": params.c,
            "synth_per_style": params.synth_per_style, "synth_share": params.synth_share,
            "holdout": params.holdout,
        },
    }
    if shipped is not None and shipped.is_file():
        result["shipped"] = evaluate_shipped(from_file(shipped), test_b, shipped)
    return result


def evaluate_shipped(model: DgaModel, test_b: Sequence[str], path: Path) -> dict[str, Any]:
    """The shipped model on our own generators (no training data has these styles)."""
    neg = model.score(test_b)
    thr = threshold_at(neg)
    styles = {}
    for style in dga_generators.GENERATORS:
        pos = model.score(dga_generators.generate(style, EXTRA_PER_STYLE))
        styles[style] = {
            "domains": len(pos),
            "roc_auc": round(roc_auc(pos, neg), 4),
            "recall_at_1pct_fpr": round(recall_at(pos, thr), 4),
            "recall_at_shipped_threshold": round(recall_at(pos, model.threshold_1pct), 4),
            "example": dga_generators.generate(style, 1)[0],
        }
    lines = [f"{n}\n" for n in test_b] * max(1, 100_000 // max(len(test_b), 1))
    lines = lines[:100_000]
    t0, c0 = time.perf_counter(), time.process_time()
    count = sum(1 for _ in score_lines(lines, model))
    rate = count / (time.perf_counter() - t0)
    cpu_rate = count / max(time.process_time() - c0, 1e-9)
    return {
        "artefact_bytes": path.stat().st_size,
        "threshold_1pct": round(model.threshold_1pct, 4),
        "benign_holdout_fpr_at_threshold": round(float((neg > model.threshold_1pct).mean()), 4),
        "generators": styles,
        "generators_recall_mean": round(
            float(np.mean([s["recall_at_1pct_fpr"] for s in styles.values()])), 4
        ),
        "score_lines_domains_per_s": round(rate),
        "score_lines_domains_per_cpu_s": round(cpu_rate),
    }


# -- reporting -----------------------------------------------------------------------------


def update_results(key: str, value: dict[str, Any], path: Path = RESULTS) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if path.is_file():
        data = json.loads(path.read_text())
    data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return data


def _met(value: float, target: float) -> str:
    return "met" if value >= target else "**not met**"


HOW_IT_WORKS = """\
## How it works

**Per name** (`otelpeers/detect/dga/model.py`, artefact `model.npz`). The name is normalised
(lower case, no trailing dot, Unicode to IDNA) and split with the public suffix list bundled in
`publicsuffixlist` (never fetched at run time). Dynamic-DNS parents (`duckdns.org`, `no-ip.*`,
`ddns.net`, ... in `otelpeers/detect/dga/lists.py`) count as suffixes, so the label under them
is scored as a registered domain. Names under CDN / cloud parents whose labels are generated by
the provider (`cloudfront.net`, `akamaiedge.net`, `googlevideo.com`, ...), under reputation and
anti-virus lookup services (DNSBLs, hash registries), special-use TLDs (`.local`, `.arpa`,
`.internal`, ...), blank and invalid names score 0; `explain(name)` says why. Every other label
left of the suffix is scored by one logistic regression over

- hashed character 1..5-grams of `^label$` (2^18 weights),
- 16 lexical features, each quantile-binned (length, digits, hyphens, vowel share, consonant /
  vowel / digit runs, letter-digit switches, entropy, distinct-character share, hex only),
  four of them from an order-4 character language model of the benign corpus (mean and minimum
  log-probability per character, share of 3- and 4-grams never seen in benign names; computed
  leave-one-out for the benign training names so they look as unseen as run-time names),
- a TLD prior (one weight per TLD seen at least 20 times, one for all others).

The name's score is the registered label's probability; other labels count at half their
score (random-looking subdomains of real domains are common, and are `dns_tunnel`'s business).
The agent's detection process scores one name at a time (scores are cached) with
`otelpeers/detect/dga/scalar.py`: the same model in plain Python, read from the same artefact
with the same arithmetic (float32 sums where numpy sums float32, numpy's pairwise order), so
that process never imports numpy (about 12 MB resident); `tests/unit/test_dga_scalar.py`
requires the numpy model's logits to the last bit. Training and `otelpeers detect dga` score
in numpy batches.
Training (`scripts/train_dga.py`, `make dga-model`): benign = `benign-train.txt` less a seeded
15% holdout (split by label), positives = the 23 families plus 4,000 synthetic names each of six
generic styles (random letters, alphanumerics, hex, base32, consonant-vowel, letters+digits)
with TLDs drawn like benign ones; every family and style weighs the same, both classes weigh
the same. The holdout sets `threshold_1pct` (1% of unseen benign names score above it).

**Per process** (`otelpeers/detect/dga/actor.py`). Per actor, in a sliding event-time window,
the registered domains it asked for that are *new* (not answered for it before, not known to
exist from any actor's answers), counting only address lookups (A, AAAA, ANY) of scorable
names. Each new domain whose lookups all ended NXDOMAIN adds `floor + (1 - floor) * ramp(score)`
(ramp 0 at `low_score`, 1 at the model threshold) plus `tld_bonus` for TLDs the model leans
on; answered high scorers add `answered_weight`. It fires when the evidence reaches
`min_evidence`, at least `min_unique` new domains were NXDOMAIN, and they are at least
`min_nxdomain_share` of the new ones or at least `min_high_unique` of them score above the
model threshold (a DGA inside a busy process, whose other lookups dilute the share); then it
stays quiet for a window. With the defaults (window 900 s, `min_unique` 8, `min_evidence` 6,
`floor` 0.4, share 0.75, `min_high_unique` 10) names that look generated fire after 8 new
NXDOMAIN domains, names that look human-made (word lists) only after 15, and only the first
`burst_cap` (3) failures per `burst_s` (10 s) earn the floor: a browser prefetching the links
of an old page fails on many dead domains within a second, a DGA hunts over time. The
decision carries its score (0.5 at `min_evidence`), the top names with their scores, counts,
the NXDOMAIN share, the TLDs and the window. Tuning: raise `min_evidence` / `min_unique` for
fewer alerts on hosts with noisy resolvers; lower `floor` to require lexical evidence
(word-list DGAs then go unnoticed); shorten `window_s` to demand faster bursts. All tables
are LRU-bounded (`max_actors`, `max_names_per_actor`, `max_known_domains`, `score_cache`),
evictions counted in `stats`.
"""


KNOWN_LIMITS = """\
## Known limits

- Per name, families made of dictionary words, very short labels or a constant part with a
  counter (nymaim2, unnamed_downloader, fosniw; our `wordpair` style) score like benign names:
  no string model separates them; so the mean ROC AUC over the 23 families (0.94) stays below 0.95
  although the pooled figures meet the targets.
- Per process, the benign host-days and the infected processes come from our own generator
  (`bench/detect/dns_benign.py`). The defaults `floor` 0.4, `min_nxdomain_share` 0.75 and the
  burst cap (3 per 10 s) were set after seeing its false alerts (old pages whose link prefetch
  fails on many dead domains at once), so they may fit that generator; real traffic can differ.
- A word-list DGA is found by behaviour only: it needs about 15 new NXDOMAIN registered domains
  within 15 minutes, spread over time. One that resolves all its names within a second, or
  fewer than that per window, is missed; so is one hiding in a busy browser (its answered
  lookups dilute the NXDOMAIN share; the `min_high_unique` path rescues only families whose
  names look generated).
- The generated benign traffic is NXDOMAIN-heavy (anti-virus hash lookups, search-domain
  suffixes): the baseline rules' false alerts here are far above the reference figures of the
  issue (about 90 per 1,000 host-days for the Slips gate) and are not comparable to them.
"""


def render_markdown(data: dict[str, Any]) -> str:
    out = ["# DGA detection: measured quality", ""]
    out.append(
        "Generated by `scripts/eval_dga.py` and `bench/detect/eval_dga_actor.py` from "
        "`bench/results/dga_eval.json`; do not edit by hand."
    )
    out += ["", HOW_IT_WORKS.rstrip()]
    dom = data.get("domain")
    if dom:
        o = dom["overall"]
        p = dom["params"]
        out += [
            "",
            "## Per domain, leave-families-out",
            "",
            f"{p['folds']} folds over the 23 families of `dga-dev.tsv`, whole families held "
            "out per fold; each fold model is trained like the shipped one (benign training "
            f"split, the other families, synthetic positives). Negatives: {o['benign_holdout']:,}"
            " benign names never trained on (a seeded 15% of `benign-train.txt`, split by "
            "label). Recall is at the threshold where 1% of those benign names score higher.",
            "",
            "| measure | value | target |",
            "|---|---|---|",
            f"| ROC AUC, pooled over folds | {o['roc_auc_pooled']:.4f} | >= 0.95 "
            f"({_met(o['roc_auc_pooled'], 0.95)}) |",
            f"| ROC AUC, mean of folds | {o['roc_auc_mean_of_folds']:.4f} | |",
            f"| recall at 1% FPR, all held-out domains | {o['recall_at_1pct_fpr']:.4f} | >= 0.70"
            f" ({_met(o['recall_at_1pct_fpr'], 0.70)}) |",
            f"| recall at 1% FPR, mean over families | "
            f"{o['recall_at_1pct_fpr_family_mean']:.4f} | (families weigh the same) |",
            f"| ROC AUC, mean over families | {o['roc_auc_family_mean']:.4f} | |",
            "",
            "| fold | held-out families | domains | ROC AUC | recall at 1% FPR |",
            "|---|---|---|---|---|",
        ]
        for f in dom["folds"]:
            out.append(
                f"| {f['fold']} | {', '.join(f['held_out'])} | {f['positives']} | "
                f"{f['roc_auc']:.4f} | {f['recall_at_1pct_fpr']:.4f} |"
            )
        out += ["", "| family (held out) | domains | ROC AUC | recall at 1% FPR | example |",
                "|---|---|---|---|---|"]
        for fam, f in sorted(dom["families"].items(), key=lambda kv: kv[1]["recall_at_1pct_fpr"]):
            out.append(
                f"| {fam} | {f['domains']} | {f['roc_auc']:.4f} | {f['recall_at_1pct_fpr']:.4f}"
                f" | `{f['example']}` |"
            )
        s = dom.get("shipped")
        if s:
            out += [
                "",
                "## Shipped model on generators no training data has",
                "",
                "Styles written for this project (`bench/detect/dga_generators.py`), "
                f"{EXTRA_PER_STYLE} names each, against the same benign holdout. Shipped "
                f"artefact: {s['artefact_bytes'] / 1e6:.2f} MB, threshold at 1% FPR "
                f"{s['threshold_1pct']:.3f}; `score_lines` speed after start-up: "
                f"{s['score_lines_domains_per_cpu_s']:,} domains per CPU second, "
                f"{s['score_lines_domains_per_s']:,} domains/s wall clock on the shared "
                "2-core machine the figures were measured on.",
                "",
                "| style | ROC AUC | recall at 1% FPR | example |",
                "|---|---|---|---|",
            ]
            for style, g in s["generators"].items():
                out.append(
                    f"| {style} | {g['roc_auc']:.4f} | {g['recall_at_1pct_fpr']:.4f} | "
                    f"`{g['example']}` |"
                )
    actor = data.get("actor")
    if actor:
        out += ["", actor.get("markdown", "")]
    out += ["", KNOWN_LIMITS.rstrip()]
    return "\n".join(out).rstrip() + "\n"


def write_doc(data: dict[str, Any], path: Path = DOC) -> None:
    path.write_text(render_markdown(data))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("benign")
    ap.add_argument("dga")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=T.SEED)
    ap.add_argument("--cache", default=str(FOLD_DIR), help="fold model cache ('' = none)")
    ap.add_argument("--shipped", default=str(T.DEFAULT_OUT), help="shipped artefact to test")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--doc", default=str(DOC))
    args = ap.parse_args(argv)
    params = T.Params(seed=args.seed)
    result = evaluate(args.benign, args.dga, args.folds, params,
                      Path(args.cache) if args.cache else None, Path(args.shipped))
    data = update_results("domain", result, Path(args.results))
    write_doc(data, Path(args.doc))
    print(json.dumps(result["overall"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

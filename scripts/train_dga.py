#!/usr/bin/env python3
"""Train the DGA domain model and write the artefact the package ships.

    python scripts/train_dga.py BENIGN.txt DGA.tsv [-o otelpeers/detect/dga/model.npz]

BENIGN.txt has one benign domain a line; DGA.tsv has ``family<TAB>domain`` lines. Training is
seeded: the same inputs and options give a byte-identical artefact. scikit-learn is used here
only; the product scores with numpy (otelpeers/detect/dga/model.py).

What is learnt (see otelpeers/detect/dga/features.py): a logistic regression over hashed
character 1..5-grams of the label left of the public suffix, binned lexical features and a
benign character language model, and a TLD prior. Positives are the DGA families plus generic
synthetic ones (random letters, alphanumerics, hex, base32, consonant-vowel strings, letters
with digits) so the model learns "random-looking" rather than a family's quirks; each family
and each synthetic style weighs the same, and both classes weigh the same in total.

A seeded ``HOLDOUT`` share of benign names (grouped by label, so google.com and google.de
fall on the same side) is never trained on: it sets the shipped 1%-false-positive threshold,
and eval_dga.py measures on it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from otelpeers.detect.dga import domains  # noqa: E402
from otelpeers.detect.dga.features import (  # noqa: E402
    LEXICAL_NAMES,
    CharLM,
    bin_index,
    encode,
    hashed_ngrams,
    lexical,
)
from otelpeers.detect.dga.model import FORMAT_VERSION, DgaModel  # noqa: E402

DEFAULT_OUT = ROOT / "otelpeers" / "detect" / "dga" / "model.npz"
SEED = 20240611
HOLDOUT = 0.15  # benign share never trained on
BITS = 18  # n-gram table size 2**18 (1 MiB of float32, ~0.5 MiB as float16)
LEX_BINS = 12
C = 0.5  # inverse L2 strength of the logistic regression
SYNTH_PER_STYLE = 4000
SYNTH_SHARE = 0.5  # share of the positive weight that synthetic styles carry
SUB_LABEL_FACTOR = 0.5
MIN_TLD_COUNT = 20  # TLDs seen less often share the "other" weight

LETTERS = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
CONSONANTS = "bcdfghjklmnpqrstvwxz"
VOWELS = "aeiouy"


@dataclass
class Params:
    seed: int = SEED
    holdout: float = HOLDOUT
    bits: int = BITS
    lex_bins: int = LEX_BINS
    c: float = C
    synth_per_style: int = SYNTH_PER_STYLE
    synth_share: float = SYNTH_SHARE
    sub_label_factor: float = SUB_LABEL_FACTOR
    use_tld: bool = True
    use_lexical: bool = True
    use_ngrams: bool = True
    extra: dict[str, float] = field(default_factory=dict)


# -- corpora -------------------------------------------------------------------------------


def read_benign(path: str | Path) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip() and not line.startswith("#")]


def read_dga(path: str | Path) -> list[tuple[str, str]]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            family, sep, name = line.partition("\t")
            if not sep or not family or not name.strip():
                raise SystemExit(f"{path}:{number}: expected family<TAB>domain, got {line!r}")
            out.append((family.strip(), name.strip()))
    return out


def stable_unit(text: str, seed: int) -> float:
    """A seeded, platform-independent number in [0, 1) for ``text``."""
    digest = hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_benign(names: Sequence[str], holdout: float, seed: int) -> tuple[list[str], list[str]]:
    """Benign names split by their registered label, so near-duplicates stay together."""
    train, test = [], []
    for name in names:
        parsed = domains.parse(name)
        key = parsed.registered_label if parsed is not None and parsed.registered else name
        (test if stable_unit(key, seed) < holdout else train).append(name)
    return train, test


# -- synthetic positives -------------------------------------------------------------------


def _pick(rng: np.random.Generator, alphabet: str, n: int) -> str:
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), n))


def _cv(rng: np.random.Generator, n: int) -> str:
    out = []
    while len("".join(out)) < n:
        syl = _pick(rng, CONSONANTS, 1) + _pick(rng, VOWELS, 1)
        if rng.random() < 0.3:
            syl += _pick(rng, CONSONANTS, 1)
        out.append(syl)
    return "".join(out)[:n]


SYNTH_STYLES = {
    "synth_letters": lambda rng: _pick(rng, LETTERS, int(rng.integers(6, 25))),
    "synth_alnum": lambda rng: _pick(rng, LETTERS + DIGITS, int(rng.integers(6, 21))),
    "synth_hex": lambda rng: _pick(rng, "0123456789abcdef", int(rng.integers(8, 33))),
    "synth_base32": lambda rng: _pick(rng, LETTERS + "234567", int(rng.integers(8, 27))),
    "synth_cv": lambda rng: _cv(rng, int(rng.integers(6, 17))),
    "synth_letters_digits": lambda rng: _pick(rng, LETTERS, int(rng.integers(5, 13)))
    + _pick(rng, DIGITS, int(rng.integers(1, 5))),
}


def synthetic(
    seed: int, per_style: int, tlds: Sequence[str], tld_weights: np.ndarray
) -> list[tuple[str, str]]:
    """(style, domain) pairs; TLDs drawn like benign ones so they teach no TLD prior."""
    rng = np.random.default_rng(seed)
    out = []
    for style, make in SYNTH_STYLES.items():
        picks = rng.choice(len(tlds), size=per_style, p=tld_weights)
        for i in range(per_style):
            label = make(rng)
            if label[0] == "-":
                label = "a" + label[1:]
            out.append((style, f"{label}.{tlds[picks[i]]}"))
    return out


# -- examples and features -----------------------------------------------------------------


@dataclass
class Examples:
    labels: list[str]
    tlds: list[str]
    y: np.ndarray
    weight: np.ndarray
    benign: np.ndarray  # leave-one-out LM counts apply to these rows


def _label_and_tld(name: str) -> tuple[str, str] | None:
    parsed = domains.parse(name)
    if parsed is None or parsed.skip or parsed.single_label or not parsed.registered_label:
        return None
    return parsed.registered_label, parsed.tld


def build_examples(
    benign: Sequence[str], positives: Sequence[tuple[str, str]], synth_share: float
) -> Examples:
    seen: set[tuple[str, str]] = set()
    b_rows = []
    for name in benign:
        item = _label_and_tld(name)
        if item is not None and item not in seen:
            seen.add(item)
            b_rows.append(item)
    groups: dict[str, list[tuple[str, str]]] = {}
    for group, name in positives:
        item = _label_and_tld(name)
        if item is not None and item not in seen:
            seen.add(item)
            groups.setdefault(group, []).append(item)
    real = [g for g in groups if not g.startswith("synth_")]
    synth = [g for g in groups if g.startswith("synth_")]
    total = float(len(b_rows))
    share = synth_share if real and synth else (1.0 if synth else 0.0)
    labels = [r[0] for r in b_rows]
    tlds = [r[1] for r in b_rows]
    weights = [1.0] * len(b_rows)
    ys = [0] * len(b_rows)
    for kind, names, part in ((0, real, 1.0 - share), (1, synth, share)):
        del kind
        for group in sorted(names):
            rows = groups[group]
            w = total * part / len(names) / len(rows)
            labels += [r[0] for r in rows]
            tlds += [r[1] for r in rows]
            weights += [w] * len(rows)
            ys += [1] * len(rows)
    y = np.array(ys, dtype=np.int8)
    return Examples(labels, tlds, y, np.array(weights), y == 0)


def lexical_values(lm: CharLM, ex: Examples, chunk: int = 20_000) -> np.ndarray:
    out = np.empty((len(ex.labels), len(LEXICAL_NAMES)))
    for start in range(0, len(ex.labels), chunk):
        stop = start + chunk
        codes = encode(ex.labels[start:stop])
        loo = ex.benign[start:stop]
        values = lexical(codes, lm, leave_one_out=False)
        if loo.any():
            values[loo] = lexical(codes[loo], lm, leave_one_out=True)
        out[start:stop] = values
    return out


def quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges per feature, padded with +inf to a rectangle."""
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    rows = []
    for col in range(values.shape[1]):
        rows.append(np.unique(np.quantile(values[:, col], qs)))
    width = max(len(r) for r in rows)
    out = np.full((values.shape[1], width), np.inf)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def design(
    ex: Examples, lex: np.ndarray, edges: np.ndarray, tld_index: dict[str, int], p: Params
):
    from scipy import sparse

    n = len(ex.labels)
    blocks = []
    if p.use_ngrams:
        rows_l, cols_l = [], []
        for start in range(0, n, 20_000):
            idx, valid = hashed_ngrams(encode(ex.labels[start : start + 20_000]), p.bits)
            r = np.broadcast_to(np.arange(start, start + idx.shape[0])[:, None], idx.shape)
            rows_l.append(r[valid])
            cols_l.append(idx[valid])
        rows = np.concatenate(rows_l)
        cols = np.concatenate(cols_l)
        m = sparse.csr_matrix(
            (np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(n, 1 << p.bits)
        )
        m.sum_duplicates()
        blocks.append(m)
    n_bins = edges.shape[1] + 1
    if p.use_lexical:
        bins = bin_index(lex, [row[np.isfinite(row)] for row in edges])
        cols = (np.arange(lex.shape[1])[None, :] * n_bins + bins).ravel()
        rows = np.repeat(np.arange(n), lex.shape[1])
        blocks.append(
            sparse.csr_matrix(
                (np.ones(len(rows)), (rows, cols)), shape=(n, lex.shape[1] * n_bins)
            )
        )
    if p.use_tld:
        other = len(tld_index)
        cols = np.array([tld_index.get(t, other) for t in ex.tlds])
        blocks.append(
            sparse.csr_matrix(
                (np.ones(n), (np.arange(n), cols)), shape=(n, len(tld_index) + 1)
            )
        )
    return sparse.hstack(blocks, format="csr")


# -- fitting -------------------------------------------------------------------------------


def benign_tld_distribution(benign: Iterable[str]) -> tuple[list[str], np.ndarray]:
    counts = Counter()
    for name in benign:
        item = _label_and_tld(name)
        if item is not None:
            counts[item[1]] += 1
    tlds = sorted(counts)
    weights = np.array([counts[t] for t in tlds], dtype=np.float64)
    return tlds, weights / weights.sum()


def fit(
    benign_train: Sequence[str],
    positives: Sequence[tuple[str, str]],
    p: Params,
    benign_holdout: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Train on benign names and (group, name) positives; returns the artefact's arrays."""
    from sklearn.linear_model import LogisticRegression

    tlds, tld_weights = benign_tld_distribution(benign_train)
    synth = synthetic(p.seed, p.synth_per_style, tlds, tld_weights) if p.synth_per_style else []
    ex = build_examples(benign_train, list(positives) + synth, p.synth_share)
    lm = CharLM.fit([label for label, is_b in zip(ex.labels, ex.benign, strict=True) if is_b])
    lex = lexical_values(lm, ex)
    edges = quantile_edges(lex, p.lex_bins)
    tld_counts = Counter(t for t, is_b in zip(ex.tlds, ex.benign, strict=True) if not is_b)
    tld_counts.update(t for t, is_b in zip(ex.tlds, ex.benign, strict=True) if is_b)
    tld_names = sorted(t for t, c in tld_counts.items() if c >= MIN_TLD_COUNT)
    tld_index = {t: i for i, t in enumerate(tld_names)}
    x = design(ex, lex, edges, tld_index, p)
    clf = LogisticRegression(
        C=p.c, solver="liblinear", max_iter=200, random_state=p.seed, tol=1e-5
    )
    clf.fit(x, ex.y, sample_weight=ex.weight)
    coef = clf.coef_.ravel()
    pos = 0
    ngram_w = np.zeros(1 << p.bits, dtype=np.float32)
    if p.use_ngrams:
        ngram_w = coef[: 1 << p.bits].astype(np.float32)
        pos = 1 << p.bits
    n_bins = edges.shape[1] + 1
    lex_w = np.zeros((len(LEXICAL_NAMES), n_bins), dtype=np.float32)
    if p.use_lexical:
        lex_w = coef[pos : pos + lex.shape[1] * n_bins].reshape(lex.shape[1], n_bins)
        lex_w = lex_w.astype(np.float32)
        pos += lex.shape[1] * n_bins
    tld_w = np.zeros(len(tld_names) + 1, dtype=np.float32)
    if p.use_tld:
        tld_w = coef[pos:].astype(np.float32)
    arrays: dict[str, np.ndarray] = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int32),
        "bits": np.array(p.bits, dtype=np.int32),
        "bias": np.array(clf.intercept_[0], dtype=np.float64),
        "ngram_w": ngram_w,
        "lex_edges": edges,
        "lex_w": lex_w,
        "tld_names": np.array(tld_names, dtype="U"),
        "tld_w": tld_w,
        **{f"lm_c{n}": table for n, table in enumerate(lm.counts, start=1)},
        "sub_label_factor": np.array(p.sub_label_factor, dtype=np.float64),
        "threshold_1pct": np.array(0.5, dtype=np.float64),
    }
    if benign_holdout:
        scores = DgaModel(arrays).score(list(benign_holdout))
        arrays["threshold_1pct"] = np.array(np.quantile(scores, 0.99), dtype=np.float64)
    return arrays


def save(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    """Write the artefact byte-for-byte reproducibly (fixed zip timestamps and order)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            array = np.asarray(arrays[key])
            np.lib.format.write_array(member, array.copy(order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def train(benign_path: str | Path, dga_path: str | Path, p: Params) -> dict[str, np.ndarray]:
    benign = read_benign(benign_path)
    dga = read_dga(dga_path)
    train_b, hold_b = split_benign(benign, p.holdout, p.seed)
    return fit(train_b, dga, p, benign_holdout=hold_b)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("benign", help="benign domains, one a line (benign-train.txt)")
    ap.add_argument("dga", help="family<TAB>domain lines (dga-dev.tsv)")
    ap.add_argument("-o", "--output", default=str(DEFAULT_OUT), help="artefact to write")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    for path in (args.benign, args.dga):
        if not Path(path).is_file():
            ap.error(f"{path} does not exist (pass the corpus files, see shared/data/SOURCES.md)")
    arrays = train(args.benign, args.dga, Params(seed=args.seed))
    save(arrays, args.output)
    digest = hashlib.sha256(Path(args.output).read_bytes()).hexdigest()[:16]
    size = Path(args.output).stat().st_size
    print(
        f"wrote {args.output} ({size / 1e6:.2f} MB, sha256 {digest}…, "
        f"threshold at 1% benign FPR {float(arrays['threshold_1pct']):.3f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

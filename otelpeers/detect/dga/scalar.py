"""The shipped DGA model, scored one name at a time in plain Python.

The detection process asks for one name at a time (the actor caches scores), where numpy's
per-call overhead outweighs its vector speed, and importing numpy costs that process about
12 MB resident. This is the same model as ``model.DgaModel``: the same artefact (read by
``npz``), the same features and the same arithmetic, including float32 where numpy sums
float32 (the n-gram weights left to right, the lexical weights in numpy's pairwise order) and
numpy's pairwise order for the entropy sum. tests/unit/test_dga_scalar.py scores corpora with
both and requires the same scores.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from otelpeers.detect.dga import domains
from otelpeers.detect.dga.codes import (
    BOS,
    CODE_OF,
    CONSONANT_CODES,
    DIGIT_CODES,
    EOS,
    GOLDEN,
    HEX_CODES,
    HYPHEN_CODE,
    LETTER_CODES,
    LEXICAL_NAMES,
    LM_K,
    LM_ORDER,
    MAX_N,
    N_CODES,
    NGRAM_OFFSETS,
    OTHER,
    PAD,
    VOWEL_CODES,
    ModelFormatError,
    check_artefact,
    read_artefact,
    read_shipped,
)
from otelpeers.detect.dga.npz import NpyArray, NpzFormatError, read_npz

_MASK64 = (1 << 64) - 1
_ALPHABET_CODES = range(1, 39)
_NON_HEX = tuple(c for c in _ALPHABET_CODES if c not in HEX_CODES)
_LOG_FLOOR = 1e-12


class _F32:
    """Rounding to float32 (one array slot: the cheapest store-and-load in pure Python)."""

    __slots__ = ("_slot",)

    def __init__(self) -> None:
        self._slot = array("f", [0.0])

    def __call__(self, value: float) -> float:
        slot = self._slot
        slot[0] = value
        return slot[0]


_f32 = _F32()


def _pairwise_sum(values: Sequence[float], f32: bool = False) -> float:
    """numpy's sum of a row of 8..128 items (8 partial sums, then the rest in order), so a
    bin edge that equals a feature value falls on the same side as in training."""
    n = len(values)
    if not 8 <= n <= 128:
        raise ValueError(f"numpy sums {n} items another way; only 8..128 are needed here")
    rnd = _f32 if f32 else float
    r = list(values[:8])
    whole = n - n % 8
    for i in range(8, whole, 8):
        for k in range(8):
            r[k] = rnd(r[k] + values[i + k])
    total = rnd(rnd(rnd(r[0] + r[1]) + rnd(r[2] + r[3]))
                + rnd(rnd(r[4] + r[5]) + rnd(r[6] + r[7])))
    for i in range(whole, n):
        total = rnd(total + values[i])
    return total


def _max_run(codes: Sequence[int], members: frozenset[int]) -> int:
    best = run = 0
    for code in codes:
        run = run + 1 if code in members else 0
        if run > best:
            best = run
    return best


class _SparseCounts:
    """Sorted non-zero ids and their counts (the order-4 table is 96% zeros)."""

    __slots__ = ("keys", "values")

    def __init__(self, dense: array) -> None:
        self.keys = array("q", (i for i, v in enumerate(dense) if v))
        self.values = array("I", (dense[i] for i in self.keys))

    def get(self, key: int) -> int:
        pos = bisect_left(self.keys, key)
        keys = self.keys
        return self.values[pos] if pos < len(keys) and keys[pos] == key else 0


class ScalarModel:
    """Scores query names like ``DgaModel.score_parsed``, one name per call, no numpy."""

    def __init__(self, arrays: dict[str, NpyArray]) -> None:
        version = arrays.get("format_version")
        check_artefact(list(arrays), None if version is None else int(version.scalar()))
        self.bits = int(arrays["bits"].scalar())
        self.bias = float(arrays["bias"].scalar())
        ngram_w = arrays["ngram_w"]
        if ngram_w.shape != (1 << self.bits,) or not isinstance(ngram_w.values, array):
            raise ModelFormatError(f"n-gram table has shape {ngram_w.shape}")
        self.ngram_w: array = ngram_w.values
        self._shift = 64 - self.bits
        self.lex_edges = [[e for e in row if math.isfinite(e)]
                          for row in arrays["lex_edges"].rows()]
        self.lex_w = arrays["lex_w"].rows()
        if len(self.lex_w) != len(LEXICAL_NAMES) or len(self.lex_edges) != len(LEXICAL_NAMES):
            raise ModelFormatError(f"lexical weights have shape {arrays['lex_w'].shape}")
        names = arrays["tld_names"].values
        self.tld_index = {str(tld): i for i, tld in enumerate(names)}
        self.tld_w = list(arrays["tld_w"].values)  # last entry: any other
        tables: list[array] = []
        for n in range(1, LM_ORDER + 1):
            table = arrays[f"lm_c{n}"]
            if table.shape != (N_CODES**n,) or not isinstance(table.values, array):
                raise ModelFormatError(f"count table {n} has shape {table.shape}")
            tables.append(table.values)
        self.lm_total = float(sum(tables[0]))
        self._lm_dense = tables[:3]
        self._lm_sparse = _SparseCounts(tables[3])
        self.sub_label_factor = float(arrays["sub_label_factor"].scalar())
        self.threshold_1pct = float(arrays["threshold_1pct"].scalar())

    # -- one label -----------------------------------------------------------------------

    def _ngram_sum(self, grams: list[list[int]]) -> float:
        """Hashed 1..5-gram weights summed in float32, n = 1 first, positions in order."""
        weights, shift, f32 = self.ngram_w, self._shift, _f32
        total = 0.0
        for n, ids in enumerate(grams, start=1):
            offset = NGRAM_OFFSETS[n - 1]
            for gid in ids:
                if gid >= 0:
                    total = f32(total + weights[(((gid + offset) * GOLDEN) & _MASK64) >> shift])
        return total

    def _lm_features(self, codes: list[int], grams: list[list[int]]) -> list[float]:
        """Mean and min log-probability per symbol, unseen 3-gram and 4-gram share."""
        dense, sparse = self._lm_dense, self._lm_sparse
        counts = [[float(dense[n][g]) if g >= 0 else 0.0 for g in grams[n]] for n in range(3)]
        counts.append([float(sparse.get(g)) if g >= 0 else 0.0 for g in grams[3]])
        base = self.lm_total + N_CODES
        prob = [(c + 1.0) / base for c in counts[0][1:]]
        for n in range(2, LM_ORDER + 1):
            gram_counts, ctx = counts[n - 1], counts[n - 2]
            for g, count in enumerate(gram_counts):
                t = g + n - 2
                prob[t] = (count + LM_K * prob[t]) / (ctx[g] + LM_K)
        total, low, valid = 0.0, 0.0, 0
        for code, p in zip(codes[1:], prob, strict=True):
            if code == PAD:
                continue
            logp = math.log(min(max(p, _LOG_FLOOR), 1.0))
            total += logp
            low = min(low, logp)
            valid += 1
        out = [total / max(valid, 1), low]
        for n in (3, 4):
            ids = grams[n - 1]
            inner = sum(1 for g in ids if g >= 0)
            unseen = sum(1 for g, c in zip(ids, counts[n - 1], strict=True) if g >= 0 and c == 0)
            out.append(unseen / max(inner, 1) if inner > 0 else 0.0)
        return out

    def lexical(self, codes: list[int], grams: list[list[int]]) -> list[float]:
        """The dense features of one encoded label, in ``LEXICAL_NAMES`` order."""
        inner = codes[1:]
        length = float(sum(1 for c in codes if c not in (PAD, BOS, EOS)))
        safe_len = max(length, 1.0)
        digits = sum(1 for c in inner if c in DIGIT_CODES)
        letters = sum(1 for c in inner if c in LETTER_CODES)
        vowels = sum(1 for c in inner if c in VOWEL_CODES)
        switches = sum(
            1 for a, b in zip(inner, inner[1:], strict=False)
            if (b in DIGIT_CODES and a in LETTER_CODES) or (b in LETTER_CODES and a in DIGIT_CODES)
        )
        hist = [0] * N_CODES
        for c in codes:
            hist[c] += 1
        terms = []
        for c in _ALPHABET_CODES:
            share = hist[c] / safe_len
            terms.append(share * math.log2(share) if share > 0 else 0.0)
        entropy = -_pairwise_sum(terms)
        distinct = sum(1 for c in _ALPHABET_CODES if hist[c])
        hex_only = sum(hist[c] for c in _NON_HEX) == 0 and length >= 8
        return [
            length,
            float(digits),
            digits / safe_len,
            float(sum(1 for c in inner if c == HYPHEN_CODE)),
            vowels / max(letters, 1) if letters > 0 else 0.0,
            float(_max_run(inner, CONSONANT_CODES)),
            float(_max_run(inner, VOWEL_CODES)),
            float(_max_run(inner, DIGIT_CODES)),
            float(switches),
            entropy,
            distinct / safe_len,
            1.0 if hex_only else 0.0,
            *self._lm_features(codes, grams),
        ]

    def label_logit(self, label: str, tld: str) -> float:
        """The logit of one label: bias + n-grams + lexical bins + TLD prior."""
        codes = [BOS, *(CODE_OF[b] if b < 128 else OTHER for b in map(ord, label)), EOS]
        width = len(codes)
        # exact n-gram ids by start position; -1 where the n-gram runs into padding
        grams: list[list[int]] = [[c if c != PAD else -1 for c in codes]]
        ids = list(codes)
        for n in range(2, MAX_N + 1):
            ids = [ids[j] * N_CODES + codes[j + n - 1] for j in range(width - n + 1)]
            grams.append([g if codes[j + n - 1] != PAD else -1 for j, g in enumerate(ids)])
        ngram = self._ngram_sum(grams)
        features = self.lexical(codes, grams)
        lex = _pairwise_sum(
            [w[bisect_right(edges, value)]
             for w, edges, value in zip(self.lex_w, self.lex_edges, features, strict=True)],
            f32=True,
        )
        tld_w = self.tld_w[self.tld_index.get(tld, len(self.tld_w) - 1)] if tld else 0.0
        # numpy adds the (weakly typed) bias to float32 arrays: the logit is float32 too
        f32 = _f32
        return f32(f32(f32(f32(self.bias) + ngram) + lex) + tld_w)

    # -- names ---------------------------------------------------------------------------

    def score_name(self, name: domains.DomainName | None) -> float:
        """One parsed name's score (None or a skipped name: 0)."""
        if name is None or name.skip:
            return 0.0
        registered = name.registered_label
        tld = "" if name.single_label else name.tld
        best = 0.0
        for label in name.scored:
            logit = max(-40.0, min(40.0, self.label_logit(label, tld)))
            prob = 1.0 / (1.0 + math.exp(-logit))
            weight = 1.0 if name.single_label or label == registered else self.sub_label_factor
            best = max(best, prob * weight)
        return best

    def score_parsed(self, parsed: Sequence[domains.DomainName | None]) -> list[float]:
        """Scores of already parsed names (None = invalid, scores 0)."""
        return [self.score_name(name) for name in parsed]

    def score(self, names: Sequence[str]) -> list[float]:
        """Scores in [0, 1] for query names as seen on the wire or typed by a person."""
        return self.score_parsed([domains.parse(name) for name in names])


def _arrays(path: Path) -> dict[str, NpyArray]:
    try:
        return read_npz(path)
    except NpzFormatError as exc:
        raise ModelFormatError(f"{exc}; rebuild it with `make dga-model`") from exc


def from_file(path: str | Path) -> ScalarModel:
    """A model read from an artefact file."""
    return ScalarModel(read_artefact(path, _arrays))


@lru_cache(maxsize=1)
def load_scalar_model() -> ScalarModel:
    """The model shipped in the package, loaded once per process."""
    return ScalarModel(read_shipped(_arrays))

"""Character features of DNS labels, computed in numpy for whole batches.

One code path serves training (scripts/train_dga.py) and batch scoring (``model``). The
detection process scores one name at a time with ``scalar``, a plain-Python copy of these
features; tests/unit/test_dga_scalar.py requires the two to agree to the last bit, so the
shipped model never sees features computed differently from the ones it was trained on.

A label is encoded as ``^label$`` over a 42-symbol alphabet (0 is padding). Features:

- hashed character n-grams (n = 1..5): an n-gram's exact integer id (base 42, < 2**31) is
  mixed into a table of ``2**bits`` weights;
- dense lexical features (length, digits, hyphens, vowel share, runs, entropy, ...);
- a character language model of benign names (order 4, interpolated counts): mean and
  minimum log-probability per character, and the share of 3- and 4-grams never seen in
  benign names. Random strings are improbable under it even when the n-gram weights have
  never seen their n-grams, which is what makes it generalise to unseen families.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from otelpeers.detect.dga.codes import (  # noqa: F401  (ALPHABET, MAX_N: re-exported)
    ALPHABET,
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
)


def _flags(codes: frozenset[int]) -> np.ndarray:
    out = np.zeros(N_CODES, dtype=bool)
    out[sorted(codes)] = True
    return out


_LUT = np.array(CODE_OF, dtype=np.uint8)
_IS_DIGIT = _flags(DIGIT_CODES)
_IS_LETTER = _flags(LETTER_CODES)
_IS_VOWEL = _flags(VOWEL_CODES)
_IS_CONSONANT = _flags(CONSONANT_CODES)
_IS_HYPHEN = _flags(frozenset({HYPHEN_CODE}))
_IS_HEX = _flags(HEX_CODES)
_OFFSETS = list(NGRAM_OFFSETS)
_GOLDEN = np.uint64(GOLDEN)


def encode(labels: Sequence[str]) -> np.ndarray:
    """``^label$`` as codes, shape (N, max_len + 2), zero padded. Labels must be ASCII."""
    if not labels:
        return np.zeros((0, 2), dtype=np.uint8)
    width = max(len(label) for label in labels) + 2
    text = "".join(f"^{label}$".ljust(width, "\0") for label in labels)
    raw = np.frombuffer(text.encode("ascii", "replace"), dtype=np.uint8)
    return _LUT[raw].reshape(len(labels), width)


def ngram_ids(codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact ids (int64) of every n-gram position, and which positions are inside the label."""
    rows, width = codes.shape
    if width < n:
        return np.zeros((rows, 0), dtype=np.int64), np.zeros((rows, 0), dtype=bool)
    span = width - n + 1
    ids = codes[:, :span].astype(np.int64)
    for k in range(1, n):
        ids = ids * N_CODES + codes[:, k : k + span]
    valid = codes[:, n - 1 :] != PAD
    return ids, valid


def hashed_ngrams(codes: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Table indices of all 1..5-grams (N, K) and their validity mask (N, K)."""
    parts, masks = [], []
    shift = np.uint64(64 - bits)
    for n in range(1, MAX_N + 1):
        ids, valid = ngram_ids(codes, n)
        mixed = (ids + _OFFSETS[n - 1]).astype(np.uint64) * _GOLDEN
        parts.append((mixed >> shift).astype(np.int64))
        masks.append(valid)
    return np.concatenate(parts, axis=1), np.concatenate(masks, axis=1)


def _max_run(flags: np.ndarray) -> np.ndarray:
    run = np.zeros(flags.shape[0], dtype=np.int32)
    best = np.zeros_like(run)
    for col in range(flags.shape[1]):
        run = (run + 1) * flags[:, col]
        np.maximum(best, run, out=best)
    return best


def row_sum(values: np.ndarray) -> np.ndarray:
    """Per-row sum, added left to right.

    numpy's pairwise ``sum`` groups terms by the array's width, so a label's score would
    change in the last bits with the longest label of its batch; trailing zero padding added
    in order leaves the sum exactly unchanged.
    """
    columns = np.asfortranarray(values)
    out = np.zeros(values.shape[0], dtype=values.dtype)
    for col in range(values.shape[1]):
        out += columns[:, col]
    return out


def own_counts(ids: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """How often each position's id occurs in its own row (for leave-one-out counts)."""
    same = ids[:, :, None] == ids[:, None, :]
    same &= valid[:, None, :]
    return same.sum(axis=2)


class SparseCounts:
    """A count table as its sorted non-zero ids and their counts.

    The order-4 table has 42**4 entries (12 MB as uint32) of which benign names use under
    5%; kept dense it was a quarter of the detection process's memory. Lookups give the same
    counts as the dense table.
    """

    def __init__(self, dense: np.ndarray) -> None:
        self.size = int(dense.shape[0])
        self.keys = np.flatnonzero(dense).astype(np.int64)
        self.values = np.asarray(dense[self.keys])

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Counts of ``ids`` (any shape), as float64; ids absent from the table count 0."""
        if not len(self.keys):
            return np.zeros(ids.shape, dtype=np.float64)
        pos = np.minimum(np.searchsorted(self.keys, ids), len(self.keys) - 1)
        return np.where(self.keys[pos] == ids, self.values[pos], 0).astype(np.float64)

    def dense(self) -> np.ndarray:
        out = np.zeros(self.size, dtype=self.values.dtype)
        out[self.keys] = self.values
        return out


SPARSE_ABOVE = 1 << 20  # tables with more entries are kept sparse: only order 4 (42**4)


class CharLM:
    """Order-4 character model of benign labels from exact n-gram counts (n = 1..4)."""

    def __init__(self, counts: Sequence[np.ndarray]) -> None:
        if len(counts) != LM_ORDER:
            raise ValueError(f"CharLM needs {LM_ORDER} count tables, got {len(counts)}")
        dense = [np.asarray(c) for c in counts]
        for n, table in enumerate(dense, start=1):
            if table.shape != (N_CODES**n,):
                raise ValueError(f"count table {n} has shape {table.shape}")
        self.total = float(dense[0].sum())
        self.tables: list[np.ndarray | SparseCounts] = [
            SparseCounts(t) if t.shape[0] > SPARSE_ABOVE else t for t in dense
        ]

    @property
    def counts(self) -> list[np.ndarray]:
        """The dense count tables (what the model artefact stores)."""
        return [t.dense() if isinstance(t, SparseCounts) else t for t in self.tables]

    @classmethod
    def fit(cls, labels: Sequence[str], chunk: int = 50_000) -> CharLM:
        counts = [np.zeros(N_CODES**n, dtype=np.int64) for n in range(1, LM_ORDER + 1)]
        for start in range(0, len(labels), chunk):
            codes = encode(labels[start : start + chunk])
            for n in range(1, LM_ORDER + 1):
                ids, valid = ngram_ids(codes, n)
                counts[n - 1] += np.bincount(ids[valid], minlength=N_CODES**n)
        # uint32 keeps the shipped table small; no real count comes near the limit.
        return cls([np.minimum(c, 2**32 - 1).astype(np.uint32) for c in counts])

    def _lookup(
        self, n: int, codes: np.ndarray, leave_one_out: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        ids, valid = ngram_ids(codes, n)
        table = self.tables[n - 1]
        if isinstance(table, SparseCounts):
            found = table.take(ids)
        else:
            found = table[ids].astype(np.float64)
        if leave_one_out:
            found -= own_counts(ids, valid)
            np.maximum(found, 0.0, out=found)
        return found, valid

    def features(self, codes: np.ndarray, leave_one_out: bool = False) -> np.ndarray:
        """(N, 4): mean and min log-probability per symbol, unseen 3-gram and 4-gram share.

        ``leave_one_out`` removes each label's own n-grams from the counts: training labels
        then look like labels the model has never seen, as they will at run time.
        """
        rows, width = codes.shape
        targets = width - 1  # predicted symbols: positions 1..width-1
        c = [self._lookup(n, codes, leave_one_out) for n in range(1, LM_ORDER + 1)]
        total = self.total - (codes != PAD).sum(axis=1, keepdims=True) * leave_one_out
        # order 1 at target j is c[0] at position j
        prob = (c[0][0][:, 1:] + 1.0) / (total + N_CODES)
        for n in range(2, LM_ORDER + 1):
            grams, _ = c[n - 1]  # n-gram starting at j-n+1 predicts position j
            ctx, _ = c[n - 2]  # its (n-1)-gram context starts at the same place
            first = n - 1  # first target with a full n-gram
            upper = np.array(prob)
            num = grams + LM_K * prob[:, first - 1 :]
            den = ctx[:, : grams.shape[1]] + LM_K
            upper[:, first - 1 :] = num / den
            prob = upper
        valid = codes[:, 1:] != PAD
        logp = np.log(np.clip(prob, 1e-12, 1.0))
        count = np.maximum(valid.sum(axis=1), 1)
        mean = row_sum(np.where(valid, logp, 0.0)) / count
        low = np.where(valid, logp, 0.0).min(axis=1)
        out = np.empty((rows, 4), dtype=np.float64)
        out[:, 0] = mean
        out[:, 1] = low
        for col, n in ((2, 3), (3, 4)):
            grams, gvalid = c[n - 1]
            inner = gvalid.sum(axis=1)
            unseen = ((grams == 0) & gvalid).sum(axis=1)
            out[:, col] = np.where(inner > 0, unseen / np.maximum(inner, 1), 0.0)
        del targets
        return out


def lexical(codes: np.ndarray, lm: CharLM, leave_one_out: bool = False) -> np.ndarray:
    """Dense features (N, len(LEXICAL_NAMES)) as float64."""
    rows = codes.shape[0]
    inner = codes[:, 1:]
    length = ((codes != PAD) & (codes != BOS) & (codes != EOS)).sum(axis=1).astype(np.float64)
    safe_len = np.maximum(length, 1.0)
    digit = _IS_DIGIT[inner]
    letter = _IS_LETTER[inner]
    digits = digit.sum(axis=1)
    letters = letter.sum(axis=1)
    vowels = _IS_VOWEL[inner].sum(axis=1)
    switches = (
        (digit[:, 1:] & letter[:, :-1]) | (letter[:, 1:] & digit[:, :-1])
    ).sum(axis=1)
    hist = np.bincount(
        (codes.astype(np.int64) + np.arange(rows)[:, None] * N_CODES).ravel(),
        minlength=rows * N_CODES,
    ).reshape(rows, N_CODES)[:, 1:39]
    share = hist / safe_len[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(share > 0, share * np.log2(share), 0.0).sum(axis=1)
    distinct = (hist > 0).sum(axis=1)
    hex_only = (hist[:, ~_IS_HEX[1:39]].sum(axis=1) == 0) & (length >= 8)
    out = np.empty((rows, len(LEXICAL_NAMES)), dtype=np.float64)
    out[:, 0] = length
    out[:, 1] = digits
    out[:, 2] = digits / safe_len
    out[:, 3] = _IS_HYPHEN[inner].sum(axis=1)
    out[:, 4] = np.where(letters > 0, vowels / np.maximum(letters, 1), 0.0)
    out[:, 5] = _max_run(_IS_CONSONANT[inner])
    out[:, 6] = _max_run(_IS_VOWEL[inner])
    out[:, 7] = _max_run(digit)
    out[:, 8] = switches
    out[:, 9] = entropy
    out[:, 10] = distinct / safe_len
    out[:, 11] = hex_only
    out[:, 12:16] = lm.features(codes, leave_one_out)
    return out


def bin_index(values: np.ndarray, edges: Sequence[np.ndarray]) -> np.ndarray:
    """Per feature, the bin of each value (N, F) given each feature's sorted inner edges."""
    out = np.empty(values.shape, dtype=np.int64)
    for col, cut in enumerate(edges):
        out[:, col] = np.searchsorted(cut, values[:, col], side="right")
    return out

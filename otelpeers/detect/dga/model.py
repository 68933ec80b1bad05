"""The shipped per-domain DGA model: load once, score batches of names in numpy.

The model is a logistic regression over hashed character 1..5-grams, binned lexical features
(including a benign character language model) and a TLD prior, trained by
``scripts/train_dga.py``. Its artefact, ``model.npz`` next to this file, holds every table.

A name's score combines its labels (see ``domains``): the label left of the public suffix (or
of a dynamic-DNS parent) decides; other labels left of it count at ``sub_label_factor`` of
their score, because random-looking subdomains of a real domain are common (and are what the
``dns_tunnel`` rule looks at). Names under CDN, cloud, reputation-service or special-use
parents, blank lines and invalid names score 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from otelpeers.detect.dga import domains
from otelpeers.detect.dga.codes import (  # noqa: F401  (re-exported)
    ARRAY_KEYS,
    ARTEFACT_NAME,
    FORMAT_VERSION,
    ModelFormatError,
    check_artefact,
    read_artefact,
    read_shipped,
)
from otelpeers.detect.dga.features import (
    LEXICAL_NAMES,
    CharLM,
    bin_index,
    encode,
    hashed_ngrams,
    lexical,
    row_sum,
)

BATCH = 4096  # names per score_lines batch
CHUNK = 1024  # labels per numpy pass


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))


class DgaModel:
    """Scores query names: 0 = looks like a human-chosen name, 1 = looks generated."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        version = arrays.get("format_version")
        check_artefact(list(arrays), None if version is None else int(version))
        self.bits = int(arrays["bits"])
        self.bias = float(arrays["bias"])
        self.ngram_w = np.asarray(arrays["ngram_w"], dtype=np.float32)
        if self.ngram_w.shape != (1 << self.bits,):
            raise ModelFormatError(f"n-gram table has shape {self.ngram_w.shape}")
        edges = np.asarray(arrays["lex_edges"], dtype=np.float64)
        self.lex_edges = [row[np.isfinite(row)] for row in edges]
        self.lex_w = np.asarray(arrays["lex_w"], dtype=np.float32)
        if self.lex_w.shape[0] != len(LEXICAL_NAMES):
            raise ModelFormatError(f"lexical weights have shape {self.lex_w.shape}")
        names = [str(t) for t in arrays["tld_names"]]
        self.tld_index = {tld: i for i, tld in enumerate(names)}
        self.tld_w = np.asarray(arrays["tld_w"], dtype=np.float32)  # last entry: any other
        self.lm = CharLM([arrays["lm_c1"], arrays["lm_c2"], arrays["lm_c3"], arrays["lm_c4"]])
        self.sub_label_factor = float(arrays["sub_label_factor"])
        self.threshold_1pct = float(arrays["threshold_1pct"])
        self._rows = np.arange(len(LEXICAL_NAMES))

    # -- labels --------------------------------------------------------------------------

    def _tld_ids(self, tlds: Sequence[str]) -> np.ndarray:
        other = len(self.tld_w) - 1
        return np.fromiter((self.tld_index.get(t, other) for t in tlds), np.int64, len(tlds))

    def label_parts(self, labels: Sequence[str], tlds: Sequence[str]) -> dict[str, np.ndarray]:
        """The additive parts of each label's logit: n-grams, lexical, TLD (and bias)."""
        codes = encode(labels)
        idx, valid = hashed_ngrams(codes, self.bits)
        ngram = row_sum(self.ngram_w[idx] * valid)
        lex_values = lexical(codes, self.lm)
        bins = bin_index(lex_values, self.lex_edges)
        lex = self.lex_w[self._rows[None, :], bins].sum(axis=1)
        tld_ids = self._tld_ids(tlds)
        tld = np.where(np.array([t != "" for t in tlds]), self.tld_w[tld_ids], 0.0)
        return {"ngram": ngram, "lexical": lex, "tld": tld, "lex_values": lex_values}

    def label_logits(self, labels: Sequence[str], tlds: Sequence[str]) -> np.ndarray:
        out = np.empty(len(labels), dtype=np.float64)
        # Chunks of similar length: the arrays are as wide as the longest label in a chunk.
        order = sorted(range(len(labels)), key=lambda i: len(labels[i]))
        for start in range(0, len(order), CHUNK):
            idx = order[start : start + CHUNK]
            parts = self.label_parts([labels[i] for i in idx], [tlds[i] for i in idx])
            out[idx] = self.bias + parts["ngram"] + parts["lexical"] + parts["tld"]
        return out

    # -- names ---------------------------------------------------------------------------

    def score_parsed(self, parsed: Sequence[domains.DomainName | None]) -> np.ndarray:
        """Scores of already parsed names (None = invalid, scores 0)."""
        labels: list[str] = []
        tlds: list[str] = []
        owner: list[int] = []
        primary: list[bool] = []
        for i, name in enumerate(parsed):
            if name is None or name.skip:
                continue
            registered = name.registered_label
            tld = "" if name.single_label else name.tld
            for label in name.scored:
                labels.append(label)
                tlds.append(tld)
                owner.append(i)
                primary.append(name.single_label or label == registered)
        scores = np.zeros(len(parsed), dtype=np.float64)
        if not labels:
            return scores
        probs = _sigmoid(self.label_logits(labels, tlds))
        weight = np.where(np.array(primary), 1.0, self.sub_label_factor)
        np.maximum.at(scores, np.array(owner, dtype=np.int64), probs * weight)
        return scores

    def score(self, names: Sequence[str]) -> np.ndarray:
        """Scores in [0, 1] for query names as seen on the wire or typed by a person."""
        return self.score_parsed([domains.parse(name) for name in names])

    def explain(self, name: str) -> dict[str, Any]:
        """What decided a name's score: its split, each scored label's parts and features."""
        parsed = domains.parse(name)
        if parsed is None:
            return {"name": name, "valid": False, "score": 0.0, "reason": "invalid DNS name"}
        score = float(self.score_parsed([parsed])[0])
        out: dict[str, Any] = {
            "name": parsed.name,
            "valid": True,
            "score": round(score, 4),
            "registered_domain": parsed.registered,
            "suffix": parsed.suffix,
            "tld": parsed.tld,
            "dynamic_dns": parsed.dynamic_dns,
            "single_label": parsed.single_label,
            "punycode": parsed.punycode,
            "threshold_1pct_fpr": round(self.threshold_1pct, 4),
        }
        if parsed.skip:
            out["reason"] = parsed.skip
            if parsed.parent:
                out["parent"] = parsed.parent
            return out
        tld = "" if parsed.single_label else parsed.tld
        labels = list(parsed.scored)
        parts = self.label_parts(labels, [tld] * len(labels))
        explained = []
        for i, label in enumerate(labels):
            logit = self.bias + parts["ngram"][i] + parts["lexical"][i] + parts["tld"][i]
            lex = dict(zip(LEXICAL_NAMES, (float(v) for v in parts["lex_values"][i]), strict=True))
            explained.append(
                {
                    "label": label,
                    "registered": label == parsed.registered_label,
                    "score": round(1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, logit)))), 4),
                    "logit": {
                        "bias": round(self.bias, 3),
                        "ngrams": round(float(parts["ngram"][i]), 3),
                        "lexical": round(float(parts["lexical"][i]), 3),
                        "tld": round(float(parts["tld"][i]), 3),
                    },
                    "features": {k: round(v, 3) for k, v in lex.items()},
                }
            )
        out["labels"] = explained
        return out


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:  # no pickles
        return {key: data[key] for key in data.files}


def from_file(path: str | Path) -> DgaModel:
    """A model read from an artefact file."""
    return DgaModel(read_artefact(path, _arrays))


@lru_cache(maxsize=1)
def load_model() -> DgaModel:
    """The model shipped in the package, loaded once per process."""
    return DgaModel(read_shipped(_arrays))


def score_lines(lines: Iterable[str], model: DgaModel | None = None) -> Iterator[str]:
    """``<score>\\t<domain>`` per input line, in order; the domain is echoed as given.

    Blank or invalid lines score 0. Lines are scored in batches, so memory stays bounded on
    endless input while the per-name Python work stays small.
    """
    model = model or load_model()
    batch: list[str] = []
    for line in lines:
        batch.append(line.rstrip("\r\n"))
        if len(batch) >= BATCH:
            yield from _format(model, batch)
            batch = []
    if batch:
        yield from _format(model, batch)


def _format(model: DgaModel, batch: list[str]) -> Iterator[str]:
    scores = model.score(batch)
    for score, text in zip(scores, batch, strict=True):
        yield f"{score:.4f}\t{text}"

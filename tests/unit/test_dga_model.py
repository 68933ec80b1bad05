"""The shipped DGA domain model: loading, scores that can be wrong, explain, score_lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from otelpeers.detect.dga import load_model, score_lines
from otelpeers.detect.dga.model import (
    ARRAY_KEYS,
    BATCH,
    DgaModel,
    ModelFormatError,
    from_file,
)

BENIGN = [
    "google.com", "wikipedia.org", "github.com", "debian.org", "bbc.co.uk", "stackoverflow.com",
    "www.nytimes.com", "mail.yahoo.co.jp", "spiegel.de", "weather.com", "python.org",
    "openstreetmap.org",
]
GENERATED = [
    "xkqjzvbwtplh.com", "q8z3k1x9v7m2w4.net", "a9f3e1c7b5d2e8f4a1.info", "zxqvbnmlkjhgfd.ru",
    "mjqwntiwmtyazz.org", "kwpxzrtvbnqj.biz",
]


@pytest.fixture(scope="module")
def model() -> DgaModel:
    return load_model()


def test_artefact_is_in_the_package_and_loaded_once(model: DgaModel) -> None:
    import otelpeers.detect.dga as pkg

    artefact = Path(pkg.__file__).with_name("model.npz")
    assert artefact.is_file() and artefact.stat().st_size < 3_000_000
    assert load_model() is model


def test_generated_names_outscore_ordinary_ones(model: DgaModel) -> None:
    benign = model.score(BENIGN)
    generated = model.score(GENERATED)
    assert benign.dtype == np.float64 and ((benign >= 0) & (benign <= 1)).all()
    assert generated.min() > benign.max()
    assert (generated > model.threshold_1pct).all()
    assert (benign < model.threshold_1pct).all()
    assert 0.0 < model.threshold_1pct < 1.0


def test_blank_invalid_and_allow_listed_names_score_zero(model: DgaModel) -> None:
    scores = model.score(["", "   ", "a..b", "-x.com", "x" * 70 + ".com",
                          "d3k8j2h1l0xyzq.cloudfront.net", "4.3.2.1.zen.spamhaus.org",
                          "printer.corp.example", "com.", "xn--bcher-kva.de"])
    assert (scores == 0).all()


def test_subdomains_count_less_than_the_registered_label(model: DgaModel) -> None:
    plain, sub, reg = model.score(
        ["www.google.com", "xkqjzvbwtplh.google.com", "xkqjzvbwtplh.com"]
    )
    assert plain < sub <= model.sub_label_factor < reg


def test_dynamic_dns_label_is_scored_as_registered(model: DgaModel) -> None:
    dyn, plain = model.score(["xkqjzvbwtplh.duckdns.org", "myhomeserver.duckdns.org"])
    assert dyn > model.threshold_1pct > plain


def test_case_and_trailing_dot_do_not_matter(model: DgaModel) -> None:
    a, b = model.score(["XKQJZVBWTPLH.COM.", "xkqjzvbwtplh.com"])
    assert a == b


def test_explain_names_what_decided(model: DgaModel) -> None:
    ex = model.explain("cdn.xkqjzvbwtplh.com")
    assert ex["valid"] and ex["registered_domain"] == "xkqjzvbwtplh.com"
    assert [lab["label"] for lab in ex["labels"]] == ["xkqjzvbwtplh", "cdn"]
    top = ex["labels"][0]
    assert top["registered"] and top["score"] == pytest.approx(ex["score"], abs=1e-3)
    assert set(top["logit"]) == {"bias", "ngrams", "lexical", "tld"}
    assert top["features"]["length"] == 12
    assert top["features"]["lm_mean_logp"] < model.explain("wikipedia.org")["labels"][0][
        "features"]["lm_mean_logp"]
    assert model.explain("a..b") == {"name": "a..b", "valid": False, "score": 0.0,
                                     "reason": "invalid DNS name"}
    skipped = model.explain("x1.cloudfront.net")
    assert skipped["reason"] == "generated_label_parent" and skipped["parent"] == "cloudfront.net"


def test_score_lines_echoes_every_line_in_order(model: DgaModel) -> None:
    lines = ["google.com\n", "\n", "not a domain\n", "XKQJZVBWTPLH.COM.\r\n", "  padded.org  "]
    out = list(score_lines(lines))
    assert len(out) == len(lines)
    pairs = [line.split("\t", 1) for line in out]
    assert [p[1] for p in pairs] == ["google.com", "", "not a domain", "XKQJZVBWTPLH.COM.",
                                     "  padded.org  "]
    scores = [float(p[0]) for p in pairs]
    assert scores[1] == 0.0 and scores[2] == 0.0
    assert scores[3] > model.threshold_1pct > scores[0]
    assert all(len(p[0]) == 6 for p in pairs)  # fixed "0.0000" format


def test_score_lines_keeps_order_across_batches(model: DgaModel) -> None:
    names = [f"site{i}.com" if i % 2 else "xkqjzvbwtplh.com" for i in range(BATCH * 2 + 7)]
    out = list(score_lines(iter(names), model))
    assert [line.split("\t", 1)[1] for line in out] == names
    high = [float(line.split("\t")[0]) > model.threshold_1pct for line in out]
    assert high[0] and not high[1] and high[-1 - (len(names) % 2 == 0)]


def test_broken_artefacts_fail_clearly(tmp_path: Path, model: DgaModel) -> None:
    with pytest.raises(ModelFormatError, match="make dga-model"):
        from_file(tmp_path / "missing.npz")
    with np.load(Path(__file__).parents[2] / "otelpeers/detect/dga/model.npz") as data:
        arrays = {k: data[k] for k in data.files}
    assert set(ARRAY_KEYS) <= set(arrays)
    partial = dict(arrays)
    del partial["ngram_w"]
    with pytest.raises(ModelFormatError, match="ngram_w"):
        DgaModel(partial)
    old = dict(arrays, format_version=np.array(0))
    with pytest.raises(ModelFormatError, match="format 0"):
        DgaModel(old)


def test_a_name_scores_the_same_alone_and_in_any_batch(model: DgaModel) -> None:
    names = ["xkqjzvbwtplh.com", "wikipedia.org", "ab.io"]
    alone = [model.score([n])[0] for n in names]
    long_batch = model.score(names + ["a" * 60 + ".com", "b" * 40 + ".net"])[:3]
    assert alone == long_batch.tolist()

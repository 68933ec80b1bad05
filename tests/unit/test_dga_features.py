"""Character features shared by training and scoring."""

from __future__ import annotations

import numpy as np
import pytest

from otelpeers.detect.dga.features import (
    BOS,
    EOS,
    LEXICAL_NAMES,
    MAX_N,
    N_CODES,
    PAD,
    CharLM,
    encode,
    hashed_ngrams,
    lexical,
    ngram_ids,
)

WORDS = ["example", "weather", "openstreet", "mapping", "library", "garden", "station",
         "network", "central", "harbour", "museum", "records"]


def test_encode_marks_and_pads() -> None:
    codes = encode(["ab", "a-0_"])
    assert codes.shape == (2, 6)
    assert codes[0].tolist() == [BOS, 1, 2, EOS, PAD, PAD]
    assert codes[1, 0] == BOS and codes[1, 5] == EOS
    assert codes.max() < N_CODES


def test_ngram_ids_are_exact_and_masked() -> None:
    codes = encode(["abab", "b"])
    ids, valid = ngram_ids(codes, 2)
    # ^a ab ba ab b$ : "ab" twice with the same id, and nothing past "$"
    assert valid[0].sum() == 5 and valid[1].sum() == 2
    assert ids[0, 1] == ids[0, 3] and ids[0, 1] != ids[0, 2]
    assert len(set(ids[0][valid[0]].tolist())) == 4


def test_hashed_ngrams_stay_in_the_table() -> None:
    idx, valid = hashed_ngrams(encode(WORDS), bits=10)
    assert idx.min() >= 0 and idx.max() < 1 << 10
    lengths = np.array([len(w) + 2 for w in WORDS])
    assert (valid.sum(axis=1) == sum(np.maximum(lengths - n + 1, 0) for n in
                                     range(1, MAX_N + 1))).all()


def test_leave_one_out_equals_a_model_that_never_saw_the_label() -> None:
    lm = CharLM.fit(WORDS)
    codes = encode(["openstreet"])
    loo = lm.features(codes, leave_one_out=True)
    without = CharLM.fit([w for w in WORDS if w != "openstreet"]).features(codes)
    np.testing.assert_allclose(loo, without, rtol=1e-9)
    # and the label itself is more probable when it was counted
    assert lm.features(codes)[0, 0] > loo[0, 0]


def test_language_model_prefers_words_to_noise() -> None:
    lm = CharLM.fit(WORDS * 3)
    feats = lm.features(encode(["gardens", "xqzkvwp"]))
    assert feats[0, 0] > feats[1, 0]  # mean log-probability
    assert feats[1, 3] == 1.0 and feats[0, 3] < 1.0  # unseen 4-gram share


def test_lexical_values() -> None:
    lm = CharLM.fit(WORDS)
    values = lexical(encode(["abc123xyz", "deadbeefcafe"]), lm)
    row = dict(zip(LEXICAL_NAMES, values[0], strict=True))
    assert row["length"] == 9 and row["digits"] == 3
    assert row["letter_digit_switches"] == 2 and row["max_digit_run"] == 3
    assert row["hex_only"] == 0
    assert dict(zip(LEXICAL_NAMES, values[1], strict=True))["hex_only"] == 1


def test_char_lm_rejects_bad_tables() -> None:
    with pytest.raises(ValueError, match="4 count tables"):
        CharLM([np.zeros(N_CODES)])


def test_sparse_order4_table_gives_the_dense_tables_features(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The order-4 counts are kept as their non-zero ids (12 MB dense): every feature, with
    leave-one-out too, equals the dense table's, and the artefact's dense tables come back."""
    from otelpeers.detect.dga import features

    rng = np.random.default_rng(7)
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789-")
    noise = ["".join(rng.choice(alphabet, size=rng.integers(1, 30))) for _ in range(300)]
    lm = CharLM.fit(WORDS * 2 + noise[:100])
    assert isinstance(lm.tables[3], features.SparseCounts)
    assert not isinstance(lm.tables[2], features.SparseCounts)
    with monkeypatch.context() as m:
        m.setattr(features, "SPARSE_ABOVE", N_CODES**4)  # the same counts, all dense
        dense = CharLM(lm.counts)
    assert isinstance(dense.tables[3], np.ndarray) and dense.tables[3].shape == (N_CODES**4,)
    codes = encode(WORDS + noise)
    for loo in (False, True):
        assert np.array_equal(lm.features(codes, loo), dense.features(codes, loo))
    again = CharLM(lm.counts)
    assert all(np.array_equal(a, b) for a, b in zip(again.counts, lm.counts, strict=True))
    empty = features.SparseCounts(np.zeros(N_CODES**4, dtype=np.uint32))
    assert not empty.take(np.array([[0, 5, N_CODES**4 - 1]])).any()

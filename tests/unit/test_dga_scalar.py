"""The detection process's DGA scorer (plain Python) against the numpy model it mirrors."""

from __future__ import annotations

import io
import random
import string
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from otelpeers.detect.dga import domains, load_model
from otelpeers.detect.dga.codes import ARRAY_KEYS, ModelFormatError
from otelpeers.detect.dga.model import DgaModel
from otelpeers.detect.dga.npz import NpzFormatError, parse_npy, read_npz
from otelpeers.detect.dga.scalar import ScalarModel, from_file, load_scalar_model

WORDS = ["weather", "garden", "station", "network", "mail", "shop", "cloud", "news", "bank",
         "api", "cdn", "static", "login", "portal", "media", "data", "app", "secure", "my"]
TLDS = ["com", "net", "org", "info", "ru", "de", "co.uk", "xyz", "top", "io", "gov.in", "biz",
        "duckdns.org", "no-such-tld"]


def varied_names(seed: int, count: int) -> list[str]:
    """Names of every shape the features care about: words, random letters, hex, digits,
    hyphens, underscores, sub-domains, odd characters, long and one-letter labels."""
    rng = random.Random(seed)
    alphabets = [string.ascii_lowercase, "0123456789abcdef", string.ascii_lowercase + "0123456789",
                 "aeiou", "bcdfghjklmnpqrstvwxz", string.ascii_lowercase + "-_", "x1"]
    names = []
    for _ in range(count):
        labels = []
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            kind = rng.random()
            if kind < 0.35:
                label = "".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
                if rng.random() < 0.3:
                    label += str(rng.randint(0, 999))
            elif kind < 0.9:
                label = "".join(rng.choice(rng.choice(alphabets))
                                for _ in range(rng.randint(1, 40)))
            else:  # characters outside the alphabet, upper case, non-ASCII
                label = "".join(rng.choice("aZ^$é.9-") for _ in range(rng.randint(1, 12)))
            labels.append(label.strip(".") or "a")
        names.append(".".join(labels + [rng.choice(TLDS)]))
    return names


@pytest.fixture(scope="module")
def pair() -> tuple[DgaModel, ScalarModel]:
    return load_model(), load_scalar_model()


def test_scores_are_the_numpy_models_to_the_last_bit_of_the_logit(
        pair: tuple[DgaModel, ScalarModel]) -> None:
    batch, scalar = pair
    names = varied_names(7, 3000)
    parsed = [domains.parse(n) for n in names]
    labels = [(label, "" if p.single_label else p.tld)
              for p in parsed if p is not None and not p.skip for label in p.scored]
    assert len(labels) > 2000  # the generator reaches the scorer, not only the skip paths
    want = batch.label_logits([lb for lb, _ in labels], [t for _, t in labels])
    got = [scalar.label_logit(lb, t) for lb, t in labels]
    assert [float(x) for x in want] == got
    # names: only the sigmoid's exp may differ (numpy's and libm's), by an ulp or so
    assert np.allclose(batch.score_parsed(parsed), scalar.score_parsed(parsed),
                       rtol=1e-14, atol=0.0)
    thr = scalar.threshold_1pct
    assert sum(s >= thr for s in scalar.score_parsed(parsed)) > 100  # both sides are covered


def test_lexical_features_match_including_the_language_model(
        pair: tuple[DgaModel, ScalarModel]) -> None:
    batch, scalar = pair
    labels = ["google", "xkqjzvbwtplh", "a", "0123abcdef4567", "my-shop_24", "aaaaaaaaaaaa"]
    parts = batch.label_parts(labels, [""] * len(labels))
    from otelpeers.detect.dga.codes import BOS, CODE_OF, EOS

    for i, label in enumerate(labels):
        codes = [BOS, *(CODE_OF[ord(c)] for c in label), EOS]
        grams = [codes]
        ids = list(codes)
        for n in range(2, 6):
            ids = [ids[j] * 42 + codes[j + n - 1] for j in range(len(codes) - n + 1)]
            grams.append(ids)
        assert scalar.lexical(codes, grams) == [float(v) for v in parts["lex_values"][i]]


def test_the_detection_process_never_imports_numpy() -> None:
    code = (
        "import sys\n"
        "from otelpeers.detect.engine import Actors, Engine, RuleContext\n"
        "from otelpeers.detect.rules import all_rules\n"
        "from otelpeers.detect.settings import DetectConfig\n"
        "import otelpeers.detect.remote\n"
        "from otelpeers.detect.dga.actor import DgaActorScorer\n"
        "c = DetectConfig()\n"
        "Engine(c, all_rules(), actors=Actors(describe_owner=lambda o: None),"
        " ctx=RuleContext(c, live=False))\n"
        "assert DgaActorScorer()._score('xkqjzvbwtplh.com')[1] > 0.9\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'numpy'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_reads_the_artefact_as_numpy_does() -> None:
    path = Path(domains.__file__).with_name("model.npz")
    ours = read_npz(path)
    with np.load(path, allow_pickle=False) as data:
        assert set(ours) == set(data.files) == set(ARRAY_KEYS)
        for key in data.files:
            want = data[key]
            assert ours[key].shape == want.shape, key
            assert list(ours[key].values) == want.ravel().tolist(), key


def _npz(arrays: dict[str, np.ndarray], tmp_path: Path) -> Path:
    path = tmp_path / "m.npz"
    np.savez(path, **arrays)
    return path


def test_bad_artefacts_fail_with_the_fix(tmp_path: Path) -> None:
    with np.load(Path(domains.__file__).with_name("model.npz")) as data:
        arrays = {k: data[k] for k in data.files}
    del arrays["lm_c4"]
    with pytest.raises(ModelFormatError, match="lacks lm_c4.*make dga-model"):
        from_file(_npz(arrays, tmp_path))
    arrays["lm_c4"] = np.zeros(3, dtype=np.uint32)
    with pytest.raises(ModelFormatError, match="count table 4 has shape"):
        from_file(_npz(arrays, tmp_path))
    arrays["lm_c4"] = np.zeros(42**4, dtype=np.complex64)
    with pytest.raises(ModelFormatError, match="dtype.*make dga-model"):
        from_file(_npz(arrays, tmp_path))
    with pytest.raises(ModelFormatError, match="missing"):
        from_file(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelFormatError, match="not an .npz"):
        from_file(tmp_path / "junk.npz")


def test_npy_headers_and_sizes_are_checked() -> None:
    buf = io.BytesIO()
    np.save(buf, np.arange(4, dtype=np.int32))
    raw = buf.getvalue()
    assert list(parse_npy(raw).values) == [0, 1, 2, 3]
    with pytest.raises(NpzFormatError, match="bad magic"):
        parse_npy(b"PK" + raw[2:])
    with pytest.raises(NpzFormatError, match="bytes of data"):
        parse_npy(raw[:-1])
    buf = io.BytesIO()
    np.save(buf, np.asfortranarray(np.zeros((2, 3), dtype=np.float64)))
    with pytest.raises(NpzFormatError, match="Fortran"):
        parse_npy(buf.getvalue())
    with pytest.raises(NpzFormatError, match="big-endian|dtype"):
        buf = io.BytesIO()
        np.save(buf, np.arange(3, dtype=">i4"))
        parse_npy(buf.getvalue())


def test_a_member_that_is_not_an_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("notes.txt", "hello")
    with pytest.raises(NpzFormatError, match="notes.txt"):
        read_npz(path)

"""scripts/train_dga.py on a tiny corpus written here (CI has no shared/ data)."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import random
import string
import sys
from pathlib import Path

import pytest

from otelpeers.detect.dga.model import DgaModel, from_file

ROOT = Path(__file__).resolve().parents[2]
WORDS = ["north", "river", "garden", "media", "cloud", "green", "city", "market", "travel",
         "health", "school", "music", "press", "world", "smart", "home", "data", "bank",
         "photo", "games", "sport", "food", "studio", "design", "energy", "light", "star"]


def _load_trainer():
    spec = importlib.util.spec_from_file_location("train_dga", ROOT / "scripts/train_dga.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_dga"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trainer():
    return _load_trainer()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    rng = random.Random(7)
    root = tmp_path_factory.mktemp("dga-corpus")
    benign = [f"{a}{b}.{rng.choice(['com', 'org', 'de', 'net'])}"
              for a, b in itertools.permutations(WORDS, 2)]
    rng.shuffle(benign)
    (root / "benign.txt").write_text("# comment\n" + "\n".join(benign[:600]) + "\n")
    rows = []
    for _ in range(150):
        rows.append("randa\t" + "".join(rng.choice(string.ascii_lowercase)
                                         for _ in range(rng.randint(10, 16))) + ".info")
        rows.append("hexa\t" + "".join(rng.choice("0123456789abcdef")
                                        for _ in range(16)) + ".biz")
    (root / "dga.tsv").write_text("\n".join(rows) + "\n")
    return root / "benign.txt", root / "dga.tsv"


def small(trainer, seed: int = 1):
    return trainer.Params(seed=seed, bits=12, lex_bins=6, synth_per_style=60, holdout=0.2)


def test_same_inputs_give_a_byte_identical_artefact(trainer, corpus, tmp_path) -> None:
    benign, dga = corpus
    paths = []
    for i in range(2):
        arrays = trainer.train(benign, dga, small(trainer))
        path = tmp_path / f"m{i}.npz"
        trainer.save(arrays, path)
        paths.append(path)
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert len(digests) == 1
    other = tmp_path / "other.npz"
    trainer.save(trainer.train(benign, dga, small(trainer, seed=2)), other)
    assert hashlib.sha256(other.read_bytes()).hexdigest() not in digests


def test_trained_model_loads_and_separates(trainer, corpus, tmp_path) -> None:
    benign, dga = corpus
    path = tmp_path / "m.npz"
    trainer.save(trainer.train(benign, dga, small(trainer)), path)
    model = from_file(path)
    assert isinstance(model, DgaModel) and model.bits == 12
    words, noise = model.score(["greenstudio.com", "marketnorth.org"]), model.score(
        ["qzxkvbwpjt.com", "8f3a9c0d1e7b6a52.net"])
    assert noise.min() > words.max()


def test_cli_rejects_missing_corpus(trainer, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        trainer.main([str(tmp_path / "nope.txt"), str(tmp_path / "nope.tsv"),
                      "-o", str(tmp_path / "m.npz")])
    assert "does not exist" in capsys.readouterr().err


def test_bad_dga_line_names_the_line(trainer, tmp_path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("fam\tname.com\nno-tab-here\n")
    with pytest.raises(SystemExit, match=r"bad.tsv:2"):
        trainer.read_dga(bad)

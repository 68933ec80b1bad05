"""What the DGA model's two implementations share, with no numpy: the symbol alphabet, the
feature names and the artefact's format.

``features``/``model`` compute in numpy for training and batch scoring; ``scalar`` scores one
name at a time in plain Python for the detection process. Both take their constants here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from importlib import resources
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-_"
N_CODES = 42  # 0 pad, 1..38 alphabet, 39 ^, 40 $, 41 other
PAD, BOS, EOS, OTHER = 0, 39, 40, 41
MAX_N = 5
LM_ORDER = 4
LM_K = 2.0  # interpolation weight of the lower order

# Byte -> symbol code (non-ASCII text is encoded with "replace", i.e. "?", which is OTHER).
CODE_OF: tuple[int, ...] = tuple(
    PAD if b == 0 else BOS if b == ord("^") else EOS if b == ord("$")
    else ALPHABET.index(chr(b)) + 1 if chr(b) in ALPHABET else OTHER
    for b in range(256)
)
DIGIT_CODES = frozenset(range(27, 37))
LETTER_CODES = frozenset(range(1, 27))
VOWEL_CODES = frozenset(CODE_OF[ord(c)] for c in "aeiou")
CONSONANT_CODES = LETTER_CODES - VOWEL_CODES
HYPHEN_CODE = CODE_OF[ord("-")]
HEX_CODES = frozenset(CODE_OF[ord(c)] for c in "0123456789abcdef")

# Offsets keep hashed n-gram ids of different n apart: sum of 42**k for k < n.
NGRAM_OFFSETS: tuple[int, ...] = tuple(sum(N_CODES**k for k in range(1, n + 1))
                                       for n in range(MAX_N + 1))
GOLDEN = 0x9E3779B97F4A7C15  # multiplicative hashing constant (2**64 / golden ratio)

LEXICAL_NAMES: tuple[str, ...] = (
    "length",
    "digits",
    "digit_share",
    "hyphens",
    "vowel_share",
    "max_consonant_run",
    "max_vowel_run",
    "max_digit_run",
    "letter_digit_switches",
    "entropy",
    "distinct_share",
    "hex_only",
    "lm_mean_logp",
    "lm_min_logp",
    "lm_unseen3_share",
    "lm_unseen4_share",
)

ARTEFACT_NAME = "model.npz"
FORMAT_VERSION = 1
# Keys every artefact has; loading checks them so a stale or foreign file fails clearly.
ARRAY_KEYS = (
    "format_version", "bits", "bias", "ngram_w", "lex_edges", "lex_w", "tld_names", "tld_w",
    "lm_c1", "lm_c2", "lm_c3", "lm_c4", "sub_label_factor", "threshold_1pct",
)


class ModelFormatError(ValueError):
    """The artefact is missing, incomplete or of another format version."""


def check_artefact(keys: Collection[str], version: int | None) -> None:
    """Refuse an artefact that lacks an array or has another format version."""
    missing = [key for key in ARRAY_KEYS if key not in keys]
    if missing or version is None:
        raise ModelFormatError(
            f"DGA model artefact lacks {', '.join(missing)}; rebuild it with "
            "`make dga-model DATA=<dir with benign-train.txt and dga-dev.tsv>`"
        )
    if version != FORMAT_VERSION:
        raise ModelFormatError(
            f"DGA model artefact has format {version}, this code reads {FORMAT_VERSION}; "
            "rebuild it with `make dga-model`"
        )


def read_artefact(path: str | Path, read: Callable[[Path], T]) -> T:
    """``read`` applied to an artefact file; a missing file names the fix."""
    try:
        return read(Path(path))
    except FileNotFoundError as exc:
        raise ModelFormatError(
            f"DGA model artefact {path} is missing; rebuild it with `make dga-model`"
        ) from exc


def read_shipped(read: Callable[[Path], T]) -> T:
    """``read`` applied to the artefact shipped in the package."""
    ref = resources.files("otelpeers.detect.dga").joinpath(ARTEFACT_NAME)
    with resources.as_file(ref) as path:
        return read_artefact(path, read)

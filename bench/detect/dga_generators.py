"""Domain generators of our own, in the styles published DGA families use, for testing only.

None of these is a real family's algorithm and none is in the training data; they exist to
check the DGA model on families it has never seen, in styles that are hard for string models
(word lists, pronounceable syllables) as well as easy ones (hashes, seeded random letters).
Each generator is a function ``(date: datetime.date, count: int) -> list[str]``, deterministic
for a given date, as a real DGA is for its seed.

Styles (written for this project):

- ``wordpair``: two or three dictionary words concatenated, sometimes hyphenated;
- ``syllable``: 3-5 pronounceable syllables from a fixed table;
- ``hashhex``: hex digest of date and counter, truncated to 12-20 characters;
- ``xorshift``: xorshift32 seeded by the date, letters with a skewed frequency table;
- ``wordnum``: one word and a 2-4 digit number;
- ``anagram``: a dictionary word padded with random letters, then shuffled.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Callable

WORDS = (
    "account", "action", "active", "adult", "amber", "anchor", "answer", "apple", "arrow",
    "autumn", "basket", "beach", "bench", "berry", "black", "blade", "bloom", "board", "border",
    "bottle", "branch", "bread", "bridge", "bright", "brother", "bucket", "butter", "cabin",
    "camera", "candle", "canvas", "carbon", "castle", "center", "chain", "chair", "change",
    "charge", "cherry", "circle", "cloud", "coast", "coffee", "color", "copper", "corner",
    "cotton", "country", "cover", "crystal", "dance", "desert", "detail", "dinner", "doctor",
    "double", "dragon", "dream", "driver", "eagle", "earth", "effect", "energy", "engine",
    "evening", "factor", "family", "farmer", "feather", "field", "figure", "finger", "flower",
    "forest", "frame", "friend", "garden", "general", "glass", "golden", "grass", "green",
    "ground", "guitar", "hammer", "harbor", "health", "heart", "hidden", "history", "honey",
    "horse", "hunter", "island", "jacket", "jungle", "kitchen", "ladder", "laser", "lemon",
    "letter", "light", "limit", "liquid", "market", "master", "meadow", "member", "metal",
    "middle", "mirror", "module", "moment", "monkey", "morning", "mother", "motion", "mountain",
    "music", "nature", "needle", "night", "number", "object", "ocean", "orange", "orbit",
    "palace", "paper", "parent", "pencil", "people", "pepper", "planet", "pocket", "point",
    "power", "public", "purple", "rabbit", "radio", "record", "result", "river", "rocket",
    "safety", "salmon", "school", "screen", "season", "second", "shadow", "silver", "simple",
    "single", "sister", "social", "spirit", "spring", "square", "stable", "steel", "stone",
    "storm", "street", "summer", "sunset", "system", "table", "target", "thunder", "ticket",
    "tiger", "timber", "tower", "travel", "turtle", "valley", "velvet", "vision", "water",
    "window", "winter", "wonder", "yellow",
)
SYLLABLES = (
    "ba", "be", "bo", "da", "de", "di", "do", "fa", "fe", "ga", "go", "ka", "ke", "ki", "ko",
    "la", "le", "li", "lo", "lu", "ma", "me", "mi", "mo", "na", "ne", "ni", "no", "pa", "pe",
    "po", "ra", "re", "ri", "ro", "sa", "se", "si", "so", "ta", "te", "ti", "to", "va", "ve",
    "vo", "za", "zo", "ber", "dor", "fen", "gar", "ket", "lin", "mar", "nor", "pel", "ran",
    "sol", "tan", "ver", "wen", "xan", "yor", "zel", "qua", "tri", "ston", "vel", "mun",
)
TLDS = ("com", "net", "org", "info", "biz", "ru", "top", "xyz", "cc", "pw")
# skewed letter table for xorshift: more frequent letters appear several times
SKEWED = "aaabcdeeeefghiiijklmnnooopqrrsssttuuvwxyz"


def _rng(style: str, date: dt.date) -> random.Random:
    return random.Random(f"{style}:{date.isoformat()}")


def wordpair(date: dt.date, count: int) -> list[str]:
    rng = _rng("wordpair", date)
    out = []
    for _ in range(count):
        words = rng.sample(WORDS, 3 if rng.random() < 0.25 else 2)
        sep = "-" if rng.random() < 0.2 else ""
        out.append(f"{sep.join(words)}.{rng.choice(TLDS[:5])}")
    return out


def syllable(date: dt.date, count: int) -> list[str]:
    rng = _rng("syllable", date)
    return [
        "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(3, 5))) + f".{rng.choice(TLDS)}"
        for _ in range(count)
    ]


def hashhex(date: dt.date, count: int) -> list[str]:
    out = []
    for i in range(count):
        digest = hashlib.sha256(f"{date.isoformat()}/{i}".encode()).hexdigest()
        length = 12 + int(digest[-2:], 16) % 9
        out.append(f"{digest[:length]}.{TLDS[int(digest[-4:-2], 16) % 4]}")
    return out


def xorshift(date: dt.date, count: int) -> list[str]:
    state = ((date.year * 10000 + date.month * 100 + date.day) * 2654435761 & 0xFFFFFFFF) | 1
    out = []

    def step() -> int:
        nonlocal state
        state ^= (state << 13) & 0xFFFFFFFF
        state ^= state >> 17
        state ^= (state << 5) & 0xFFFFFFFF
        return state

    for _ in range(count):
        length = 8 + step() % 9
        label = "".join(SKEWED[step() % len(SKEWED)] for _ in range(length))
        out.append(f"{label}.{TLDS[step() % len(TLDS)]}")
    return out


def wordnum(date: dt.date, count: int) -> list[str]:
    rng = _rng("wordnum", date)
    return [
        f"{rng.choice(WORDS)}{rng.randint(10, 9999)}.{rng.choice(TLDS[:6])}" for _ in range(count)
    ]


def anagram(date: dt.date, count: int) -> list[str]:
    rng = _rng("anagram", date)
    out = []
    for _ in range(count):
        letters = list(rng.choice(WORDS) + "".join(rng.choice("etaoinshrdlu") for _ in range(3)))
        rng.shuffle(letters)
        out.append(f"{''.join(letters)}.{rng.choice(TLDS)}")
    return out


GENERATORS: dict[str, Callable[[dt.date, int], list[str]]] = {
    "wordpair": wordpair,
    "syllable": syllable,
    "hashhex": hashhex,
    "xorshift": xorshift,
    "wordnum": wordnum,
    "anagram": anagram,
}


def generate(style: str, count: int, days: int = 10, start: dt.date | None = None) -> list[str]:
    """``count`` distinct names of one style from ``days`` (or more) consecutive dates."""
    make = GENERATORS[style]
    start = start or dt.date(2024, 3, 4)
    per_day = -(-count // days)
    seen: dict[str, None] = {}
    day = 0
    while len(seen) < count and day < days * 10:  # more days if a date repeats names
        for name in make(start + dt.timedelta(days=day), per_day):
            seen.setdefault(name, None)
        day += 1
    return list(seen)[:count]

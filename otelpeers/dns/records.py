"""What a DNS answer record becomes once parsed: shared by the parser and the transactions,
and importable without dnspython (the detection process unpickles lookups that carry it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Answer:
    name: str
    rtype: str
    ttl: int
    value: str  # presentation text, bounded to MAX_VALUE

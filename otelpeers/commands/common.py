"""Small pieces several commands share."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Mapping
from typing import ClassVar, TextIO

from otelpeers.flowjson import flow_json
from otelpeers.pipeline import Outputs


class JsonFlowPrinter:
    """A sink that prints one JSON object per completed flow (--print-flows)."""

    name: ClassVar[str] = "print_flows"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.printed = 0

    def consume(self, out: Outputs) -> None:
        if not out.flows:
            return
        self.stream.write("".join([flow_json(r) + "\n" for r in out.flows]))
        self.printed += len(out.flows)
        self.stream.flush()

    def counters(self) -> Mapping[str, int]:
        return {"printed": self.printed}

    def close(self) -> None:
        self.stream.flush()


def write_ready_file(path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            f.write(f"{time.time_ns()}\n")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}
MAX_DURATION_NS = 366 * 86400 * 10**9


def parse_duration(text: str) -> int:
    """'30s', '5m', '2h', '1d', '250ms' -> nanoseconds; ValueError says what is accepted."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"invalid duration {text!r}: use a number followed by ms, s, m, h "
                         "or d, e.g. 30s, 5m, 2h")
    ns = int(float(m.group(1)) * _UNIT_NS[m.group(2)])
    if ns <= 0 or ns > MAX_DURATION_NS:
        raise ValueError(f"invalid duration {text!r}: must be more than 0 and at most 366d")
    return ns


def duration_arg(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None

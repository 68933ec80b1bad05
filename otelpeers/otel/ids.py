"""Deterministic trace and span ids from flow ids.

Both ends of a connection made on this host are exported independently, in any order, maybe
in different batches. Deriving ids from (host boot id, flow id) lets the server span name
the client span as its parent without any bookkeeping: flow ids (socket cookies) are unique
per boot, and the boot id makes them unique across hosts and reboots.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from pathlib import Path

_log = logging.getLogger(__name__)

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def read_boot_id(path: Path = BOOT_ID_PATH) -> bytes:
    """The kernel's boot id; a random one (logged) when it cannot be read."""
    try:
        return uuid.UUID(path.read_text().strip()).bytes
    except (OSError, ValueError) as exc:
        _log.warning("cannot read boot id from %s (%s); span ids are random for this run",
                     path, exc)
        return uuid.uuid4().bytes


class FlowIds:
    """trace_id/span_id of the span of a flow; pure function of (boot id, flow id)."""

    __slots__ = ("_boot",)

    def __init__(self, boot_id: bytes) -> None:
        self._boot = boot_id

    def _digest(self, flow_id: str) -> bytes:
        return hashlib.blake2b(flow_id.encode(), digest_size=24, key=self._boot[:64]).digest()

    def trace_and_span(self, flow_id: str) -> tuple[int, int]:
        """(trace_id, span_id) of the span whose own flow id is flow_id; never zero."""
        d = self._digest(flow_id)
        trace_id = int.from_bytes(d[:16], "big") or 1
        span_id = int.from_bytes(d[16:], "big") or 1
        return trace_id, span_id

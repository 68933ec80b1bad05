"""Trace and span ids: one deterministic scheme for every span the agent makes.

Ids are derived from (host boot id, the object's own id): a flow id (socket cookie based)
or a DNS transaction id. Whoever knows the object's id can name its span, so a connection
links to its DNS span, a server span names its client parent, and a detection points at its
evidence span without any bookkeeping, in any order and from any thread. Socket cookies are
unique per boot; the boot id makes the ids unique across hosts and reboots.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

try:
    # hashlib.blake2b is this very type; importing hashlib would also load OpenSSL's
    # libcrypto (about 4 MB resident per process) into the helper processes, which never
    # use it
    from _blake2 import blake2b
except ImportError:  # an interpreter built without the module
    from hashlib import blake2b

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


class SpanIds:
    """(trace_id, span_id) of the span of a flow or of a DNS transaction; never zero."""

    __slots__ = ("_boot", "_hashers")

    def __init__(self, boot_id: bytes | None = None) -> None:
        self._boot = boot_id if boot_id is not None else read_boot_id()
        # Keyed hashers with the kind already fed, copied per id: a third cheaper than
        # keying a new one each time (the export path names one or two spans per flow).
        self._hashers = {kind: blake2b(kind, digest_size=24, key=self._boot[:64])
                         for kind in (b"flow/", b"dns/")}

    @property
    def boot_id(self) -> bytes:
        return self._boot

    def _ids(self, kind: bytes, ident: str) -> tuple[int, int]:
        h = self._hashers[kind].copy()
        h.update(ident.encode())
        d = h.digest()
        return int.from_bytes(d[:16], "big") or 1, int.from_bytes(d[16:], "big") or 1

    def flow(self, flow_id: str) -> tuple[int, int]:
        return self._ids(b"flow/", flow_id)

    def dns(self, txn_id: str) -> tuple[int, int]:
        return self._ids(b"dns/", txn_id)

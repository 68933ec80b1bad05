"""Length-prefixed frames over a pipe: how the agent talks to its helper processes (span
export, detection). A frame is a little-endian u32 length and that many bytes."""

from __future__ import annotations

import struct
from typing import BinaryIO

_FRAME = struct.Struct("<I")
MAX_FRAME = 256 * 1024 * 1024


def write_frame(f: BinaryIO, payload: bytes) -> None:
    f.write(_FRAME.pack(len(payload)) + payload)
    f.flush()


def read_frame(f: BinaryIO) -> bytes | None:
    """The next frame's bytes, or None when the other side has gone (EOF, short read)."""
    head = f.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None  # the other side is gone
    (n,) = _FRAME.unpack(head)
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes")
    body = f.read(n)
    return body if len(body) == n else None

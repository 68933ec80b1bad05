"""Length-prefixed frames over a pipe: how the agent talks to its helper processes (span
export, detection). A frame is a little-endian u32 length and that many bytes."""

from __future__ import annotations

import contextlib
import fcntl
import struct
from typing import BinaryIO

_FRAME = struct.Struct("<I")
MAX_FRAME = 256 * 1024 * 1024
# A round of a few hundred flows is 100-300 kB packed: with the default 64 kB pipe the writer
# and the reader wake each other several times per frame.
PIPE_BYTES = 1 << 20


def widen_pipes(*files: BinaryIO | None) -> None:
    """Ask for PIPE_BYTES of pipe buffer; the kernel may cap it (fs.pipe-max-size): best
    effort, a smaller pipe only costs wake-ups."""
    for f in files:
        if f is not None:
            with contextlib.suppress(OSError, ValueError):
                fcntl.fcntl(f.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def write_frame(f: BinaryIO, payload: bytes) -> None:
    f.write(_FRAME.pack(len(payload)))
    f.write(payload)  # not concatenated: that copied every frame once more
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

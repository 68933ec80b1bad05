"""Frames between the agent and its helper processes: what goes in comes out, and the pipe
is widened so that a round's frame does not bounce between writer and reader."""

from __future__ import annotations

import fcntl
import io
import os
import threading

from otelpeers.frames import PIPE_BYTES, read_frame, widen_pipes, write_frame


def test_frames_round_trip_and_a_short_read_is_the_end() -> None:
    buf = io.BytesIO()
    for payload in (b"", b"x", os.urandom(300_000)):
        write_frame(buf, payload)
    data = buf.getvalue()
    r = io.BytesIO(data)
    assert [read_frame(r) for _ in range(3)] == [b"", b"x", data[4 + 4 + 1 + 4:]]
    assert read_frame(r) is None
    assert read_frame(io.BytesIO(data[:-1])) == b""  # first frames still whole
    cut = io.BytesIO(data[:-1])
    read_frame(cut), read_frame(cut)
    assert read_frame(cut) is None  # the last frame lost a byte


def test_widen_pipes_asks_for_a_megabyte() -> None:
    r, w = os.pipe()
    with os.fdopen(r, "rb") as rf, os.fdopen(w, "wb") as wf:
        before = fcntl.fcntl(wf.fileno(), fcntl.F_GETPIPE_SZ)
        widen_pipes(wf, rf, None)
        after = fcntl.fcntl(wf.fileno(), fcntl.F_GETPIPE_SZ)
        with open("/proc/sys/fs/pipe-max-size") as f:
            cap = int(f.read())
        assert after == min(PIPE_BYTES, cap) or (after == before and os.geteuid() != 0)
        # a whole 300 kB frame fits: the writer finishes before the reader starts
        payload = os.urandom(300_000)
        if after >= len(payload) + 4:
            write_frame(wf, payload)
            got: list[bytes | None] = []
            t = threading.Thread(target=lambda: got.append(read_frame(rf)))
            t.start()
            t.join(10)
            assert got == [payload]

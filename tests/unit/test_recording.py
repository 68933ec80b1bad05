"""Recordings: round trip, versioning, and damaged lines counted with their numbers."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from otelpeers.events import (
    Counters,
    Direction,
    DnsPacketEvent,
    Kind,
    Owner,
    ProcessEvent,
    SocketEvent,
    TcpInfo,
)
from otelpeers.recording import RecordingError, RecordingWriter, ReplayStats, read_recording

EVENTS = [
    SocketEvent(kind=Kind.CONNECT, time_ns=1, cookie=3, owner=Owner(1, 1, 0, 0, 5, "curl"),
                peer_addr="192.0.2.1", peer_port=443, direction=Direction.OUTBOUND),
    SocketEvent(kind=Kind.TCP_CLOSE, time_ns=2, cookie=3, family=socket.AF_INET6,
                local_addr="::1", local_port=1, peer_addr="::1", peer_port=2,
                counters=Counters(1, 2, 3, 4, 5, 6), tcp=TcpInfo(7, 8, 9, 10), old_state=1,
                new_state=7),
    DnsPacketEvent(time_ns=3, cookie=4, direction=Direction.INBOUND, family=socket.AF_INET,
                   protocol=socket.IPPROTO_UDP, local_addr="127.0.0.1", local_port=5000,
                   peer_addr="127.0.0.53", peer_port=53, payload=b"\x00\x01\xff", wire_len=3),
    ProcessEvent(kind=Kind.FILE_OPEN, time_ns=4, tgid=10, pid=11, uid=0, gid=0, cgroup_id=1,
                 comm="cat", path="/root/.ssh/id_rsa", open_flags=0),
]


def write(path: Path, events=EVENTS) -> None:
    w = RecordingWriter(path)
    for e in events:
        w.write(e)
    w.close()


def test_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    write(p)
    assert list(read_recording(p)) == EVENTS


def test_malformed_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    write(p)
    lines = p.read_text().splitlines()
    good = json.loads(lines[1])
    bad_family = dict(good, family=99)
    neg_port = dict(good, peer_port=-1)
    lines[2:2] = ["{not json", json.dumps(bad_family), json.dumps(neg_port),
                  lines[1][: len(lines[1]) // 2], '"a string"', json.dumps(dict(good, kind="NOPE"))]
    p.write_text("\n".join(lines) + "\n")
    stats = ReplayStats()
    got = list(read_recording(p, stats))
    assert got == EVENTS
    assert stats.malformed == 6 and stats.malformed_lines == [3, 4, 5, 6, 7, 8]
    assert stats.events == len(EVENTS)


def test_not_a_recording(tmp_path: Path) -> None:
    p = tmp_path / "x"
    p.write_text("hello\n")
    with pytest.raises(RecordingError, match="not an otelpeers recording"):
        list(read_recording(p))
    p.write_text(json.dumps({"otelpeers_recording": 99}) + "\n")
    with pytest.raises(RecordingError, match="format 99 is not supported"):
        list(read_recording(p))

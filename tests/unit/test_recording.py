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
    PairStats,
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
    # format 2: one complete record per connection, scan and aggregate kinds
    SocketEvent(kind=Kind.TCP_CLOSE, time_ns=9, cookie=5, start_ns=6, peer_cookie=77,
                direction=Direction.INBOUND, local_addr="10.0.0.2", local_port=80,
                peer_addr="10.0.0.1", peer_port=40000, old_state=9, new_state=7,
                tcp=TcpInfo(1, 2, 0, 30)),
    SocketEvent(kind=Kind.TCP_OPEN, time_ns=10, cookie=8, start_ns=2, new_state=1,
                peer_addr="192.0.2.9", peer_port=443, direction=Direction.OUTBOUND,
                counters=Counters(1, 60, 0, 1, 60, 0)),
    SocketEvent(kind=Kind.TCP_OPEN, time_ns=10, cookie=12, start_ns=3, new_state=1,
                peer_addr="192.0.2.10", peer_port=22, direction=Direction.INBOUND,
                adopted=True),
    PairStats(time_ns=11, start_ns=6, netns_cookie=3, owner=Owner(1, 1, 0, 0, 5, "curl"),
              family=socket.AF_INET, protocol=socket.IPPROTO_TCP, direction=Direction.OUTBOUND,
              peer_addr="192.0.2.1", port=443, opened=10, failed=1, closed=8, lost=3,
              volume=Counters(9, 900, 90, 9, 900, 90),
              lost_volume=Counters(3, 300, 30, 3, 300, 30)),
    PairStats(time_ns=11, start_ns=6, netns_cookie=0, owner=None, family=0, protocol=0,
              direction=Direction.UNKNOWN, peer_addr="", port=0, opened=4, overflow=True),
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


def test_format_1_recordings_still_replay(tmp_path: Path) -> None:
    """A file written by the format-1 agent (CONNECT, ESTABLISHED, TCP_CLOSE, no start_ns)."""
    from otelpeers.flows import FlowTable

    owner = {"tgid": 1, "pid": 1, "uid": 0, "gid": 0, "cgroup_id": 5, "comm": "curl",
             "joined": False}
    common = {"cookie": 3, "netns_cookie": 0, "owner": owner, "family": 2, "protocol": 6,
              "sock_type": 1, "released": False, "old_state": 0, "new_state": 0,
              "local_addr": "10.0.0.1", "local_port": 40000, "peer_addr": "192.0.2.1",
              "peer_port": 443, "counters": [0, 0, 0, 0, 0, 0]}
    lines = [{"otelpeers_recording": 1, "agent_version": "0.1.0"},
             dict(common, kind="CONNECT", time_ns=1, direction="OUTBOUND"),
             dict(common, kind="ESTABLISHED", time_ns=2, direction="OUTBOUND"),
             dict(common, kind="TCP_CLOSE", time_ns=5, direction="UNKNOWN", old_state=4,
                  new_state=7, counters=[3, 300, 100, 2, 200, 50], tcp=[101, 51, 0, 20])]
    p = tmp_path / "v1.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    events = list(read_recording(p))
    assert [e.kind for e in events] == [Kind.CONNECT, Kind.ESTABLISHED, Kind.TCP_CLOSE]
    assert all(e.start_ns == 0 and e.peer_cookie == 0 for e in events)
    t = FlowTable()
    done = [r for e in events for r in t.process(e)]
    assert len(done) == 1 and done[0].start_ns == 1 and done[0].counters.payload_out == 100


def test_not_a_recording(tmp_path: Path) -> None:
    p = tmp_path / "x"
    p.write_text("hello\n")
    with pytest.raises(RecordingError, match="not an otelpeers recording"):
        list(read_recording(p))
    p.write_text(json.dumps({"otelpeers_recording": 99}) + "\n")
    with pytest.raises(RecordingError, match="format 99 is not supported"):
        list(read_recording(p))

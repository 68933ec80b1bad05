"""Recordings: the decoded event stream as versioned JSON lines, and replay of it.

Line 1 is a header ({"otelpeers_recording": VERSION, ...}); every other line is one event.
A malformed or truncated line is counted and skipped with its line number, so a damaged
recording still replays everything that can be read.

Format 2 (ABI 2) adds start_ns and peer_cookie to socket events (a TCP connection is one
complete TCP_CLOSE record) and the kinds TCP_OPEN and PAIR_STATS. Format 1 files still
replay: their CONNECT/ESTABLISHED/TCP_CLOSE sequences go through the same flow table.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from otelpeers import __version__
from otelpeers.events import (
    Counters,
    Direction,
    DnsPacketEvent,
    Event,
    Kind,
    Owner,
    PairStats,
    ProcessEvent,
    SocketEvent,
    TcpInfo,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
PROCESS_KIND_NAMES = frozenset({"EXEC", "FORK", "EXIT", "FILE_OPEN"})
MAX_LINE_BYTES = 64 * 1024  # an event line is < 4 KiB; anything longer is damage


class RecordingError(ValueError):
    """The file is not an otelpeers recording (bad or missing header)."""


def _owner_to_json(o: Owner | None) -> dict[str, Any] | None:
    if o is None:
        return None
    return {"tgid": o.tgid, "pid": o.pid, "uid": o.uid, "gid": o.gid,
            "cgroup_id": o.cgroup_id, "comm": o.comm, "joined": o.joined}


def _counters_from_json(v: Any, key: str) -> Counters:
    if not isinstance(v, list) or len(v) != 6 or not all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in v):
        raise ValueError(f"{key} must be a list of 6 non-negative integers")
    return Counters(*v)


def event_to_json(ev: Event) -> dict[str, Any]:
    if isinstance(ev, PairStats):
        return {
            "kind": "PAIR_STATS", "time_ns": ev.time_ns, "start_ns": ev.start_ns,
            "netns_cookie": ev.netns_cookie, "owner": _owner_to_json(ev.owner),
            "family": ev.family, "protocol": ev.protocol, "direction": ev.direction.name,
            "peer_addr": ev.peer_addr, "port": ev.port, "opened": ev.opened,
            "failed": ev.failed, "closed": ev.closed, "lost": ev.lost,
            "volume": list(ev.volume.as_tuple()),
            "lost_volume": list(ev.lost_volume.as_tuple()), "overflow": ev.overflow,
        }
    if isinstance(ev, ProcessEvent):
        return {
            "kind": ev.kind.name, "time_ns": ev.time_ns, "tgid": ev.tgid, "pid": ev.pid,
            "uid": ev.uid, "gid": ev.gid, "cgroup_id": ev.cgroup_id, "comm": ev.comm,
            "ppid": ev.ppid, "child_pid": ev.child_pid, "path": ev.path,
            "open_flags": ev.open_flags, "sensitive": ev.sensitive,
        }
    if isinstance(ev, DnsPacketEvent):
        return {
            "kind": "DNS", "time_ns": ev.time_ns, "cookie": ev.cookie,
            "direction": ev.direction.name, "family": ev.family, "protocol": ev.protocol,
            "local_addr": ev.local_addr, "local_port": ev.local_port,
            "peer_addr": ev.peer_addr, "peer_port": ev.peer_port,
            "payload": base64.b64encode(ev.payload).decode("ascii"), "wire_len": ev.wire_len,
            "owner": _owner_to_json(ev.owner), "netns_cookie": ev.netns_cookie,
            "tcp_seq": ev.tcp_seq,
        }
    d: dict[str, Any] = {
        "kind": ev.kind.name, "time_ns": ev.time_ns, "cookie": ev.cookie,
        "netns_cookie": ev.netns_cookie, "owner": _owner_to_json(ev.owner),
        "family": ev.family, "protocol": ev.protocol, "sock_type": ev.sock_type,
        "direction": ev.direction.name, "released": ev.released,
        "old_state": ev.old_state, "new_state": ev.new_state,
        "local_addr": ev.local_addr, "local_port": ev.local_port,
        "peer_addr": ev.peer_addr, "peer_port": ev.peer_port,
        "counters": list(ev.counters.as_tuple()),
    }
    if ev.start_ns:
        d["start_ns"] = ev.start_ns
    if ev.peer_cookie:
        d["peer_cookie"] = ev.peer_cookie
    if ev.adopted:
        d["adopted"] = True
    if ev.tcp is not None:
        d["tcp"] = [ev.tcp.bytes_acked, ev.tcp.bytes_received, ev.tcp.total_retrans,
                    ev.tcp.srtt_us]
    return d


def _int(d: dict[str, Any], key: str, lo: int = 0, hi: int = 2**64 - 1) -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{key} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _str(d: dict[str, Any], key: str, limit: int = 256) -> str:
    v = d[key]
    if not isinstance(v, str) or len(v) > limit:
        raise ValueError(f"{key} must be a string of at most {limit} characters")
    return v


def _owner_from_json(v: Any) -> Owner | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise ValueError("owner must be an object or null")
    return Owner(_int(v, "tgid", hi=2**32 - 1), _int(v, "pid", hi=2**32 - 1),
                 _int(v, "uid", hi=2**32 - 1), _int(v, "gid", hi=2**32 - 1),
                 _int(v, "cgroup_id"), _str(v, "comm", 16), bool(v.get("joined", False)))


def event_from_json(d: Any) -> Event:
    """Rebuild an event; raises ValueError/KeyError/TypeError on anything malformed."""
    if not isinstance(d, dict):
        raise ValueError("an event line must be a JSON object")
    kind = _str(d, "kind", 32)
    if kind == "PAIR_STATS":
        return PairStats(
            time_ns=_int(d, "time_ns"), start_ns=_int(d, "start_ns"),
            netns_cookie=_int(d, "netns_cookie"), owner=_owner_from_json(d.get("owner")),
            family=_int(d, "family", hi=255), protocol=_int(d, "protocol", hi=255),
            direction=Direction[_str(d, "direction", 16)],
            peer_addr=_str(d, "peer_addr", 64), port=_int(d, "port", hi=65535),
            opened=_int(d, "opened"), failed=_int(d, "failed"), closed=_int(d, "closed"),
            lost=_int(d, "lost"), volume=_counters_from_json(d["volume"], "volume"),
            lost_volume=_counters_from_json(d["lost_volume"], "lost_volume"),
            overflow=bool(d.get("overflow", False)))
    if kind in PROCESS_KIND_NAMES:
        u32 = 2**32 - 1
        return ProcessEvent(
            kind=Kind[kind], time_ns=_int(d, "time_ns"), tgid=_int(d, "tgid", hi=u32),
            pid=_int(d, "pid", hi=u32), uid=_int(d, "uid", hi=u32), gid=_int(d, "gid", hi=u32),
            cgroup_id=_int(d, "cgroup_id"), comm=_str(d, "comm", 16),
            ppid=_int(d, "ppid", hi=u32), child_pid=_int(d, "child_pid", hi=u32),
            path=_str(d, "path", 1024), open_flags=_int(d, "open_flags", lo=-(2**31), hi=u32),
            sensitive=bool(d.get("sensitive", True)))
    direction = Direction[_str(d, "direction", 16)]
    family = _int(d, "family", hi=255)
    if family not in (socket.AF_INET, socket.AF_INET6):
        raise ValueError(f"family must be AF_INET or AF_INET6, got {family}")
    common = {
        "time_ns": _int(d, "time_ns"), "cookie": _int(d, "cookie"),
        "local_addr": _str(d, "local_addr", 64), "local_port": _int(d, "local_port", hi=65535),
        "peer_addr": _str(d, "peer_addr", 64), "peer_port": _int(d, "peer_port", hi=65535),
        "owner": _owner_from_json(d.get("owner")), "netns_cookie": _int(d, "netns_cookie"),
        "family": family, "protocol": _int(d, "protocol", hi=255), "direction": direction,
    }
    if kind == "DNS":
        payload = base64.b64decode(_str(d, "payload", 4096), validate=True)
        seq = d.get("tcp_seq")
        if seq is not None:
            seq = _int(d, "tcp_seq", hi=2**32 - 1)
        return DnsPacketEvent(payload=payload, wire_len=_int(d, "wire_len", hi=2**32 - 1),
                              tcp_seq=seq, **common)
    counters = _counters_from_json(d["counters"], "counters")
    tcp = None
    if d.get("tcp") is not None:
        t = d["tcp"]
        if not isinstance(t, list) or len(t) != 4 or not all(isinstance(x, int) for x in t):
            raise ValueError("tcp must be a list of 4 integers")
        tcp = TcpInfo(*t)
    return SocketEvent(
        kind=Kind[kind], sock_type=_int(d, "sock_type", hi=255),
        released=bool(d.get("released", False)),
        old_state=_int(d, "old_state", hi=255), new_state=_int(d, "new_state", hi=255),
        counters=counters, tcp=tcp, start_ns=_int(d, "start_ns") if "start_ns" in d else 0,
        peer_cookie=_int(d, "peer_cookie") if "peer_cookie" in d else 0,
        adopted=bool(d.get("adopted", False)), **common,
    )


class RecordingWriter:
    """Writes events as JSON lines; flushes at most every flush_interval_s."""

    def __init__(self, path: str | os.PathLike[str], flush_interval_s: float = 1.0) -> None:
        self._f: IO[str] = open(path, "w", encoding="utf-8")  # noqa: SIM115
        self._flush_interval = flush_interval_s
        self._last_flush = time.monotonic()
        self.count = 0
        header = {"otelpeers_recording": FORMAT_VERSION, "agent_version": __version__,
                  "host": socket.gethostname(), "created_ns": time.time_ns()}
        self._f.write(json.dumps(header) + "\n")

    def write(self, ev: Event) -> None:
        self._f.write(json.dumps(event_to_json(ev), separators=(",", ":")) + "\n")
        self.count += 1
        now = time.monotonic()
        if now - self._last_flush >= self._flush_interval:
            self._f.flush()
            self._last_flush = now

    def flush(self) -> None:
        """Called once a second by the agent, so a quiet host's last events reach the disk."""
        if not self._f.closed:
            self._f.flush()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            self._f.close()


@dataclass
class ReplayStats:
    events: int = 0
    malformed: int = 0
    malformed_lines: list[int] = field(default_factory=list)  # first few, for the message


def read_recording(path: str | os.PathLike[str], stats: ReplayStats | None = None
                   ) -> Iterator[Event]:
    """Yield the events of a recording; malformed lines are counted, logged and skipped."""
    stats = stats if stats is not None else ReplayStats()
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline(MAX_LINE_BYTES)
        try:
            header = json.loads(first)
            version = header["otelpeers_recording"]
        except (ValueError, KeyError, TypeError):
            raise RecordingError(
                f"{path}: line 1 is not an otelpeers recording header; record one with "
                "`otelpeers record --output FILE`") from None
        if version not in READABLE_VERSIONS:
            raise RecordingError(
                f"{path}: recording format {version} is not supported (this otelpeers reads "
                f"formats {', '.join(map(str, READABLE_VERSIONS))}); record it again with "
                "this version's `otelpeers record`")
        for lineno, line in enumerate(f, start=2):
            if not line.strip():
                continue
            try:
                if len(line) >= MAX_LINE_BYTES:
                    raise ValueError("line too long")
                ev = event_from_json(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                stats.malformed += 1
                if len(stats.malformed_lines) < 20:
                    stats.malformed_lines.append(lineno)
                log.warning("%s:%d: skipped malformed event: %s", path, lineno, exc)
                continue
            stats.events += 1
            yield ev

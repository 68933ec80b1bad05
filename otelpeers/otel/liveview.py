"""Live terminal view: the busiest peers and the latest detections, refreshed in place.

PeerTable aggregates flows per (process, peer) -- completed ones accumulate, open ones (the
pipeline's progress snapshots) are added to each screen without being accumulated -- bounded
in size. render() is pure: rows in, one screen of text out. LiveView is a pipeline sink.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, TextIO

from otelpeers.detect.model import Detection
from otelpeers.events import Direction
from otelpeers.flows import FlowRecord
from otelpeers.pipeline import Outputs

CLEAR_HOME = "\x1b[H\x1b[2J"  # cursor home, clear screen: each refresh replaces the last
MAX_DETECTIONS_SHOWN = 5

PeerKey = tuple[str, str, str, str]  # (process, direction, peer, transport)


@dataclass(frozen=True, slots=True)
class PeerRow:
    process: str
    direction: str  # out | in | ?
    peer: str  # addr:port for outbound; addr -> :local port for inbound
    transport: str
    bytes_out: int = 0
    bytes_in: int = 0
    connections: int = 0
    live: int = 0

    @property
    def total(self) -> int:
        return self.bytes_out + self.bytes_in


def _key(r: FlowRecord) -> PeerKey:
    process = r.owner.comm if r.owner is not None else "?"
    if r.direction == Direction.OUTBOUND:
        return process, "out", f"{_addr(r.peer_addr)}:{r.peer_port}", r.transport
    if r.direction == Direction.INBOUND:  # the client's port is ephemeral: group by ours
        return process, "in", f"{r.peer_addr} -> :{r.local_port}", r.transport
    return process, "?", f"{_addr(r.peer_addr)}:{r.peer_port}", r.transport


def _addr(a: str) -> str:
    return f"[{a}]" if ":" in a else a


class PeerTable:
    """Per (process, peer) totals of completed flows; least recently active evicted."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self.evicted = 0
        self._rows: OrderedDict[PeerKey, list[int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def add_completed(self, records: Iterable[FlowRecord]) -> None:
        for r in records:
            k = _key(r)
            acc = self._rows.get(k)
            if acc is None:
                acc = self._rows[k] = [0, 0, 0]
            else:
                self._rows.move_to_end(k)
            acc[0] += r.counters.payload_out
            acc[1] += r.counters.payload_in
            acc[2] += 1
            while len(self._rows) > self.max_entries:
                self._rows.popitem(last=False)
                self.evicted += 1

    def snapshot(self, live: Iterable[FlowRecord] = (), top: int = 20) -> list[PeerRow]:
        """The `top` busiest peers by bytes, completed totals plus live flows."""
        merged: dict[PeerKey, list[int]] = {k: [*v, 0] for k, v in self._rows.items()}
        for r in live:
            acc = merged.setdefault(_key(r), [0, 0, 0, 0])
            acc[0] += r.counters.payload_out
            acc[1] += r.counters.payload_in
            acc[2] += 1
            acc[3] += 1
        rows = [PeerRow(*k, *v) for k, v in merged.items()]
        rows.sort(key=lambda row: (-row.total, -row.connections, row.process, row.peer))
        return rows[:top]


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "~"


def render(rows: Sequence[PeerRow], width: int, title: str = "otelpeers: busiest peers",
           detections: Sequence[Detection] = ()) -> str:
    """One screen: clear/home, title, header, one line per row, then the latest detections;
    no line wider than width."""
    width = max(width, 40)
    fixed = 3 + 5 + 10 + 10 + 7 + 6  # dir, transport, out, in, conns, spaces
    proc_w = max(8, min(16, (width - fixed) // 3))
    peer_w = max(8, width - fixed - proc_w)
    fmt = f"{{:<{proc_w}}} {{:<3}} {{:<{peer_w}}} {{:<4}} {{:>10}} {{:>10}} {{:>6}}"
    lines = [_cut(title, width),
             _cut(fmt.format("PROCESS", "DIR", "PEER", "PROT", "SENT", "RECEIVED", "CONNS"),
                  width)]
    for r in rows:
        conns = f"{r.connections}" + ("*" if r.live else "")
        lines.append(_cut(fmt.format(_cut(r.process, proc_w), r.direction,
                                     _cut(r.peer, peer_w), r.transport[:4],
                                     human_bytes(r.bytes_out), human_bytes(r.bytes_in), conns),
                          width))
    if not rows:
        lines.append("(no flows yet)")
    lines.append(_cut("* = some connections still open", width))
    if detections:
        lines.append(_cut("latest detections:", width))
        for d in reversed(detections):
            when = time.strftime("%H:%M:%S", time.localtime(d.time_ns / 1e9))
            lines.append(_cut(f"{when} {d.severity.text.upper():<8} {d.rule.name:<22} "
                              f"{d.summary}", width))
    return CLEAR_HOME + "\n".join(lines) + "\n"


class LiveView:
    """A pipeline sink writing a refreshed table to a terminal at most every refresh_s."""

    name: ClassVar[str] = "live_view"

    def __init__(self, stream: TextIO, table: PeerTable | None = None, top: int = 20,
                 refresh_s: float = 2.0, max_open: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.table = table or PeerTable()
        self.top = top
        self.refresh_s = refresh_s
        self.max_open = max_open
        self._clock = clock
        self._next = clock()
        self._open: OrderedDict[str, FlowRecord] = OrderedDict()  # flow id -> latest snapshot
        self.detections: deque[Detection] = deque(maxlen=MAX_DETECTIONS_SHOWN)

    def consume(self, out: Outputs) -> None:
        for r in out.progress:
            self._open[r.flow_id] = r
            self._open.move_to_end(r.flow_id)
            if len(self._open) > self.max_open:
                self._open.popitem(last=False)
        for r in out.flows:
            self._open.pop(r.flow_id, None)
        self.table.add_completed(out.flows)
        self.detections.extend(out.detections)
        if self._clock() >= self._next:
            self._next = self._clock() + self.refresh_s
            self.refresh()

    def refresh(self, width: int | None = None) -> None:
        if width is None:
            import shutil
            width = shutil.get_terminal_size((100, 24)).columns
        self.stream.write(render(self.table.snapshot(self._open.values(), self.top), width,
                                 detections=list(self.detections)))
        self.stream.flush()

    def counters(self) -> Mapping[str, int]:
        return {"peers": len(self.table), "peers_evicted": self.table.evicted,
                "open_flows_live": len(self._open)}

    def close(self) -> None:
        pass

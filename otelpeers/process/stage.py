"""The process stage: process events keep the process table current, sensitive file opens
are remembered per process and attached to its later flows.

The pipeline thread never reads /proc here: lookups go to the Prefetcher's thread.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import replace
from typing import ClassVar

from otelpeers.config import ProcessConfig
from otelpeers.events import Event, Kind, ProcessEvent, SocketEvent
from otelpeers.flows import FileAccess, FlowRecord
from otelpeers.pipeline import BaseStage, Outputs
from otelpeers.process.prefetch import Prefetcher
from otelpeers.process.table import ProcessTable

# Socket events seen in the owner's own context: the moment to read /proc for it, while the
# process still exists (short-lived clients are often gone when their flow is exported).
_EARLY_LOOKUP = frozenset({Kind.CONNECT, Kind.BIND, Kind.PEER, Kind.LISTEN})


class ProcessStage(BaseStage):
    name: ClassVar[str] = "process"
    accepts: ClassVar[tuple[type, ...]] = (ProcessEvent, SocketEvent)

    def __init__(self, config: ProcessConfig, table: ProcessTable | None,
                 max_processes_with_files: int = 4096) -> None:
        self.table = table  # None when replaying: this host's /proc says nothing about it
        self.prefetch = Prefetcher(table) if table is not None else None
        self._per_process = config.max_file_events_per_process
        self._max = max_processes_with_files
        self._files: OrderedDict[int, deque[FileAccess]] = OrderedDict()
        self.stats = {"exec": 0, "fork": 0, "exit": 0, "file_open": 0,
                      "file_processes_evicted": 0}

    def on_event(self, ev: Event, out: Outputs) -> None:
        if isinstance(ev, SocketEvent):
            if (self.prefetch is not None and ev.owner is not None
                    and ev.kind in _EARLY_LOOKUP):
                self.prefetch.request(ev.owner.tgid, ev.owner.comm)
            return
        out.process.append(ev)
        if ev.kind == Kind.FILE_OPEN:
            self.stats["file_open"] += 1
            if ev.sensitive:  # else networked-process mode: for the graph, not for spans
                self._remember_file(ev)
        elif ev.kind == Kind.EXEC:
            self.stats["exec"] += 1
            if self.table is not None and self.prefetch is not None:
                self.table.on_exec(ev.tgid)
                self.prefetch.request(ev.tgid, ev.comm)
        elif ev.kind == Kind.FORK:
            self.stats["fork"] += 1
        elif ev.kind == Kind.EXIT:
            self.stats["exit"] += 1
            if self.table is not None:
                self.table.on_exit(ev.tgid, ev.time_ns)

    def _remember_file(self, ev: ProcessEvent) -> None:
        q = self._files.get(ev.tgid)
        if q is None:
            q = self._files[ev.tgid] = deque(maxlen=self._per_process)
            while len(self._files) > self._max:
                self._files.popitem(last=False)
                self.stats["file_processes_evicted"] += 1
        else:
            self._files.move_to_end(ev.tgid)
        q.append(FileAccess(ev.time_ns, ev.path, ev.open_flags))

    def tick(self, now_ns: int, out: Outputs) -> None:
        if self.table is not None:
            self.table.expire(now_ns)

    def process(self, out: Outputs) -> None:
        if out.flows and self._files:
            out.flows = self.annotate(out.flows)

    def annotate(self, records: list[FlowRecord]) -> list[FlowRecord]:
        """Attach the sensitive files each flow's process opened before the flow began."""
        out = []
        for r in records:
            q = self._files.get(r.owner.tgid) if r.owner is not None else None
            files = tuple(f for f in q if f.time_ns <= r.start_ns) if q else ()
            out.append(replace(r, files=files) if files else r)
        return out

    def files_of(self, tgid: int) -> tuple[FileAccess, ...]:
        q = self._files.get(tgid)
        return tuple(q) if q else ()

    def counters(self) -> Mapping[str, int]:
        out = dict(self.stats)
        if self.prefetch is not None:
            out.update({f"prefetch.{k}": v for k, v in self.prefetch.stats.items()})
        if self.table is not None:
            out.update({f"table.{k}": v for k, v in self.table.stats.items()})
        return out

    def close(self) -> None:
        if self.prefetch is not None:
            self.prefetch.close()

"""The process stage of the pipeline: process events keep the process table current,
sensitive file opens are remembered per process and attached to its later flows."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import replace

from otelpeers.config import ProcessConfig
from otelpeers.events import Kind, ProcessEvent, SocketEvent
from otelpeers.flows import FileAccess, FlowRecord
from otelpeers.process.table import ProcessTable

# Socket events seen in the owner's own context: the moment to read /proc for it, while the
# process still exists (short-lived clients are often gone when their flow is exported).
_EARLY_LOOKUP = frozenset({Kind.CONNECT, Kind.BIND, Kind.PEER, Kind.LISTEN})


class ProcessStage:
    def __init__(self, config: ProcessConfig, table: ProcessTable | None,
                 max_processes_with_files: int = 4096) -> None:
        self.table = table  # None when replaying: this host's /proc says nothing about it
        self._per_process = config.max_file_events_per_process
        self._max = max_processes_with_files
        self._files: OrderedDict[int, deque[FileAccess]] = OrderedDict()
        self.listeners: list[Callable[[ProcessEvent], None]] = []  # e.g. the graph
        self.stats = {"exec": 0, "fork": 0, "exit": 0, "file_open": 0,
                      "file_processes_evicted": 0}

    def on_process_event(self, ev: ProcessEvent) -> None:
        for fn in self.listeners:
            fn(ev)
        if ev.kind == Kind.FILE_OPEN:
            self.stats["file_open"] += 1
            if not ev.sensitive:  # networked-process mode: for the graph, not for spans
                return
            q = self._files.get(ev.tgid)
            if q is None:
                q = self._files[ev.tgid] = deque(maxlen=self._per_process)
                while len(self._files) > self._max:
                    self._files.popitem(last=False)
                    self.stats["file_processes_evicted"] += 1
            else:
                self._files.move_to_end(ev.tgid)
            q.append(FileAccess(ev.time_ns, ev.path, ev.open_flags))
        elif ev.kind == Kind.EXEC:
            self.stats["exec"] += 1
            if self.table is not None:
                self.table.on_exec(ev.tgid)
                self.table.lookup(ev.tgid, comm_hint=ev.comm)
        elif ev.kind == Kind.FORK:
            self.stats["fork"] += 1
        elif ev.kind == Kind.EXIT:
            self.stats["exit"] += 1
            if self.table is not None:
                self.table.on_exit(ev.tgid, ev.time_ns)

    def on_socket_event(self, ev: SocketEvent) -> None:
        if self.table is not None and ev.owner is not None and ev.kind in _EARLY_LOOKUP:
            self.table.lookup(ev.owner.tgid, comm_hint=ev.owner.comm)

    def tick(self, now_ns: int) -> None:
        if self.table is not None:
            self.table.expire(now_ns)

    def annotate(self, records: Sequence[FlowRecord]) -> Sequence[FlowRecord]:
        """Attach the sensitive files each flow's process opened before the flow began."""
        if not self._files:
            return records
        out = []
        for r in records:
            q = self._files.get(r.owner.tgid) if r.owner is not None else None
            files = tuple(f for f in q if f.time_ns <= r.start_ns) if q else ()
            out.append(replace(r, files=files) if files else r)
        return out

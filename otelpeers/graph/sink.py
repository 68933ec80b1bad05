"""GraphSink: completed flows, DNS lookups and file opens into the relationship graph."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

from otelpeers.events import Kind, Owner
from otelpeers.flows import FlowRecord
from otelpeers.graph.model import RelationshipGraph
from otelpeers.pipeline import Outputs
from otelpeers.process.table import ProcessInfo

ProcessLookup = Callable[[int], ProcessInfo | None]
_MISSING = object()


class GraphSink:
    """process_lookup, when given, turns a tgid into process context; it runs on the pipeline
    thread, so it must only read a cache (ProcessTable.peek), never /proc."""

    name: ClassVar[str] = "graph"

    def __init__(self, graph: RelationshipGraph | None = None,
                 process_lookup: ProcessLookup | None = None) -> None:
        self.graph = graph if graph is not None else RelationshipGraph()
        self.process_lookup = process_lookup

    def _info(self, owner: Owner | None) -> ProcessInfo | None:
        if owner is None or self.process_lookup is None:
            return None
        return self.process_lookup(owner.tgid)

    def consume(self, out: Outputs) -> None:
        g = self.graph
        for ev in out.process:
            if ev.kind == Kind.FILE_OPEN and ev.path:
                g.add_file_access(ev.tgid, ev.path, ev.time_ns, comm=ev.comm)
        for lk in out.dns:
            g.add_dns(lk.txn, self._info(lk.txn.owner))
        if out.flows:
            g.add_flows(self._with_info(out.flows))

    def _with_info(self, flows: list[FlowRecord]) -> list[tuple[FlowRecord, ProcessInfo | None]]:
        """Each flow with its owner's context, looked up once per tgid per round (a round
        lasts milliseconds; the lookup takes the process table's lock)."""
        lookup = self.process_lookup
        if lookup is None:
            return [(r, None) for r in flows]
        infos: dict[int, ProcessInfo | None] = {}
        out = []
        for r in flows:
            o = r.owner
            if o is None:
                out.append((r, None))
                continue
            tgid = o.tgid
            info = infos.get(tgid, _MISSING)
            if info is _MISSING:
                info = infos[tgid] = lookup(tgid)
            out.append((r, info))  # type: ignore[arg-type]
        return out

    def counters(self) -> Mapping[str, int]:
        return self.graph.stats

    def close(self) -> None:
        self.graph.flush_pending()

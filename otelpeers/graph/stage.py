"""GraphStage: the pipeline's flow sink and the DNS stage's transaction listener."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from otelpeers.dns.transactions import DnsTransaction
from otelpeers.events import Kind, Owner, ProcessEvent
from otelpeers.flows import FlowRecord
from otelpeers.graph.model import RelationshipGraph
from otelpeers.process.table import ProcessInfo

ProcessLookup = Callable[[int], ProcessInfo | None]


class GraphStage:
    """Feeds a RelationshipGraph. Use as a FlowSink (Pipeline sinks) and pass
    on_transaction to DnsPipelineStage(on_transaction=...). process_lookup, when given,
    turns a tgid into process context (e.g. ``lambda tgid: table.lookup(tgid)``)."""

    def __init__(self, graph: RelationshipGraph | None = None,
                 process_lookup: ProcessLookup | None = None) -> None:
        self.graph = graph if graph is not None else RelationshipGraph()
        self.process_lookup = process_lookup

    def _info(self, owner: Owner | None) -> ProcessInfo | None:
        if owner is None or self.process_lookup is None:
            return None
        return self.process_lookup(owner.tgid)

    def export_flows(self, records: Sequence[FlowRecord]) -> None:
        for r in records:
            self.graph.add_flow(r, self._info(r.owner))

    def on_transaction(self, txn: DnsTransaction) -> None:
        self.graph.add_dns(txn, self._info(txn.owner))

    def on_process_event(self, ev: ProcessEvent) -> None:
        """Sensitive file opens become accessed_file edges; other kinds are ignored."""
        if ev.kind == Kind.FILE_OPEN and ev.path:
            self.graph.add_file_access(ev.tgid, ev.path, ev.time_ns, comm=ev.comm)

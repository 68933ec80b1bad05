"""The DNS stage of the pipeline: packets -> transactions -> spans, cache -> flow names.

Transactions are recorded in the resolution cache as they complete, so a connection that
ends later finds the name its process asked for. Flows are annotated at export time with
what the cache knew at the flow's start.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from otelpeers.config import Config
from otelpeers.dns.cache import ResolutionCache
from otelpeers.dns.spans import DnsSpanItem, DnsSpanMapper
from otelpeers.dns.tracker import DnsTracker
from otelpeers.dns.transactions import DnsTransaction
from otelpeers.events import Direction, DnsPacketEvent
from otelpeers.flows import DnsAnnotation, FlowRecord

SpanSink = Callable[[Sequence[DnsSpanItem]], None]
TxnListener = Callable[[DnsTransaction], None]

LOCAL_STUBS = ("127.0.0.53", "127.0.0.54", "::1", "127.0.0.1")
FAR_FUTURE_NS = 10**20


class DnsPipelineStage:
    def __init__(self, config: Config, *, span_sink: SpanSink | None = None,
                 on_transaction: TxnListener | None = None) -> None:
        self.tracker = DnsTracker(config.dns)
        self.dns_ports = frozenset(config.dns.ports)
        self.cache = ResolutionCache(config.dns, local_resolvers=LOCAL_STUBS)
        self.mapper = DnsSpanMapper()
        self.span_sink = span_sink
        self.on_transaction = on_transaction
        self.transactions = 0
        self.flows_named = 0
        self.flows_unresolved = 0

    # ---- DnsStage protocol --------------------------------------------------------
    def on_packet(self, ev: DnsPacketEvent) -> None:
        self._completed(self.tracker.handle(ev))

    def close_socket(self, cookie: int, now_ns: int) -> None:
        self._completed(self.tracker.close_socket(cookie, now_ns))

    def tick(self, now_ns: int) -> None:
        self._completed(self.tracker.expire(now_ns))

    def finish(self, now_ns: int) -> None:
        self._completed(self.tracker.expire(FAR_FUTURE_NS))

    def annotate(self, records: Sequence[FlowRecord]) -> Sequence[FlowRecord]:
        out = []
        for r in records:
            # Inbound flows and the resolver traffic itself are not named by DNS.
            if (r.direction != Direction.OUTBOUND or not r.peer_addr
                    or r.peer_port in self.dns_ports):
                out.append(r)
                continue
            tgid = r.owner.tgid if r.owner is not None else 0
            m = self.cache.lookup(r.peer_addr, tgid, r.start_ns)
            if m is None:
                self.flows_unresolved += 1
                out.append(replace(r, dns=DnsAnnotation(resolved=False)))
                continue
            res = m.resolution
            self.flows_named += 1
            out.append(replace(r, dns=DnsAnnotation(
                resolved=True, question_name=res.question_name, cname_chain=res.cname_chain,
                how=m.how, txn_id=res.txn_id, trace_id=res.trace_id, span_id=res.span_id)))
        return out

    # ---- internals ----------------------------------------------------------------
    def _completed(self, txns: Sequence[DnsTransaction]) -> None:
        if not txns:
            return
        spans = []
        for txn in txns:
            self.transactions += 1
            upstream = self.cache.stub_upstream_of(txn)
            trace_id, span_id = self.mapper.ids_for(txn.txn_id)
            self.cache.record(txn, trace_id, span_id)
            if self.on_transaction is not None:
                self.on_transaction(txn)
            if self.span_sink is not None:
                spans.append(DnsSpanItem(txn, upstream))
        if spans and self.span_sink is not None:
            self.span_sink(spans)

    @property
    def stats(self) -> dict[str, int]:
        return {**self.tracker.stats, "dns.transactions": self.transactions,
                "dns.flows_named": self.flows_named,
                "dns.flows_unresolved": self.flows_unresolved}



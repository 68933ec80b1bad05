"""The DNS stage: packets -> transactions (DnsLookup outputs) -> resolution cache -> flow names.

Transactions are recorded in the resolution cache as they complete, so a connection that
ends later finds the name its process asked for. Completed flows are annotated, in the
stage's process() step, with what the cache knew at the flow's start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from otelpeers.config import Config
from otelpeers.dns.cache import ResolutionCache
from otelpeers.dns.lookups import DnsLookup
from otelpeers.dns.tracker import DnsTracker
from otelpeers.dns.transactions import DnsTransaction
from otelpeers.events import Direction, DnsPacketEvent, Event, Kind, SocketEvent
from otelpeers.flows import DnsAnnotation, FlowRecord
from otelpeers.oldest import eviction_batch, oldest_keys
from otelpeers.pipeline import BaseStage, Outputs

LOCAL_STUBS = ("127.0.0.53", "127.0.0.54", "::1", "127.0.0.1")
FAR_FUTURE_NS = 10**20
UNRESOLVED = DnsAnnotation(resolved=False)  # frozen: one instance serves every such flow


def annotation_for(cache: ResolutionCache, dns_ports: frozenset[int],
                   r: FlowRecord) -> DnsAnnotation | None:
    """What the cache knew about r's peer at r's start; None: not named by DNS (inbound flows
    and the resolver traffic itself)."""
    if not nameable(dns_ports, r):
        return None
    tgid = r.owner.tgid if r.owner is not None else None
    m = cache.lookup(r.peer_addr, tgid, r.start_ns)
    if m is None:
        return UNRESOLVED
    res = m.resolution
    return DnsAnnotation(resolved=True, question_name=res.question_name,
                         cname_chain=res.cname_chain, how=m.how, txn_id=res.txn_id)


def nameable(dns_ports: frozenset[int], r: FlowRecord) -> bool:
    """Whether DNS could name r's peer: outbound, not to a resolver, not annotated yet."""
    return (r.direction == Direction.OUTBOUND and bool(r.peer_addr)
            and r.peer_port not in dns_ports and r.dns is None)


def _open_key(r: FlowRecord) -> int | str:
    """An open flow's key: a TCP connection's cookie is unique for the boot."""
    return r.cookie if r.transport == "tcp" else r.flow_id


class DnsStage(BaseStage):
    name: ClassVar[str] = "dns"
    accepts: ClassVar[tuple[type, ...]] = (DnsPacketEvent, SocketEvent)

    def __init__(self, config: Config) -> None:
        self.tracker = DnsTracker(config.dns)
        self.dns_ports = frozenset(config.dns.ports)
        self.cache = ResolutionCache(config.dns, local_resolvers=LOCAL_STUBS)
        self.flows_named = 0
        self.flows_unresolved = 0
        # Open flows' annotations, so live progress snapshots carry their DNS name without a
        # cache lookup every interval; dropped when the flow completes (bounded anyway, oldest
        # first: a dict keeps insertion order at half an OrderedDict's cost per entry). TCP
        # flows are keyed by their socket cookie, the very int the flow table keys them by,
        # so an entry costs no key of its own (a flow id string is ~56 bytes).
        self._open: dict[int | str, DnsAnnotation | None] = {}
        self._max_open = config.flows.max_flows

    def on_event(self, ev: Event, out: Outputs) -> None:
        if isinstance(ev, DnsPacketEvent):
            self._completed(self.tracker.handle(ev), out)
        elif ev.kind == Kind.RELEASE:  # the socket is gone: its unanswered queries end
            self._completed(self.tracker.close_socket(ev.cookie, ev.time_ns), out)

    def tick(self, now_ns: int, out: Outputs) -> None:
        self._completed(self.tracker.expire(now_ns), out)

    def finish(self, now_ns: int, out: Outputs) -> None:
        self._completed(self.tracker.expire(FAR_FUTURE_NS), out)

    def process(self, out: Outputs) -> None:
        if out.progress:
            out.progress = [self._annotate_open(r) for r in out.progress]
        if out.flows:
            if self._open:
                for r in out.flows:
                    self._open.pop(_open_key(r), None)
            out.flows = self.annotate(out.flows)

    def _annotate_open(self, r: FlowRecord) -> FlowRecord:
        if not nameable(self.dns_ports, r):
            return r  # inbound flows, half of a server's: nothing to look up or to hold
        key = _open_key(r)
        if key in self._open:
            dns = self._open[key]
        else:
            dns = self._annotation(r, count=False)
            self._open[key] = dns
            if len(self._open) > self._max_open:
                for stale in oldest_keys(self._open, eviction_batch(self._max_open)):
                    del self._open[stale]
        return r.with_dns(dns) if dns is not None else r

    def annotate(self, records: list[FlowRecord]) -> list[FlowRecord]:
        out = []
        for r in records:
            dns = self._annotation(r)
            out.append(r.with_dns(dns) if dns is not None else r)
        return out

    def _annotation(self, r: FlowRecord, count: bool = True) -> DnsAnnotation | None:
        dns = annotation_for(self.cache, self.dns_ports, r)
        if dns is not None and count:
            if dns.resolved:
                self.flows_named += 1
            else:
                self.flows_unresolved += 1
        return dns

    def _completed(self, txns: list[DnsTransaction], out: Outputs) -> None:
        for txn in txns:
            upstream = self.cache.stub_upstream_of(txn)
            self.cache.record(txn)
            out.dns.append(DnsLookup(txn, upstream))

    def counters(self) -> Mapping[str, int]:
        stats = self.tracker.stats
        return {**stats, "parse_errors": sum(v for k, v in stats.items()
                                             if k.startswith("parse.error.")),
                **{f"cache.{k}": v for k, v in self.cache.stats.items()},
                "flows_named": self.flows_named, "flows_unresolved": self.flows_unresolved}

"""The pipeline behind every source: events -> flow table -> sinks.

Sources (live kernel, recording, synthetic generator) only produce events; everything
from here on is the same for all of them, so replay exercises the real code path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from otelpeers.config import Config
from otelpeers.events import DnsPacketEvent, Event, Kind, ProcessEvent
from otelpeers.flows import FlowRecord, FlowTable


class FlowSink(Protocol):
    def export_flows(self, records: Sequence[FlowRecord]) -> None: ...


class DnsStage(Protocol):
    """Consumes DNS packets; annotates flows with the resolution that named their peer."""

    def on_packet(self, ev: DnsPacketEvent) -> None: ...
    def close_socket(self, cookie: int, now_ns: int) -> None: ...
    def tick(self, now_ns: int) -> None: ...
    def annotate(self, records: Sequence[FlowRecord]) -> Sequence[FlowRecord]: ...
    def finish(self, now_ns: int) -> None: ...


class ProcessStageLike(Protocol):
    def on_process_event(self, ev: ProcessEvent) -> None: ...
    def on_socket_event(self, ev: Event) -> None: ...
    def tick(self, now_ns: int) -> None: ...
    def annotate(self, records: Sequence[FlowRecord]) -> Sequence[FlowRecord]: ...


class Pipeline:
    def __init__(self, config: Config, sinks: Sequence[FlowSink] = (),
                 dns: DnsStage | None = None,
                 process: ProcessStageLike | None = None) -> None:
        f = config.flows
        self.flows = FlowTable(
            udp_idle_timeout_ns=int(f.udp_idle_timeout_s * 1e9),
            icmp_idle_timeout_ns=int(f.icmp_idle_timeout_s * 1e9),
            tcp_close_grace_ns=int(f.tcp_close_grace_s * 1e9),
            max_flows=f.max_flows,
            max_sockets=config.kernel.max_sockets,
        )
        self.sinks = list(sinks)
        self.dns = dns
        self.process = process
        self.events = 0
        self.last_time_ns = 0

    def handle(self, events: Iterable[Event]) -> None:
        done: list[FlowRecord] = []
        for ev in events:
            self.events += 1
            self.last_time_ns = max(self.last_time_ns, ev.time_ns)
            if isinstance(ev, DnsPacketEvent):
                if self.dns is not None:
                    self.dns.on_packet(ev)
                continue
            if isinstance(ev, ProcessEvent):
                if self.process is not None:
                    self.process.on_process_event(ev)
                continue
            if self.process is not None:
                self.process.on_socket_event(ev)
            if ev.kind == Kind.RELEASE and self.dns is not None:
                self.dns.close_socket(ev.cookie, ev.time_ns)
            done.extend(self.flows.process(ev))
        self._emit(done)

    def tick(self, now_ns: int) -> None:
        """Periodic work: idle expiry. now_ns is event time for replay, wall time live."""
        if self.dns is not None:
            self.dns.tick(now_ns)
        if self.process is not None:
            self.process.tick(now_ns)
        self._emit(self.flows.expire(now_ns))

    def finish(self, now_ns: int) -> None:
        """End of input: open flows go out ended now and marked incomplete."""
        self._emit(self.flows.drain(now_ns))
        if self.dns is not None:
            self.dns.finish(now_ns)

    def _emit(self, records: Sequence[FlowRecord]) -> None:
        if not records:
            return
        if self.dns is not None:
            records = self.dns.annotate(records)
        if self.process is not None:
            records = self.process.annotate(records)
        for sink in self.sinks:
            sink.export_flows(records)

"""The pipeline behind every source: typed stages in a declared order, then sinks.

    source --events--> stages (in order) --Outputs--> sinks

A round is one batch of events, optionally followed by a tick (the clock's, see
otelpeers.drive). In a round:
  1. each event goes to the stages that accept its type (declared by the stage);
  2. on a tick, every stage's tick() runs (idle expiry, timeouts);
  3. every stage's process() runs in order over the round's Outputs: a stage may add
     outputs (a detection) or replace them with annotated copies (a flow with its DNS name),
     so a later stage always sees what the earlier ones did;
  4. the sinks consume the round's Outputs (spans, metrics, graph, live view, files).
Sources (kernel, recording) only produce events, so replay exercises the same code as run.
Adding a stage means writing one class and adding it to the list in otelpeers.agent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

from otelpeers.config import Config
from otelpeers.events import Event, PairStats, SocketEvent
from otelpeers.flows import FlowRecord, FlowTable

if TYPE_CHECKING:
    from otelpeers.detect.model import Detection
    from otelpeers.dns.lookups import DnsLookup
    from otelpeers.events import ProcessEvent


@dataclass(slots=True)
class Outputs:
    """What one round produced, by type. Lists are in event order."""

    flows: list[FlowRecord] = field(default_factory=list)  # completed flows
    progress: list[FlowRecord] = field(default_factory=list)  # open flows with new volume
    dns: list[DnsLookup] = field(default_factory=list)  # completed DNS transactions
    process: list[ProcessEvent] = field(default_factory=list)  # exec/fork/exit/file opens
    detections: list[Detection] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.flows or self.progress or self.dns or self.process or self.detections)


class Stage(Protocol):
    """One step of the pipeline. `name` prefixes its counters in the agent's self-telemetry;
    `accepts` lists the event types whose events on_event receives."""

    name: ClassVar[str]
    accepts: ClassVar[tuple[type, ...]]

    def on_event(self, ev: Event, out: Outputs) -> None: ...
    def tick(self, now_ns: int, out: Outputs) -> None: ...
    def process(self, out: Outputs) -> None: ...
    def finish(self, now_ns: int, out: Outputs) -> None: ...
    def counters(self) -> Mapping[str, int]: ...
    def close(self) -> None: ...


class Sink(Protocol):
    """Where outputs leave the pipeline. close() flushes and releases what it holds."""

    name: ClassVar[str]

    def consume(self, out: Outputs) -> None: ...
    def close(self) -> None: ...
    def counters(self) -> Mapping[str, int]: ...


class BaseStage:
    """No-op defaults, so a stage implements only what it does."""

    name: ClassVar[str] = "stage"
    accepts: ClassVar[tuple[type, ...]] = ()

    def on_event(self, ev: Event, out: Outputs) -> None:
        pass

    def tick(self, now_ns: int, out: Outputs) -> None:
        pass

    def process(self, out: Outputs) -> None:
        pass

    def finish(self, now_ns: int, out: Outputs) -> None:
        pass

    def counters(self) -> Mapping[str, int]:
        return {}

    def close(self) -> None:
        pass


class FlowStage(BaseStage):
    """Socket events -> completed flows (and live progress of open ones), via the FlowTable."""

    name = "flows"
    accepts = (SocketEvent, PairStats)  # PairStats: exact per-pair counts -> summaries

    def __init__(self, config: Config) -> None:
        f = config.flows
        self.table = FlowTable(
            udp_idle_timeout_ns=int(f.udp_idle_timeout_s * 1e9),
            icmp_idle_timeout_ns=int(f.icmp_idle_timeout_s * 1e9),
            tcp_close_grace_ns=int(f.tcp_close_grace_s * 1e9),
            max_flows=f.max_flows,
            max_sockets=config.kernel.max_sockets,
        )

    def on_event(self, ev: Event, out: Outputs) -> None:
        done = self.table.process(ev)  # type: ignore[arg-type]
        if done:
            out.flows.extend(done)

    def tick(self, now_ns: int, out: Outputs) -> None:
        out.flows.extend(self.table.expire(now_ns))
        out.progress.extend(self.table.take_progress())

    def finish(self, now_ns: int, out: Outputs) -> None:
        out.flows.extend(self.table.drain(now_ns))

    def counters(self) -> Mapping[str, int]:
        return {k: int(v) for k, v in vars(self.table.stats).items()}


EventTap = Callable[[Sequence[Event]], None]


class Pipeline:
    """Stages in order, then sinks; see the module docstring for one round."""

    def __init__(self, stages: Sequence[Stage], sinks: Sequence[Sink] = (),
                 taps: Sequence[EventTap] = ()) -> None:
        self.stages = list(stages)
        self.sinks = list(sinks)
        self.taps = list(taps)  # see every raw event first (the recorder)
        self.events = 0
        self.last_time_ns = 0
        self._routes: dict[type, tuple[Callable[[Event, Outputs], None], ...]] = {}
        for stage in self.stages:
            for t in stage.accepts:
                self._routes[t] = (*self._routes.get(t, ()), stage.on_event)

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    def handle(self, events: Sequence[Event], now_ns: int | None = None) -> Outputs:
        """One round: events, then a tick at now_ns when given. Returns what it produced."""
        out = Outputs()
        for tap in self.taps:
            tap(events)
        routes = self._routes
        for ev in events:
            for fn in routes.get(type(ev), ()):
                fn(ev, out)
        if events:
            self.events += len(events)
            self.last_time_ns = max(self.last_time_ns, max(ev.time_ns for ev in events))
        if now_ns is not None:
            for stage in self.stages:
                stage.tick(now_ns, out)
        self._deliver(out)
        return out

    def finish(self, now_ns: int) -> Outputs:
        """End of input: open flows end now (marked incomplete), pending lookups time out."""
        out = Outputs()
        for stage in self.stages:
            stage.finish(now_ns, out)
        self._deliver(out)
        return out

    def close(self) -> None:
        """Flush and close every sink (exporters wait, bounded, for their queues), then
        release what stages hold (worker threads)."""
        for sink in self.sinks:
            sink.close()
        for stage in self.stages:
            stage.close()

    def counters(self) -> dict[str, int]:
        """Every stage's and sink's counters, prefixed with its name."""
        out: dict[str, int] = {"pipeline.events": self.events}
        for part in (*self.stages, *self.sinks):
            out.update({f"{part.name}.{k}": int(v) for k, v in part.counters().items()})
        return out

    def _deliver(self, out: Outputs) -> None:
        for stage in self.stages:
            stage.process(out)
        if out:
            for sink in self.sinks:
                sink.consume(out)

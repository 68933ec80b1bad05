"""The one event loop: drive(source, pipeline, clock).

Used by `run`, `record`, `replay`, `detect`, `graph --recording` and the kernel tests. The
source yields batches of events (possibly empty, so that time can pass on a quiet host);
the clock says when the pipeline ticks and what "now" is: wall time for the live kernel,
the events' own time for recordings and logs, so a replay expires flows and times out DNS
queries exactly where the live agent did. At the end of input the pipeline finishes (open
flows end marked incomplete, pending queries time out) at the clock's final time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from otelpeers.events import Event
from otelpeers.pipeline import Pipeline

TICK_NS = 1_000_000_000


class Source(Protocol):
    def batches(self) -> Iterator[list[Event]]: ...
    def stop(self) -> None: ...
    def counters(self) -> Mapping[str, int]: ...


class Clock(Protocol):
    def due(self, batch: Sequence[Event]) -> int | None:
        """The tick time when the pipeline should tick after this batch, else None."""
        ...

    def final(self, pipeline: Pipeline) -> int:
        """The time at which the pipeline finishes."""
        ...


class WallClock:
    """Ticks every tick_ns of monotonic time; now is the wall clock (epoch ns)."""

    def __init__(self, tick_ns: int = TICK_NS,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        self.tick_ns = tick_ns
        self._mono = monotonic_ns
        self._wall = wall_ns
        self._next = monotonic_ns() + tick_ns

    def due(self, batch: Sequence[Event]) -> int | None:
        now = self._mono()
        if now < self._next:
            return None
        self._next = now + self.tick_ns
        return self._wall()

    def final(self, pipeline: Pipeline) -> int:
        return self._wall()


class EventClock:
    """Ticks when the events' own time passes the next tick; now is the latest event time."""

    def __init__(self, tick_ns: int = TICK_NS) -> None:
        self.tick_ns = tick_ns
        self._next: int | None = None
        self._latest = 0

    def due(self, batch: Sequence[Event]) -> int | None:
        if batch:
            self._latest = max(self._latest, max(ev.time_ns for ev in batch))
        if self._next is None:
            if not batch:
                return None
            self._next = self._latest  # the first batch ticks, then every tick_ns
        if self._latest < self._next:
            return None
        self._next = self._latest + self.tick_ns
        return self._latest

    def final(self, pipeline: Pipeline) -> int:
        return max(self._latest, pipeline.last_time_ns)


@dataclass
class DriveResult:
    events: int
    batches: int


def drive(source: Source, pipeline: Pipeline, clock: Clock, *,
          should_stop: Callable[[], bool] | None = None,
          after_batch: Callable[[], None] | None = None) -> DriveResult:
    """Feed every batch of source into pipeline until the source ends, then finish.

    should_stop: asked after each batch (a deadline); when true the source is stopped and
    yields what it still holds. after_batch: runs after each batch (tests wake waiters)."""
    events = batches = 0
    stopping = False
    for batch in source.batches():
        events += len(batch)
        batches += 1
        pipeline.handle(batch, clock.due(batch))
        if after_batch is not None:
            after_batch()
        if not stopping and should_stop is not None and should_stop():
            stopping = True
            source.stop()
    pipeline.finish(clock.final(pipeline))
    if after_batch is not None:
        after_batch()
    return DriveResult(events, batches)

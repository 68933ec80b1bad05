"""The live agent loop: sensors attached, events through the pipeline, everything detached.

Signals only ask the loop to stop; the loop then drains the ring buffer, ends open flows
as spans marked incomplete, and the caller flushes exporters. The sensors are detached in
a finally block, so an exception anywhere still leaves nothing attached.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType

from otelpeers.config import Config
from otelpeers.events import Event
from otelpeers.kernel.loader import KernelSensors
from otelpeers.kernel.source import KernelSource, SourceStats
from otelpeers.pipeline import Pipeline

log = logging.getLogger(__name__)

TICK_NS = 1_000_000_000


@dataclass
class RunResult:
    events: int
    source: SourceStats
    stale_removed: int


def run_live(
    config: Config,
    pipeline: Pipeline | None,
    *,
    duration_s: float | None = None,
    on_events: Callable[[list[Event]], None] | None = None,
    on_tick: Callable[[], None] | None = None,
    on_ready: Callable[[], None] | None = None,
    counters: list[Callable[[], Mapping[str, int]]] | None = None,
) -> RunResult:
    """Run until SIGINT/SIGTERM or duration_s. pipeline None: events go to on_events only."""
    stop_requested = False
    source: KernelSource | None = None

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True
        log.info("received %s, stopping", signal.Signals(signum).name)
        if source is not None:
            source.stop()

    old = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    sensors = KernelSensors(config)
    events = 0
    last_drops = 0
    try:
        sensors.start()
        source = KernelSource(sensors, stats_interval_s=config.kernel.stats_interval_s)
        if counters is not None:  # kernel-side losses join the agent's self-telemetry
            src = source
            counters.append(lambda: {
                "source.records": src.stats.records,
                "source.decode_errors": src.stats.decode_errors,
                "source.kernel_drops": src.stats.kernel_drops_total(),
                **{f"kernel_drops.{k}": v for k, v in src.stats.kernel_drops.items()}})
        if stop_requested:
            source.stop()
        if on_ready is not None:
            on_ready()
        deadline = time.monotonic() + duration_s if duration_s else None
        next_tick = time.monotonic_ns() + TICK_NS
        for batch in source.batches():
            events += len(batch)
            if on_events is not None:
                on_events(batch)
            if pipeline is not None:
                pipeline.handle(batch)
            if time.monotonic_ns() >= next_tick:
                next_tick = time.monotonic_ns() + TICK_NS
                if pipeline is not None:
                    pipeline.tick(time.time_ns())
                drops = source.stats.kernel_drops_total()
                if drops > last_drops:  # once per tick, never once per event
                    log.warning("kernel could not submit %d events so far (%s); raise "
                                "kernel.ringbuf_pages", drops, source.stats.kernel_drops)
                    last_drops = drops
                if on_tick is not None:
                    on_tick()
            if deadline is not None and time.monotonic() >= deadline:
                source.stop()
        if pipeline is not None:
            pipeline.finish(time.time_ns())
        return RunResult(events, source.stats, len(sensors.stale_removed))
    finally:
        sensors.close()
        for s, h in old.items():
            signal.signal(s, h)

"""Event sources besides the live kernel (otelpeers.kernel.source): recordings."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

from otelpeers.drive import TICK_NS
from otelpeers.events import Event
from otelpeers.recording import ReplayStats, read_recording


class RecordingSource:
    """A recording's events in batches. A batch ends after batch_size events or when the
    events' time passes tick_ns beyond its first event, so the event clock ticks where the
    live agent did (idle expiry, DNS timeouts) whatever the batch size."""

    def __init__(self, path: str | os.PathLike[str], stats: ReplayStats | None = None,
                 batch_size: int = 256, tick_ns: int = TICK_NS) -> None:
        self.path = path
        self.stats = stats if stats is not None else ReplayStats()
        self.batch_size = batch_size
        self.tick_ns = tick_ns
        self._stopped = False

    def batches(self) -> Iterator[list[Event]]:
        batch: list[Event] = []
        first = 0
        for ev in read_recording(self.path, self.stats):
            if self._stopped:
                break
            if batch and (len(batch) >= self.batch_size or ev.time_ns - first >= self.tick_ns):
                yield batch
                batch = []
            if not batch:
                first = ev.time_ns
            batch.append(ev)
        if batch:
            yield batch

    def stop(self) -> None:
        self._stopped = True

    def counters(self) -> Mapping[str, int]:
        return {"events": self.stats.events, "malformed": self.stats.malformed}

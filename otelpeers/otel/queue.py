"""A bounded export queue with one worker thread; shared by the span and log sinks.

The pipeline thread only appends to the queue and never waits. The worker takes batches,
maps them (spans, log records) and exports them. When the queue is full new items are
dropped and counted, except priority items (those that carry a detection): a detection's
evidence is never dropped by the agent's own queue, they go to a separate, much larger
bound whose overflow is counted too. Failures (collector down) are counted and reported
once per interval, never per item; after a failure the worker waits one interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Generic, TypeVar

_log = logging.getLogger(__name__)

T = TypeVar("T")

WARN_INTERVAL_S = 30.0
SHUTDOWN_TIMEOUT_S = 30.0
PRIORITY_FACTOR = 4  # priority items may fill this many times the normal bound


class ExportQueue(Generic[T]):
    """export(batch) -> bool is called from the workers (or from flush/close): at most
    `workers` calls at a time (1 unless the export function is safe to call concurrently;
    the span export child takes 2, so that one batch is packed while the other is sent).

    Counters (names are stable, exported as agent self-telemetry with the owner's prefix):
    exported, dropped_queue_full, failed, dropped_shutdown, not_exported, batches_exported,
    batches_failed, queue_size."""

    def __init__(self, export: Callable[[list[T]], bool] | None, *, what: str,
                 max_queue: int, batch: int, delay_s: float,
                 warn_interval_s: float = WARN_INTERVAL_S, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._export = export
        self._what = what  # "spans", "log records": for messages
        self._max = max_queue
        self._batch = batch
        self._delay_s = delay_s
        self._warn_interval_s = warn_interval_s
        self._queue: deque[tuple[T, bool]] = deque()  # (item, is priority)
        self._priority = 0  # priority items in the queue
        self._cond = threading.Condition()
        self._export_slots = threading.Semaphore(workers)
        self._in_flight = 0  # batches taken and not yet counted (under _cond)
        self._stopping = False
        self._closed = False
        self._last_warn = float("-inf")
        self._failed_since_warn = 0
        self._stats = dict.fromkeys(
            ("exported", "dropped_queue_full", "failed", "dropped_shutdown", "not_exported",
             "batches_exported", "batches_failed", "priority_overflow"), 0)
        self._workers = [threading.Thread(target=self._run, name=f"otelpeers-export-{what}",
                                          daemon=True) for _ in range(workers)]
        for worker in self._workers:
            worker.start()

    def stats(self) -> Mapping[str, int]:
        with self._cond:
            return {**self._stats, "queue_size": len(self._queue)}

    # ---- input (any thread; never blocks) ----------------------------------------------
    def put(self, items: Sequence[T], priority: Sequence[T] = ()) -> None:
        if not items and not priority:
            return
        with self._cond:
            if self._export is None:
                self._stats["not_exported"] += len(items) + len(priority)
                return
            if self._closed:
                self._stats["dropped_shutdown"] += len(items) + len(priority)
                return
            if priority:
                room = self._max * PRIORITY_FACTOR - len(self._queue)
                keep = priority[:max(room, 0)]
                self._stats["priority_overflow"] += len(priority) - len(keep)
                self._queue.extend((x, True) for x in keep)
                self._priority += len(keep)
            room = self._max - (len(self._queue) - self._priority)
            if room < len(items):
                self._stats["dropped_queue_full"] += len(items) - max(room, 0)
                items = items[:max(room, 0)]
            self._queue.extend((x, False) for x in items)
            if len(self._queue) >= self._batch:
                self._cond.notify()

    # ---- worker -------------------------------------------------------------------------
    def _run(self) -> None:
        failed = False
        while True:
            with self._cond:
                if failed:
                    # Collector down: wait a full interval before trying again; what arrives
                    # meanwhile queues, then is dropped and counted.
                    deadline = time.monotonic() + self._delay_s
                    while not self._stopping and time.monotonic() < deadline:
                        self._cond.wait(deadline - time.monotonic())
                elif len(self._queue) < self._batch and not self._stopping:
                    self._cond.wait(self._delay_s)
                if self._stopping:
                    return  # close() drains the rest in its own thread, bounded in time
            failed = not self._export_some()

    def _take(self) -> list[T]:
        with self._cond:
            k = min(self._batch, len(self._queue))
            taken = [self._queue.popleft() for _ in range(k)]
            self._priority -= sum(1 for _, prio in taken if prio)
            if taken:
                self._in_flight += 1
            return [x for x, _ in taken]

    def _export_some(self) -> bool:
        """Export up to one batch; False when the export failed."""
        if self._export is None:
            return True
        with self._export_slots:
            items = self._take()
            if not items:
                return True
            ok = False
            try:
                ok = self._export(items)
            except Exception as exc:  # exporters should not raise; some do (bad encoding)
                _log.debug("%s export raised: %r", self._what, exc)
            finally:
                with self._cond:
                    if ok:
                        self._stats["exported"] += len(items)
                        self._stats["batches_exported"] += 1
                    else:
                        self._stats["failed"] += len(items)
                        self._stats["batches_failed"] += 1
                    self._in_flight -= 1
                    self._cond.notify_all()
                    report = None if ok else self._failure_report(len(items))
            if report is not None:
                _log.warning("%s export failing: %d lost since the last report (%d in total); "
                             "is the OTLP collector reachable?", self._what, *report)
            return ok

    def _failure_report(self, n: int) -> tuple[int, int] | None:
        """Under _cond: (lost since the last report, lost in total) when a warning is due."""
        self._failed_since_warn += n
        now = time.monotonic()
        if now - self._last_warn < self._warn_interval_s:
            return None
        self._last_warn = now
        lost, self._failed_since_warn = self._failed_since_warn, 0
        return lost, self._stats["failed"]

    # ---- control ------------------------------------------------------------------------
    def flush(self, timeout_s: float = 30) -> bool:
        """Export everything queued now, in up to `workers` batches at a time. False when the
        deadline passed first or an export failed (the collector is likely down: more
        attempts would only wait longer)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            failed_before = self._stats["batches_failed"]
        helpers = [threading.Thread(target=self._drain, args=(deadline, failed_before),
                                    name=f"otelpeers-flush-{self._what}", daemon=True)
                   for _ in range(len(self._workers) - 1)]
        for helper in helpers:
            helper.start()
        self._drain(deadline, failed_before)
        for helper in helpers:
            helper.join()  # each returns after its export, bounded by the export's timeout
        with self._cond:  # and the batches the workers had taken are answered, too
            while self._in_flight and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            return (not self._queue and not self._in_flight
                    and self._stats["batches_failed"] == failed_before)

    def _drain(self, deadline: float, failed_before: int) -> None:
        """Export batches until the queue is empty, the deadline passes or a batch fails."""
        while True:
            with self._cond:
                if not self._queue or self._stats["batches_failed"] != failed_before:
                    return
            if time.monotonic() >= deadline or not self._export_some():
                return

    def close(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop accepting items, export what is queued (bounded: at most timeout_s plus one
        export's own timeout; after a failed export the rest is dropped and counted)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for worker in self._workers:
            worker.join(max(deadline - time.monotonic(), 0.0))
        if not self.flush(timeout_s):
            with self._cond:
                self._stats["dropped_shutdown"] += len(self._queue)
                self._queue.clear()
                self._priority = 0
            _log.warning("%s export did not finish at shutdown (failed or over %.0f s); %d "
                         "dropped", self._what, timeout_s, self._stats["dropped_shutdown"])
        if self._failed_since_warn:
            _log.warning("%s export: %d lost since the last report (%d in total)", self._what,
                         self._failed_since_warn, self._stats["failed"])
            self._failed_since_warn = 0

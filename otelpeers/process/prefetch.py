"""Reads /proc for the processes the pipeline sees, off the pipeline thread.

The pipeline thread must never wait on /proc or on hashing an executable (up to 256 MiB):
it only asks for a process here. One worker thread does the lookups, so the table is warm
by the time a flow of that process is exported. Requests are deduplicated and bounded;
what does not fit is dropped and counted (the exporter then reads /proc itself).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from otelpeers.process.table import ProcessTable

_log = logging.getLogger(__name__)


class Prefetcher:
    def __init__(self, table: ProcessTable, max_pending: int = 4096) -> None:
        self.table = table
        self.max_pending = max_pending
        self._pending: OrderedDict[int, str | None] = OrderedDict()  # tgid -> comm hint
        self._cond = threading.Condition()
        self._closed = False
        self._busy = False
        self.stats = {"requested": 0, "dropped": 0, "done": 0, "errors": 0}
        self._thread = threading.Thread(target=self._run, name="otelpeers-procfs", daemon=True)
        self._thread.start()

    def request(self, tgid: int, comm: str | None = None) -> None:
        """Never blocks."""
        with self._cond:
            if self._closed or tgid in self._pending:
                return
            if len(self._pending) >= self.max_pending:
                self.stats["dropped"] += 1
                return
            self._pending[tgid] = comm
            self.stats["requested"] += 1
            self._cond.notify()

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """True once every request so far has been looked up (for tests and shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                tgid, comm = self._pending.popitem(last=False)
                self._busy = True
            try:
                self.table.lookup(tgid, comm_hint=comm)
                self.stats["done"] += 1
            except Exception:  # a broken /proc entry must not stop the worker
                self.stats["errors"] += 1
                _log.debug("prefetch of %d failed", tgid, exc_info=True)
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
        self._thread.join(5)

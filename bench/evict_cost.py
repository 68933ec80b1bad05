"""CPU cost of a new flow when the flow table is full: batched eviction against one at a time.

The flow table is a dict in insertion order. Removing its first entry leaves a hole at the
front of the dict's entry table, and the next ``next(iter(table))`` walks every earlier
hole again until the dict is resized (otelpeers/oldest.py). "one at a time" is the previous
FlowTable._evict_if_full, kept here as the baseline; "batched" is the table as shipped (1/256
of the capacity per pass). Both get the same synthetic TCP connections (create, connect,
established) into a table already at capacity, in the same run, alternating; the script
reports CPU microseconds per new flow (process time, median of the repetitions). No root.

    .venv/bin/python bench/evict_cost.py [--capacity 100000] [--flows 30000] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otelpeers.events import Direction, Kind, Owner, SocketEvent  # noqa: E402
from otelpeers.flows import CloseReason, FlowRecord, FlowTable  # noqa: E402

CLIENT = Owner(100, 100, 1000, 1000, 7, "client")


class OneAtATime(FlowTable):
    """The eviction as it was: the first key looked up again for every evicted flow."""

    def _evict_if_full(self) -> list[FlowRecord]:
        done = []
        while len(self._flows) > self.max_flows:
            oldest = next(iter(self._flows))
            f = self._flows[oldest]
            done.append(self._complete(oldest, f.last_activity_ns, CloseReason.EVICTED,
                                       complete=False))
            self.stats.flows_evicted += 1
        return done


def connect(table: FlowTable, cookie: int) -> None:
    t = cookie * 1000
    port = 1024 + cookie % 60000
    table.process(SocketEvent(kind=Kind.SOCK_CREATE, time_ns=t, cookie=cookie, owner=CLIENT))
    table.process(SocketEvent(kind=Kind.CONNECT, time_ns=t + 1, cookie=cookie, owner=CLIENT,
                              peer_addr="10.0.0.2", peer_port=80,
                              direction=Direction.OUTBOUND))
    table.process(SocketEvent(kind=Kind.ESTABLISHED, time_ns=t + 2, cookie=cookie,
                              owner=CLIENT, local_addr="10.0.0.1", local_port=port,
                              peer_addr="10.0.0.2", peer_port=80,
                              direction=Direction.OUTBOUND))


def per_new_flow_us(cls: type[FlowTable], capacity: int, flows: int) -> tuple[float, int]:
    table = cls(max_flows=capacity, max_sockets=capacity)
    for cookie in range(1, capacity + 1):
        connect(table, cookie)
    t0 = time.process_time()
    for cookie in range(capacity + 1, capacity + flows + 1):
        connect(table, cookie)
    return (time.process_time() - t0) / flows * 1e6, table.stats.flows_evicted


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capacity", type=int, default=100_000)
    ap.add_argument("--flows", type=int, default=30_000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    results: dict[str, list[float]] = {"one at a time": [], "batched": []}
    for _ in range(args.reps):
        for name, cls in (("one at a time", OneAtATime), ("batched", FlowTable)):
            us, evicted = per_new_flow_us(cls, args.capacity, args.flows)
            assert evicted >= args.flows, (name, evicted)  # every new flow made room
            results[name].append(us)
    for name, values in results.items():
        print(f"{name:14} {statistics.median(values):6.1f} us per new flow at capacity "
              f"{args.capacity:,} (runs: {', '.join(f'{v:.1f}' for v in values)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

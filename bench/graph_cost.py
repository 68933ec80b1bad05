"""CPU cost of the relationship graph per completed flow: GraphSink.consume, old vs new.

"old" is the per-flow implementation kept in bench/graph_reference.py (one lock and one
process lookup per record, every flow resolved from scratch); "new" is otelpeers.graph
(one lock per round, lookups memoised per round, remembered fast paths). Both get the same
synthetic rounds; the script checks that they build the same graph, then reports CPU
microseconds per flow (process time; min and median of several repetitions). No root.

Cases:
  repeat         local TCP connections between 50 processes, each client always talking
                 to the same server (two flow records per connection, linked)
  repeat_out     outbound connections from 50 processes to 20 remote peers each
  new_peers      outbound flows from 50 processes, every one to a new remote address
  new_peers_full the same into a small, full graph (every flow evicts a node and an edge)
  new_processes  local connections whose client is a new process every time

    .venv/bin/python bench/graph_cost.py [--flows 20000] [--reps 5] [--round 256]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.graph_reference import ReferenceGraph, ReferenceSink  # noqa: E402
from otelpeers.events import Counters, Direction  # noqa: E402
from otelpeers.flows import FlowRecord, Listener  # noqa: E402
from otelpeers.graph import GraphSink, RelationshipGraph  # noqa: E402
from otelpeers.pipeline import Outputs  # noqa: E402
from otelpeers.process.table import ProcessInfo  # noqa: E402
from otelpeers.testing.flows import T0, flow, owner  # noqa: E402

PROCESSES = 50
US = 1_000  # ns: flows are 50 us apart in event time


def process_info(pid: int) -> ProcessInfo:
    comm = f"proc{pid}"
    return ProcessInfo(
        pid=pid, ppid=1, start_time_ticks=1000 + pid, comm=comm, exe_path=f"/usr/bin/{comm}",
        exe_name=comm, command_line=f"{comm} --serve", command_line_truncated=False, uid=1000,
        euid=1000, gid=1000, egid=1000, user_name="app", real_user_name="app",
        group_name="app", vpid=None, creation_time_ns=T0, cgroup_path="/",
        cgroup_line="0::/", container_id=None, container_runtime=None, pid_ns=None,
        net_ns=None, mnt_ns=None, exe_sha256=None, ancestry=((1, "systemd"),))


def local_connection(i: int, client: int, server: int) -> tuple[FlowRecord, FlowRecord]:
    """Both ends of one loopback connection, server end first (it closes first)."""
    cid, sid = f"{2 * i + 1:x}", f"{2 * i + 2:x}"
    t = T0 + i * 50 * US
    port = 8000 + server % 1000
    lst = Listener("127.0.0.1", port, T0 - 10**9, T0 - 10**9 + 1, owner(server, f"proc{server}"))
    c = flow(cid, proc=owner(client, f"proc{client}"), peer="127.0.0.1", peer_port=port,
             local="127.0.0.1", local_port=30000 + i % 30000, local_peer_flow_id=sid,
             start_ns=t, counters=Counters(4, 600, 300, 4, 900, 700))
    s = flow(sid, direction=Direction.INBOUND, proc=owner(server, f"proc{server}"),
             peer="127.0.0.1", peer_port=30000 + i % 30000, local="127.0.0.1",
             local_port=port, listener=lst, local_peer_flow_id=cid, start_ns=t + 1000,
             counters=Counters(4, 900, 700, 4, 600, 300))
    return s, c


def case_repeat(n: int) -> Iterator[FlowRecord]:
    for i in range(n // 2):
        c = 1000 + i % PROCESSES
        yield from local_connection(i, c, 1000 + (c * 7 + 3) % PROCESSES)


def case_repeat_out(n: int) -> Iterator[FlowRecord]:
    for i in range(n):
        p = 1000 + i % PROCESSES
        yield flow(f"{i + 1:x}", proc=owner(p, f"proc{p}"), peer=f"192.0.2.{(i // 7) % 20}",
                   local_port=30000 + i % 30000, start_ns=T0 + i * 50 * US)


def case_new_peers(n: int) -> Iterator[FlowRecord]:
    for i in range(n):
        p = 1000 + i % PROCESSES
        yield flow(f"{i + 1:x}", proc=owner(p, f"proc{p}"),
                   peer=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                   local_port=30000 + i % 30000, start_ns=T0 + i * 50 * US)


def case_new_processes(n: int) -> Iterator[FlowRecord]:
    for i in range(n // 2):
        yield from local_connection(i, 100_000 + i, 1000 + i % PROCESSES)


CASES: dict[str, tuple[Callable[[int], Iterator[FlowRecord]], dict[str, int]]] = {
    "repeat": (case_repeat, {}),
    "repeat_out": (case_repeat_out, {}),
    "new_peers": (case_new_peers, {}),
    "new_peers_full": (case_new_peers, {"max_nodes": 2_000, "max_edges": 4_000}),
    "new_processes": (case_new_processes, {}),
}


def lookup_table(flows: list[FlowRecord]) -> Callable[[int], ProcessInfo | None]:
    infos = {r.owner.tgid: process_info(r.owner.tgid) for r in flows if r.owner is not None}
    return infos.get


def run_once(impl: str, rounds: list[Outputs], bounds: dict[str, int],
             lookup: Callable[[int], ProcessInfo | None]) -> tuple[float, object]:
    if impl == "old":
        sink: ReferenceSink | GraphSink = ReferenceSink(ReferenceGraph(**bounds), lookup)
    else:
        sink = GraphSink(RelationshipGraph(**bounds), lookup)
    gc.collect()
    c0 = time.process_time()
    for out in rounds:
        sink.consume(out)
    return time.process_time() - c0, sink.graph


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flows", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--round", type=int, default=256, help="flows per pipeline round")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--out", help="also write the figures as JSON here")
    args = ap.parse_args()
    results = {}
    print(f"{'case':<16}{'old min':>9}{'old med':>9}{'new min':>9}{'new med':>9}"
          f"{'speedup':>9}   us/flow (CPU), {args.flows} flows x {args.reps}")
    for name in args.cases.split(","):
        gen, bounds = CASES[name]
        flows = list(gen(args.flows))
        rounds = [Outputs(flows=flows[k:k + args.round])
                  for k in range(0, len(flows), args.round)]
        lookup = lookup_table(flows)
        per: dict[str, list[float]] = {"old": [], "new": []}
        graphs = {}
        for _ in range(args.reps):
            for impl in ("old", "new"):  # interleaved: both see the same machine load
                cpu, graphs[impl] = run_once(impl, rounds, bounds, lookup)
                per[impl].append(cpu / len(flows) * 1e6)
        same = graphs["old"].snapshot() == graphs["new"].snapshot()  # type: ignore[attr-defined]
        if not same:
            raise SystemExit(f"{name}: old and new graphs differ")
        row = {impl: {"min": round(min(v), 2), "median": round(statistics.median(v), 2)}
               for impl, v in per.items()}
        row["speedup_median"] = round(row["old"]["median"] / row["new"]["median"], 1)
        results[name] = row
        print(f"{name:<16}{row['old']['min']:>9}{row['old']['median']:>9}"
              f"{row['new']['min']:>9}{row['new']['median']:>9}"
              f"{row['speedup_median']:>8}x")
    if args.out:
        Path(args.out).write_text(json.dumps({"flows": args.flows, "reps": args.reps,
                                              "round": args.round, "cases": results},
                                             indent=2) + "\n")


if __name__ == "__main__":
    main()

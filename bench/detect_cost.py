"""Detection's cost on the pipeline: every rule on against detection off, same stream.

The agent's user-space pipeline as `run` builds it (process, DNS, flows, detection when
enabled, graph, metrics, spans written as OTLP/JSON files) is fed the same synthetic stream
of TCP connection records (seeded: 300 processes, 4,000 peers, web, database and SSH ports,
a few beacons and a scan, so that rules have work to do and fire), in alternating rounds
(off, on, off, on, ...) in one process. Per round: flows delivered to the sinks per wall second
in the steady state (10% to 90% of the stream), and records per CPU-second of this process
(every thread, until everything was exported); the CPU of the child processes (span export,
and the rules' own process when on) is reported beside it. Writes JSON.

    .venv/bin/python bench/detect_cost.py --records 60000 --rounds 4 --out /tmp/dc.json
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import socket
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otelpeers.agent import build_agent  # noqa: E402
from otelpeers.config import Config, parse_config  # noqa: E402
from otelpeers.drive import EventClock, drive  # noqa: E402
from otelpeers.events import Counters, Direction, Event, Kind, Owner, SocketEvent  # noqa: E402

RATE = 10_000  # records per second of event time (the loss group's sustained rate)


def stream(n: int, seed: int = 7) -> list[Event]:
    rng = random.Random(seed)
    t0 = 1_780_000_000 * 10**9
    owners = [Owner(10_000 + i, 10_000 + i, 1000 + i % 7, 1000, 5000 + i % 11,
                    rng.choice(["curl", "python3", "nginx", "postgres", "java", "node"]))
              for i in range(300)]
    peers = [f"10.{rng.randrange(1, 250)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
             for _ in range(4000)]
    ports = [443, 443, 443, 80, 5432, 22, 8080, 6379]
    beacons = [(owners[i], peers[i], 60 + i) for i in range(5)]  # 1 s .. : periodic
    scanner = owners[299]
    out: list[Event] = []
    step = 10**9 // RATE
    for i in range(n):
        t = t0 + i * step
        if i % RATE < len(beacons):  # one beat per second of event time each
            owner, peer, port = beacons[i % RATE]
        elif i % 50 == 0:  # a slow vertical scan of one peer
            owner, peer, port = scanner, peers[-1], 1 + (i // 50) % 65535
        else:
            owner = owners[int(rng.paretovariate(1.2)) % len(owners)]
            peer = peers[int(rng.paretovariate(1.1) * 7) % len(peers)]
            port = rng.choice(ports)
        dur = rng.randrange(1, 400) * 1_000_000
        b_out, b_in = rng.randrange(200, 4000), rng.randrange(200, 200_000)
        out.append(SocketEvent(
            kind=Kind.TCP_CLOSE, time_ns=t, cookie=1 + i, netns_cookie=1, owner=owner,
            family=socket.AF_INET, protocol=socket.IPPROTO_TCP, sock_type=1,
            direction=Direction.OUTBOUND, old_state=1, new_state=7, local_addr="10.0.0.2",
            local_port=32768 + i % 28000, peer_addr=peer, peer_port=port,
            counters=Counters(b_out // 1400 + 3, b_out + 180, b_out, b_in // 1400 + 3,
                              b_in + 180, b_in),
            start_ns=t - dur))
    return out


class ListSource:
    def __init__(self, events: list[Event], batch: int = 256) -> None:
        self.events, self.batch = events, batch

    def batches(self):  # type: ignore[no-untyped-def]
        for i in range(0, len(self.events), self.batch):
            yield self.events[i:i + self.batch]

    def stop(self) -> None:
        pass

    def counters(self) -> dict[str, int]:
        return {}


def config(tmp: Path, detect: bool) -> Config:
    base = parse_config({"export": {"live_view": False,
                                    "files": {"directory": str(tmp / "otlp")}},
                         "detect": {"state_dir": str(tmp / "state")}})
    return replace(base, detect=replace(base.detect, enabled=detect))


class _Delivered:
    """A sink that notes when the sinks have received 10% and 90% of the flows: the rate in
    between is the steady state, without start-up and end-of-input effects (with rules in
    their own process, the last flows wait at the end for their verdicts)."""

    name = "bench_delivered"

    def __init__(self, total: int) -> None:
        self.lo, self.hi = total // 10, total * 9 // 10
        self.n = 0
        self.t_lo = self.t_hi = 0.0

    def consume(self, out) -> None:  # type: ignore[no-untyped-def]
        before, self.n = self.n, self.n + len(out.flows)
        if before < self.lo <= self.n:
            self.t_lo = time.perf_counter()
        if before < self.hi <= self.n:
            self.t_hi = time.perf_counter()

    def counters(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


def one_round(events: list[Event], detect: bool) -> dict[str, float]:
    """records/s: flows the sinks received per second between 10% and 90% of the stream.
    records per CPU-second: CPU of this process (every thread) from the first record until
    everything was exported and closed, so work a stage defers is counted wherever it lands.
    The rules' own process (the live agent's default) is reported beside it: its CPU, and how
    long the end of input waited for its last verdicts."""
    delivered = _Delivered(len(events))
    with tempfile.TemporaryDirectory(prefix="otelpeers-detect-cost-") as d:
        # detect_process: as `run` builds it on a live host (detect.separate_process)
        agent = build_agent(config(Path(d), detect), live_host=False, detect_process=True,
                            extra_sinks=[delivered])
        try:
            ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu0 = time.process_time()
            drive(ListSource(events), agent.pipeline, EventClock())
            c = agent.pipeline.counters()
        finally:
            agent.close()
        cpu = time.process_time() - cpu0
        ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    steady = delivered.hi - delivered.lo
    return {"records_per_cpu_s": len(events) / cpu,
            "records_per_s": steady / (delivered.t_hi - delivered.t_lo),
            "cpu_s": cpu,
            "children_cpu_s": (ch1.ru_utime + ch1.ru_stime) - (ch0.ru_utime + ch0.ru_stime),
            "detections": c.get("detect.detections", 0),
            "inputs_dropped": c.get("detect.inputs_dropped", 0),
            "exported_before_verdict": c.get("detect.exported_before_verdict", 0)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=60_000)
    ap.add_argument("--rounds", type=int, default=4, help="pairs of rounds (off, on)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    events = stream(a.records)
    one_round(events[:2000], True)  # warm-up: imports, model load
    rounds: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for i in range(a.rounds):
        order = ("off", "on") if i % 2 == 0 else ("on", "off")
        for name in order:
            rounds[name].append(one_round(events, name == "on"))

    def median(name: str, key: str) -> float:
        vals = sorted(r[key] for r in rounds[name])
        return vals[len(vals) // 2] if len(vals) % 2 else sum(vals[len(vals) // 2 - 1:
                                                                 len(vals) // 2 + 1]) / 2

    res = {"records": a.records, "rounds": rounds,
           **{f"{n}_{k}": median(n, k) for n in ("off", "on")
              for k in ("records_per_cpu_s", "records_per_s")}}
    a.out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "rounds"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

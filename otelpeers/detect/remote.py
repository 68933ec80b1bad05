"""Detection in its own process, so that the rules never slow the data plane.

    pipeline thread (agent)                          detection process (nice 19)
    process(out): pack the round's inputs    ---->   unpack -> Engine.evaluate / tick
                  hold its flows and lookups          (the same engine and rules as
                  release what was judged    <----    in-process; baselines saved here)
                  with span events attached           ack(seq, detections, counters)

The pipeline thread only packs (flowwire: a few microseconds per flow, against tens for the
rules) and holds each round's completed flows and DNS lookups until the detection process
has judged that round, so that a detection still becomes a span event on its evidence span.
It never waits longer than detect.max_judge_delay_s: past that the round goes on unjudged,
and until detection has caught up again rounds are not held at all, so that a busy host sees
no added latency (both counted as exported_before_verdict); their detections, when they
come, are log records that point at the span. The detection process runs at a lower priority
(detect.nice): when the host's CPUs are busy, the data plane keeps them and detection falls
behind; its backlog is bounded (detect.max_backlog inputs) and a round beyond it is not
judged (inputs_dropped). Both are agent counters. If the process dies it is started again
(process_restarts); learned baselines survive through detect.state_dir.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import pickle
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar

from otelpeers.detect.engine import ProcessDescriber, RuleContext, SpanEvents
from otelpeers.detect.model import Detection
from otelpeers.detect.settings import DetectConfig
from otelpeers.dns.lookups import DnsLookup
from otelpeers.flows import FlowRecord
from otelpeers.flowwire import pack_flows, unpack_flows
from otelpeers.frames import read_frame, widen_pipes, write_frame
from otelpeers.gctune import tune_for_throughput
from otelpeers.pipeline import BaseStage, Outputs

log = logging.getLogger(__name__)

MARSHAL_VERSION = 2  # no object references: half the cost of the default for our rows
FINISH_TIMEOUT_S = 10.0  # at the end of input, wait this long for the last verdicts
RESTART_INTERVAL_S = 5.0  # a process that keeps dying is started at most this often
MAX_WHO = 65_536  # processes described to the detection process (then it starts over)
# Progress snapshots per frame at most (a round may need several): the detection process holds
# one frame's records at a time, and what it holds at its peak stays resident (Python keeps
# the memory it once used); 1,024 records are about 1 MB.
PROGRESS_CHUNK = 1024


@dataclass(slots=True)
class _Held:
    seq: int
    flows: list[FlowRecord]
    dns: list[DnsLookup]
    deadline: float  # time.monotonic()


class RemoteDetectStage(BaseStage):
    """The detect stage of the live agent: see the module docstring. Same counters as the
    in-process DetectStage (the detection process sends them), plus its own."""

    name: ClassVar[str] = "detect"

    def __init__(self, config: DetectConfig, *, describe: ProcessDescriber | None = None,
                 persist: bool = False, clock: Callable[[], float] = time.monotonic,
                 finish_timeout_s: float = FINISH_TIMEOUT_S) -> None:
        """finish_timeout_s: at the end of input, how long to wait for the last verdicts (a
        live agent stopping must not hang on a slow detector; a comparison must get all)."""
        self.config = config
        self._finish_timeout_s = finish_timeout_s
        self._describe = describe
        self._persist = persist
        self._clock = clock
        self.span_events = SpanEvents(RuleContext(config), config.max_pending_span_events)
        self._held: deque[_Held] = deque()
        self._seq = 0  # last frame sent
        self._acked = 0  # last frame the detection process answered
        self._unacked: deque[tuple[int, int]] = deque()  # (seq, inputs) sent, not answered
        self._backlog = 0  # inputs sent and not answered
        self._described: set[tuple[int, str]] = set()
        self._finishing: int | None = None
        self._behind = False  # a round missed its deadline; no holding until caught up
        self._child_counters: dict[str, int] = {}
        self._lock = threading.Lock()  # replies and the outbox, shared with the threads
        self._wake = threading.Condition(self._lock)
        self._outbox: deque[bytes] = deque()
        self._replies: list[tuple[Any, ...]] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._alive = False
        self._closing = False
        self._started_at = 0.0
        self.stats = {"rounds_sent": 0, "inputs_sent": 0, "inputs_dropped": 0,
                      "exported_before_verdict": 0, "process_restarts": 0,
                      "process_ready": 0}
        self._start()

    # ---- the detection process -------------------------------------------------------
    def _start(self) -> None:
        self._started_at = self._clock()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "otelpeers.detect.remote"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                close_fds=True)
        assert proc.stdin is not None and proc.stdout is not None
        widen_pipes(proc.stdin, proc.stdout)
        self._proc = proc
        self._alive = True
        init = pickle.dumps({"config": self.config, "persist": self._persist,
                             "nice": self.config.nice})
        with self._lock:
            self._outbox.clear()
            self._outbox.append(init)
        self._described.clear()
        self._threads = [
            threading.Thread(target=self._send_loop, args=(proc, proc.stdin),
                             name="otelpeers-detect-send", daemon=True),
            threading.Thread(target=self._reply_loop, args=(proc, proc.stdout),
                             name="otelpeers-detect-replies", daemon=True)]
        for t in self._threads:
            t.start()

    def _send_loop(self, proc: subprocess.Popen[bytes], pipe: BinaryIO) -> None:
        while True:
            with self._wake:
                while not self._outbox and not self._closing and self._proc is proc:
                    self._wake.wait()
                if not self._outbox:
                    break
                frame = self._outbox.popleft()
            try:
                write_frame(pipe, frame)  # blocks (without the GIL) while the child is busy
            except (OSError, ValueError):
                self._died(proc, "its input pipe closed")
                return
        with contextlib.suppress(OSError):
            pipe.close()

    def _reply_loop(self, proc: subprocess.Popen[bytes], pipe: BinaryIO) -> None:
        while True:
            try:
                frame = read_frame(pipe)
            except (OSError, ValueError):
                frame = None
            if frame is None:
                self._died(proc, "it exited")
                return
            msg = marshal.loads(frame)
            with self._wake:
                self._replies.append(msg)
                self._wake.notify_all()

    def _died(self, proc: subprocess.Popen[bytes], why: str) -> None:
        with self._wake:
            if self._proc is not proc or not self._alive:
                return
            self._alive = False
            self._wake.notify_all()
            closing = self._closing
        if not closing:
            log.error("the detection process stopped (%s, exit status %s); detection "
                      "restarts, learned baselines are kept in %s", why, proc.poll(),
                      self.config.state_dir)

    def _restart_if_dead(self) -> None:
        if self._alive or self._closing:
            return
        if self._clock() - self._started_at < RESTART_INTERVAL_S:
            return
        self._stop_process(kill=True)
        self.stats["process_restarts"] += 1
        self._unacked.clear()
        self._backlog = 0
        self._acked = self._seq
        self._start()

    # ---- pipeline stage ----------------------------------------------------------------
    def tick(self, now_ns: int, out: Outputs) -> None:
        self.span_events.expire(now_ns)
        if self._alive:
            self._send(("tick", self._next_seq(), now_ns), 0)

    def finish(self, now_ns: int, out: Outputs) -> None:
        self._finishing = now_ns  # process() runs next, with what the other stages drained

    def process(self, out: Outputs) -> None:
        self._restart_if_dead()
        self._hold(out)
        found = self._collect()
        if self._finishing is not None:
            if self._alive:
                self._send(("finish", self._next_seq(), self._finishing), 0)
            found += self._wait_for_all(self._finish_timeout_s)
        self._release(out, everything=self._finishing is not None or not self._alive)
        if found:
            out.detections.extend(found)
        self.span_events.attach(out, out.detections)

    def counters(self) -> Mapping[str, int]:
        return {**self._child_counters, **self.stats,
                "span_events_pending": len(self.span_events),
                "pending_span_events_expired": self.span_events.expired,
                "held_pending": sum(len(h.flows) + len(h.dns) for h in self._held),
                "judge_queue_size": self._backlog}

    def close(self) -> None:
        self._stop_process(kill=False)

    # ---- rounds ------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _hold(self, out: Outputs) -> None:
        """Send this round's inputs; hold its flows and lookups until judged."""
        n = len(out.flows) + len(out.progress) + len(out.dns) + len(out.process)
        if not n:
            return
        if not self._alive or self._backlog + n > self.config.max_backlog:
            self.stats["inputs_dropped"] += n
            return
        self._describe_owners(out)
        # A scan that finds every long connection at once makes a round of tens of thousands
        # of snapshots: sent as several frames, in order (process events and lookups with
        # the first, completed flows with the last), so that neither side holds the whole
        # round unpacked at once.
        progress = out.progress
        chunks = [progress[i:i + PROGRESS_CHUNK]
                  for i in range(0, len(progress), PROGRESS_CHUNK)] or [[]]
        for i, chunk in enumerate(chunks):
            first, last = i == 0, i == len(chunks) - 1
            seq = self._next_seq()
            frame = ("round", seq, pack_flows(out.flows) if last else (), pack_flows(chunk),
                     pickle.dumps(out.dns, 5) if first and out.dns else b"",
                     pickle.dumps(out.process, 5) if first and out.process else b"")
            self._send(frame, len(chunk) + (len(out.dns) + len(out.process) if first else 0)
                       + (len(out.flows) if last else 0))
        self.stats["rounds_sent"] += 1
        self.stats["inputs_sent"] += n
        if (out.flows or out.dns) and self._behind:
            self.stats["exported_before_verdict"] += len(out.flows) + len(out.dns)
        elif out.flows or out.dns:
            self._held.append(_Held(seq, out.flows, out.dns,
                                    self._clock() + self.config.max_judge_delay_s))
            out.flows, out.dns = [], []

    def _send(self, msg: tuple[Any, ...], inputs: int) -> None:
        frame = marshal.dumps(msg, MARSHAL_VERSION)
        if msg[1]:  # numbered frames are answered
            self._unacked.append((msg[1], inputs))
            self._backlog += inputs
        with self._wake:
            self._outbox.append(frame)
            self._wake.notify_all()

    def _describe_owners(self, out: Outputs) -> None:
        """Tell the detection process each new process's executable and container (the
        process table lives here); a process not described yet is asked again later."""
        if self._describe is None:
            return
        keys = {(o.tgid, o.comm) for r in (*out.flows, *out.progress)
                if (o := r.owner) is not None}
        keys.update((lk.txn.owner.tgid, lk.txn.owner.comm) for lk in out.dns
                    if lk.txn.owner is not None)
        keys.update((ev.tgid, ev.comm) for ev in out.process)
        keys -= self._described
        if not keys:
            return
        who = []
        for key in keys:
            d = self._describe(key[0])
            if d is not None:
                who.append((key[0], key[1], d[0], d[1]))
                self._described.add(key)
        if len(self._described) > MAX_WHO:
            self._described.clear()
        if who:
            self._send(("who", 0, who), 0)

    def _collect(self) -> list[Detection]:
        with self._lock:
            replies, self._replies = self._replies, []
        found: list[Detection] = []
        for msg in replies:
            kind = msg[0]
            _, seq, detections, counters = msg
            if kind == "ready":
                self.stats["process_ready"] += 1
            if detections:
                found.extend(pickle.loads(detections))
            if counters:
                self._child_counters = dict(counters)
            if seq:
                self._acked = max(self._acked, seq)
                while self._unacked and self._unacked[0][0] <= seq:
                    self._backlog -= self._unacked.popleft()[1]
                if not self._unacked:
                    self._behind = False  # caught up: hold rounds again
        return found

    def _wait_for_all(self, timeout_s: float) -> list[Detection]:
        deadline = self._clock() + timeout_s
        found: list[Detection] = []
        while self._alive and self._acked < self._seq:
            with self._wake:
                if not self._replies and self._alive:
                    self._wake.wait(max(0.0, min(0.5, deadline - self._clock())))
            found += self._collect()
            if self._clock() >= deadline:
                log.warning("detection did not finish within %.0f s; the last %d inputs "
                            "are not judged", timeout_s, self._backlog)
                break
        return found

    def _release(self, out: Outputs, *, everything: bool) -> None:
        now = self._clock()
        flows: list[FlowRecord] = []
        dns: list[DnsLookup] = []
        while self._held:
            h = self._held[0]
            judged = h.seq <= self._acked
            if not (judged or everything or h.deadline <= now):
                break
            self._held.popleft()
            if not judged:
                self.stats["exported_before_verdict"] += len(h.flows) + len(h.dns)
                self._behind = True
            flows += h.flows
            dns += h.dns
        if flows or dns:
            out.flows = flows + out.flows
            out.dns = dns + out.dns

    def _stop_process(self, *, kill: bool) -> None:
        proc = self._proc
        if proc is None:
            return
        with self._wake:
            self._closing = not kill or self._closing
            if kill:
                self._proc = None
            self._wake.notify_all()
        try:
            if kill:
                proc.kill()
            proc.wait(FINISH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for t in self._threads:
            t.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
        with self._wake:
            self._proc = None if self._proc is proc else self._proc


# ---- the detection process ----------------------------------------------------------------
def child_main(stdin: BinaryIO, stdout: BinaryIO) -> int:
    from otelpeers.detect.engine import Actors, Engine
    from otelpeers.detect.rules import all_rules
    from otelpeers.detect.store import BaselineStore

    first = read_frame(stdin)
    if first is None:
        return 1
    init = pickle.loads(first)
    config: DetectConfig = init["config"]
    if init["nice"]:
        os.nice(init["nice"])
    # (tgid, comm) -> (executable, container id): keyed with the comm, so that a process
    # described before an exec is not taken for the program it became.
    who: dict[tuple[int, str], tuple[str | None, str | None]] = {}
    engine = Engine(config, all_rules(),
                    actors=Actors(describe_owner=lambda o: who.get((o.tgid, o.comm))),
                    ctx=RuleContext(config, live=init["persist"]))
    store = None
    if init["persist"]:
        store = BaselineStore(config.state_dir, engine)
        store.load()

    def reply(seq: int, found: list[Detection], counters: bool) -> None:
        write_frame(stdout, marshal.dumps(
            ("ack", seq, pickle.dumps(found, 5) if found else b"",
             _counters(engine, store) if counters else None), MARSHAL_VERSION))

    tune_for_throughput()
    write_frame(stdout, marshal.dumps(("ready", 0, b"", _counters(engine, store)),
                                      MARSHAL_VERSION))
    while (frame := read_frame(stdin)) is not None:
        msg = marshal.loads(frame)
        del frame
        kind, seq = msg[0], msg[1]
        if kind == "round":
            _, _, flows, progress, dns, process = msg
            out = Outputs(flows=unpack_flows(flows), progress=unpack_flows(progress),
                          dns=pickle.loads(dns) if dns else [],
                          process=pickle.loads(process) if process else [])
            del msg, flows, progress, dns, process
            reply(seq, engine.evaluate(out), False)
            del out  # before the next frame is read: one round's objects alive at a time
        elif kind == "tick":
            found = engine.tick(msg[2])
            if store is not None:
                store.maybe_save(msg[2])
            reply(seq, found, True)
        elif kind == "finish":
            found = engine.tick(msg[2])
            if store is not None:
                store.save()
                store = None
            reply(seq, found, True)
        elif kind == "who":
            if len(who) > MAX_WHO:
                who.clear()
            who.update(((tgid, comm), (exe, cid)) for tgid, comm, exe, cid in msg[2])
    if store is not None:  # the agent went away without finishing: keep what was learned
        store.save()
    return 0


def _counters(engine: Any, store: Any) -> dict[str, int]:
    out = {k: int(v) for k, v in engine.counters().items()}
    if store is not None:
        out.update({f"baselines_{k}": int(v) for k, v in store.stats.items()})
    return out


def main() -> int:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="otelpeers detect: %(message)s")
    return child_main(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())

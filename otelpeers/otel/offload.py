"""Span export in a child process, so that mapping, encoding and sending spans use a second
core instead of competing with the pipeline for the agent's interpreter lock.

The agent's export worker packs each batch's flows column-wise (otelpeers.flowwire, a few
microseconds per flow against tens for mapping and encoding it) and each DNS lookup into a
tuple of plain values, sends each batch over a pipe as `marshal` frames of CHUNK items
(packing the next while the child works on the one before), and waits for the child's
answer; the child rebuilds the records, encodes them (plain flows straight from the record,
the rest through the same mappers as the in-process path: otelpeers.otel.encoded; the same
bytes either way), exports the batch in one request through the same exporter factory, and
answers once per batch with what it exported. Resources are sent once per owning process.
Records that carry a detection (rare) travel pickled, whole.

Two batches may be in flight, so that neither side waits idle for the collector: the span
queue has two workers; one packs and sends its batch while the other waits for the answer
to the batch before, and in the child a sending thread exports one batch while the main
thread unpacks and encodes the next. Answers come back in the order the batches went.

The child reads its standard input only: when the agent dies, the pipe closes and the child
exits; it ignores SIGINT/SIGTERM so that the agent controls the shutdown (flush, then close).
"""

from __future__ import annotations

import logging
import marshal
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from otelpeers.dns.lookups import DnsLookup
from otelpeers.dns.transactions import DnsTransaction
from otelpeers.events import Owner
from otelpeers.exportconfig import ExportConfig
from otelpeers.flows import FlowRecord
from otelpeers.flowwire import pack_flows, unpack_flows
from otelpeers.frames import read_frame, widen_pipes, write_frame
from otelpeers.gctune import tune_for_throughput

if TYPE_CHECKING:  # the agent imports this module; only the child needs the encoders
    from otelpeers.otel.encoded import SealedBatch

_log = logging.getLogger(__name__)


# ---- records <-> plain tuples (flows: otelpeers.flowwire, columns) --------------------------
def _owner(o: Owner | None) -> tuple[Any, ...] | None:
    return None if o is None else (o.tgid, o.pid, o.uid, o.gid, o.cgroup_id, o.comm, o.joined)


def pack_lookup(lk: DnsLookup) -> tuple[Any, ...]:
    t = lk.txn
    return (t.txn_id, t.cookie, _owner(t.owner), t.resolver_addr, t.resolver_port,
            t.client_addr, t.client_port, t.question_name, t.qtype, t.rcode,
            tuple(t.addresses), tuple(t.cname_chain), t.ttl_min, t.start_ns, t.end_ns,
            t.retries, t.truncated, t.timed_out, t.protocol, t.family, t.netns_cookie,
            t.msg_id, lk.upstream_txn_id)


def unpack_lookup(t: Sequence[Any]) -> DnsLookup:
    (txn_id, cookie, owner, raddr, rport, caddr, cport, name, qtype, rcode, addrs, chain,
     ttl_min, start, end, retries, truncated, timed_out, protocol, family, netns, msg_id,
     upstream) = t
    txn = DnsTransaction(
        txn_id=txn_id, cookie=cookie, owner=None if owner is None else Owner(*owner),
        resolver_addr=raddr, resolver_port=rport, client_addr=caddr, client_port=cport,
        question_name=name, qtype=qtype, rcode=rcode, answers=(), addresses=tuple(addrs),
        cname_chain=tuple(chain), ttl_min=ttl_min, start_ns=start, end_ns=end,
        retries=retries, truncated=truncated, timed_out=timed_out, protocol=protocol,
        family=family, netns_cookie=netns, msg_id=msg_id)
    return DnsLookup(txn, upstream)


# ---- framing -------------------------------------------------------------------------------
# ---- the agent's side ------------------------------------------------------------------------
class ExportChildError(RuntimeError):
    pass


CHUNK = 512  # items per frame: a 2,048-span batch (the default) is four frames


class OffloadedExport:
    """Sends packed items to the export child; export(items, resource_of) -> (exported,
    failed, mapping_errors). Safe to call from two threads: one batch's frames go at a
    time, and a second batch may be packed and sent while the child exports the first
    (answers come back in the order the batches went). Restarts the child (counted) at
    the next export after it died."""

    def __init__(self, config: ExportConfig, host_attributes: Mapping[str, Any],
                 boot_id: bytes) -> None:
        self._init = marshal.dumps({"config": pickle.dumps(config), "host": dict(host_attributes),
                                    "boot_id": boot_id})
        self._proc: subprocess.Popen[bytes] | None = None
        self._sent_resources: set[object] = set()
        self._send_lock = threading.Lock()  # one batch's frames at a time; (re)starts
        self._answers = threading.Condition()  # guards the four fields below
        self._generation = 0  # which child: +1 at each (re)start
        self._sent = 0  # batches sent to this child
        self._answered = 0  # batches this child has answered
        self._broken = False  # this child failed: the next export starts another
        self._closed = False
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "otelpeers.otel.offload"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, close_fds=True)
        with self._answers:
            self._proc = proc
            self._generation += 1
            self._sent = self._answered = 0
            self._broken = False
        self._sent_resources.clear()
        assert proc.stdin is not None and proc.stdout is not None
        widen_pipes(proc.stdin, proc.stdout)
        write_frame(proc.stdin, self._init)
        reply = read_frame(proc.stdout)
        if reply is None or marshal.loads(reply) != ("ready",):
            raise ExportChildError("the span export process did not start; run "
                                   "`python -m otelpeers.otel.offload` to see why")

    def export(self, items: Sequence[FlowRecord | DnsLookup],
               resource_key: Any, resource_attributes: Any) -> tuple[int, int, int]:
        """resource_key(owner) -> hashable; resource_attributes(owner) -> dict.

        The batch goes in chunks of CHUNK items, one frame each: the child maps one chunk
        while this thread packs the next, instead of waiting idle for the whole batch to be
        packed (this thread shares the interpreter lock with the pipeline); the child exports
        the batch's spans in one request after the final chunk and answers once. The send
        lock is released before the answer is awaited, so another caller's batch follows
        while the child sends this one to the collector."""
        if not items:
            return 0, 0, 0
        lost = (0, len(items), 0)
        with self._send_lock:
            if self._closed or (self._broken and not self._restart()):
                return lost
            proc, generation = self._proc, self._generation
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            try:
                for start in range(0, len(items), CHUNK):
                    final = start + CHUNK >= len(items)
                    frame = self._frame(items[start:start + CHUNK], resource_key,
                                        resource_attributes, final)
                    write_frame(proc.stdin, marshal.dumps(frame))
            except (OSError, ValueError) as exc:
                self._failed(generation, exc)
                return lost
            with self._answers:
                ticket = self._sent
                self._sent += 1
        with self._answers:  # answers come in the order the batches went: wait for our turn
            while (self._answered != ticket and self._generation == generation
                   and not self._broken):
                self._answers.wait()
            if self._generation != generation or self._broken:
                return lost
        try:
            reply = read_frame(proc.stdout)
            if reply is None:
                raise ExportChildError("the span export process exited")
            _tag, exported, failed, errors = marshal.loads(reply)
        except (OSError, ValueError, EOFError, ExportChildError) as exc:
            self._failed(generation, exc)
            return lost
        with self._answers:
            if self._generation == generation:
                self._answered += 1
            self._answers.notify_all()
        return exported, failed, errors

    def _failed(self, generation: int, exc: BaseException) -> None:
        """This child's batches in flight are lost (their callers count them); the next
        export starts another child."""
        with self._answers:
            if self._generation != generation or self._broken:
                return
            self._broken = True
            self._answers.notify_all()
        _log.warning("span export process failed (%s); restarting it", exc)

    def _frame(self, items: Sequence[FlowRecord | DnsLookup], resource_key: Any,
               resource_attributes: Any, final: bool = True) -> list[tuple[Any, ...]]:
        frames: list[tuple[Any, ...]] = []
        flows: list[FlowRecord] = []
        flow_keys: list[Any] = []
        lookups: list[tuple[Any, Any]] = []
        pickled: list[tuple[Any, bytes]] = []
        for item in items:
            owner = item.owner
            key = resource_key(owner)
            if key not in self._sent_resources:
                frames.append(("res", key, resource_attributes(owner)))
                self._sent_resources.add(key)
            if item.detections:
                pickled.append((key, pickle.dumps(item)))
            elif isinstance(item, DnsLookup):
                lookups.append((key, pack_lookup(item)))
            else:
                flows.append(item)
                flow_keys.append(key)
        frames.append(("batch", flow_keys, pack_flows(flows), lookups, pickled, final))
        return frames

    def _restart(self) -> bool:
        """Under the send lock: a new child for the dead one; False if it cannot start."""
        self._kill()
        self.restarts += 1
        try:
            self._start()
        except (OSError, ExportChildError) as exc:
            _log.error("span export process cannot restart: %s", exc)
            with self._answers:
                self._broken = True
            return False
        return True

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)

    def close(self, timeout_s: float = 30.0) -> None:
        """Ask the child to flush and shut its exporter down, then reap it."""
        with self._send_lock:
            proc, self._closed = self._proc, True
            if proc is None:
                return
            with self._answers:
                self._proc = None
                self._broken = True
                self._answers.notify_all()
            try:
                if proc.poll() is None and proc.stdin is not None and proc.stdout is not None:
                    write_frame(proc.stdin, marshal.dumps([("close",)]))
                    proc.stdin.close()
                    proc.wait(timeout_s)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(10)


# ---- the child's side ------------------------------------------------------------------------
def child_main(stdin: BinaryIO, stdout: BinaryIO) -> int:
    from otelpeers.ids import SpanIds
    from otelpeers.otel.encoded import SpanBatch
    from otelpeers.otel.factory import build_span_exporter
    from otelpeers.otel.resources import _ProcessResource

    first = read_frame(stdin)
    if first is None:
        return 1
    init = marshal.loads(first)
    config: ExportConfig = pickle.loads(init["config"])
    host = init["host"]
    ids = SpanIds(init["boot_id"])
    exporter = build_span_exporter(config)
    batch = SpanBatch(exporter, ids)  # the current batch's spans, over its chunks
    resources: dict[Any, Any] = {}
    errors = 0
    tune_for_throughput()
    write_frame(stdout, marshal.dumps(("ready",)))
    sender = _Sender(stdout)
    while True:
        frame = read_frame(stdin)
        if frame is None:
            break
        closing = False
        for msg in marshal.loads(frame):
            if msg[0] == "res":
                resources[msg[1]] = _ProcessResource({**host, **msg[2]})
                if len(resources) > 65536:
                    resources.clear()  # bounded; the agent resends what it needs
            elif msg[0] == "close":
                closing = True
            elif msg[0] == "batch":
                _, flow_keys, packed, lookups, pickled, final = msg
                try:
                    items: list[tuple[Any, Any]] = list(zip(flow_keys, unpack_flows(packed),
                                                            strict=True))
                except Exception:  # a bad frame loses its flows, counted, not the child
                    items = []
                    errors += len(flow_keys)
                for key, payload in lookups:
                    try:
                        items.append((key, unpack_lookup(payload)))
                    except Exception:
                        errors += 1
                for key, payload in pickled:
                    try:
                        items.append((key, pickle.loads(payload)))
                    except Exception:
                        errors += 1
                for key, item in items:
                    try:
                        batch.add(item, resources.get(key) or _ProcessResource(dict(host)))
                    except Exception:  # one bad record must not lose the batch
                        errors += 1
                if not final:
                    continue  # the batch's other chunks follow: one export for all
                sender.put(batch.seal(), errors)
                errors = 0
        if closing:
            break
    sender.close()  # the batches still being sent are answered first
    if exporter is not None:
        exporter.shutdown()
    return 0


class _Sender:
    """Exports sealed batches in their order in its own thread and answers each, so that the
    next batch is unpacked and encoded while the collector takes this one (the request
    waits on the network without the interpreter lock). One batch waits at most: the agent
    has two in flight at most."""

    def __init__(self, stdout: BinaryIO) -> None:
        self._stdout = stdout
        self._jobs: queue.Queue[tuple[SealedBatch, int] | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name="otelpeers-span-send",
                                        daemon=True)
        self._thread.start()

    def put(self, sealed: SealedBatch, errors: int) -> None:
        self._jobs.put((sealed, errors))

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        answering = True
        while (job := self._jobs.get()) is not None:
            sealed, errors = job
            n = len(sealed)
            ok = sealed.export()
            if not answering:
                continue  # the agent is gone: finish quietly, the main loop sees the EOF
            try:
                write_frame(self._stdout, marshal.dumps(
                    ("done", n if ok else 0, 0 if ok else n, errors)))
            except (OSError, ValueError):
                answering = False


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return child_main(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())

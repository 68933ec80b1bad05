"""Span export in a child process, so that mapping, encoding and sending spans use a second
core instead of competing with the pipeline for the agent's interpreter lock.

The agent's export worker packs each flow or DNS lookup into a tuple of plain values
(microseconds, against tens for mapping and encoding it), sends batches over a pipe as
`marshal` frames, and waits for the child's answer; the child rebuilds the records, maps them
to spans, encodes and exports them exactly as the in-process path would (same mapper, same
encoder, same exporter factory), and answers with what it exported. Resources are sent once
per owning process. Records that carry a detection (rare) travel pickled, whole.

The child reads its standard input only: when the agent dies, the pipe closes and the child
exits; it ignores SIGINT/SIGTERM so that the agent controls the shutdown (flush, then close).
"""

from __future__ import annotations

import logging
import marshal
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

from otelpeers.config import ExportConfig
from otelpeers.dns.lookups import DnsLookup
from otelpeers.dns.transactions import DnsTransaction
from otelpeers.events import Counters, Direction, Owner, TcpInfo
from otelpeers.flows import CloseReason, DnsAnnotation, FileAccess, FlowRecord, Listener
from otelpeers.frames import read_frame, write_frame

_log = logging.getLogger(__name__)

FLOW, LOOKUP, PICKLED = 0, 1, 2


# ---- records <-> plain tuples -------------------------------------------------------------
def _owner(o: Owner | None) -> tuple[Any, ...] | None:
    return None if o is None else (o.tgid, o.pid, o.uid, o.gid, o.cgroup_id, o.comm, o.joined)


def pack_flow(r: FlowRecord) -> tuple[Any, ...]:
    c, t, d, lst = r.counters, r.tcp, r.dns, r.listener
    return (r.flow_id, r.cookie, str(r.transport), int(r.family), int(r.sock_type),
            int(r.direction), r.local_addr, r.local_port, r.peer_addr, r.peer_port,
            r.start_ns, r.end_ns, _owner(r.owner), r.netns_cookie,
            (c.packets_out, c.bytes_out, c.payload_out, c.packets_in, c.bytes_in, c.payload_in),
            None if t is None else (t.bytes_acked, t.bytes_received, t.total_retrans,
                                    t.srtt_us),
            str(r.close_reason.value),
            None if lst is None else (lst.local_addr, lst.local_port, lst.bind_ns,
                                      lst.listen_ns, _owner(lst.owner)),
            r.local_peer_flow_id, r.complete,
            None if d is None else (d.resolved, d.question_name, tuple(d.cname_chain), d.how,
                                    d.txn_id),
            tuple((f.time_ns, f.path, f.flags) for f in r.files), r.summary, r.adopted)


def unpack_flow(t: Sequence[Any]) -> FlowRecord:
    (flow_id, cookie, transport, family, sock_type, direction, laddr, lport, paddr, pport,
     start, end, owner, netns, counters, tcp, reason, lst, peer_id, complete, dns, files,
     summary, adopted) = t
    return FlowRecord(
        flow_id=flow_id, cookie=cookie, transport=transport, family=family,
        sock_type=sock_type, direction=Direction(direction), local_addr=laddr,
        local_port=lport, peer_addr=paddr, peer_port=pport, start_ns=start, end_ns=end,
        owner=None if owner is None else Owner(*owner), netns_cookie=netns,
        counters=Counters(*counters), tcp=None if tcp is None else TcpInfo(*tcp),
        close_reason=CloseReason(reason),
        listener=None if lst is None else Listener(
            lst[0], lst[1], lst[2], lst[3], None if lst[4] is None else Owner(*lst[4])),
        local_peer_flow_id=peer_id, complete=complete,
        dns=None if dns is None else DnsAnnotation(dns[0], dns[1], tuple(dns[2]), dns[3],
                                                   dns[4]),
        files=tuple(FileAccess(*f) for f in files), summary=summary, adopted=adopted)


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


class OffloadedExport:
    """Sends packed items to the export child; export(items, resource_of) -> (exported,
    failed, mapping_errors). Restarts the child (counted) if it died."""

    def __init__(self, config: ExportConfig, host_attributes: Mapping[str, Any],
                 boot_id: bytes) -> None:
        self._init = marshal.dumps({"config": pickle.dumps(config), "host": dict(host_attributes),
                                    "boot_id": boot_id})
        self._proc: subprocess.Popen[bytes] | None = None
        self._sent_resources: set[object] = set()
        self._lock = threading.Lock()
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "otelpeers.otel.offload"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, close_fds=True)
        self._sent_resources.clear()
        assert self._proc.stdin is not None and self._proc.stdout is not None
        write_frame(self._proc.stdin, self._init)
        reply = read_frame(self._proc.stdout)
        if reply is None or marshal.loads(reply) != ("ready",):
            raise ExportChildError("the span export process did not start; run "
                                   "`python -m otelpeers.otel.offload` to see why")

    def export(self, items: Sequence[FlowRecord | DnsLookup],
               resource_key: Any, resource_attributes: Any) -> tuple[int, int, int]:
        """resource_key(owner) -> hashable; resource_attributes(owner) -> dict."""
        frames: list[tuple[Any, ...]] = []
        batch: list[tuple[int, Any, Any]] = []
        for item in items:
            owner = item.txn.owner if isinstance(item, DnsLookup) else item.owner
            key = resource_key(owner)
            if key not in self._sent_resources:
                frames.append(("res", key, resource_attributes(owner)))
                self._sent_resources.add(key)
            if item.detections:
                batch.append((PICKLED, key, pickle.dumps(item)))
            elif isinstance(item, DnsLookup):
                batch.append((LOOKUP, key, pack_lookup(item)))
            else:
                batch.append((FLOW, key, pack_flow(item)))
        frames.append(("batch", batch))
        with self._lock:
            try:
                return self._round_trip(frames)
            except (OSError, ValueError, EOFError, ExportChildError) as exc:
                _log.warning("span export process failed (%s); restarting it", exc)
                self._restart()
                return 0, len(items), 0

    def _round_trip(self, frames: list[tuple[Any, ...]]) -> tuple[int, int, int]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        write_frame(proc.stdin, marshal.dumps(frames))
        reply = read_frame(proc.stdout)
        if reply is None:
            raise ExportChildError("the span export process exited")
        tag, exported, failed, errors = marshal.loads(reply)
        return exported, failed, errors

    def _restart(self) -> None:
        self._kill()
        self.restarts += 1
        try:
            self._start()
        except (OSError, ExportChildError) as exc:
            _log.error("span export process cannot restart: %s", exc)

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)

    def close(self, timeout_s: float = 30.0) -> None:
        """Ask the child to flush and shut its exporter down, then reap it."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            self._proc = None
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
    from opentelemetry.sdk.trace.export import SpanExportResult

    from otelpeers.ids import SpanIds
    from otelpeers.otel.dns_spans import DnsSpanMapper
    from otelpeers.otel.factory import build_span_exporter
    from otelpeers.otel.mapping import SpanMapper
    from otelpeers.otel.resources import _ProcessResource

    first = read_frame(stdin)
    if first is None:
        return 1
    init = marshal.loads(first)
    config: ExportConfig = pickle.loads(init["config"])
    host = init["host"]
    ids = SpanIds(init["boot_id"])
    exporter = build_span_exporter(config)
    flows, dnss = SpanMapper(ids), DnsSpanMapper(ids)
    resources: dict[Any, Any] = {}
    write_frame(stdout, marshal.dumps(("ready",)))
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
                spans, errors = [], 0
                for kind, key, payload in msg[1]:
                    try:
                        item = (unpack_flow(payload) if kind == FLOW else
                                unpack_lookup(payload) if kind == LOOKUP else
                                pickle.loads(payload))
                        res = resources.get(key) or _ProcessResource(dict(host))
                        spans.append(dnss.span_for(item, res) if isinstance(item, DnsLookup)
                                     else flows.to_span(item, res))
                    except Exception:  # one bad record must not lose the batch
                        errors += 1
                ok = True
                if spans and exporter is not None:
                    try:
                        ok = exporter.export(spans) == SpanExportResult.SUCCESS
                    except Exception:
                        ok = False
                n = len(spans)
                write_frame(stdout, marshal.dumps(("done", n if ok else 0, 0 if ok else n,
                                                   errors)))
        if closing:
            break
    if exporter is not None:
        exporter.shutdown()
    return 0


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return child_main(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())

"""Span export in a child process: the records survive the trip intact, the spans the child
writes are the ones the in-process path writes, and a dead child is restarted (counted)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource

from otelpeers import attributes as A
from otelpeers.config import ExportConfig, FilesConfig, OtlpConfig
from otelpeers.detect.model import Actor, ActorKind, Detection, EvidenceKind, EvidenceRef
from otelpeers.detect.rules import meta
from otelpeers.dns.lookups import DnsLookup
from otelpeers.dns.transactions import DnsTransaction
from otelpeers.flows import DnsAnnotation, FileAccess
from otelpeers.flowwire import pack_flows, unpack_flows
from otelpeers.ids import SpanIds
from otelpeers.otel.exporter import SpanSink
from otelpeers.otel.offload import OffloadedExport, pack_lookup, unpack_lookup
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import T0, flow, local_pair, many, owner

IDS = SpanIds(b"o" * 16)
HOST = Resource({A.HOST_NAME: "h"})


def lookup(name: str = "api.example.com") -> DnsLookup:
    return DnsLookup(DnsTransaction(
        txn_id=f"t-{name}", cookie=7, owner=owner(5, "curl"), resolver_addr="10.0.0.53",
        resolver_port=53, client_addr="10.0.0.2", client_port=5353, question_name=name,
        qtype="A", rcode="NOERROR", answers=(), addresses=("192.0.2.1",),
        cname_chain=(name, "edge.example.net"), ttl_min=30, start_ns=T0, end_ns=T0 + 10**6,
        retries=1, truncated=False, timed_out=False, protocol="udp", family=2,
        netns_cookie=9, msg_id=42), upstream_txn_id="t-up")


def rich_flows() -> list:
    named = replace(flow("ab"), dns=DnsAnnotation(True, "a.example", ("a.example", "b.x"),
                                                  "host", "t1"),
                    files=(FileAccess(3, "/etc/shadow", 0),), summary=0, adopted=True)
    return [*local_pair(), *many(20), named, replace(flow("ac"), owner=None)]


def test_records_survive_the_trip() -> None:
    flows = rich_flows()
    assert unpack_flows(pack_flows(flows)) == flows
    lk = lookup()
    back = unpack_lookup(pack_lookup(lk))
    assert back.upstream_txn_id == lk.upstream_txn_id
    assert replace(back.txn, answers=()) == replace(lk.txn, answers=())


def lines(directory: Path) -> list[dict]:
    return [json.loads(x) for p in sorted(directory.glob("otelpeers-traces*.jsonl"))
            for x in p.read_text().splitlines()]


def spans_of(doc_lines: list[dict]) -> dict[str, dict]:
    out = {}
    for doc in doc_lines:
        for rs in doc["resourceSpans"]:
            res = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
            for ss in rs["scopeSpans"]:
                for sp in ss["spans"]:
                    out[sp["spanId"]] = {**sp, "resource": res}
    return out


def export(tmp: Path, offload: bool, items: Outputs) -> dict[str, dict]:
    cfg = ExportConfig(files=FilesConfig(directory=str(tmp)))
    sink = SpanSink(cfg, ids=IDS, host_resource=HOST, offload=offload)
    sink.consume(items)
    sink.close()
    assert sink.counters()["spans_failed"] == 0
    return spans_of(lines(tmp))


def test_the_child_writes_what_the_in_process_path_writes(tmp_path: Path) -> None:
    actor = Actor(ActorKind.PROCESS, "curl", executable="curl", owner=owner())
    det = Detection(meta.EXFILTRATION, T0, 0.9, meta.EXFILTRATION.severity, "sent", actor, None,
                    evidence={"bytes": 5}, evidence_span=EvidenceRef(EvidenceKind.FLOW, "ad"))
    with_detection = replace(flow("ad"), detections=(det,))
    items = Outputs(flows=[*rich_flows(), with_detection], dns=[lookup()])
    inproc = export(tmp_path / "in", False, items)
    child = export(tmp_path / "child", True, items)
    assert len(child) == len(rich_flows()) + 2
    assert child == inproc
    detected = [s for s in child.values() if any(
        e["name"] == "otelpeers.detection" for e in s.get("events", ()))]
    assert len(detected) == 1  # travelled pickled, whole


def test_a_dead_child_is_restarted_and_counted(tmp_path: Path) -> None:
    cfg = ExportConfig(files=FilesConfig(directory=str(tmp_path)), schedule_delay_s=60,
                       max_export_batch_size=10)
    sink = SpanSink(cfg, ids=IDS, host_resource=HOST, offload=True)
    try:
        sink.consume(Outputs(flows=list(many(10))))
        assert sink.force_flush(30)
        child = sink._offload._proc  # the test reaches in to kill it
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        sink.consume(Outputs(flows=list(many(10, start_cookie=0x9000))))
        assert not sink.force_flush(30)  # the batch sent to the dead child failed
        sink.consume(Outputs(flows=list(many(10, start_cookie=0xA000))))
        assert sink.force_flush(30)
    finally:
        sink.close()
    c = sink.counters()
    assert c["process_restarts"] == 1
    assert c["spans_exported"] == 20 and c["spans_failed"] == 10
    assert len(spans_of(lines(tmp_path))) == 20


def test_a_batch_larger_than_a_chunk_goes_in_chunks_and_each_answer_counts(
        tmp_path: Path) -> None:
    """A batch of 3.5 chunks: four frames, one answer for the batch; every span written once,
    each process's resource sent once even when its flows span several chunks."""
    from otelpeers.otel.offload import CHUNK

    n = 3 * CHUNK + CHUNK // 2
    cfg = ExportConfig(files=FilesConfig(directory=str(tmp_path)), schedule_delay_s=60,
                       max_export_batch_size=n, max_queue_size=n)
    sink = SpanSink(cfg, ids=IDS, host_resource=HOST, offload=True)
    try:
        sent: list[int] = []
        offload = sink._offload  # the test counts the frames the child gets
        real = offload._frame
        offload._frame = lambda items, *a: (sent.append(len(items)), real(items, *a))[1]
        sink.consume(Outputs(flows=list(many(n, processes=7))))
        assert sink.force_flush(60)
    finally:
        sink.close()
    assert sent == [CHUNK, CHUNK, CHUNK, CHUNK // 2]  # one export request for all four
    c = sink.counters()
    assert c["spans_exported"] == n and c["spans_failed"] == 0
    assert len(lines(tmp_path)) == 1  # one export request (one OTLP/JSON line) per batch
    spans = spans_of(lines(tmp_path))
    assert len(spans) == n
    assert len({json.dumps(s["resource"].get("process.pid")) for s in spans.values()}) == 7


class HeldCollector:
    """An OTLP/HTTP receiver on loopback that holds its first request until released, and
    counts the spans of every request it gets."""

    def __init__(self) -> None:
        self.first_arrived = threading.Event()
        self.release = threading.Event()
        self.requests: list[int] = []  # spans per request, in arrival order
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                req = ExportTraceServiceRequest.FromString(body)
                spans = sum(len(ss.spans) for rs in req.resource_spans
                            for ss in rs.scope_spans)
                outer.requests.append(spans)
                if len(outer.requests) == 1:
                    outer.first_arrived.set()
                    assert outer.release.wait(30)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def wait_sent(offload: object, n: int, timeout_s: float = 30) -> bool:
    """Until n batches have gone to the child (polling its counter, bounded)."""
    deadline = time.monotonic() + timeout_s
    while offload._sent < n and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)
    return offload._sent >= n  # type: ignore[attr-defined]


def test_a_second_batch_is_sent_while_the_child_exports_the_first() -> None:
    """Two callers (the span queue's two workers): the second batch's frames go while the
    child waits on the collector with the first, and each caller gets its own batch's
    answer, in order."""
    collector = HeldCollector()
    cfg = ExportConfig(otlp=OtlpConfig(endpoint=collector.endpoint, protocol="http/protobuf"))
    offload = OffloadedExport(cfg, {A.HOST_NAME: "h"}, b"o" * 16)
    results: dict[str, tuple[int, int, int]] = {}
    sent_second = threading.Event()

    def export(name: str, flows: list) -> None:
        results[name] = offload.export(flows, lambda o: "k", lambda o: {})

    try:
        first = threading.Thread(target=export, args=("first", list(many(30))))
        first.start()
        assert collector.first_arrived.wait(30)  # the child is inside the first request
        real_frame = offload._frame  # the test notes when the second batch's frame is made

        def noting(*args: object) -> list:
            sent_second.set()
            return real_frame(*args)

        offload._frame = noting
        second = threading.Thread(target=export,
                                  args=("second", list(many(7, start_cookie=0x7000))))
        second.start()
        assert sent_second.wait(30)  # not held back by the first batch's answer
        assert wait_sent(offload, 2)
        assert "second" not in results  # its answer follows the first's
        assert collector.requests == [30]
        collector.release.set()
        first.join(30)
        second.join(30)
    finally:
        collector.release.set()
        offload.close()
        collector.close()
    assert results == {"first": (30, 0, 0), "second": (7, 0, 0)}
    assert collector.requests == [30, 7]


def test_a_child_dying_with_two_batches_in_flight_fails_both_and_restarts_once() -> None:
    collector = HeldCollector()
    cfg = ExportConfig(otlp=OtlpConfig(endpoint=collector.endpoint, protocol="http/protobuf"))
    offload = OffloadedExport(cfg, {A.HOST_NAME: "h"}, b"o" * 16)
    results: dict[str, tuple[int, int, int]] = {}

    def export(name: str, n: int, cookie: int) -> None:
        results[name] = offload.export(list(many(n, start_cookie=cookie)), lambda o: "k",
                                       lambda o: {})

    try:
        first = threading.Thread(target=export, args=("first", 5, 0x100))
        first.start()
        assert collector.first_arrived.wait(30)
        second = threading.Thread(target=export, args=("second", 6, 0x200))
        second.start()
        assert wait_sent(offload, 2)  # its frames are sent; it waits for the first answer
        child = offload._proc  # the test reaches in to kill it
        os.kill(child.pid, signal.SIGKILL)
        first.join(30)
        second.join(30)
        assert results == {"first": (0, 5, 0), "second": (0, 6, 0)}
        collector.release.set()
        export("third", 4, 0x300)  # a new child
    finally:
        collector.release.set()
        offload.close()
        collector.close()
    assert results["third"] == (4, 0, 0)
    assert offload.restarts == 1

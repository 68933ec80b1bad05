"""Rotating OTLP JSON lines file exporter."""

from __future__ import annotations

import json

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExportResult

from otelpeers import attributes as A
from otelpeers.config import ExportConfig
from otelpeers.ids import SpanIds
from otelpeers.otel.exporter import SpanSink
from otelpeers.otel.files import RotatingJsonLinesSpanExporter
from otelpeers.otel.mapping import SpanMapper
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import local_pair, many

MAPPER = SpanMapper(SpanIds(b"x" * 16))
RES = Resource({A.SERVICE_NAME: "curl"})


def spans(n, start=0x1000):
    return [MAPPER.to_span(r, RES) for r in many(n, start_cookie=start)]


def read_lines(directory):
    out = []
    for p in sorted(directory.glob("otelpeers-traces*.jsonl")):
        out += [json.loads(line) for line in p.read_text().splitlines()]
    return out


def test_lines_are_otlp_json_with_hex_ids(tmp_path):
    exp = RotatingJsonLinesSpanExporter(tmp_path, 1 << 20, 3)
    client, server = local_pair()
    s = [MAPPER.to_span(client, RES), MAPPER.to_span(server, RES)]
    assert exp.export(s) == SpanExportResult.SUCCESS
    exp.shutdown()
    (req,) = read_lines(tmp_path)
    (rs,) = req["resourceSpans"]
    out = rs["scopeSpans"][0]["spans"]
    assert [o["traceId"] for o in out] == [f"{x.context.trace_id:032x}" for x in s]
    assert [o["spanId"] for o in out] == [f"{x.context.span_id:016x}" for x in s]
    assert out[1]["parentSpanId"] == f"{s[0].context.span_id:016x}"
    assert out[0]["kind"] == 3 and out[1]["kind"] == 2  # CLIENT, SERVER as integers
    assert rs["resource"]["attributes"] == [{"key": "service.name",
                                             "value": {"stringValue": "curl"}}]
    assert rs["scopeSpans"][0]["scope"]["name"] == "otelpeers"
    assert (tmp_path / "otelpeers-traces.jsonl").stat().st_mode & 0o777 == 0o640


def test_rotation_bounds_files_and_bytes(tmp_path):
    max_bytes, max_files = 8192, 3
    exp = RotatingJsonLinesSpanExporter(tmp_path, max_bytes, max_files)
    for i in range(60):
        assert exp.export(spans(4, start=0x1000 + 4 * i)) == SpanExportResult.SUCCESS
    exp.shutdown()
    files = sorted(tmp_path.glob("otelpeers-traces*.jsonl"))
    assert [f.name for f in files] == ["otelpeers-traces.1.jsonl", "otelpeers-traces.2.jsonl",
                                       "otelpeers-traces.jsonl"]
    assert all(f.stat().st_size <= max_bytes for f in files)
    # The newest spans survive; the oldest rotated out.
    ids = {a["value"]["stringValue"] for req in read_lines(tmp_path)
           for rs in req["resourceSpans"] for sp in rs["scopeSpans"][0]["spans"]
           for a in sp["attributes"] if a["key"] == A.FLOW_ID}
    assert f"{0x1000 + 4 * 59 + 3:x}" in ids and f"{0x1000:x}" not in ids


def test_batch_larger_than_a_file_is_split(tmp_path):
    exp = RotatingJsonLinesSpanExporter(tmp_path, 4096, 50)
    assert exp.export(spans(40)) == SpanExportResult.SUCCESS
    exp.shutdown()
    n = sum(len(rs["scopeSpans"][0]["spans"]) for req in read_lines(tmp_path)
            for rs in req["resourceSpans"])
    assert n == 40
    assert exp.spans_too_large == 0
    assert all(p.stat().st_size <= 4096 for p in tmp_path.glob("*.jsonl"))


def test_appends_to_existing_file_and_counts_its_size(tmp_path):
    exp = RotatingJsonLinesSpanExporter(tmp_path, 1 << 20, 2)
    exp.export(spans(2))
    exp.shutdown()
    exp2 = RotatingJsonLinesSpanExporter(tmp_path, 1 << 20, 2)
    exp2.export(spans(2, start=0x5000))
    exp2.shutdown()
    assert len(read_lines(tmp_path)) == 2


def test_unwritable_directory_is_a_counted_failure(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    exp = SpanSink(ExportConfig(), host_resource=RES, ids=SpanIds(b"x" * 16),
                           span_exporter=RotatingJsonLinesSpanExporter(blocker / "d", 8192, 2))
    exp.consume(Outputs(flows=list(many(3))))
    exp.close()
    assert exp.counters()["spans_failed"] == 3


def test_direct_otlp_json_equals_the_protobuf_route() -> None:
    """otlpjson writes what protobuf's JSON mapping writes, for every span the agent makes."""
    import json
    from dataclasses import replace

    from google.protobuf import json_format

    from otelpeers.dns.lookups import DnsLookup
    from otelpeers.dns.tracker import DnsTracker
    from otelpeers.flows import DnsAnnotation, FileAccess
    from otelpeers.ids import SpanIds
    from otelpeers.otel import otlpjson
    from otelpeers.otel.dns_spans import DnsSpanMapper
    from otelpeers.otel.mapping import SpanMapper
    from otelpeers.otel.otlp_export import encode_request
    from otelpeers.otel.resources import ResourceCache, detect_host_resource
    from otelpeers.testing.dns_wire import packet, query_wire, response_wire
    from otelpeers.testing.flows import flow, local_pair, many

    mapper = SpanMapper(SpanIds(b"k" * 16))
    resources = ResourceCache(detect_host_resource(), None, 100)
    records = [*many(40), *local_pair(),
               replace(flow("ab"), dns=DnsAnnotation(True, "a.example", ("a.example", "b.x"),
                                                     "host", "t1"),
                       files=(FileAccess(3, "/etc/shadow", 0),))]
    spans = [mapper.to_span(r, resources.get(r.owner)) for r in records]
    tracker = DnsTracker()
    txns = []
    for name, answers, rcode in [("x.example", ["192.0.2.1"], "NOERROR"),
                                 ("nx.example", [], "NXDOMAIN")]:
        q = query_wire(name, msg_id=len(txns) + 1)
        r = response_wire(name, msg_id=len(txns) + 1, addresses=answers, rcode=rcode)
        tracker.handle(packet(q, time_ns=1, cookie=len(txns) + 9))
        txns += tracker.handle(packet(r, time_ns=2, cookie=len(txns) + 9, outbound=False))
    assert len(txns) == 2
    spans += [DnsSpanMapper(SpanIds(b"b")).span_for(DnsLookup(t, "up")) for t in txns]
    expected = json_format.MessageToDict(encode_request(spans), use_integers_for_enums=True)
    for rs in expected["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for obj in (sp, *sp.get("links", ())):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in obj:
                            import base64

                            obj[key] = base64.b64decode(obj[key]).hex()
    assert json.loads(otlpjson.request_json(spans)) == expected

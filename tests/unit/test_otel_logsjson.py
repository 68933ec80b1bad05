"""Detection log records as OTLP/JSON, written without protobuf, against the SDK's route."""

from __future__ import annotations

import json

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import TraceFlags

from otelpeers.detect.model import Actor, ActorKind, Detection, EvidenceKind, EvidenceRef
from otelpeers.detect.rules import meta
from otelpeers.ids import SpanIds
from otelpeers.otel.logs import log_record
from otelpeers.otel.logsjson import logs_request_json
from otelpeers.testing.flows import T0, owner
from tests.unit.otlp_reference import proto_document, protobuf_modules_loaded_by


def same_as_protobuf(batch: list[ReadableLogRecord]) -> dict:
    ours = json.loads(logs_request_json(batch))
    assert ours == proto_document(encode_logs(batch))
    return ours


def record(resource: Resource, scope: InstrumentationScope | None, **kw) -> ReadableLogRecord:
    return ReadableLogRecord(LogRecord(**kw), resource=resource, instrumentation_scope=scope)


def test_records_of_every_shape_encode_as_the_sdk_protobuf_route():
    r1 = Resource({"service.name": "otelpeers", "host.name": "h"}, schema_url="https://r")
    r2 = Resource({"process.pid": 7})
    scope = InstrumentationScope("otelpeers", "1.0", schema_url="https://s",
                                 attributes={"a": True})
    batch = [
        record(r1, scope, timestamp=5, observed_timestamp=6, trace_id=0xAB, span_id=0xCD,
               trace_flags=TraceFlags(TraceFlags.SAMPLED), severity_text="WARN",
               severity_number=SeverityNumber.WARN, body="a detection",
               attributes={"n": 1, "f": 0.5, "l": ("x", "y"), "b": b"\x00\x01"},
               event_name="otelpeers.detection"),
        record(r2, None, body={"k": [1, None], "empty": {}}),  # no times, no ids, no scope
        record(r1, scope, body=None, severity_number=SeverityNumber.UNSPECIFIED),
        record(r1, InstrumentationScope("other"), body=3.25, attributes={}),
    ]
    doc = same_as_protobuf(batch)
    assert [len(rl["scopeLogs"]) for rl in doc["resourceLogs"]] == [2, 1]  # grouped
    first = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert first["traceId"] == f"{0xAB:032x}" and first["spanId"] == f"{0xCD:016x}"


def test_the_agents_detection_records_encode_as_the_sdk_protobuf_route():
    ids = SpanIds(b"l" * 16)
    actor = Actor(ActorKind.PROCESS, "nc", executable="nc", owner=owner())
    d = Detection(meta.PORT_SCAN, T0, 0.8, meta.PORT_SCAN.severity, "scan of 40 ports", actor,
                  None, evidence={"ports": 40, "sample": ("22", "80")},
                  evidence_span=EvidenceRef(EvidenceKind.FLOW, "f1"))
    resource = Resource({"service.name": "otelpeers"})
    doc = same_as_protobuf([log_record(d, resource, ids)])
    (rec,) = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert rec["traceId"] == f"{ids.flow('f1')[0]:032x}" and rec["body"] == {
        "stringValue": "scan of 40 ports"}


def test_writing_log_files_never_loads_protobuf(tmp_path):
    code = f"""
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from otelpeers.otel.signalfiles import RotatingJsonLinesLogExporter
exporter = RotatingJsonLinesLogExporter({str(tmp_path)!r}, 1 << 20, 2)
exporter.export([ReadableLogRecord(LogRecord(body="x"), resource=Resource({{}}))])
"""
    assert protobuf_modules_loaded_by(code) == []
    (line,) = (tmp_path / "otelpeers-logs.jsonl").read_text().splitlines()
    (rec,) = json.loads(line)["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert rec["body"] == {"stringValue": "x"}

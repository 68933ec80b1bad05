"""End to end: FlowRecords -> FlowSpanExporter -> rotel-agent (OTLP) -> test receiver."""

from __future__ import annotations

import time

import pytest
from opentelemetry.proto.trace.v1 import trace_pb2
from otlp_sink import free_port, span_attrs

from otelpeers import attributes as A
from otelpeers.config import ExportConfig, OtlpConfig
from otelpeers.flows import CloseReason
from otelpeers.otel.exporter import SpanSink
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import flow, local_pair, many, owner

pytestmark = pytest.mark.e2e

Kind = trace_pb2.Span.SpanKind


def exporter(endpoint: str, protocol: str, **cfg) -> SpanSink:
    conf = ExportConfig(otlp=OtlpConfig(endpoint=endpoint, protocol=protocol, timeout_s=2),
                        **cfg)
    return SpanSink(conf)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spans_reach_the_collector(rotel, sink, protocol):
    endpoint = rotel.grpc_endpoint if protocol == "grpc" else rotel.http_endpoint
    client, server = local_pair()
    failed = flow("3a", proc=owner(300, "wget"), close_reason=CloseReason.CONNECT_FAILED)
    bulk = list(many(200, processes=5))
    exp = exporter(endpoint, protocol, schedule_delay_s=60)  # only shutdown flushes
    exp.consume(Outputs(flows=[client, server, failed, *bulk]))
    exp.close()
    assert exp.counters()["spans_exported"] == 203 and exp.counters()["spans_failed"] == 0

    got = sink.wait_for_spans(203)
    assert len(got) == 203
    by_id = {span_attrs(sp)[A.FLOW_ID]: (res, sp) for res, sp in got}

    c_res, c = by_id[client.flow_id]
    s_res, s = by_id[server.flow_id]
    assert c.kind == Kind.SPAN_KIND_CLIENT and c.name == "tcp connect"
    assert s.kind == Kind.SPAN_KIND_SERVER and s.name == "tcp accept"
    assert s.trace_id == c.trace_id and s.parent_span_id == c.span_id
    assert c.parent_span_id == b""
    assert c_res[A.SERVICE_NAME] == "curl" and c_res[A.PROCESS_PID] == 100
    assert s_res[A.SERVICE_NAME] == "nginx" and s_res[A.PROCESS_PID] == 77
    ca, sa = span_attrs(c), span_attrs(s)
    assert ca[A.SERVER_PORT] == 8080 and sa[A.CLIENT_PORT] == 51000
    assert sa[A.LISTENER_PORT] == 8080
    assert ca[A.FLOW_BYTES_SENT] == client.counters.payload_out
    assert ca[A.FLOW_COMPLETE] is True
    assert c.start_time_unix_nano == client.start_ns and c.end_time_unix_nano == client.end_ns

    _, f = by_id[failed.flow_id]
    assert f.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert span_attrs(f)[A.ERROR_TYPE] == "connect_failed"

    # Spans of different processes arrive under their own resources.
    services = {res[A.SERVICE_NAME] for res, _ in got}
    assert services == {"curl", "nginx", "wget"} | {f"proc{i}" for i in range(5)}
    owners = {r.flow_id: r.owner for r in (client, server, failed, *bulk)}
    for res, sp in got:
        o = owners[span_attrs(sp)[A.FLOW_ID]]
        assert (res[A.SERVICE_NAME], res[A.PROCESS_PID]) == (o.comm, o.tgid)
        assert A.HOST_NAME in res


def test_open_flows_flushed_at_shutdown_are_marked_incomplete(rotel, sink):
    exp = exporter(rotel.grpc_endpoint, "grpc", schedule_delay_s=60)
    exp.consume(Outputs(flows=[flow("51", close_reason=CloseReason.SHUTDOWN, complete=False)]))
    exp.close()
    ((_, sp),) = sink.wait_for_spans(1)
    a = span_attrs(sp)
    assert a[A.FLOW_COMPLETE] is False and a[A.FLOW_CLOSE_REASON] == "shutdown"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_collector_down(protocol):
    port = free_port()  # nothing listens here
    exp = exporter(f"http://127.0.0.1:{port}", protocol, schedule_delay_s=0.05,
                   max_export_batch_size=10, max_queue_size=50)
    exp.consume(Outputs(flows=list(many(30))))
    exp.consume(Outputs(flows=list(many(100, start_cookie=0x9000))))  # beyond the queue bound
    assert exp.counters()["spans_dropped_queue_full"] >= 50  # the worker may take a batch or two
    deadline = time.monotonic() + 20
    while exp.counters()["spans_failed"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the worker's first failed export
    t = time.monotonic()
    exp.close()
    assert time.monotonic() - t < 10  # one export timeout (2 s) plus slack
    st = exp.counters()
    assert st["spans_failed"] > 0 and st["spans_exported"] == 0
    assert (st["spans_failed"] + st["spans_dropped_shutdown"] + st["spans_dropped_queue_full"]
            == 130)

"""DNS spans: attributes, status, deterministic ids, links, detection events; DNS metrics."""

from __future__ import annotations

import socket

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind, StatusCode

from otelpeers import attributes as A
from otelpeers.dns.lookups import DnsLookup
from otelpeers.dns.transactions import DnsTransaction, make_txn_id
from otelpeers.ids import SpanIds, read_boot_id
from otelpeers.otel.dns_spans import DnsSpanMapper
from otelpeers.otel.metrics import MAX_LABELS, MetricsSink
from otelpeers.pipeline import Outputs

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def txn(rcode: str = "NOERROR", qtype: str = "A", start: int = T0,
        timed_out: bool = False) -> DnsTransaction:
    addrs = ("192.0.2.1", "192.0.2.2") if rcode == "NOERROR" else ()
    return DnsTransaction(
        txn_id=make_txn_id(9, 0x42, qtype, start), cookie=9, owner=None,
        resolver_addr="10.0.0.53", resolver_port=53, client_addr="10.0.0.2",
        client_port=5353, question_name="www.example.com", qtype=qtype, rcode=rcode,
        answers=(), addresses=addrs, cname_chain=("www.example.com", "edge.example.net"),
        ttl_min=30 if addrs else None, start_ns=start, end_ns=start + 12 * MS, retries=1,
        truncated=False, timed_out=timed_out, protocol="udp", family=socket.AF_INET,
        msg_id=0x42)


def test_span_attributes_and_shape() -> None:
    mapper = DnsSpanMapper(SpanIds(b"boot-a"))
    res = Resource.create({"service.name": "curl"})
    span = mapper.span_for(DnsLookup(txn()), resource=res)
    assert span.name == "dns query" and span.kind == SpanKind.CLIENT
    assert span.start_time == T0 and span.end_time == T0 + 12 * MS
    a = span.attributes
    assert a[A.DNS_QUESTION_NAME] == "www.example.com" and a[A.DNS_QUESTION_TYPE] == "A"
    assert a[A.DNS_RESPONSE_CODE] == "NOERROR"
    assert tuple(a[A.DNS_ANSWERS]) == ("192.0.2.1", "192.0.2.2")
    assert tuple(a[A.DNS_CNAME_CHAIN]) == ("www.example.com", "edge.example.net")
    assert a[A.DNS_TTL_MIN] == 30 and a[A.DNS_RETRIES] == 1 and a[A.DNS_TRUNCATED] is False
    assert (a[A.NETWORK_PEER_ADDRESS], a[A.NETWORK_PEER_PORT]) == ("10.0.0.53", 53)
    assert a[A.NETWORK_TRANSPORT] == "udp" and a[A.NETWORK_TYPE] == "ipv4"
    assert A.ERROR_TYPE not in a
    assert span.status.status_code == StatusCode.UNSET
    assert span.resource.attributes["service.name"] == "curl"
    encoded = encode_spans([span])  # the OTLP encoder accepts it as is
    assert encoded.resource_spans[0].scope_spans[0].spans[0].name == "dns query"


@pytest.mark.parametrize("rcode,error", [("NXDOMAIN", None), ("SERVFAIL", "servfail"),
                                         ("REFUSED", "refused"), ("TIMEOUT", "timeout")])
def test_status_by_rcode(rcode: str, error: str | None) -> None:
    span = DnsSpanMapper(SpanIds(b"b")).span_for(
        DnsLookup(txn(rcode, timed_out=rcode == "TIMEOUT")))
    assert span.attributes.get(A.ERROR_TYPE) == error
    expected = StatusCode.UNSET if error is None else StatusCode.ERROR
    assert span.status.status_code == expected
    assert A.DNS_TTL_MIN not in span.attributes


def test_ids_deterministic_per_boot_and_txn() -> None:
    a1 = DnsSpanMapper(SpanIds(b"boot-a"))
    a2 = DnsSpanMapper(SpanIds(b"boot-a"))
    b = DnsSpanMapper(SpanIds(b"boot-b"))
    t = txn()
    assert a1.span_for(DnsLookup(t)).context == a2.span_context_for(t.txn_id)
    assert a1.span_context_for(t.txn_id) != b.span_context_for(t.txn_id)
    assert a1.span_context_for(t.txn_id) != a1.span_context_for(txn(start=T0 + 1).txn_id)
    ctx = a1.span_context_for(t.txn_id)
    assert ctx.is_valid and ctx.trace_flags.sampled
    # One id scheme: a flow and a lookup with the same id string get different spans.
    ids = SpanIds(b"boot-a")
    assert ids.dns(t.txn_id) != ids.flow(t.txn_id)


def test_boot_id_read_from_proc(tmp_path, caplog) -> None:
    import uuid

    p = tmp_path / "boot_id"
    u = uuid.uuid4()
    p.write_text(f"{u}\n")
    assert read_boot_id(p) == u.bytes
    missing = read_boot_id(tmp_path / "missing")
    assert len(missing) == 16 and missing != read_boot_id(tmp_path / "missing")
    assert "span ids are random" in caplog.text  # said, not silent


def test_stub_upstream_link_and_socket_cookie_int64() -> None:
    from dataclasses import replace

    mapper = DnsSpanMapper(SpanIds(b"boot-a"))
    span = mapper.span_for(DnsLookup(replace(txn(), cookie=2**64 - 1), upstream_txn_id="up-1"))
    assert span.links[0].context == mapper.span_context_for("up-1")
    assert span.attributes[A.SOCKET_COOKIE] == -1  # int64 two's complement, as on flow spans


def _points(reader):  # noqa: ANN001, ANN202
    data = reader.get_metrics_data()
    return {m.name: m.data.data_points for rm in data.resource_metrics
            for sm in rm.scope_metrics for m in sm.metrics}


def test_metrics_counts_and_latency() -> None:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    m = MetricsSink(reader, Resource.get_empty())
    m.consume(Outputs(dns=[DnsLookup(txn()), DnsLookup(txn("NXDOMAIN", "AAAA")),
                           DnsLookup(txn("TIMEOUT", timed_out=True))]))
    reader.get_metrics_data()  # new streams are given at zero first
    pts = _points(reader)
    queries = {(p.attributes[A.DNS_RESPONSE_CODE], p.attributes[A.DNS_QUESTION_TYPE]): p.value
               for p in pts["otelpeers.dns.queries"]}
    assert queries == {("NOERROR", "A"): 1, ("NXDOMAIN", "AAAA"): 1, ("TIMEOUT", "A"): 1}
    (timeout,) = [p for p in pts["dns.lookup.duration"]
                  if p.attributes[A.DNS_RESPONSE_CODE] == "TIMEOUT"]
    assert timeout.attributes[A.ERROR_TYPE] == "timeout" and timeout.sum == 0.012
    m.close()


def test_metric_labels_bounded() -> None:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    m = MetricsSink(reader, Resource.get_empty())
    m.consume(Outputs(dns=[DnsLookup(txn(qtype=f"TYPE{1000 + i}")) for i in range(200)]))
    qtypes = {p.attributes[A.DNS_QUESTION_TYPE] for p in _points(reader)["otelpeers.dns.queries"]}
    assert len(qtypes) == MAX_LABELS and "other" in qtypes
    assert m.counters()["label_overflowed"] == 200 - MAX_LABELS + 1
    m.close()

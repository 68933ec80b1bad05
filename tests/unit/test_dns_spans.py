"""DNS spans: attributes, status, deterministic ids, links; and the metrics helper."""

from __future__ import annotations

import socket

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind, StatusCode

from otelpeers import attributes as A
from otelpeers.dns.cache import Match, ResolutionCache
from otelpeers.dns.metrics import MAX_LABELS, DnsMetrics
from otelpeers.dns.spans import DnsSpanMapper, link_for_match, read_boot_id
from otelpeers.dns.transactions import DnsTransaction, make_txn_id

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
    mapper = DnsSpanMapper(boot_id="boot-a")
    res = Resource.create({"service.name": "curl"})
    span = mapper.span_for(txn(), resource=res)
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
    span = DnsSpanMapper(boot_id="b").span_for(txn(rcode, timed_out=rcode == "TIMEOUT"))
    assert span.attributes.get(A.ERROR_TYPE) == error
    expected = StatusCode.UNSET if error is None else StatusCode.ERROR
    assert span.status.status_code == expected
    assert A.DNS_TTL_MIN not in span.attributes


def test_ids_deterministic_per_boot_and_txn() -> None:
    a1, a2, b = DnsSpanMapper("boot-a"), DnsSpanMapper("boot-a"), DnsSpanMapper("boot-b")
    t = txn()
    assert a1.span_for(t).context == a2.span_context_for(t.txn_id)
    assert a1.ids_for(t.txn_id) != b.ids_for(t.txn_id)
    assert a1.ids_for(t.txn_id) != a1.ids_for(txn(start=T0 + 1).txn_id)
    ctx = a1.span_context_for(t.txn_id)
    assert ctx.is_valid and ctx.trace_flags.sampled


def test_boot_id_read_from_proc(tmp_path) -> None:
    p = tmp_path / "boot_id"
    p.write_text("1234-abcd\n")
    assert read_boot_id(p) == "1234-abcd"
    assert read_boot_id(tmp_path / "missing").startswith("random-")


def test_links_from_connection_and_stub() -> None:
    mapper = DnsSpanMapper("boot-a")
    t = txn()
    cache = ResolutionCache()
    cache.record(t)
    m = cache.lookup("192.0.2.1", None, T0 + 20 * MS)
    assert isinstance(m, Match)
    link = link_for_match(mapper, m)
    assert link.context == mapper.span_for(t).context
    assert link.attributes[A.DNS_MATCH] == "host"
    span = mapper.span_for(t, upstream_txn_id="up-1")
    assert span.links[0].context == mapper.span_context_for("up-1")


def test_metrics_counts_and_latency() -> None:
    m = DnsMetrics()
    m.observe(txn())
    m.observe(txn("NXDOMAIN", "AAAA"))
    m.observe(txn("TIMEOUT", timed_out=True))
    st = m.stats
    assert st["queries"] == 3 and st["queries.rcode.NOERROR"] == 1
    assert st["queries.qtype.A"] == 2 and st["queries.qtype.AAAA"] == 1
    assert m.by_rcode_qtype[("NXDOMAIN", "AAAA")] == 1 and st["retries"] == 3
    samples = m.drain_latencies()
    assert [s for s, _ in samples] == [0.012] * 3
    assert samples[2][1][A.ERROR_TYPE] == "timeout"
    assert m.drain_latencies() == []


def test_metric_labels_bounded() -> None:
    m = DnsMetrics(max_samples=5)
    for i in range(200):
        m.observe(txn(qtype=f"TYPE{1000 + i}"))
    assert len(m.by_qtype) == MAX_LABELS and m.by_qtype["other"] == 200 - MAX_LABELS + 1
    assert len(m.drain_latencies()) == 5 and m.samples_dropped == 195

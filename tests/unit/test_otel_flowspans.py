"""flowspans writes the same span bytes as the span route (SpanMapper, then otlpjson or wire),
for every optional part of a flow record and any text; the span route stays the contract."""

from __future__ import annotations

import json
import socket
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otelpeers.events import Counters, Direction, Owner, TcpInfo
from otelpeers.flows import CloseReason, DnsAnnotation, FileAccess, FlowRecord, Listener
from otelpeers.flowwire import pack_flows, unpack_flows
from otelpeers.ids import SpanIds
from otelpeers.otel import otlpjson, wire
from otelpeers.otel.flowspans import is_plain, span_json, span_protobuf
from otelpeers.otel.mapping import SpanMapper
from otelpeers.otel.resources import _ProcessResource
from otelpeers.testing.flows import flow, local_pair, many

IDS = SpanIds(bytes(range(16)))
RES = _ProcessResource({"host.name": "h"})
U64 = 2**64 - 1


def reference(r: FlowRecord) -> tuple[str, bytes]:
    span = SpanMapper(IDS).to_span(r, RES)
    return otlpjson.encode_span(span), wire.encode_span(span)


def check(r: FlowRecord) -> None:
    assert is_plain(r)
    want_json, want_pb = reference(r)
    assert span_json(r, IDS) == want_json
    json.loads(want_json)
    assert span_protobuf(r, IDS) == want_pb


def test_synthetic_streams_and_both_ends_of_a_local_connection() -> None:
    for r in [*many(300), *local_pair()]:
        check(r)


def test_records_after_the_trip_to_the_export_process() -> None:
    records = [*many(200), *local_pair()]
    for r in unpack_flows(pack_flows(records)):
        check(r)


base = flow("ff", peer="2001:db8::1", local="2001:db8::2")
lst = Listener("0.0.0.0", 8080, 10**18, None, None)


def test_every_optional_part() -> None:
    variants = [
        replace(base, owner=None, tcp=None, local_peer_flow_id=None),
        replace(base, owner=Owner(1, 2, 0, 0, 0, "x", joined=True)),
        replace(base, owner=Owner(0, 0, 0, 0, 0, "[kernel]")),
        replace(base, dns=DnsAnnotation(True, "www.example.com", ("a.cdn.net", "b.cdn.net"),
                                         "same_process", "t1")),
        replace(base, dns=DnsAnnotation(True, "", (), "host", "t2")),  # no name: peer address
        replace(base, dns=DnsAnnotation(True, "x.example", (), "host", "")),  # no link
        replace(base, dns=DnsAnnotation(False)),
        replace(base, summary=17, cookie=0, complete=False, adopted=True, tcp=None,
                close_reason=CloseReason.CONNECT_FAILED, direction=Direction.UNKNOWN),
        replace(base, close_reason=CloseReason.RESET, local_addr=""),
        replace(base, cookie=U64, netns_cookie=U64 - 1,
                counters=Counters(U64, U64, U64, 1, 2, 3),
                tcp=TcpInfo(U64, U64, U64, U64)),
        replace(base, direction=Direction.INBOUND, listener=lst, local_peer_flow_id="fe"),
        replace(base, direction=Direction.INBOUND, local_peer_flow_id="",
                listener=replace(lst, listen_ns=10**18 + 5)),
        replace(base, direction=Direction.OUTBOUND, listener=lst),  # not written outbound
        replace(base, transport="udp", tcp=None, sock_type=socket.SOCK_DGRAM,
                direction=Direction.INBOUND),
        replace(base, transport="icmp", tcp=None, peer_port=0, start_ns=0, end_ns=0),
        replace(base, end_ns=base.start_ns - 5),  # a clock step: end is never before start
    ]
    for r in variants:
        check(r)


def test_what_is_not_plain_takes_the_span_route() -> None:
    assert not is_plain(replace(base, files=(FileAccess(1, "/etc/shadow", 0),)))
    assert not is_plain(replace(base, close_reason=CloseReason.SHUTDOWN))


def test_values_protobuf_cannot_carry_are_left_to_the_span_route() -> None:
    too_late = replace(base, direction=Direction.INBOUND, listener=replace(lst, bind_ns=U64))
    span = SpanMapper(IDS).to_span(too_late, RES)
    with pytest.raises(wire.Unsupported):
        wire.encode_span(span)  # the span route's encoder falls back to the SDK's for it
    assert span_protobuf(too_late, IDS) is None
    assert span_json(too_late, IDS) == otlpjson.encode_span(span)  # JSON has no such limit
    assert span_protobuf(replace(base, start_ns=-1, end_ns=5), IDS) is None


text = st.text(max_size=30)


@settings(max_examples=300, deadline=None)
@given(flow_id=text, comm=text, name=text, chain=st.lists(text, max_size=3), how=text,
       txn=text, local=text, peer=text, peer_id=st.none() | text, lst_addr=text,
       uid=st.integers(0, 2**32 - 1), port=st.integers(0, 65535),
       counts=st.lists(st.integers(0, U64), min_size=6, max_size=6),
       cookies=st.tuples(st.integers(0, U64), st.integers(0, U64)),
       direction=st.sampled_from(list(Direction)),
       reason=st.sampled_from([c for c in CloseReason if c is not CloseReason.SHUTDOWN]),
       resolved=st.booleans(), summary=st.integers(0, 10**6), adopted=st.booleans(),
       complete=st.booleans(), listen=st.none() | st.integers(0, 2**63 - 1))
def test_any_values(flow_id: str, comm: str, name: str, chain: list[str], how: str, txn: str,
                    local: str, peer: str, peer_id: str | None, lst_addr: str, uid: int,
                    port: int, counts: list[int], cookies: tuple[int, int],
                    direction: Direction, reason: CloseReason, resolved: bool, summary: int,
                    adopted: bool, complete: bool, listen: int | None) -> None:
    r = replace(base, flow_id=flow_id, local_addr=local, peer_addr=peer, peer_port=port,
                local_port=port, owner=Owner(7, 7, uid, 0, 1, comm), direction=direction,
                dns=DnsAnnotation(resolved, name, tuple(chain), how, txn),
                local_peer_flow_id=peer_id, cookie=cookies[0], netns_cookie=cookies[1],
                counters=Counters(*counts), close_reason=reason, summary=summary,
                adopted=adopted, complete=complete,
                listener=Listener(lst_addr, port, 10**18, listen, None))
    check(r)

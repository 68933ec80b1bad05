"""FlowRecord -> span mapping, checked through the SDK's in-memory exporter."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from otelpeers import attributes as A
from otelpeers.config import ExportConfig
from otelpeers.events import Counters, Direction, Kind, Owner, PairStats, SocketEvent, TcpInfo
from otelpeers.flows import CloseReason, FlowTable
from otelpeers.ids import SpanIds
from otelpeers.otel.exporter import SpanSink
from otelpeers.otel.mapping import as_int64
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import T0, flow, local_pair, owner

BOOT = bytes(range(16))
HOST = Resource({A.HOST_NAME: "testhost", A.OS_TYPE: "linux"})


def export(records, **kw):
    mem = InMemorySpanExporter()
    exp = SpanSink(ExportConfig(**kw.pop("config", {})), span_exporter=mem,
                           host_resource=HOST, ids=SpanIds(BOOT), **kw)
    exp.consume(Outputs(flows=list(records)))
    exp.close()
    return mem.get_finished_spans(), exp


def by_flow(spans):
    return {s.attributes[A.FLOW_ID]: s for s in spans}


def test_client_span_kind_name_times_and_attributes():
    rec = flow("2a", tcp=TcpInfo(bytes_acked=1201, bytes_received=5301, total_retrans=3,
                                 srtt_us=850))
    (span,), _ = export([rec])
    assert span.kind == SpanKind.CLIENT
    assert span.name == "tcp connect"
    assert (span.start_time, span.end_time) == (rec.start_ns, rec.end_ns)
    a = span.attributes
    assert a[A.NETWORK_TRANSPORT] == "tcp" and a[A.NETWORK_TYPE] == "ipv4"
    assert (a[A.NETWORK_PEER_ADDRESS], a[A.NETWORK_PEER_PORT]) == ("93.184.216.34", 443)
    assert (a[A.SERVER_ADDRESS], a[A.SERVER_PORT]) == ("93.184.216.34", 443)
    assert (a[A.NETWORK_LOCAL_ADDRESS], a[A.NETWORK_LOCAL_PORT]) == ("10.0.0.2", 40000)
    assert A.CLIENT_ADDRESS not in a
    c = rec.counters
    assert a[A.FLOW_BYTES_SENT] == c.payload_out and a[A.FLOW_BYTES_RECEIVED] == c.payload_in
    assert a[A.FLOW_WIRE_BYTES_SENT] == c.bytes_out and a[A.FLOW_WIRE_BYTES_RECEIVED] == c.bytes_in
    assert a[A.FLOW_PACKETS_SENT] == c.packets_out and a[A.FLOW_PACKETS_RECEIVED] == c.packets_in
    assert a[A.TCP_SRTT_US] == 850 and a[A.TCP_RETRANSMITS] == 3
    assert a[A.TCP_BYTES_ACKED] == 1201 and a[A.TCP_BYTES_RECEIVED] == 5301
    assert a[A.FLOW_CLOSE_REASON] == "closed" and a[A.FLOW_COMPLETE] is True
    assert a[A.SOCKET_COOKIE] == 0x2A and a[A.NETNS_COOKIE] == 4096
    assert span.status.status_code == StatusCode.UNSET and A.ERROR_TYPE not in a
    assert span.parent is None
    assert span.instrumentation_scope.name == "otelpeers"


def test_adopted_flows_say_so_and_others_do_not():
    rec = flow("2a")
    (plain, adopted), _ = export([rec, replace(rec, flow_id="2b", cookie=0x2B, adopted=True)])
    assert A.FLOW_ADOPTED not in plain.attributes
    assert adopted.attributes[A.FLOW_ADOPTED] is True
    assert A.FLOW_ADOPTED == "otelpeers.flow.adopted"


def test_summary_spans_say_how_many_connections_they_stand_for():
    """A summary record from the flow table (lost records, counted by the kernel's
    aggregates) becomes a span marked with the count; other spans carry no such mark."""
    lost = PairStats(time_ns=T0 + 10**9, start_ns=T0, netns_cookie=3, owner=owner(),
                     family=socket.AF_INET, protocol=socket.IPPROTO_TCP,
                     direction=Direction.OUTBOUND, peer_addr="192.0.2.1", port=443, opened=9,
                     closed=9, lost=7, lost_volume=Counters(7, 700, 70, 7, 700, 70))
    (summary,) = FlowTable().process(lost)
    spans, _ = export([summary, flow("2a")])
    marked, plain = spans
    assert marked.attributes[A.FLOW_SUMMARY] == 7
    assert marked.attributes[A.FLOW_ID].startswith("summary/")
    assert marked.attributes[A.FLOW_BYTES_SENT] == 70 and marked.attributes[A.SOCKET_COOKIE] == 0
    assert (marked.start_time, marked.end_time) == (T0, T0 + 10**9)
    assert A.FLOW_SUMMARY not in plain.attributes


def test_server_span_has_client_attributes_and_listener():
    _, server = local_pair()
    (span,), _ = export([server])
    a = span.attributes
    assert span.kind == SpanKind.SERVER and span.name == "tcp accept"
    assert (a[A.CLIENT_ADDRESS], a[A.CLIENT_PORT]) == ("127.0.0.1", 51000)
    assert A.SERVER_ADDRESS not in a
    assert (a[A.LISTENER_ADDRESS], a[A.LISTENER_PORT]) == ("127.0.0.1", 8080)
    assert a[A.LISTENER_BIND_TIME] == server.listener.bind_ns
    assert a[A.LISTENER_LISTEN_TIME] == server.listener.listen_ns


@pytest.mark.parametrize(("transport", "direction", "name", "kind"), [
    ("udp", Direction.OUTBOUND, "udp send", SpanKind.CLIENT),
    ("udp", Direction.INBOUND, "udp receive", SpanKind.SERVER),
    ("icmp", Direction.OUTBOUND, "icmp", SpanKind.CLIENT),
    ("udp", Direction.UNKNOWN, "udp", SpanKind.INTERNAL),
])
def test_names_and_kinds(transport, direction, name, kind):
    (span,), _ = export([flow("7", transport=transport, direction=direction,
                              peer="2001:db8::1")])
    assert (span.name, span.kind) == (name, kind)
    assert span.attributes[A.NETWORK_TYPE] == "ipv6"
    assert A.TCP_SRTT_US not in span.attributes
    if direction == Direction.UNKNOWN:
        assert A.SERVER_ADDRESS not in span.attributes
        assert A.CLIENT_ADDRESS not in span.attributes


@pytest.mark.parametrize("reason", [CloseReason.CONNECT_FAILED, CloseReason.RESET])
def test_failures_are_errors(reason):
    (span,), _ = export([flow("9", close_reason=reason)])
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description
    assert span.attributes[A.ERROR_TYPE] == reason.value


@pytest.mark.parametrize("reason", [CloseReason.IDLE_TIMEOUT, CloseReason.SHUTDOWN,
                                    CloseReason.EVICTED, CloseReason.RELEASED])
def test_other_reasons_are_not_errors(reason):
    (span,), _ = export([flow("9", close_reason=reason)])
    assert span.status.status_code == StatusCode.UNSET
    assert span.attributes[A.FLOW_CLOSE_REASON] == reason.value


def test_resources_are_the_owning_processes():
    recs = [flow("1", proc=owner(10, "curl")), flow("2", proc=owner(20, "nginx")),
            flow("3", proc=owner(10, "curl")), flow("4", proc=None)]
    spans, exp = export(recs)
    res = {s.attributes[A.FLOW_ID]: s.resource for s in spans}
    assert res["1"] is res["3"]  # cached: one Resource object per process
    assert res["1"].attributes[A.SERVICE_NAME] == "curl"
    assert res["1"].attributes[A.PROCESS_PID] == 10
    assert res["1"].attributes[A.PROCESS_EXECUTABLE_NAME] == "curl"
    assert res["2"].attributes[A.SERVICE_NAME] == "nginx"
    assert res["4"].attributes[A.SERVICE_NAME] == "unknown"
    assert A.PROCESS_PID not in res["4"].attributes
    for r in res.values():
        assert r.attributes[A.HOST_NAME] == "testhost"
    assert exp.counters()["resources_cached"] == 2


def test_process_attributes_callback_and_its_failures():
    def attrs(o: Owner):
        if o.comm == "bad":
            raise RuntimeError("proc vanished")
        return {A.PROCESS_PID: o.tgid, A.PROCESS_EXECUTABLE_NAME: "python3.11",
                A.PROCESS_COMMAND_LINE: "python3.11 app.py --token=<redacted>",
                A.CONTAINER_ID: "abc123"}
    spans, exp = export([flow("1", proc=owner(5, "python3")), flow("2", proc=owner(6, "bad"))],
                        process_attributes=attrs)
    res = {s.attributes[A.FLOW_ID]: s.resource.attributes for s in spans}
    assert res["1"][A.SERVICE_NAME] == "python3.11"  # executable name, not the 15-char comm
    assert res["1"][A.CONTAINER_ID] == "abc123"
    assert res["2"][A.SERVICE_NAME] == "bad"  # fell back to the kernel's view
    assert exp.counters()["process_attribute_errors"] == 1


def test_resource_cache_is_bounded():
    recs = [flow(f"{i + 1:x}", proc=owner(i, f"p{i}")) for i in range(10)]
    spans, exp = export(recs, config={"max_live_resources": 3})
    assert len(spans) == 10
    assert exp.counters()["resources_cached"] == 3
    assert {s.resource.attributes[A.PROCESS_PID] for s in spans} == set(range(10))


def test_local_pair_is_one_trace_server_child_of_client():
    client, server = local_pair()
    spans, _ = export([server, client])  # order must not matter
    s = by_flow(spans)
    c, v = s[client.flow_id], s[server.flow_id]
    assert c.kind == SpanKind.CLIENT and v.kind == SpanKind.SERVER
    assert v.context.trace_id == c.context.trace_id
    assert v.parent is not None and v.parent.span_id == c.context.span_id
    assert v.context.span_id != c.context.span_id
    assert c.parent is None
    assert c.resource.attributes[A.SERVICE_NAME] == "curl"
    assert v.resource.attributes[A.SERVICE_NAME] == "nginx"


def test_client_ids_do_not_depend_on_knowing_the_peer():
    """A client exported before the server was seen gets the same ids as one that knows."""
    client, _ = local_pair()
    from dataclasses import replace
    (a,), _ = export([client])
    (b,), _ = export([replace(client, local_peer_flow_id=None)])
    assert (a.context.trace_id, a.context.span_id) == (b.context.trace_id, b.context.span_id)


def _tcp_ev(kind, cookie, t, direction, local, lport, peer, pport, own, old_state=0):
    return SocketEvent(kind=kind, time_ns=T0 + t, cookie=cookie, netns_cookie=1, owner=own,
                       family=socket.AF_INET, protocol=socket.IPPROTO_TCP,
                       direction=direction, old_state=old_state, local_addr=local,
                       local_port=lport, peer_addr=peer, peer_port=pport,
                       counters=Counters(2, 200, 100, 2, 300, 150),
                       tcp=TcpInfo(100, 150, 0, 40) if kind == Kind.TCP_CLOSE else None)


def test_local_pair_from_the_flow_table():
    """The real FlowTable links the ends; the exported spans form one trace."""
    ft = FlowTable()
    cl, sv = owner(100, "curl"), owner(77, "nginx")
    lo, out, inb = "127.0.0.1", Direction.OUTBOUND, Direction.INBOUND
    for ev in [
        _tcp_ev(Kind.BIND, 0x50, 0, Direction.UNKNOWN, lo, 8080, "0.0.0.0", 0, sv),
        _tcp_ev(Kind.LISTEN, 0x50, 1, Direction.UNKNOWN, lo, 8080, "0.0.0.0", 0, sv),
        _tcp_ev(Kind.CONNECT, 0x100, 10, out, lo, 0, lo, 8080, cl),
        _tcp_ev(Kind.ESTABLISHED, 0x100, 11, out, lo, 51000, lo, 8080, cl),
        _tcp_ev(Kind.ESTABLISHED, 0x101, 12, inb, lo, 8080, lo, 51000, None),
    ]:
        assert ft.process(ev) == []
    done = ft.process(_tcp_ev(Kind.TCP_CLOSE, 0x100, 20, out, lo, 51000, lo, 8080, cl,
                              old_state=4))
    done += ft.process(_tcp_ev(Kind.TCP_CLOSE, 0x101, 21, inb, lo, 8080, lo, 51000, None,
                               old_state=9))
    assert len(done) == 2
    spans, _ = export(done)
    c = next(s for s in spans if s.kind == SpanKind.CLIENT)
    v = next(s for s in spans if s.kind == SpanKind.SERVER)
    assert v.context.trace_id == c.context.trace_id
    assert v.parent.span_id == c.context.span_id
    assert v.attributes[A.LISTENER_PORT] == 8080


def test_ids_deterministic_distinct_and_boot_scoped():
    a, b = SpanIds(BOOT), SpanIds(bytes(16))
    assert a.flow("2a") == a.flow("2a")
    assert a.flow("2a") != a.flow("2b")
    assert a.flow("2a") != b.flow("2a")
    ids = {a.flow(f"{i:x}") for i in range(5000)}
    assert len({t for t, _ in ids}) == 5000 and len({s for _, s in ids}) == 5000


def test_shutdown_drained_flows_are_marked_incomplete():
    ft = FlowTable()
    own = owner(100, "curl")
    ft.process(_tcp_ev(Kind.CONNECT, 0x200, 0, Direction.OUTBOUND, "10.0.0.2", 0,
                       "10.0.0.9", 443, own))
    ft.process(_tcp_ev(Kind.ESTABLISHED, 0x200, 1, Direction.OUTBOUND, "10.0.0.2", 40001,
                       "10.0.0.9", 443, own))
    (span,), _ = export(ft.drain(T0 + 50))
    assert span.attributes[A.FLOW_COMPLETE] is False
    assert span.attributes[A.FLOW_CLOSE_REASON] == "shutdown"
    assert span.end_time == T0 + 50


def test_a_connection_across_an_agent_restart_is_one_trace_without_duplicate_span_ids():
    # Agent 1 stops while the connection is open (shutdown); agent 2 adopts it (same cookie,
    # same flow id) and reports its end. Two spans, one trace, distinct span ids; the later
    # one has the connection's usual span id (what peers, DNS links and detections name).
    first = replace(flow("2a"), complete=False, close_reason=CloseReason.SHUTDOWN,
                    end_ns=T0 + 10**9)
    second = replace(flow("2a"), adopted=True, start_ns=T0 + 2 * 10**9,
                     end_ns=T0 + 3 * 10**9)
    spans, _ = export([first, second])
    a, b = sorted(spans, key=lambda s: s.start_time)
    trace_id, span_id = SpanIds(BOOT).flow("2a")
    assert a.context.trace_id == b.context.trace_id == trace_id
    assert b.context.span_id == span_id
    assert a.context.span_id != span_id
    # The earlier part links to the span that continues it (and ends the connection).
    (link,) = a.links
    assert (link.context.trace_id, link.context.span_id) == (trace_id, span_id)
    assert link.attributes == {A.FLOW_LINK_KIND: "continued_by"}
    assert not b.links
    # A later stop of the same connection makes another distinct part.
    third = replace(first, end_ns=T0 + 5 * 10**9)
    (c,), _ = export([third])
    assert c.context.span_id not in (a.context.span_id, b.context.span_id)


def test_u64_cookies_fit_int64():
    assert as_int64(2**64 - 1) == -1
    assert as_int64(2**63 - 1) == 2**63 - 1
    (span,), _ = export([flow("ffffffffffffffff")])
    assert span.attributes[A.SOCKET_COOKIE] == -1


def test_bogus_u64_counters_are_capped_at_int64_max_each() -> None:
    big, top = 2**64 - 1, 2**63 - 1
    r = flow("aa", counters=Counters(packets_out=big, bytes_out=5, payload_out=2**63,
                                     packets_in=7, bytes_in=top, payload_in=big))
    (span,), _ = export([r])
    a = span.attributes
    assert (a[A.FLOW_PACKETS_SENT], a[A.FLOW_WIRE_BYTES_SENT], a[A.FLOW_BYTES_SENT]) == (
        top, 5, top)
    assert (a[A.FLOW_PACKETS_RECEIVED], a[A.FLOW_WIRE_BYTES_RECEIVED],
            a[A.FLOW_BYTES_RECEIVED]) == (7, top, top)

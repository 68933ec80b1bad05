"""FlowRecord -> ReadableSpan, after docs/telemetry.md (the contract).

Spans are built directly as ReadableSpan, without a Tracer or SpanProcessor: a flow is
already complete when it reaches us, and the per-span machinery of the SDK (context,
locks, processors) would cost more than the flow itself. Ids come from otelpeers.ids.
"""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from otelpeers import __version__
from otelpeers import attributes as A
from otelpeers.detect.model import Detection
from otelpeers.events import Direction
from otelpeers.flows import CloseReason, FlowRecord
from otelpeers.ids import SpanIds
from otelpeers.otel.detections import detection_attributes

SCOPE = InstrumentationScope(A.SCOPE_NAME, __version__)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)  # immutable: one for every span without an error
_INT64_MAX = 2**63 - 1

_KIND = {
    Direction.OUTBOUND: SpanKind.CLIENT,
    Direction.INBOUND: SpanKind.SERVER,
}

_NAMES = {
    ("tcp", Direction.OUTBOUND): A.SPAN_TCP_CONNECT,
    ("tcp", Direction.INBOUND): A.SPAN_TCP_ACCEPT,
    ("udp", Direction.OUTBOUND): A.SPAN_UDP_SEND,
    ("udp", Direction.INBOUND): A.SPAN_UDP_RECEIVE,
}

ERROR_DESCRIPTIONS = {
    CloseReason.CONNECT_FAILED: "connection failed before it was established "
                                "(refused, unreachable or timed out)",
    CloseReason.RESET: "connection reset (aborted while established)",
}


def span_name(record: FlowRecord) -> str:
    if record.transport == "icmp":
        return A.SPAN_ICMP
    return _NAMES.get((record.transport, record.direction), record.transport)


def as_int64(value: int) -> int:
    """u64 kernel values (cookies) as OTLP int64: two's complement above 2**63 - 1."""
    return value - 2**64 if value > _INT64_MAX else value


def _count(value: int) -> int:
    return min(value, _INT64_MAX)  # a counter that large is bogus anyway; never overflow


def flow_attributes(record: FlowRecord) -> dict[str, object]:
    c = record.counters
    po, pi, ko, ki, bo, bi = (c.payload_out, c.payload_in, c.packets_out, c.packets_in,
                              c.bytes_out, c.bytes_in)
    if (po | pi | ko | ki | bo | bi) > _INT64_MAX:  # one test for the usual case
        po, pi, ko, ki, bo, bi = map(_count, (po, pi, ko, ki, bo, bi))
    attrs: dict[str, object] = {
        A.FLOW_ID: record.flow_id,
        A.NETWORK_TRANSPORT: record.transport,
        A.NETWORK_TYPE: record.network_type,
        A.NETWORK_LOCAL_ADDRESS: record.local_addr,
        A.NETWORK_LOCAL_PORT: record.local_port,
        A.NETWORK_PEER_ADDRESS: record.peer_addr,
        A.NETWORK_PEER_PORT: record.peer_port,
        A.FLOW_BYTES_SENT: po,
        A.FLOW_BYTES_RECEIVED: pi,
        A.FLOW_PACKETS_SENT: ko,
        A.FLOW_PACKETS_RECEIVED: ki,
        A.FLOW_WIRE_BYTES_SENT: bo,
        A.FLOW_WIRE_BYTES_RECEIVED: bi,
        A.FLOW_CLOSE_REASON: record.close_reason.value,
        A.FLOW_COMPLETE: record.complete,
        A.SOCKET_COOKIE: as_int64(record.cookie),
        A.NETNS_COOKIE: as_int64(record.netns_cookie),
    }
    if not record.local_addr:  # not known (e.g. connect failed before a local address)
        del attrs[A.NETWORK_LOCAL_ADDRESS], attrs[A.NETWORK_LOCAL_PORT]
    if record.direction == Direction.OUTBOUND:
        dns = record.dns
        named = dns is not None and dns.resolved and dns.question_name
        # server.address is the name the application asked for, when DNS told us.
        attrs[A.SERVER_ADDRESS] = dns.question_name if named else record.peer_addr
        attrs[A.SERVER_PORT] = record.peer_port
        if dns is not None:
            attrs[A.DNS_RESOLVED] = dns.resolved
            if dns.resolved:
                attrs[A.DNS_CNAME_CHAIN] = list(dns.cname_chain)
                attrs[A.DNS_MATCH] = dns.how
    elif record.direction == Direction.INBOUND:
        attrs[A.CLIENT_ADDRESS] = record.peer_addr
        attrs[A.CLIENT_PORT] = record.peer_port
    if record.owner is not None:
        attrs[A.OWNER_UID] = record.owner.uid
        if record.owner.joined:
            attrs[A.OWNER_JOINED] = True
        if record.owner.is_kernel:
            attrs[A.OWNER_KERNEL] = True
    if record.local_peer_flow_id is not None:
        attrs[A.FLOW_LOCAL_PEER_ID] = record.local_peer_flow_id
    if record.summary:
        attrs[A.FLOW_SUMMARY] = record.summary
    if record.adopted:
        attrs[A.FLOW_ADOPTED] = True
    if record.tcp is not None:
        t = record.tcp
        attrs[A.TCP_SRTT_US] = _count(t.srtt_us)
        attrs[A.TCP_RETRANSMITS] = _count(t.total_retrans)
        attrs[A.TCP_BYTES_ACKED] = _count(t.bytes_acked)
        attrs[A.TCP_BYTES_RECEIVED] = _count(t.bytes_received)
    lst = record.listener
    if lst is not None and record.direction == Direction.INBOUND:
        attrs[A.LISTENER_ADDRESS] = lst.local_addr
        attrs[A.LISTENER_PORT] = lst.local_port
        attrs[A.LISTENER_BIND_TIME] = lst.bind_ns
        if lst.listen_ns is not None:
            attrs[A.LISTENER_LISTEN_TIME] = lst.listen_ns
    error = ERROR_DESCRIPTIONS.get(record.close_reason)
    if error is not None:
        attrs[A.ERROR_TYPE] = record.close_reason.value
    return attrs


def detection_events(detections: tuple[Detection, ...]) -> tuple[SpanEvent, ...]:
    """Detections on a span's flow or lookup, as span events named otelpeers.detection."""
    return tuple(SpanEvent(A.EVENT_DETECTION, detection_attributes(d), timestamp=d.time_ns)
                 for d in detections)


class SpanMapper:
    """Builds the span of one flow record; stateless apart from the boot id."""

    def __init__(self, ids: SpanIds) -> None:
        self._ids = ids

    def to_span(self, record: FlowRecord, resource: Resource) -> ReadableSpan:
        trace_id, span_id = self._ids.flow(record.flow_id)
        parent = None
        if record.direction == Direction.INBOUND and record.local_peer_flow_id:
            # Both ends on this host: the server span joins the client's trace as its child.
            trace_id, parent_span_id = self._ids.flow(record.local_peer_flow_id)
            parent = SpanContext(trace_id, parent_span_id, is_remote=False,
                                 trace_flags=_SAMPLED)
        error = ERROR_DESCRIPTIONS.get(record.close_reason)
        status = Status(StatusCode.ERROR, error) if error else _UNSET
        links: tuple[Link, ...] = ()
        if record.close_reason is CloseReason.SHUTDOWN:
            # Still open when this agent stopped: the next agent adopts the connection and
            # reports it under the same flow id. This part gets a span id of its own and
            # links to the connection's usual span id (named by its peer, DNS links,
            # detections), which the part that sees the end has; same trace, so all
            # lifetimes of the connection are one trace.
            links = (Link(SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED),
                          {A.FLOW_LINK_KIND: "continued_by"}),)
            span_id = self._ids.flow(f"{record.flow_id}@{record.end_ns:x}")[1]
        dns = record.dns
        if dns is not None and dns.resolved and dns.txn_id:
            ctx = SpanContext(*self._ids.dns(dns.txn_id), is_remote=False, trace_flags=_SAMPLED)
            links += (Link(ctx, {A.DNS_LINK_KIND: "resolution", A.DNS_MATCH: dns.how,
                                 A.DNS_QUESTION_NAME: dns.question_name}),)
        events: tuple[SpanEvent, ...] = ()
        if record.files or record.detections:  # most flows have neither
            events = tuple(
                SpanEvent(A.EVENT_SENSITIVE_FILE, {A.FILE_PATH: f.path,
                                                   A.FILE_OPEN_FLAGS: f.flags},
                          timestamp=f.time_ns)
                for f in record.files) + detection_events(record.detections)
        return ReadableSpan(
            name=span_name(record),
            context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED),
            parent=parent,
            resource=resource,
            attributes=flow_attributes(record),
            kind=_KIND.get(record.direction, SpanKind.INTERNAL),
            status=status,
            links=links,
            events=events,
            start_time=record.start_ns,
            end_time=max(record.end_ns, record.start_ns),
            instrumentation_scope=SCOPE,
        )

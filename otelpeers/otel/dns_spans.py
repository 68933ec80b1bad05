"""DnsLookup -> OpenTelemetry span, built directly (no tracer, no context propagation).

Span ids come from otelpeers.ids (boot id + txn_id), so whoever knows a txn_id can name its
span: a connection span links to the DNS span that gave it its peer address without
waiting for the DNS span to be exported, and the same packets always give the same ids
within a boot.

Status: ERROR for failures of the lookup itself (TIMEOUT, SERVFAIL, REFUSED, FORMERR,
NOTIMP, and any other rcode not listed as normal); NOERROR and NXDOMAIN are answers, so the
status stays UNSET and NXDOMAIN is visible through dns.response_code. error.type is set only
when the status is ERROR (its value is the rcode in lower case, "timeout" for no answer).
"""

from __future__ import annotations

import socket

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from otelpeers import __version__
from otelpeers import attributes as A
from otelpeers.dns.lookups import DnsLookup
from otelpeers.dns.transactions import RCODE_TIMEOUT
from otelpeers.ids import SpanIds
from otelpeers.otel.mapping import as_int64, detection_events

OK_RCODES = frozenset({"NOERROR", "NXDOMAIN"})
_SCOPE = InstrumentationScope(A.SCOPE_NAME, __version__)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def is_error(rcode: str) -> bool:
    return rcode not in OK_RCODES


class DnsSpanMapper:
    def __init__(self, ids: SpanIds) -> None:
        self._ids = ids

    def span_context_for(self, txn_id: str) -> SpanContext:
        trace_id, span_id = self._ids.dns(txn_id)
        return SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED)

    def span_for(self, lookup: DnsLookup, resource: Resource | None = None) -> ReadableSpan:
        """The span for one lookup. resource: the owning process's resource (the caller
        builds it); a stub's upstream query is linked; detections become span events."""
        txn = lookup.txn
        attrs: dict[str, object] = {
            A.DNS_QUESTION_NAME: txn.question_name,
            A.DNS_QUESTION_TYPE: txn.qtype,
            A.DNS_RESPONSE_CODE: txn.rcode,
            A.DNS_ANSWERS: list(txn.addresses),
            A.DNS_CNAME_CHAIN: list(txn.cname_chain),
            A.DNS_RETRIES: txn.retries,
            A.DNS_TRUNCATED: txn.truncated,
            A.DNS_TXN_ID: txn.txn_id,
            A.DNS_ID: txn.msg_id,
            A.NETWORK_PEER_ADDRESS: txn.resolver_addr,
            A.NETWORK_PEER_PORT: txn.resolver_port,
            A.NETWORK_LOCAL_ADDRESS: txn.client_addr,
            A.NETWORK_LOCAL_PORT: txn.client_port,
            A.NETWORK_TRANSPORT: txn.protocol,
            A.SOCKET_COOKIE: as_int64(txn.cookie),
        }
        if txn.family in (socket.AF_INET, socket.AF_INET6):
            attrs[A.NETWORK_TYPE] = "ipv4" if txn.family == socket.AF_INET else "ipv6"
        if txn.ttl_min is not None:
            attrs[A.DNS_TTL_MIN] = txn.ttl_min
        if txn.netns_cookie:
            attrs[A.NETNS_COOKIE] = as_int64(txn.netns_cookie)
        status = Status(StatusCode.UNSET)
        if is_error(txn.rcode):
            attrs[A.ERROR_TYPE] = txn.rcode.lower()
            why = ("no response" if txn.rcode == RCODE_TIMEOUT
                   else f"resolver answered {txn.rcode}")
            status = Status(StatusCode.ERROR, why)
        links: tuple[Link, ...] = ()
        if lookup.upstream_txn_id is not None:
            links = (Link(self.span_context_for(lookup.upstream_txn_id),
                          {A.DNS_LINK_KIND: "stub_upstream"}),)
        return ReadableSpan(
            name=A.SPAN_DNS_QUERY,
            context=self.span_context_for(txn.txn_id),
            parent=None,
            resource=resource if resource is not None else Resource.get_empty(),
            attributes=BoundedAttributes(attributes=attrs, immutable=True),
            links=links,
            events=detection_events(lookup.detections),
            kind=SpanKind.CLIENT,
            status=status,
            start_time=txn.start_ns,
            end_time=max(txn.end_ns, txn.start_ns),
            instrumentation_scope=_SCOPE,
        )

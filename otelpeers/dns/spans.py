"""DnsTransaction -> OpenTelemetry span, built directly (no tracer, no context propagation).

Span ids are derived from (boot id, txn_id), so whoever knows a txn_id can name its span:
a connection span links to the DNS span that gave it its peer address without waiting for
the DNS span to be exported, and the same packets always give the same ids within a boot.

Status: ERROR for failures of the lookup itself (TIMEOUT, SERVFAIL, REFUSED, FORMERR,
NOTIMP, and any other rcode not listed as normal); NOERROR and NXDOMAIN are answers, so the
status stays UNSET and NXDOMAIN is visible through dns.response_code. error.type is set only
when the status is ERROR (its value is the rcode in lower case, "timeout" for no answer).
"""

from __future__ import annotations

import hashlib
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from otelpeers import attributes as A
from otelpeers.dns.cache import Match
from otelpeers.dns.transactions import RCODE_TIMEOUT, DnsTransaction

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
OK_RCODES = frozenset({"NOERROR", "NXDOMAIN"})
_SCOPE = InstrumentationScope(A.SCOPE_NAME)


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    """The kernel's boot id; socket cookies (and so txn_ids) are unique within one boot.

    Without it (not Linux, no /proc) a random id is used: ids stay unique, but are then
    deterministic only within this agent run."""
    try:
        return path.read_text().strip()
    except OSError:
        return f"random-{uuid.uuid4()}"


def is_error(rcode: str) -> bool:
    return rcode not in OK_RCODES


class DnsSpanMapper:
    def __init__(self, boot_id: str | None = None) -> None:
        self.boot_id = boot_id if boot_id is not None else read_boot_id()

    def ids_for(self, txn_id: str) -> tuple[int, int]:
        """(trace_id, span_id) of the span for txn_id."""
        digest = hashlib.sha256(f"otelpeers-dns/{self.boot_id}/{txn_id}".encode()).digest()
        trace_id = int.from_bytes(digest[:16], "big") or 1  # all-zero ids are invalid
        span_id = int.from_bytes(digest[16:24], "big") or 1
        return trace_id, span_id

    def span_context_for(self, txn_id: str) -> SpanContext:
        trace_id, span_id = self.ids_for(txn_id)
        return SpanContext(trace_id, span_id, is_remote=False,
                           trace_flags=TraceFlags(TraceFlags.SAMPLED))

    def span_for(self, txn: DnsTransaction, resource: Resource | None = None,
                 upstream_txn_id: str | None = None) -> ReadableSpan:
        """The span for one transaction. resource: the owning process's resource (the
        caller builds it); upstream_txn_id: the local stub's upstream query, linked."""
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
            A.SOCKET_COOKIE: txn.cookie,
        }
        if txn.family in (socket.AF_INET, socket.AF_INET6):
            attrs[A.NETWORK_TYPE] = "ipv4" if txn.family == socket.AF_INET else "ipv6"
        if txn.ttl_min is not None:
            attrs[A.DNS_TTL_MIN] = txn.ttl_min
        if txn.netns_cookie:
            attrs[A.NETNS_COOKIE] = txn.netns_cookie
        status = Status(StatusCode.UNSET)
        if is_error(txn.rcode):
            attrs[A.ERROR_TYPE] = txn.rcode.lower()
            why = ("no response" if txn.rcode == RCODE_TIMEOUT
                   else f"resolver answered {txn.rcode}")
            status = Status(StatusCode.ERROR, why)
        links = ()
        if upstream_txn_id is not None:
            links = (Link(self.span_context_for(upstream_txn_id),
                          {A.DNS_LINK_KIND: "stub_upstream"}),)
        return ReadableSpan(
            name=A.SPAN_DNS_QUERY,
            context=self.span_context_for(txn.txn_id),
            parent=None,
            resource=resource if resource is not None else Resource.get_empty(),
            attributes=BoundedAttributes(attributes=attrs, immutable=True),
            links=links,
            kind=SpanKind.CLIENT,
            status=status,
            start_time=txn.start_ns,
            end_time=max(txn.end_ns, txn.start_ns),
            instrumentation_scope=_SCOPE,
        )


def link_for_match(mapper: DnsSpanMapper, match: Match) -> Link:
    """The span link a connection span carries to the DNS span that named its peer."""
    r = match.resolution
    if r.trace_id is not None and r.span_id is not None:
        ctx = SpanContext(r.trace_id, r.span_id, is_remote=False,
                          trace_flags=TraceFlags(TraceFlags.SAMPLED))
    else:
        ctx = mapper.span_context_for(r.txn_id)
    return Link(ctx, {A.DNS_LINK_KIND: "resolution", A.DNS_MATCH: match.how,
                      A.DNS_QUESTION_NAME: r.question_name})


@dataclass(frozen=True, slots=True)
class DnsSpanItem:
    """A completed transaction waiting to become a span (mapped in the export thread)."""

    txn: DnsTransaction
    upstream_txn_id: str | None = None

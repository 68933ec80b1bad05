"""OTLP/JSON straight from ReadableSpans, for the file exporter.

The protobuf route (encode, then json_format.MessageToDict, then json.dumps) costs about
75 us per span, more than everything else the agent does for a flow. This writes the same
document as text directly: field names in lowerCamelCase, 64-bit integers as strings, enums
as integers, ids as lowercase hex, default values left out (the OTLP/JSON rules). A unit
test checks that it parses to exactly what the protobuf route produces.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from json.encoder import encode_basestring as _q  # C-accelerated JSON string quoting
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from otelpeers.otel.fragments import group_by_resource

_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_KIND = {SpanKind.INTERNAL: 1, SpanKind.SERVER: 2, SpanKind.CLIENT: 3,
         SpanKind.PRODUCER: 4, SpanKind.CONSUMER: 5}


def _value(v: Any) -> str:
    # AnyValue is a oneof: the chosen member is written even when it holds its default.
    if isinstance(v, str):
        return '{"stringValue":' + _q(v) + "}"
    if isinstance(v, bool):
        return '{"boolValue":true}' if v else '{"boolValue":false}'
    if isinstance(v, int):
        return '{"intValue":"' + str(v) + '"}'
    if isinstance(v, float):
        if math.isfinite(v):
            return '{"doubleValue":' + repr(v) + "}"
        return '{"doubleValue":"' + ("NaN" if math.isnan(v) else
                                     "Infinity" if v > 0 else "-Infinity") + '"}'
    if isinstance(v, bytes):
        return '{"bytesValue":"' + base64.b64encode(v).decode() + '"}'
    values = ",".join(_value(x) for x in v)
    return '{"arrayValue":{' + ('"values":[' + values + "]" if values else "") + "}}"


# Whole KeyValues of (key, str or bool value) pairs that repeat (transport, close reason,
# addresses, ...). Bounded by clearing when full.
_KV_CACHE: dict[tuple[str, Any, type], str] = {}
_CACHE_MAX = 8192  # captured strings (addresses): keep the worst case small


def _attributes(attrs: Mapping[str, Any] | None) -> str:
    """',"attributes":[...]' or '' when there are none."""
    if not attrs:
        return ""
    parts = []
    append = parts.append
    kv_cache = _KV_CACHE
    for k, v in attrs.items():
        t = type(v)
        if t is int:  # most attributes: ports, byte counts, cookies
            append(_int_key(k) + str(v) + '"}}')
            continue
        ck = (k, v, t) if t is str or t is bool else None
        if ck is not None:
            kv = kv_cache.get(ck)
            if kv is not None:
                append(kv)
                continue
        kv = _key(k) + _value(v) + "}"
        if ck is not None:
            if len(kv_cache) >= _CACHE_MAX:
                kv_cache.clear()
            kv_cache[ck] = kv
        append(kv)
    return ',"attributes":[' + ",".join(parts) + "]"


@lru_cache(maxsize=4096)  # attribute keys repeat on every span
def _key(k: str) -> str:
    return '{"key":' + _q(k) + ',"value":'


@lru_cache(maxsize=4096)
def _int_key(k: str) -> str:
    return _key(k) + '{"intValue":"'


def _flags(remote: bool) -> str:
    return str(_HAS_IS_REMOTE | (_IS_REMOTE if remote else 0))


def encode_span(s: ReadableSpan) -> str:
    ctx = s.context
    out = [f'{{"traceId":"{ctx.trace_id:032x}","spanId":"{ctx.span_id:016x}"']
    if ctx.trace_state:
        out.append(',"traceState":' + _q(ctx.trace_state.to_header()))
    if s.parent is not None:
        out.append(f',"parentSpanId":"{s.parent.span_id:016x}"')
    if s.name:
        out.append(',"name":' + _q(s.name))
    kind = _KIND.get(s.kind, 0)
    if kind:
        out.append(f',"kind":{kind}')
    if s.start_time:
        out.append(f',"startTimeUnixNano":"{s.start_time}"')
    if s.end_time:
        out.append(f',"endTimeUnixNano":"{s.end_time}"')
    out.append(_attributes(s.attributes))
    if s.dropped_attributes:
        out.append(f',"droppedAttributesCount":{s.dropped_attributes}')
    if s.events:
        events = []
        for ev in s.events:
            e = []
            if ev.timestamp:
                e.append(f'"timeUnixNano":"{ev.timestamp}"')
            if ev.name:
                e.append('"name":' + _q(ev.name))
            attrs = _attributes(ev.attributes)
            if attrs:
                e.append(attrs[1:])
            events.append("{" + ",".join(e) + "}")
        out.append(',"events":[' + ",".join(events) + "]")
    if s.dropped_events:
        out.append(f',"droppedEventsCount":{s.dropped_events}')
    if s.links:
        links = []
        for link in s.links:
            lc = link.context
            entry = f'{{"traceId":"{lc.trace_id:032x}","spanId":"{lc.span_id:016x}"'
            if lc.trace_state:
                entry += ',"traceState":' + _q(lc.trace_state.to_header())
            links.append(entry + _attributes(link.attributes) + ',"flags":'
                         + _flags(lc.is_remote) + "}")
        out.append(',"links":[' + ",".join(links) + "]")
    if s.dropped_links:
        out.append(f',"droppedLinksCount":{s.dropped_links}')
    status = []
    if s.status.description:
        status.append('"message":' + _q(s.status.description))
    if s.status.status_code.value:
        status.append(f'"code":{s.status.status_code.value}')
    out.append(',"status":{' + ",".join(status) + "}")
    out.append(',"flags":' + _flags(s.parent is not None and s.parent.is_remote) + "}")
    return "".join(out)


def request_json(spans: Sequence[ReadableSpan]) -> str:
    """One OTLP/JSON ExportTraceServiceRequest for spans, grouped by resource then scope
    (no newline)."""
    return grouped_request_json(group_by_resource(
        (s.resource, s.instrumentation_scope, encode_span(s)) for s in spans))


def grouped_request_json(groups: Mapping[Any, Mapping[Any, Sequence[str]]]) -> str:
    """The request for spans already encoded (encode_span), grouped (otelpeers.otel.fragments)."""
    if not groups:
        return "{}"
    # One list of pieces joined once: a batch is about a megabyte of text, and joining it
    # level by level (spans, scope, resource, request) copied it at every level.
    out = ['{"resourceSpans":[']
    for i, (resource, scopes) in enumerate(groups.items()):
        out.append(('{"resource":{' if i == 0 else ',{"resource":{')
                   + _attributes(resource.attributes)[1:] + '},"scopeSpans":[')
        for j, (scope, encoded) in enumerate(scopes.items()):
            head = []
            if scope is not None:
                if scope.name:
                    head.append('"name":' + _q(scope.name))
                if scope.version:
                    head.append('"version":' + _q(scope.version))
                attrs = _attributes(scope.attributes)
                if attrs:
                    head.append(attrs[1:])
            out.append(('{"scope":{' if j == 0 else ',{"scope":{') + ",".join(head)
                       + '},"spans":[')
            for k, span in enumerate(encoded):
                if k:
                    out.append(",")
                out.append(span)
            out.append("]")
            if scope is not None and scope.schema_url:
                out.append(',"schemaUrl":' + _q(scope.schema_url))
            out.append("}")
        out.append("]")
        if resource.schema_url:
            out.append(',"schemaUrl":' + _q(resource.schema_url))
        out.append("}")
    out.append("]}")
    return "".join(out)

"""A fast OTLP protobuf encoder for the spans the agent builds (exporters: otlp_export).

The SDK's encoder (encode_spans) creates one protobuf object per attribute through several
Python calls each and costs ~45 us per flow span: more than everything else in the export
path together. The agent's spans are simple (attributes of scalar or list types, events,
links, no trace state), so they are written here as protobuf wire bytes directly, with the
bytes of every attribute key and of each resource and scope computed once. Anything this
encoder does not handle raises Unsupported and falls back to encode_spans; tests compare
both outputs. Pure Python on purpose: the span export process writing OTLP/JSON files
imports it (flowspans) without loading protobuf or gRPC.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from functools import lru_cache

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from otelpeers.otel.fragments import EncodedSpans, group_by_resource

_KIND = {SpanKind.INTERNAL: 1, SpanKind.SERVER: 2, SpanKind.CLIENT: 3,
         SpanKind.PRODUCER: 4, SpanKind.CONSUMER: 5}
_FLAGS = struct.pack("<I", 0x100)  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK, parent local
_FLAGS_REMOTE = struct.pack("<I", 0x300)
_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack


class Unsupported(Exception):
    """A span or value this encoder does not write; the caller uses encode_spans."""


_SMALL = [bytes((i,)) for i in range(128)]


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL[n]
    if 0 < n < 0x4000:  # ports, small counts: two bytes without the loop
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n < 0:
        n += 1 << 64  # int64 as two's complement, ten bytes
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


@lru_cache(maxsize=4096)
def _key(key: str) -> bytes:
    """KeyValue.key field, then the tag of KeyValue.value."""
    return _ld(1, key.encode()) + b"\x12"


def _any_value(v: object) -> bytes:
    t = type(v)
    if t is str:
        b = v.encode()
        return b"\x0a" + _varint(len(b)) + b
    if t is bool:
        return b"\x10\x01" if v else b"\x10\x00"
    if t is int:
        if not -(1 << 63) <= v < (1 << 63):
            raise Unsupported(f"integer out of int64 range: {v}")
        return b"\x18" + _varint(v)
    if t is float:
        return b"\x21" + _pack_d(v)
    if isinstance(v, Sequence) and not isinstance(v, str | bytes | bytearray):
        return _ld(5, b"".join(_ld(1, _any_value(x)) for x in v))
    raise Unsupported(f"attribute value of type {type(v).__name__}")


# Encoded KeyValue fields of repeated (field, key, string or bool value) entries: transport,
# network type, local address, close reason, ... Bounded by clearing when full.
_kv_cache: dict[tuple, bytes] = {}
_KV_CACHE_MAX = 65536


@lru_cache(maxsize=4096)  # attribute keys are the agent's own: a few dozen, three fields
def _int_prefix(field: int, key: str, n: int) -> bytes:
    """KeyValue bytes before an int value's varint of n bytes."""
    inner_len = len(_key(key)) + 1 + 1 + n  # key, AnyValue length, int_value tag, varint
    return _varint(field << 3 | 2) + _varint(inner_len) + _key(key) + _varint(1 + n) + b"\x18"


def cached_kv(field: int, key: str, value: str | bool) -> bytes:
    """A whole KeyValue (with its field tag) of a string or bool value, from a bounded cache:
    such values repeat across spans (transport, addresses, close reason)."""
    ck = (field, key, value, type(value))
    b = _kv_cache.get(ck)
    if b is None:
        val = _any_value(value)
        inner = _key(key) + _varint(len(val)) + val
        b = _varint(field << 3 | 2) + _varint(len(inner)) + inner
        if len(_kv_cache) >= _KV_CACHE_MAX:
            _kv_cache.clear()
        _kv_cache[ck] = b
    return b


def _attributes(field: int, attrs: Mapping[str, object] | None) -> bytes:
    if not attrs:
        return b""
    tag = _varint(field << 3 | 2)
    parts = []
    append = parts.append
    for k, v in attrs.items():
        t = type(v)
        if t is int and -(1 << 63) <= v < (1 << 63):
            # Most attributes (ports, byte counts, cookies): the bytes before the value
            # depend only on the field, the key and the value's length.
            vb = _varint(v)
            append(_int_prefix(field, k, len(vb)) + vb)
        elif t is str or t is bool:
            append(cached_kv(field, k, v))  # type: ignore[arg-type]
        else:
            val = _any_value(v)
            inner = _key(k) + _varint(len(val)) + val
            append(tag + _varint(len(inner)) + inner)
    return b"".join(parts)


def _event(ev: object) -> bytes:
    """Span.events (field 11): Event{time_unix_nano=1 fixed64, name=2, attributes=3}."""
    body = b"\x09" + _pack_q(ev.timestamp) + _ld(2, ev.name.encode()) + _attributes(
        3, ev.attributes)
    if getattr(ev, "dropped_attributes", 0):
        raise Unsupported("dropped event attributes")
    return _ld(11, body)


def _link(link: object) -> bytes:
    """Span.links (field 13): Link{trace_id=1, span_id=2, attributes=4, flags=6 fixed32}."""
    lc = link.context
    if lc.trace_state or getattr(link, "dropped_attributes", 0):
        raise Unsupported("link trace state or dropped link attributes")
    body = (b"\x0a\x10" + lc.trace_id.to_bytes(16, "big") + b"\x12\x08"
            + lc.span_id.to_bytes(8, "big") + _attributes(4, link.attributes)
            + b"\x35" + (_FLAGS_REMOTE if lc.is_remote else _FLAGS))
    return _ld(13, body)


def encode_span(s: ReadableSpan) -> bytes:
    if s.dropped_attributes or s.dropped_events or s.dropped_links:
        raise Unsupported("dropped attributes, events or links")
    ctx = s.context
    if ctx.trace_state:
        raise Unsupported("trace state")
    out = [b"\x0a\x10", ctx.trace_id.to_bytes(16, "big"), b"\x12\x08",
           ctx.span_id.to_bytes(8, "big")]
    parent = s.parent
    if parent is not None:
        out += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    out += (_ld(5, s.name.encode()), b"\x30", _varint(_KIND[s.kind]),
            b"\x39", _pack_q(s.start_time), b"\x41", _pack_q(s.end_time),
            _attributes(9, s.attributes))
    out.extend(_event(ev) for ev in s.events)
    out.extend(_link(link) for link in s.links)
    st = s.status
    status = b""
    if st.description:
        status += _ld(2, st.description.encode())
    if st.status_code.value:
        status += b"\x18" + _varint(st.status_code.value)
    out += (_ld(15, status), b"\x85\x01",
            _FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS)
    return _ld(2, b"".join(out))  # ScopeSpans.spans


_resource_cache: dict[int, tuple[object, bytes]] = {}


def _resource_bytes(resource) -> bytes:
    hit = _resource_cache.get(id(resource))
    if hit is not None and hit[0] is resource:
        return hit[1]
    body = _ld(1, _attributes(1, resource.attributes))
    if resource.schema_url:
        body += _ld(3, resource.schema_url.encode())
    if len(_resource_cache) > 8192:
        _resource_cache.clear()  # bounded; ids of dead resources may be reused
    _resource_cache[id(resource)] = (resource, body)
    return body


@lru_cache(maxsize=64)
def _scope_bytes(scope) -> tuple[bytes, bytes]:
    """(ScopeSpans.scope field, ScopeSpans.schema_url field)."""
    body = _ld(1, scope.name.encode())
    if scope.version:
        body += _ld(2, scope.version.encode())
    if scope.attributes:
        body += _attributes(3, scope.attributes)
    out = _ld(1, body)
    return out, (_ld(3, scope.schema_url.encode()) if scope.schema_url else b"")


def encode_request_bytes(spans: Sequence[ReadableSpan]) -> bytes:
    """ExportTraceServiceRequest wire bytes, grouped by resource then scope."""
    return grouped_request_bytes(group_by_resource(
        (s.resource, s.instrumentation_scope, encode_span(s)) for s in spans))


def grouped_request_bytes(groups: Mapping[object, Mapping[object, Sequence[bytes]]]) -> bytes:
    """The request for spans already encoded (encode_span), grouped (otelpeers.otel.fragments)."""
    out = []
    for res, scopes in groups.items():
        body = [_resource_bytes(res)]
        for scope, encoded in scopes.items():
            # No scope: an empty scope message, as encode_spans writes.
            head, tail = _scope_bytes(scope) if scope is not None else (b"\x0a\x00", b"")
            body.append(_ld(2, head + b"".join(encoded) + tail))
        out.append(_ld(1, b"".join(body)))
    return b"".join(out)


def encoded_request_bytes(batch: EncodedSpans) -> bytes:
    """The request for a batch encoded beforehand (otelpeers.otel.encoded)."""
    if batch.encoding != "protobuf":
        raise ValueError(f"an OTLP protobuf exporter cannot send {batch.encoding} spans")
    return grouped_request_bytes(group_by_resource(batch.entries))

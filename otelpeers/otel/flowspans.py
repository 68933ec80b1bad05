"""Flow spans encoded straight from FlowRecords, for the span export process.

Mapping a flow to the SDK's ReadableSpan and then encoding that span costs about 12 us per
flow (OTLP/JSON; 14 us protobuf): at 20,000 flows/s that is a quarter of a core, on hosts
where the agent's cores are shared with the traffic it watches. Nearly every flow is plain
(no files, no detections, not cut by shutdown), and a plain flow's span has a fixed shape, so
it is written here directly, in either encoding, from the record: the same bytes as
`otlpjson.encode_span` / `wire.encode_span` of `SpanMapper.to_span` (compared over random
records by tests/unit/test_otel_flowspans.py). Anything else takes the span route.

The attribute order follows `mapping.flow_attributes`, which stays the contract.
"""

from __future__ import annotations

import struct
from json.encoder import encode_basestring as _q  # C-accelerated JSON string quoting

from otelpeers import attributes as A
from otelpeers.events import Direction
from otelpeers.flows import CloseReason, FlowRecord
from otelpeers.ids import SpanIds
from otelpeers.otel.mapping import ERROR_DESCRIPTIONS, span_name
from otelpeers.otel.wire import _SMALL, _int_prefix, _key, _varint, cached_kv

_INT64_MAX = 2**63 - 1
_U64 = 2**64
_pack_q = struct.Struct("<Q").pack
_KIND = {Direction.OUTBOUND: 3, Direction.INBOUND: 2}  # CLIENT, SERVER; else INTERNAL (1)


class _Head:
    """What a plain flow's span has besides its attributes."""

    __slots__ = ("trace_id", "span_id", "parent_id", "name", "kind", "error", "link")

    def __init__(self, r: FlowRecord, ids: SpanIds) -> None:
        self.trace_id, self.span_id = ids.flow(r.flow_id)
        self.parent_id = None
        if r.direction is Direction.INBOUND and r.local_peer_flow_id:
            self.trace_id, self.parent_id = ids.flow(r.local_peer_flow_id)
        self.name = span_name(r)
        self.kind = _KIND.get(r.direction, 1)
        self.error = ERROR_DESCRIPTIONS.get(r.close_reason)
        dns = r.dns
        self.link = ((*ids.dns(dns.txn_id), dns.how, dns.question_name)
                     if dns is not None and dns.resolved and dns.txn_id else None)


def is_plain(r: FlowRecord) -> bool:
    """A span of the fixed shape: no events, no continuation link."""
    return not r.files and not r.detections and r.close_reason is not CloseReason.SHUTDOWN


def _cap(v: int) -> int:
    return v if v <= _INT64_MAX else _INT64_MAX


def _i64(v: int) -> int:
    return v - _U64 if v > _INT64_MAX else v


# ---- OTLP/JSON ----------------------------------------------------------------------------
def _jk(key: str) -> str:
    return '{"key":' + _q(key) + ',"value":'


def _js(key: str) -> str:  # a string attribute, up to its quoted value
    return _jk(key) + '{"stringValue":'


def _ji(key: str) -> str:  # an int attribute, up to its digits
    return _jk(key) + '{"intValue":"'


def _jb(key: str) -> tuple[str, str]:  # a bool attribute: (true, false)
    return _jk(key) + '{"boolValue":true}}', _jk(key) + '{"boolValue":false}}'


_J_COMPLETE, _J_RESOLVED = _jb(A.FLOW_COMPLETE), _jb(A.DNS_RESOLVED)
_J_FLOW_ID, _J_TRANSPORT, _J_TYPE = _js(A.FLOW_ID), _js(A.NETWORK_TRANSPORT), _js(A.NETWORK_TYPE)
_J_LADDR, _J_LPORT = _js(A.NETWORK_LOCAL_ADDRESS), _ji(A.NETWORK_LOCAL_PORT)
_J_PADDR, _J_PPORT = _js(A.NETWORK_PEER_ADDRESS), _ji(A.NETWORK_PEER_PORT)
_JC = tuple(_ji(k) for k in (  # the six counters, in flow_attributes' order
    A.FLOW_BYTES_SENT, A.FLOW_BYTES_RECEIVED, A.FLOW_PACKETS_SENT, A.FLOW_PACKETS_RECEIVED,
    A.FLOW_WIRE_BYTES_SENT, A.FLOW_WIRE_BYTES_RECEIVED))
_J_REASON = _js(A.FLOW_CLOSE_REASON)
_J_COOKIE, _J_NETNS = _ji(A.SOCKET_COOKIE), _ji(A.NETNS_COOKIE)
_J_SADDR, _J_SPORT = _js(A.SERVER_ADDRESS), _ji(A.SERVER_PORT)
_J_CHAIN, _J_MATCH = _jk(A.DNS_CNAME_CHAIN), _js(A.DNS_MATCH)
_J_CADDR, _J_CPORT = _js(A.CLIENT_ADDRESS), _ji(A.CLIENT_PORT)
_J_UID = _ji(A.OWNER_UID)
_J_JOINED, _J_KERNEL = _jb(A.OWNER_JOINED)[0], _jb(A.OWNER_KERNEL)[0]
_J_PEER_ID = _js(A.FLOW_LOCAL_PEER_ID)
_J_SUMMARY = _ji(A.FLOW_SUMMARY)
_J_ADOPTED = _jb(A.FLOW_ADOPTED)[0]
_J_TCP = tuple(_ji(k) for k in (A.TCP_SRTT_US, A.TCP_RETRANSMITS, A.TCP_BYTES_ACKED,
                                A.TCP_BYTES_RECEIVED))
_J_LSTADDR, _J_LSTPORT = _js(A.LISTENER_ADDRESS), _ji(A.LISTENER_PORT)
_J_BIND, _J_LISTEN = _ji(A.LISTENER_BIND_TIME), _ji(A.LISTENER_LISTEN_TIME)
_J_ERROR = _js(A.ERROR_TYPE)
_J_LINK_ATTRS = (',"attributes":[' + _jk(A.DNS_LINK_KIND) + '{"stringValue":"resolution"}},'
                 + _js(A.DNS_MATCH))
_J_LINK_NAME = _js(A.DNS_QUESTION_NAME)


def _json_chain(chain: tuple[str, ...]) -> str:
    values = ",".join('{"stringValue":' + _q(x) + "}" for x in chain)
    return '{"arrayValue":{' + ('"values":[' + values + "]" if values else "") + "}}"



def _json_attributes(r: FlowRecord) -> str:
    """The attributes' JSON from a few f-strings (compiled, one per group of attributes):
    2.6 us per flow where appending each attribute to a list took 3.3."""
    c = r.counters
    po, pi, ko, ki, bo, bi = (c.payload_out, c.payload_in, c.packets_out, c.packets_in,
                              c.bytes_out, c.bytes_in)
    if (po | pi | ko | ki | bo | bi) > _INT64_MAX:  # one test for the usual case
        po, pi, ko, ki, bo, bi = map(_cap, (po, pi, ko, ki, bo, bi))
    reason = r.close_reason
    cookie, netns = r.cookie, r.netns_cookie
    if (cookie | netns) > _INT64_MAX:
        cookie, netns = _i64(cookie), _i64(netns)
    local = (f'{_J_LADDR}{_q(r.local_addr)}}}}},{_J_LPORT}{r.local_port}"}}}},'
             if r.local_addr else "")
    out = (f'{_J_FLOW_ID}{_q(r.flow_id)}}}}},{_J_TRANSPORT}{_q(r.transport)}}}}},'
           f'{_J_TYPE}{_q(r.network_type)}}}}},{local}'
           f'{_J_PADDR}{_q(r.peer_addr)}}}}},{_J_PPORT}{r.peer_port}"}}}},'
           f'{_JC[0]}{po}"}}}},{_JC[1]}{pi}"}}}},{_JC[2]}{ko}"}}}},{_JC[3]}{ki}"}}}},'
           f'{_JC[4]}{bo}"}}}},{_JC[5]}{bi}"}}}},{_J_REASON}{_q(reason)}}}}},'
           f'{_J_COMPLETE[0] if r.complete else _J_COMPLETE[1]},'
           f'{_J_COOKIE}{cookie}"}}}},{_J_NETNS}{netns}"}}}}')
    direction = r.direction
    if direction is Direction.OUTBOUND:
        dns = r.dns
        named = dns is not None and dns.resolved and dns.question_name
        server = dns.question_name if named else r.peer_addr  # type: ignore[union-attr]
        out += f',{_J_SADDR}{_q(server)}}}}},{_J_SPORT}{r.peer_port}"}}}}'
        if dns is not None:
            if dns.resolved:
                out += (f',{_J_RESOLVED[0]},{_J_CHAIN}{_json_chain(dns.cname_chain)}}},'
                        f'{_J_MATCH}{_q(dns.how)}}}}}')
            else:
                out += "," + _J_RESOLVED[1]
    elif direction is Direction.INBOUND:
        out += f',{_J_CADDR}{_q(r.peer_addr)}}}}},{_J_CPORT}{r.peer_port}"}}}}'
    o = r.owner
    if o is not None:
        out += f',{_J_UID}{o.uid}"}}}}'
        if o.joined:
            out += "," + _J_JOINED
        if o.is_kernel:
            out += "," + _J_KERNEL
    if r.local_peer_flow_id is not None:
        out += f',{_J_PEER_ID}{_q(r.local_peer_flow_id)}}}}}'
    if r.summary:
        out += f',{_J_SUMMARY}{r.summary}"}}}}'
    if r.adopted:
        out += "," + _J_ADOPTED
    t = r.tcp
    if t is not None:
        out += (f',{_J_TCP[0]}{_cap(t.srtt_us)}"}}}},{_J_TCP[1]}{_cap(t.total_retrans)}"}}}},'
                f'{_J_TCP[2]}{_cap(t.bytes_acked)}"}}}},'
                f'{_J_TCP[3]}{_cap(t.bytes_received)}"}}}}')
    lst = r.listener
    if lst is not None and direction is Direction.INBOUND:
        out += (f',{_J_LSTADDR}{_q(lst.local_addr)}}}}},{_J_LSTPORT}{lst.local_port}"}}}},'
                f'{_J_BIND}{lst.bind_ns}"}}}}')
        if lst.listen_ns is not None:
            out += f',{_J_LISTEN}{lst.listen_ns}"}}}}'
    if reason in ERROR_DESCRIPTIONS:
        out += f',{_J_ERROR}{_q(reason)}}}}}'
    return out


def span_json(r: FlowRecord, ids: SpanIds) -> str:
    """The OTLP/JSON Span of a plain flow (is_plain), as otlpjson writes it."""
    h = _Head(r, ids)
    out = [f'{{"traceId":"{h.trace_id:032x}","spanId":"{h.span_id:016x}"']
    if h.parent_id is not None:
        out.append(f',"parentSpanId":"{h.parent_id:016x}"')
    out.append(f',"name":{_q(h.name)},"kind":{h.kind}')
    start, end = r.start_ns, max(r.end_ns, r.start_ns)
    if start:
        out.append(f',"startTimeUnixNano":"{start}"')
    if end:
        out.append(f',"endTimeUnixNano":"{end}"')
    out += (',"attributes":[', _json_attributes(r), "]")
    if h.link is not None:
        tid, sid, how, name = h.link
        out.append(f',"links":[{{"traceId":"{tid:032x}","spanId":"{sid:016x}"{_J_LINK_ATTRS}'
                   f'{_q(how)}}}}},{_J_LINK_NAME}{_q(name)}}}}}],"flags":256}}]')
    if h.error is not None:
        out.append(',"status":{"message":' + _q(h.error) + ',"code":2},"flags":256}')
    else:
        out.append(',"status":{},"flags":256}')
    return "".join(out)


# ---- OTLP protobuf ------------------------------------------------------------------------
def _pk_int(key: str) -> tuple[bytes, ...]:
    """KeyValue (Span.attributes, field 9) bytes before an int's varint, by varint length."""
    return (b"",) + tuple(_int_prefix(9, key, n) for n in range(1, 11))


def _pb_int(prefixes: tuple[bytes, ...], v: int) -> bytes:
    if 0 <= v < 0x80:
        return prefixes[1] + _SMALL[v]
    vb = _varint(v)
    return prefixes[len(vb)] + vb


def _pb_str(key_bytes: bytes, s: str) -> bytes:
    b = s.encode()
    val = b"\x0a" + _varint(len(b)) + b
    inner = key_bytes + _varint(len(val)) + val
    return b"\x4a" + _varint(len(inner)) + inner


def _pb_bools(key: str) -> tuple[bytes, bytes]:  # a bool attribute: (true, false)
    return cached_kv(9, key, True), cached_kv(9, key, False)


_P_FLOW_ID, _P_PEER_ID = _key(A.FLOW_ID), _key(A.FLOW_LOCAL_PEER_ID)  # unique: not cached
_P_LPORT, _P_PPORT = _pk_int(A.NETWORK_LOCAL_PORT), _pk_int(A.NETWORK_PEER_PORT)
_P_COUNTERS = tuple(_pk_int(k) for k in (
    A.FLOW_BYTES_SENT, A.FLOW_BYTES_RECEIVED, A.FLOW_PACKETS_SENT, A.FLOW_PACKETS_RECEIVED,
    A.FLOW_WIRE_BYTES_SENT, A.FLOW_WIRE_BYTES_RECEIVED))
_P_COMPLETE, _P_RESOLVED = _pb_bools(A.FLOW_COMPLETE), _pb_bools(A.DNS_RESOLVED)
_P_COOKIE, _P_NETNS = _pk_int(A.SOCKET_COOKIE), _pk_int(A.NETNS_COOKIE)
_P_SPORT, _P_CPORT = _pk_int(A.SERVER_PORT), _pk_int(A.CLIENT_PORT)
_P_UID = _pk_int(A.OWNER_UID)
_P_JOINED, _P_KERNEL = _pb_bools(A.OWNER_JOINED)[0], _pb_bools(A.OWNER_KERNEL)[0]
_P_SUMMARY = _pk_int(A.FLOW_SUMMARY)
_P_ADOPTED = _pb_bools(A.FLOW_ADOPTED)[0]
_P_TCP = tuple(_pk_int(k) for k in (A.TCP_SRTT_US, A.TCP_RETRANSMITS, A.TCP_BYTES_ACKED,
                                    A.TCP_BYTES_RECEIVED))
_P_LSTPORT = _pk_int(A.LISTENER_PORT)
_P_BIND, _P_LISTEN = _pk_int(A.LISTENER_BIND_TIME), _pk_int(A.LISTENER_LISTEN_TIME)
_FLAGS = b"\x85\x01" + struct.pack("<I", 0x100)


def _pb_chain(chain: tuple[str, ...]) -> bytes:
    values = b"".join(b"\x0a" + _varint(len(v)) + v for v in (
        b"\x0a" + _varint(len(e)) + e for e in (x.encode() for x in chain)))
    val = b"\x2a" + _varint(len(values)) + values
    inner = _key(A.DNS_CNAME_CHAIN) + _varint(len(val)) + val
    return b"\x4a" + _varint(len(inner)) + inner


def _in_int64(*values: int) -> bool:
    return all(-_INT64_MAX - 1 <= v <= _INT64_MAX for v in values)


def _pb_attributes(r: FlowRecord) -> list[bytes] | None:
    """Span.attributes (field 9): strings that repeat from wire's cache, ints from prefixes."""
    kv, c, reason = cached_kv, r.counters, r.close_reason.value
    a = [_pb_str(_P_FLOW_ID, r.flow_id), kv(9, A.NETWORK_TRANSPORT, r.transport),
         kv(9, A.NETWORK_TYPE, r.network_type)]
    if r.local_addr:
        a += (kv(9, A.NETWORK_LOCAL_ADDRESS, r.local_addr), _pb_int(_P_LPORT, r.local_port))
    pc = _P_COUNTERS
    a += (kv(9, A.NETWORK_PEER_ADDRESS, r.peer_addr), _pb_int(_P_PPORT, r.peer_port),
          _pb_int(pc[0], _cap(c.payload_out)), _pb_int(pc[1], _cap(c.payload_in)),
          _pb_int(pc[2], _cap(c.packets_out)), _pb_int(pc[3], _cap(c.packets_in)),
          _pb_int(pc[4], _cap(c.bytes_out)), _pb_int(pc[5], _cap(c.bytes_in)),
          kv(9, A.FLOW_CLOSE_REASON, reason), _P_COMPLETE[0 if r.complete else 1],
          _pb_int(_P_COOKIE, _i64(r.cookie)), _pb_int(_P_NETNS, _i64(r.netns_cookie)))
    direction = r.direction
    if direction is Direction.OUTBOUND:
        dns = r.dns
        named = dns is not None and dns.resolved and dns.question_name
        a += (kv(9, A.SERVER_ADDRESS, dns.question_name if named else r.peer_addr),  # type: ignore[union-attr]
              _pb_int(_P_SPORT, r.peer_port))
        if dns is not None:
            a.append(_P_RESOLVED[0 if dns.resolved else 1])
            if dns.resolved:
                a += (_pb_chain(dns.cname_chain), kv(9, A.DNS_MATCH, dns.how))
    elif direction is Direction.INBOUND:
        a += (kv(9, A.CLIENT_ADDRESS, r.peer_addr), _pb_int(_P_CPORT, r.peer_port))
    o = r.owner
    if o is not None:
        a.append(_pb_int(_P_UID, o.uid))
        if o.joined:
            a.append(_P_JOINED)
        if o.is_kernel:
            a.append(_P_KERNEL)
    if r.local_peer_flow_id is not None:
        a.append(_pb_str(_P_PEER_ID, r.local_peer_flow_id))
    if r.summary:
        a.append(_pb_int(_P_SUMMARY, r.summary))
    if r.adopted:
        a.append(_P_ADOPTED)
    t = r.tcp
    if t is not None:
        pt = _P_TCP
        a += (_pb_int(pt[0], _cap(t.srtt_us)), _pb_int(pt[1], _cap(t.total_retrans)),
              _pb_int(pt[2], _cap(t.bytes_acked)), _pb_int(pt[3], _cap(t.bytes_received)))
    lst = r.listener
    if lst is not None and direction is Direction.INBOUND:
        if not _in_int64(lst.bind_ns, lst.listen_ns or 0):
            return None  # the span route says why (wire.Unsupported)
        a += (kv(9, A.LISTENER_ADDRESS, lst.local_addr), _pb_int(_P_LSTPORT, lst.local_port),
              _pb_int(_P_BIND, lst.bind_ns))
        if lst.listen_ns is not None:
            a.append(_pb_int(_P_LISTEN, lst.listen_ns))
    if r.close_reason in ERROR_DESCRIPTIONS:
        a.append(kv(9, A.ERROR_TYPE, reason))
    return a


_P_LINK_KIND = cached_kv(4, A.DNS_LINK_KIND, "resolution")  # Link.attributes is field 4
_LINK_FLAGS = b"\x35" + struct.pack("<I", 0x100)


def _pb_link(tid: int, sid: int, how: str, name: str) -> bytes:
    """Span.links (field 13): the DNS resolution the flow's peer address came from."""
    body = (b"\x0a\x10" + tid.to_bytes(16, "big") + b"\x12\x08" + sid.to_bytes(8, "big")
            + _P_LINK_KIND + cached_kv(4, A.DNS_MATCH, how)
            + cached_kv(4, A.DNS_QUESTION_NAME, name) + _LINK_FLAGS)
    return b"\x6a" + _varint(len(body)) + body


def span_protobuf(r: FlowRecord, ids: SpanIds) -> bytes | None:
    """ScopeSpans.spans bytes of a plain flow (is_plain), as wire writes them; None when a
    value does not fit (the span route then decides)."""
    attrs = _pb_attributes(r)
    if attrs is None or not 0 <= r.start_ns <= max(r.end_ns, r.start_ns) < _U64:
        return None  # the span route says why (wire.Unsupported, struct.error)
    h = _Head(r, ids)
    name = h.name.encode()
    out = [b"\x0a\x10", h.trace_id.to_bytes(16, "big"), b"\x12\x08",
           h.span_id.to_bytes(8, "big")]
    if h.parent_id is not None:
        out += (b"\x22\x08", h.parent_id.to_bytes(8, "big"))
    out += (b"\x2a", _varint(len(name)), name, b"\x30", _varint(h.kind),
            b"\x39", _pack_q(r.start_ns), b"\x41", _pack_q(max(r.end_ns, r.start_ns)))
    out += attrs
    if h.link is not None:
        out.append(_pb_link(*h.link))
    if h.error is not None:
        msg = h.error.encode()
        status = b"\x12" + _varint(len(msg)) + msg + b"\x18\x02"
        out += (b"\x7a", _varint(len(status)), status)
    else:
        out.append(b"\x7a\x00")
    out.append(_FLAGS)
    body = b"".join(out)
    return b"\x12" + _varint(len(body)) + body

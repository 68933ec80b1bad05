"""Build real DNS packets (with dnspython) as DnsPacketEvents: for tests and the generator."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset

from otelpeers.events import Direction, DnsPacketEvent, Owner


def _query(name: str, qtype: str, edns: bool) -> dns.message.QueryMessage:
    if edns:
        return dns.message.make_query(name, qtype, use_edns=0, payload=1232)
    return dns.message.make_query(name, qtype)


def query_wire(name: str, qtype: str = "A", msg_id: int = 0x1234, edns: bool = False) -> bytes:
    q = _query(name, qtype, edns)
    q.id = msg_id
    return q.to_wire()


def response_wire(name: str, qtype: str = "A", msg_id: int = 0x1234,
                  cnames: Sequence[str] = (), addresses: Sequence[str] = (),
                  ttl: int = 300, rcode: str = "NOERROR", tc: bool = False,
                  edns: bool = False, cname_ttl: int | None = None) -> bytes:
    """A response for (name, qtype): name -> cnames[0] -> ... -> final, final -> addresses."""
    q = _query(name, qtype, edns)
    q.id = msg_id
    r = dns.message.make_response(q, our_payload=1232)
    r.set_rcode(dns.rcode.from_text(rcode))
    owner = name
    for target in cnames:
        c_ttl = cname_ttl if cname_ttl is not None else ttl
        r.answer.append(dns.rrset.from_text(dns.name.from_text(owner), c_ttl, "IN", "CNAME",
                                            target + "."))
        owner = target
    for addr in addresses:
        rtype = "AAAA" if ":" in addr else "A"
        r.answer.append(dns.rrset.from_text(dns.name.from_text(owner), ttl, "IN", rtype, addr))
    if tc:
        r.flags |= dns.flags.TC
    return r.to_wire()


def tcp_framed(*messages: bytes) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)


def packet(payload: bytes, *, time_ns: int, cookie: int = 1, outbound: bool = True,
           local: tuple[str, int] = ("10.0.0.2", 40000),
           peer: tuple[str, int] = ("10.0.0.53", 53), tcp: bool = False,
           owner: Owner | None = None, max_payload: int | None = None,
           family: int = socket.AF_INET) -> DnsPacketEvent:
    """One packet as the kernel would report it, cut at max_payload when given."""
    kept = payload if max_payload is None else payload[:max_payload]
    return DnsPacketEvent(
        time_ns=time_ns, cookie=cookie,
        direction=Direction.OUTBOUND if outbound else Direction.INBOUND,
        family=family, protocol=socket.IPPROTO_TCP if tcp else socket.IPPROTO_UDP,
        local_addr=local[0], local_port=local[1], peer_addr=peer[0], peer_port=peer[1],
        payload=kept, wire_len=len(payload), owner=owner)

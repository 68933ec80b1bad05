"""Parsing real packets built with dnspython into DnsMessage records."""

from __future__ import annotations

import dns.message
import pytest

from otelpeers.dns.parse import MAX_ANSWERS, DnsParser, ParseError, parse_message
from otelpeers.testing.dns_wire import query_wire, response_wire

CHAIN = ["edge.cdn.example.net", "pool.lb.example.org", "host-7.pool.example.org"]


def test_query_fields() -> None:
    m = parse_message(query_wire("WWW.Example.COM", "AAAA", msg_id=0xBEEF))
    assert m.id == 0xBEEF and not m.is_response and m.opcode == "QUERY"
    assert m.question is not None
    assert (m.question.name, m.question.qtype) == ("www.example.com", "AAAA")
    assert m.flags.rd and not m.flags.tc
    assert m.answers == () and m.ttl_min is None and not m.edns


@pytest.mark.parametrize("qtype,addrs", [("A", ["192.0.2.10", "192.0.2.11"]),
                                          ("AAAA", ["2001:db8::10", "2001:db8::11"])])
def test_cname_chain_of_three(qtype: str, addrs: list[str]) -> None:
    w = response_wire("www.example.com", qtype, cnames=CHAIN, addresses=addrs, ttl=30,
                      cname_ttl=600)
    m = parse_message(w)
    assert m.is_response and m.rcode == "NOERROR"
    assert m.cname_chain == ("www.example.com", *CHAIN)
    assert m.addresses == tuple(addrs)
    assert m.ttl_min == 30
    assert [a.rtype for a in m.answers] == ["CNAME"] * 3 + [qtype] * 2
    assert m.answers[0].value == CHAIN[0]  # names shown like question names


def test_addresses_off_the_chain_are_not_the_answer() -> None:
    q = dns.message.make_query("a.example", "A")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("a.example.", 60, "IN", "CNAME", "b.example."))
    r.answer.append(dns.rrset.from_text("b.example.", 60, "IN", "A", "192.0.2.1"))
    r.answer.append(dns.rrset.from_text("unrelated.example.", 60, "IN", "A", "198.51.100.9"))
    m = parse_message(r.to_wire())
    assert m.addresses == ("192.0.2.1",)
    assert len(m.answers) == 3


def test_cname_loop_stops() -> None:
    q = dns.message.make_query("a.example", "A")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("a.example.", 60, "IN", "CNAME", "b.example."))
    r.answer.append(dns.rrset.from_text("b.example.", 60, "IN", "CNAME", "a.example."))
    m = parse_message(r.to_wire())
    assert m.cname_chain == ("a.example", "b.example")
    assert m.addresses == ()


@pytest.mark.parametrize("rcode", ["NXDOMAIN", "SERVFAIL", "REFUSED"])
def test_error_rcodes(rcode: str) -> None:
    m = parse_message(response_wire("nope.example", "A", rcode=rcode))
    assert m.rcode == rcode and m.addresses == () and m.cname_chain == ("nope.example",)


def test_edns_and_tc() -> None:
    m = parse_message(response_wire("big.example", "TXT", edns=True, tc=True))
    assert m.edns and m.edns_payload == 1232
    assert not parse_message(response_wire("small.example", "A")).edns
    assert m.flags.tc and m.truncated and not m.cut


def test_cut_payload_is_salvaged() -> None:
    addrs = [f"192.0.2.{i}" for i in range(60)]
    w = response_wire("many.example", "A", addresses=addrs)
    m = parse_message(w[:200], wire_len=len(w))
    assert m.cut and m.truncated
    assert m.question is not None and m.question.name == "many.example"
    assert 0 < len(m.addresses) < 60
    assert set(m.addresses) <= set(addrs)


def test_cut_inside_question_is_an_error() -> None:
    w = response_wire("many.example", "A", addresses=["192.0.2.1"])
    with pytest.raises(ParseError) as err:
        parse_message(w[:16], wire_len=len(w))
    assert err.value.category == "truncated"


def test_answers_bounded() -> None:
    addrs = [f"10.0.{i // 250}.{i % 250}" for i in range(MAX_ANSWERS + 10)]
    m = parse_message(response_wire("wide.example", "A", addresses=addrs))
    assert len(m.answers) == MAX_ANSWERS and m.answers_omitted == 10
    assert len(m.addresses) == MAX_ANSWERS


def _header(qd: int = 1, an: int = 0) -> bytes:
    return (b"\x12\x34\x01\x00" + qd.to_bytes(2, "big") + an.to_bytes(2, "big")
            + b"\x00\x00\x00\x00")


@pytest.mark.parametrize("wire,category", [
    (b"\x12\x34", "truncated"),
    (_header() + b"\xc0\x0c\x00\x01\x00\x01", "bad_pointer"),  # points at itself
    (_header() + b"\x01a\xc0\x20\x00\x01\x00\x01", "bad_pointer"),  # points forward
    (_header() + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01", "name_too_long"),
    (_header() + b"\x41" + b"a" * 65 + b"\x00\x00\x01\x00\x01", "garbage"),  # label type 01
    (query_wire("x.example") + b"junk", "garbage"),
    (_header(an=1) + b"\x00\x00\x01\x00\x01", "malformed"),  # answer announced, absent
])
def test_error_categories(wire: bytes, category: str) -> None:
    parser = DnsParser()
    with pytest.raises(ParseError) as err:
        parser.parse(wire)
    assert err.value.category == category
    assert parser.stats == {f"error.{category}": 1}


def test_parser_counts_add_up() -> None:
    parser = DnsParser()
    good = response_wire("ok.example", "A", addresses=["192.0.2.1"])
    assert parser.try_parse(good) is not None
    assert parser.try_parse(good[:5]) is None
    assert parser.try_parse(good[:40], wire_len=len(good)) is not None
    assert parser.stats == {"ok": 1, "error.truncated": 1, "salvaged": 1}
    assert parser.fed == 3


def test_names_too_long_in_text_keep_their_registered_domain() -> None:
    """Binary labels (iodine's base128) become \\DDD escapes, past 255 characters of text:
    the cut is on the left, so the name still ends in its registered domain."""
    import dns.name

    from otelpeers.dns.parse import MAX_NAME, name_text

    label = bytes(range(128, 191))  # 63 high bytes: 4 characters each once escaped
    name = dns.name.Name([label, label, label, b"t", b"example", b"com", b""])
    text = name_text(name)
    assert len(text) == MAX_NAME and text.startswith("…")
    assert text.endswith(".t.example.com")

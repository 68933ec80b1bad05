"""DNS over TCP: length-prefixed messages split across and coalesced within segments."""

from __future__ import annotations

import pytest

from otelpeers.dns.parse import parse_message
from otelpeers.dns.tcp import TcpReassembler
from otelpeers.dns.tracker import DnsTracker
from otelpeers.testing.dns_wire import packet, query_wire, response_wire, tcp_framed

T0 = 1_700_000_000_000_000_000


def test_split_across_segments_including_the_prefix() -> None:
    msg = query_wire("split.example", "A", 1)
    framed = tcp_framed(msg)
    r = TcpReassembler()
    assert r.feed(1, 1, framed[:1]) == []  # half the length prefix
    assert r.feed(1, 1, framed[1:10]) == []
    (out,) = r.feed(1, 1, framed[10:])
    assert out.payload == msg and out.wire_len == len(msg)


def test_coalesced_messages_in_one_segment() -> None:
    a, b = query_wire("a.example", "A", 1), query_wire("a.example", "AAAA", 2)
    framed = tcp_framed(a, b)
    r = TcpReassembler()
    out = r.feed(1, 1, framed[:-3])
    assert [m.payload for m in out] == [a]
    out = r.feed(1, 1, framed[-3:])
    assert [m.payload for m in out] == [b]


def test_directions_are_separate_streams() -> None:
    q = query_wire("a.example", "A", 1)
    resp = response_wire("a.example", "A", 1, addresses=["192.0.2.1"])
    r = TcpReassembler()
    fq, fr = tcp_framed(q), tcp_framed(resp)
    assert r.feed(1, 1, fq[:5]) == [] and r.feed(1, 2, fr[:5]) == []
    assert [m.payload for m in r.feed(1, 2, fr[5:])] == [resp]
    assert [m.payload for m in r.feed(1, 1, fq[5:])] == [q]


def test_cut_segment_yields_message_head_and_stays_in_step() -> None:
    big = response_wire("big.example", "A", 5, addresses=[f"192.0.2.{i}" for i in range(60)])
    nxt = response_wire("next.example", "A", 6, addresses=["198.51.100.1"])
    seg1, seg2 = tcp_framed(big), tcp_framed(nxt)
    r = TcpReassembler()
    (head,) = r.feed(1, 2, seg1[:512], wire_len=len(seg1))
    assert head.wire_len == len(big) and len(head.payload) == 510
    m = parse_message(head.payload, head.wire_len)
    assert m.cut and m.question is not None and m.question.name == "big.example"
    (tail,) = r.feed(1, 2, seg2)
    assert tail.payload == nxt


def test_cut_in_the_middle_of_a_long_message_skips_its_rest() -> None:
    big = response_wire("big.example", "A", 5, addresses=[f"192.0.2.{i}" for i in range(60)])
    nxt = query_wire("after.example", "A", 9)
    stream = tcp_framed(big, nxt)
    r = TcpReassembler()
    (head,) = r.feed(1, 2, stream[:300], wire_len=400)  # 100 bytes lost, message continues
    assert head.wire_len == len(big)
    out = r.feed(1, 2, stream[400:])
    assert [m.payload for m in out] == [nxt]


def test_hole_over_a_length_prefix_gives_the_stream_up() -> None:
    a, b = query_wire("a.example", "A", 1), query_wire("b.example", "A", 2)
    stream = tcp_framed(a, b)
    r = TcpReassembler()
    (first,) = r.feed(1, 1, stream[:len(a) + 2 - 1], wire_len=len(a) + 2 + 4)
    assert first.wire_len == len(a)
    assert r.feed(1, 1, stream[len(a) + 6:]) == []
    assert r.stats["streams_lost"] == 1 and r.stats["segments_ignored"] == 1
    r.close(1)
    assert len(r) == 0


def test_message_bytes_bounded() -> None:
    big = response_wire("big.example", "TXT", 1)  # small header
    huge = big + b"\x00" * 5000  # declared length 5000+ : only the head is kept
    nxt = query_wire("n.example", "A", 2)
    r = TcpReassembler(max_message_bytes=1024)
    out = r.feed(1, 2, tcp_framed(huge, nxt))
    assert [len(m.payload) for m in out] == [1024, len(nxt)]
    assert out[0].wire_len == len(huge) and out[1].payload == nxt
    assert r.stats["messages_bounded"] == 1


def test_stream_table_bounded() -> None:
    r = TcpReassembler(max_streams=4)
    for cookie in range(10):
        r.feed(cookie, 1, b"\x00")  # half a prefix keeps each stream alive
    assert len(r) == 4 and r.stats["streams_evicted"] == 6


def test_bad_limits_rejected() -> None:
    with pytest.raises(ValueError, match="max_streams"):
        TcpReassembler(max_streams=0)


def test_tracker_over_tcp() -> None:
    t = DnsTracker()
    q = tcp_framed(query_wire("tcp.example", "AAAA", 31))
    resp = tcp_framed(response_wire("tcp.example", "AAAA", 31, addresses=["2001:db8::31"]))
    t.handle(packet(q[:7], time_ns=T0, tcp=True, peer=("10.0.0.53", 53)))
    t.handle(packet(q[7:], time_ns=T0 + 10, tcp=True, peer=("10.0.0.53", 53)))
    assert t.handle(packet(resp[:20], time_ns=T0 + 1000, tcp=True, outbound=False)) == []
    (txn,) = t.handle(packet(resp[20:], time_ns=T0 + 2000, tcp=True, outbound=False))
    assert txn.protocol == "tcp" and txn.addresses == ("2001:db8::31",)
    assert txn.start_ns == T0 + 10  # the query counts from its last byte's segment


def test_retransmitted_segment_is_dropped_with_sequence_numbers() -> None:
    msg = b"\x12\x34" + bytes(20)
    framed = len(msg).to_bytes(2, "big") + msg
    r = TcpReassembler()
    seq = 1000
    assert r.feed(1, 1, framed[:10], seq=seq) == []
    assert r.feed(1, 1, framed[:10], seq=seq) == []  # retransmitted whole: ignored
    out = r.feed(1, 1, framed[5:], seq=seq + 5)  # overlaps 5 bytes already consumed
    assert [m.payload for m in out] == [msg]
    assert r.stats["retransmits"] == 1 and r.stats["overlaps_trimmed"] == 1


def test_sequence_gap_is_a_hole_and_wraps_around() -> None:
    msg = b"\xab\xcd" + bytes(30)
    framed = len(msg).to_bytes(2, "big") + msg
    r = TcpReassembler()
    seq = 2**32 - 4  # the stream wraps inside the message
    r.feed(2, 1, framed[:8], seq=seq)
    out = r.feed(2, 1, framed[12:], seq=(seq + 12) % 2**32)  # bytes 8..11 never seen
    assert len(out) == 1 and out[0].wire_len == len(msg) and len(out[0].payload) < len(msg)
    assert r.stats["gaps"] == 1

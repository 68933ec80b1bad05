"""Decoding ring buffer records into typed events."""

from __future__ import annotations

import ctypes
import socket

import pytest

from otelpeers import abi
from otelpeers.events import (
    DecodeError,
    Direction,
    DnsPacketEvent,
    Kind,
    SocketEvent,
    decode_event,
    decode_record,
)


def raw_event(**kw: object) -> bytes:
    c = abi.CEvent()
    c.type = int(kw.get("type", abi.EventType.ESTABLISHED))
    c.family = int(kw.get("family", socket.AF_INET))
    c.protocol = socket.IPPROTO_TCP
    c.sock_type = socket.SOCK_STREAM
    c.ts_ns = 1_000
    c.cookie = int(kw.get("cookie", 42))
    c.direction = int(kw.get("direction", 1))
    c.flags = int(kw.get("flags", abi.F_OWNER))
    c.owner.tgid, c.owner.pid, c.owner.uid = 1234, 1235, 1000
    c.owner.comm = kw.get("comm", b"curl")
    c.lport, c.rport = 40000, 443
    laddr = kw.get("laddr", socket.inet_aton("10.0.0.1"))
    raddr = kw.get("raddr", socket.inet_aton("192.0.2.7"))
    ctypes.memmove(ctypes.addressof(c.laddr), laddr, len(laddr))
    ctypes.memmove(ctypes.addressof(c.raddr), raddr, len(raddr))
    c.counters.packets_out, c.counters.payload_out = 3, 700
    c.tcp_bytes_acked, c.srtt_us = 701, 55
    c.start_ns = int(kw.get("start_ns", 0))
    c.peer_cookie = int(kw.get("peer_cookie", 0))
    return bytes(c)


def test_decode_established() -> None:
    ev = decode_event(raw_event(), clock_offset_ns=5_000)
    assert isinstance(ev, SocketEvent)
    assert ev.kind == Kind.ESTABLISHED and ev.time_ns == 6_000 and ev.cookie == 42
    assert (ev.local_addr, ev.local_port) == ("10.0.0.1", 40000)
    assert (ev.peer_addr, ev.peer_port) == ("192.0.2.7", 443)
    assert ev.direction == Direction.OUTBOUND and ev.transport == "tcp"
    assert ev.owner is not None and ev.owner.comm == "curl" and ev.owner.tgid == 1234
    assert ev.counters.packets_out == 3 and ev.counters.payload_out == 700
    assert ev.tcp is None  # only TCP_CLOSE carries TCP info


def test_tcp_close_carries_tcp_info_when_flagged() -> None:
    ev = decode_event(raw_event(type=abi.EventType.TCP_CLOSE,
                                flags=abi.F_OWNER | abi.F_TCP_INFO), 0)
    assert ev.tcp is not None and ev.tcp.bytes_acked == 701 and ev.tcp.srtt_us == 55
    assert ev.start_ns == 0 and ev.peer_cookie == 0  # 0: not a connection's record
    # A connect() that never sent a SYN ends without TCP info: its fields are not valid.
    assert decode_event(raw_event(type=abi.EventType.TCP_CLOSE), 0).tcp is None


def test_complete_close_record_has_its_start_and_the_other_end() -> None:
    ev = decode_event(raw_event(type=abi.EventType.TCP_CLOSE, start_ns=400, peer_cookie=43),
                      clock_offset_ns=5_000)
    assert ev.start_ns == 5_400 and ev.time_ns == 6_000 and ev.peer_cookie == 43


def test_adopted_release_record_is_flagged_with_tcp_info_where_the_kernel_had_it() -> None:
    """An adopted connection's record comes from sock_release, with the kernel's TCP totals
    of its last packet when the agent saw one (OP_F_TCP_INFO)."""
    released = abi.F_OWNER | abi.F_ADOPTED | abi.F_RELEASED
    ev = decode_event(raw_event(type=abi.EventType.TCP_CLOSE, start_ns=400, flags=released), 0)
    assert ev.adopted and ev.released and ev.tcp is None and ev.owner is not None
    seen = decode_event(raw_event(type=abi.EventType.TCP_CLOSE, start_ns=400,
                                  flags=released | abi.F_TCP_INFO), 0)
    assert seen.adopted and seen.tcp is not None and seen.tcp.bytes_acked == 701
    assert not decode_event(raw_event(type=abi.EventType.TCP_CLOSE), 0).adopted
    # sock_ops CLOSE of an adopted socket still open (state callbacks from an earlier agent)
    ops = decode_event(raw_event(type=abi.EventType.TCP_CLOSE,
                                 flags=abi.F_OWNER | abi.F_ADOPTED | abi.F_TCP_INFO), 0)
    assert ops.adopted and ops.tcp is not None and ops.tcp.srtt_us == 55


def test_records_decode_in_place_at_any_offset() -> None:
    """The source decodes straight from the ring buffer's memory: (buffer, offset, length)."""
    a, b = raw_event(cookie=1), raw_event(comm=b"wget")
    buf = memoryview(b"\xee" * 8 + a + b"\xee" * 8 + b)
    first = decode_record(buf, 0, offset=8, length=len(a))
    second = decode_record(buf, 0, offset=16 + len(a), length=len(b))
    assert isinstance(first, SocketEvent) and isinstance(second, SocketEvent)
    assert first.owner is not None and first.owner.comm == "curl"
    assert second.owner is not None and second.owner.comm == "wget"
    with pytest.raises(DecodeError, match="truncated"):
        decode_record(buf, 0, offset=8, length=len(a) - 1)


def test_equal_owners_and_addresses_are_shared() -> None:
    x = decode_event(raw_event(), 0)
    y = decode_event(raw_event(), 0)
    assert x.owner is y.owner and x.peer_addr is y.peer_addr


@pytest.mark.parametrize("typ", [abi.EventType.SOCK_CREATE, abi.EventType.DNS,
                                 abi.EventType.EXEC])
def test_socket_decoder_refuses_other_record_types(typ: int) -> None:
    with pytest.raises(DecodeError, match="unknown event type"):
        decode_event(raw_event(type=typ), 0)


def test_no_owner_flag_means_no_owner() -> None:
    assert decode_event(raw_event(flags=0), 0).owner is None


def test_v4_mapped_ipv6_is_shown_as_ipv4() -> None:
    mapped = bytes(10) + b"\xff\xff" + socket.inet_aton("127.0.0.1")
    ev = decode_event(raw_event(family=socket.AF_INET6, raddr=mapped), 0)
    assert ev.peer_addr == "127.0.0.1" and ev.family == socket.AF_INET6


def test_ipv6() -> None:
    ev = decode_event(raw_event(family=socket.AF_INET6,
                                raddr=socket.inet_pton(socket.AF_INET6, "2001:db8::7")), 0)
    assert ev.peer_addr == "2001:db8::7"


def test_comm_control_characters_are_replaced() -> None:
    ev = decode_event(raw_event(comm=b"ev\x1bil\nx"), 0)
    assert ev.owner is not None and ev.owner.comm == "ev?il?x"


@pytest.mark.parametrize("data,msg", [
    (b"\x00" * 10, "truncated"),
    (raw_event()[:100], "truncated"),
    (raw_event(type=77), "unknown event type"),
    (raw_event(family=99), "unknown address family"),
])
def test_bad_records_raise(data: bytes, msg: str) -> None:
    with pytest.raises(DecodeError, match=msg):
        decode_record(data, 0)


def test_decode_dns_record() -> None:
    c = abi.CDnsEvent()
    c.type = abi.EventType.DNS
    c.family = socket.AF_INET
    c.protocol = socket.IPPROTO_UDP
    c.direction = 1
    c.cookie = 9
    c.lport, c.rport = 5353, 53
    payload = b"\x12\x34" + b"\x01\x00" + bytes(8)
    ctypes.memmove(ctypes.addressof(c.payload), payload, len(payload))
    c.payload_len, c.wire_len = len(payload), 600
    ev = decode_record(bytes(c), 0)
    assert isinstance(ev, DnsPacketEvent)
    assert ev.payload == payload and ev.wire_len == 600 and ev.peer_port == 53
    # A record cut short by the reader still decodes what is there.
    short = decode_record(bytes(c)[: abi.DNS_HEADER_SIZE + 4], 0)
    assert isinstance(short, DnsPacketEvent) and short.payload == payload[:4]


def test_decoder_fuzz_random_and_mutated_records() -> None:
    """Random and bit-flipped records: decoded or rejected with DecodeError, nothing else."""
    import random

    from otelpeers.events import ProcessEvent

    rng = random.Random(1234)
    seeds = [raw_event(), raw_event(type=abi.EventType.TCP_CLOSE), bytes(abi.CDnsEvent()),
             bytes(abi.CProcEvent())]
    decoded = rejected = 0
    for i in range(20_000):
        if i % 4 == 0:
            data = rng.randbytes(rng.randrange(0, 1400))
        else:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 12)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data[: rng.randrange(0, len(data) + 1)])
        try:
            ev = decode_record(data, 0)
        except DecodeError:
            rejected += 1
            continue
        decoded += 1
        assert isinstance(ev, SocketEvent | DnsPacketEvent | ProcessEvent)
    assert decoded + rejected == 20_000 and decoded > 0 and rejected > 0

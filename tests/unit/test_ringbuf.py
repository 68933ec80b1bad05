"""The ring buffer walker on plain buffers laid out as the kernel lays out a BPF ring buffer."""

from __future__ import annotations

import struct

import pytest

from otelpeers.kernel.bpfsys import parse_cpu_list, sum_percpu
from otelpeers.kernel.ringbuf import BUSY_BIT, DISCARD_BIT, HEADER_SIZE, RingLayout

SIZE = 64  # data bytes (a power of two)


class FakeRing:
    """A producer writing records the way bpf_ringbuf_reserve/submit do, into a data area
    mapped once, as the agent maps it (a record may wrap around the end)."""

    def __init__(self) -> None:
        self.data = bytearray(SIZE)
        self.producer = bytearray(8)
        self.cons = 0
        self.prod = 0

    def _write(self, pos: int, blob: bytes) -> None:
        for i, b in enumerate(blob):
            self.data[(pos + i) % SIZE] = b

    def reserve(self, payload: bytes, busy: bool = False, discard: bool = False) -> int:
        pos = self.prod
        length = len(payload) | (BUSY_BIT if busy else 0) | (DISCARD_BIT if discard else 0)
        self._write(pos, struct.pack("<II", length, 0) + payload)
        self.prod += (len(payload) + HEADER_SIZE + 7) & ~7
        struct.pack_into("<Q", self.producer, 0, self.prod)
        return pos

    def commit(self, pos: int, n: int) -> None:
        self._write(pos, struct.pack("<I", n))

    def layout(self) -> RingLayout:
        return RingLayout(memoryview(self.data), SIZE, memoryview(self.producer),
                          lambda: self.cons, self._set)

    def _set(self, pos: int) -> None:
        self.cons = pos


def collect(layout: RingLayout, **kw: int) -> list[bytes]:
    got: list[bytes] = []
    layout.consume(lambda buf, off, n: got.append(bytes(buf[off:off + n])), **kw)
    return got


def test_records_in_order_consumer_published_once() -> None:
    ring = FakeRing()
    ring.reserve(b"abc")
    ring.reserve(b"0123456789")
    layout = ring.layout()
    assert collect(layout) == [b"abc", b"0123456789"]
    assert ring.cons == ring.prod == 16 + 24
    assert collect(layout) == []


def test_a_record_wrapping_the_end_is_joined() -> None:
    ring = FakeRing()
    ring.reserve(b"x" * 40)  # 48 bytes with its header
    layout = ring.layout()
    collect(layout)
    ring.reserve(bytes(range(20)))  # header at 48, data 56..76: wraps past 64
    assert collect(layout) == [bytes(range(20))]
    ring.reserve(b"y" * 16)  # at 80 = 16 after the wrap: contiguous again
    assert collect(layout) == [b"y" * 16]


def test_a_record_whose_header_ends_at_the_end() -> None:
    ring = FakeRing()
    ring.reserve(b"x" * 48)  # 56 bytes: the next header fills 56..64
    layout = ring.layout()
    collect(layout)
    ring.reserve(b"Z" * 8)  # its data starts exactly at 0
    assert collect(layout) == [b"Z" * 8]


def test_stops_at_a_record_still_being_written_and_skips_discarded() -> None:
    ring = FakeRing()
    ring.reserve(b"one")
    ring.reserve(b"gone", discard=True)
    busy = ring.reserve(b"two", busy=True)
    ring.reserve(b"three")
    layout = ring.layout()
    assert collect(layout) == [b"one"]  # the discarded record is passed, the busy one waits
    assert ring.cons == busy
    ring.commit(busy, 3)
    assert collect(layout) == [b"two", b"three"]


def test_max_records_and_until_bound_a_batch() -> None:
    ring = FakeRing()
    for i in range(4):
        ring.reserve(bytes([i]))
    layout = ring.layout()
    assert collect(layout, max_records=3) == [b"\0", b"\1", b"\2"]
    assert collect(layout, until=ring.cons) == []
    assert collect(layout) == [b"\3"]


def test_size_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        RingLayout(memoryview(bytearray(96)), 48, memoryview(bytearray(8)), lambda: 0,
                   lambda _p: None)


def test_cpu_list_and_percpu_sums() -> None:
    assert parse_cpu_list("0-1\n") == 2
    assert parse_cpu_list("0-3,8-11") == 12
    assert parse_cpu_list("0") == 1
    raw = struct.pack("<QQ", 5, 7)  # two CPUs, one u64 each, 8 bytes apart
    assert sum_percpu(raw, 8, "<Q") == (12,)

"""A BPF ring buffer read straight from its memory map, in batches, without a callback per record.

The kernel exposes a BPF_MAP_TYPE_RINGBUF map as three areas of one mapping (see the
kernel's kernel/bpf/ringbuf.c and libbpf's ringbuf.c):

    offset 0            consumer page (read-write): the consumer position, u64
    offset PAGE         producer page (read-only):  the producer position, u64
    offset 2 * PAGE     data (read-only), size bytes; the kernel offers it twice in a row so
                        that a record wrapping around the end is contiguous, but both copies
                        would count in the agent's RSS (16 MB for the default 8 MiB), so only
                        one is mapped and the rare record that wraps is joined from two parts

Each record starts with an 8-byte header: u32 length (bit 31: still being written, bit 30:
discarded) and u32 page offset (kernel use). Records are 8-byte aligned. The consumer walks
from its position to the producer's, stops at a record still being written, and publishes
its new position once per batch (libbpf does it once per record), which is what frees space
for the kernel.

On x86_64 loads are not reordered with other loads, so reading the producer position, then a
header, then the record needs no explicit barrier from Python; the header's busy bit is the
kernel's commit (an xchg, a full barrier, on its side).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import select
import struct
from collections.abc import Callable

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

Handler = Callable[[memoryview, int, int], None]  # (buffer, offset of the record, length)


class RingLayout:
    """Positions and records of a ring buffer, over any buffers (mmaps, or bytearrays in tests).

    data: the data area (size bytes, mapped once); producer: the producer page; the consumer
    position is read and written through get_consumer / set_consumer.
    """

    def __init__(self, data: memoryview, size: int, producer: memoryview,
                 get_consumer: Callable[[], int], set_consumer: Callable[[int], None]) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer size must be a power of two, got {size}")
        self.data = data
        self.size = size
        self.mask = size - 1
        self.producer = producer
        self.get_consumer = get_consumer
        self.set_consumer = set_consumer

    def producer_pos(self) -> int:
        return _U64.unpack_from(self.producer, 0)[0]

    def pending_bytes(self) -> int:
        return self.producer_pos() - self.get_consumer()

    def consume(self, handler: Handler, max_records: int = 1 << 30,
                until: int | None = None) -> int:
        """Hand every committed record to handler(data, offset, length), oldest first, and
        publish the new consumer position once at the end. Stops at a record still being
        written, after max_records, or at position `until`. Returns the records handled
        (discarded ones not counted)."""
        cons = self.get_consumer()
        prod = self.producer_pos()
        if until is not None:
            prod = min(prod, until)
        data, mask, unpack, ring_size = self.data, self.mask, _U32.unpack_from, self.size
        n = 0
        start = cons
        while cons < prod and n < max_records:
            off = cons & mask
            length = unpack(data, off)[0]
            if length & BUSY_BIT:
                break
            size = length & ~(BUSY_BIT | DISCARD_BIT)
            if not length & DISCARD_BIT:
                at = off + HEADER_SIZE  # headers never wrap: records are 8-byte aligned
                if at + size <= ring_size:
                    handler(data, at, size)
                elif at >= ring_size:  # the header ended exactly at the end
                    handler(data, at - ring_size, size)
                else:  # the record wraps: join its two parts
                    joined = bytes(data[at:]) + bytes(data[:at + size - ring_size])
                    handler(memoryview(joined), 0, size)
                n += 1
            cons += (size + HEADER_SIZE + 7) & ~7
        if cons != start:
            self.set_consumer(cons)
        return n


class MappedRingBuffer:
    """The kernel's ring buffer map, mmapped; poll() waits for data with epoll."""

    def __init__(self, map_fd: int, size: int) -> None:
        page = mmap.PAGESIZE
        self.fd = map_fd
        self.size = size
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._rest = mmap.mmap(map_fd, page + size, mmap.MAP_SHARED, mmap.PROT_READ,
                               offset=page)
        self._cons_word = ctypes.c_uint64.from_buffer(self._cons)  # one aligned 8-byte store
        self._view = view = memoryview(self._rest)
        self.layout = RingLayout(view[page:], size, view[:page],
                                 lambda: self._cons_word.value, self._set_consumer)
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)

    def _set_consumer(self, pos: int) -> None:
        self._cons_word.value = pos

    def poll(self, timeout_s: float) -> bool:
        """Wait until data may be there (or the timeout); True when woken for data."""
        if self.layout.pending_bytes() > 0:
            return True
        return bool(self._epoll.poll(timeout_s))

    def close(self) -> None:
        self._epoll.close()
        del self._cons_word
        self.layout.data.release()
        self.layout.producer.release()
        self._view.release()
        for m in (self._cons, self._rest):
            with contextlib.suppress(BufferError):  # a caller still holds a view: unmapped at exit
                m.close()


def ringbuf_data_size(map_fd: int) -> int:
    """A ring buffer map's data size is its max_entries."""
    from otelpeers.kernel.bpfsys import map_info

    return map_info(map_fd).max_entries


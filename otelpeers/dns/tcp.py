"""DNS over TCP: split each direction of a socket's byte stream into DNS messages.

Each message on a TCP stream is prefixed with its 2-byte length (RFC 1035 4.2.2). A segment
may hold part of a message or several messages. The kernel copy can be cut short
(wire_len > len(payload)): the lost bytes form a hole. A hole inside a message yields that
message's head as a cut message (the parser salvages the header and question); a hole that
swallows a length prefix leaves no way to find the next boundary, so the stream is given up
(counted) until the socket is closed. With sequence numbers (the kernel copies them), a
retransmitted segment's bytes already seen are dropped, and a gap (a segment lost to the
capture, or reordered) is a hole like a cut copy.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

StreamKey = tuple[int, int]  # (socket cookie, direction)


@dataclass(frozen=True, slots=True)
class TcpMessage:
    payload: bytes  # the message (without its length prefix), possibly only its head
    wire_len: int  # the message's full length from its prefix


@dataclass(slots=True)
class _Stream:
    buf: bytearray = field(default_factory=bytearray)
    need: int = -1  # length of the message being read; -1 while reading a prefix
    skip: int = 0  # bytes still to discard: the rest of a message whose middle was lost
    lost: bool = False  # boundaries unknown: ignore the stream from here on
    next_seq: int | None = None  # sequence number of the next byte expected


class TcpReassembler:
    def __init__(self, max_streams: int = 4096, max_message_bytes: int = 4096) -> None:
        if max_streams < 1 or max_message_bytes < 14:
            raise ValueError("TcpReassembler: max_streams must be >= 1 and "
                             "max_message_bytes >= 14 (a header and a minimal question)")
        self.max_streams = max_streams
        self.max_message_bytes = max_message_bytes  # head of a message kept; the rest skipped
        self._streams: OrderedDict[StreamKey, _Stream] = OrderedDict()
        self._counts: Counter[str] = Counter()

    def feed(self, cookie: int, direction: int, payload: bytes,
             wire_len: int | None = None, seq: int | None = None) -> list[TcpMessage]:
        """Add one segment's payload; return the messages it completed, in order.

        seq: the TCP sequence number of payload[0], when known."""
        key = (cookie, direction)
        st = self._streams.get(key)
        if st is None:
            st = _Stream()
            self._streams[key] = st
            if len(self._streams) > self.max_streams:
                self._streams.popitem(last=False)
                self._counts["streams_evicted"] += 1
        else:
            self._streams.move_to_end(key)
        if st.lost:
            self._counts["segments_ignored"] += 1
            return []
        out: list[TcpMessage] = []
        full = wire_len if wire_len is not None else len(payload)
        data = memoryview(payload)
        if seq is not None:
            if st.next_seq is not None:
                delta = (seq - st.next_seq + 2**31) % 2**32 - 2**31  # wrap-safe difference
                if delta < 0:  # a retransmission: drop what was already consumed
                    if -delta >= full:
                        self._counts["retransmits"] += 1
                        return []
                    self._counts["overlaps_trimmed"] += 1
                    data, full = data[-delta:], full + delta
                    seq = st.next_seq
                elif delta > 0:  # bytes never seen: a hole before this segment
                    self._counts["gaps"] += 1
                    self._hole(st, delta, out)
                    if st.lost:
                        self._counts["messages"] += len(out)
                        return out
            st.next_seq = (seq + full) % 2**32
            wire_len = full
        self._consume(st, data, out)
        missing = (wire_len - len(data)) if wire_len is not None else 0
        if missing > 0:
            self._hole(st, missing, out)
        self._counts["messages"] += len(out)
        return out

    def _consume(self, st: _Stream, data: memoryview, out: list[TcpMessage]) -> None:
        pos = 0
        n = len(data)
        while pos < n:
            if st.skip:
                take = min(st.skip, n - pos)
                st.skip -= take
                pos += take
                continue
            if st.need < 0:
                take = min(2 - len(st.buf), n - pos)
                st.buf += data[pos:pos + take]
                pos += take
                if len(st.buf) == 2:
                    st.need = int.from_bytes(st.buf, "big")
                    st.buf.clear()
                    if st.need == 0:  # an empty message: nothing to parse, keep in step
                        self._counts["empty_messages"] += 1
                        st.need = -1
                continue
            keep = min(st.need, self.max_message_bytes)
            take = min(keep - len(st.buf), n - pos)
            st.buf += data[pos:pos + take]
            pos += take
            if len(st.buf) == keep:
                out.append(TcpMessage(bytes(st.buf), st.need))
                if keep < st.need:
                    self._counts["messages_bounded"] += 1
                st.skip = st.need - keep
                st.need = -1
                st.buf.clear()

    def _hole(self, st: _Stream, missing: int, out: list[TcpMessage]) -> None:
        """missing bytes at the end of the last segment were not copied."""
        if st.skip >= missing:
            st.skip -= missing
            return
        missing -= st.skip
        st.skip = 0
        if st.need >= 0:
            remaining = st.need - len(st.buf)
            out.append(TcpMessage(bytes(st.buf), st.need))
            self._counts["messages_cut"] += 1
            st.buf.clear()
            st.need = -1
            if missing < remaining:
                st.skip = remaining - missing
                return
            missing -= remaining
            if missing == 0:
                return
        # The hole covers a length prefix: the next message boundary is unknown.
        st.lost = True
        st.buf.clear()
        self._counts["streams_lost"] += 1

    def close(self, cookie: int) -> None:
        """Forget both directions of a socket (call when it is released)."""
        for direction in (0, 1, 2):
            self._streams.pop((cookie, direction), None)

    def __len__(self) -> int:
        return len(self._streams)

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._counts)

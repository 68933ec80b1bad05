"""Typed events: what the pipeline sees, whatever the source (kernel, recording, generator).

Kernel records (otelpeers.abi) are decoded here into frozen dataclasses. Some event kinds are
made in user space by the kernel source itself from batched reads of the kernel's tables
(volumes, long-lived connections, exact per-pair aggregates), so that a recording replays
exactly what the live agent saw.
"""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass

from otelpeers import abi

# Kinds made in user space from reads of the kernel's tables.
USER_KINDS = {
    "PEER_STATS": 100,  # final or periodic volume of one (socket, peer) of a non-TCP socket
    "SOCK_STATS": 101,  # periodic volume of a live TCP connection
    "SOCK_GONE": 102,  # a live TCP connection's kernel entry vanished without its CLOSE record
    "TCP_OPEN": 103,  # a TCP connection open longer than the scan threshold, found by the scan
    "PAIR_STATS": 104,  # exact counts of one (process, peer) pair over one interval
}

# Every record type of the ABI, plus the kinds above: one list, derived, never re-typed.
Kind = enum.IntEnum("Kind", [(t.name, t.value) for t in abi.EventType] + list(USER_KINDS.items()),
                    module=__name__)

Direction = abi.Direction

# The types built for every record (SocketEvent, Counters, TcpInfo; FlowRecord in flows.py)
# are slots dataclasses treated as immutable but not frozen: a frozen dataclass's __init__
# sets each field through object.__setattr__, which made building a 20-field event 4.5x
# slower here (4.5 us against 1.0 us), on a path that runs 20,000 times a second. Equality
# and hashing are the frozen ones (unsafe_hash). Change them with dataclasses.replace only.
hot = dataclass(slots=True, unsafe_hash=True)

PROTO_NAMES = {
    socket.IPPROTO_TCP: "tcp",
    socket.IPPROTO_UDP: "udp",
    socket.IPPROTO_ICMP: "icmp",
    socket.IPPROTO_ICMPV6: "icmp",
}


KERNEL_COMM = "kernel"  # the owner of packets the kernel sends on its own (tgid 0)


@dataclass(frozen=True, slots=True)
class Owner:
    """The process that owned a socket when a hook ran in its context."""

    tgid: int
    pid: int
    uid: int
    gid: int
    cgroup_id: int
    comm: str
    joined: bool = False  # taken from the listener, not seen in process context

    @property
    def is_kernel(self) -> bool:
        """The kernel itself sent it (a RST or ICMP error for a closed port): no process."""
        return self.tgid == 0 and self.comm == KERNEL_COMM


@hot
class Counters:
    packets_out: int = 0
    bytes_out: int = 0
    payload_out: int = 0
    packets_in: int = 0
    bytes_in: int = 0
    payload_in: int = 0

    def merged_max(self, other: Counters) -> Counters:
        """Counters are cumulative: the larger reading of each field is the newer one."""
        return Counters(*map(max, self.as_tuple(), other.as_tuple()))

    def as_tuple(self) -> tuple[int, int, int, int, int, int]:
        return (self.packets_out, self.bytes_out, self.payload_out,
                self.packets_in, self.bytes_in, self.payload_in)


ZERO_COUNTERS = Counters()


@hot
class TcpInfo:
    bytes_acked: int
    bytes_received: int
    total_retrans: int
    srtt_us: int


@hot
class SocketEvent:
    kind: Kind
    time_ns: int  # Unix epoch nanoseconds
    cookie: int
    netns_cookie: int = 0
    owner: Owner | None = None
    family: int = socket.AF_INET
    protocol: int = socket.IPPROTO_TCP
    sock_type: int = socket.SOCK_STREAM
    direction: Direction = Direction.UNKNOWN
    released: bool = False
    old_state: int = 0
    new_state: int = 0
    local_addr: str = ""
    local_port: int = 0
    peer_addr: str = ""
    peer_port: int = 0
    counters: Counters = ZERO_COUNTERS
    tcp: TcpInfo | None = None
    start_ns: int = 0  # connections (TCP_CLOSE, TCP_OPEN, failed connect): when it began
    peer_cookie: int = 0  # TCP: the other end's socket cookie when both ends are on this host
    adopted: bool = False  # the socket existed before the agent (seeded from sock_diag)

    @property
    def transport(self) -> str:
        return PROTO_NAMES.get(self.protocol, str(self.protocol))


@dataclass(frozen=True, slots=True)
class PairStats:
    """Exact counts for one (process, peer, server port, direction, transport) over one interval,
    read from the kernel's aggregate tables, whatever the ring buffer dropped.

    port is the server's: the peer's for outbound, the local one for inbound. lost > 0: that
    many connections (or non-TCP peer flows) have no record of their own; lost_volume is
    their volume. The overflow entry (the table was full) has no peer: peer_addr is "".
    """

    time_ns: int  # end of the interval (when the table was read)
    start_ns: int  # start of the interval
    netns_cookie: int
    owner: Owner | None
    family: int
    protocol: int
    direction: Direction
    peer_addr: str
    port: int
    opened: int = 0
    failed: int = 0
    closed: int = 0
    lost: int = 0
    volume: Counters = ZERO_COUNTERS
    lost_volume: Counters = ZERO_COUNTERS
    overflow: bool = False

    @property
    def kind(self) -> Kind:
        return Kind.PAIR_STATS

    @property
    def transport(self) -> str:
        return PROTO_NAMES.get(self.protocol, str(self.protocol))


class DecodeError(ValueError):
    """A record that cannot be decoded (truncated, unknown type, bad family)."""


_V4_MAPPED = b"\0" * 10 + b"\xff\xff"


def format_addr(family: int, raw: bytes) -> str:
    """Address bytes to text; IPv4-mapped IPv6 addresses are shown as IPv4."""
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == socket.AF_INET6:
        if raw[:12] == _V4_MAPPED:
            return socket.inet_ntop(socket.AF_INET, raw[12:16])
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    raise DecodeError(f"unknown address family {family}")


def decode_comm(raw: bytes) -> str:
    """The kernel's comm, NUL-terminated, bounded to 16 bytes; control characters replaced."""
    text = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else "?" for ch in text)


_DIRECTIONS = {0: Direction.UNKNOWN, 1: Direction.OUTBOUND, 2: Direction.INBOUND}
_KINDS = {k.value: k for k in Kind}
_SOCKET_KINDS = frozenset({Kind.BIND, Kind.CONNECT, Kind.ESTABLISHED, Kind.TCP_CLOSE, Kind.PEER,
                           Kind.RELEASE, Kind.LISTEN, Kind.KERNEL_REPLY})
_CACHE_MAX = 65536


class Interner:
    """Bounded caches for the values many records repeat: owners and address texts.

    Equal records then share one object (memory), and the text of an address or the comm of
    an owner is made once (time). Cleared whole when full: no per-entry bookkeeping.
    """

    def __init__(self, max_entries: int = _CACHE_MAX) -> None:
        self.max_entries = max_entries
        self._addrs: dict[tuple[int, bytes], str] = {}
        self._owners: dict[tuple[int, int, int, int, int, bytes, bool], Owner] = {}
        self._ints: dict[int, int] = {}

    def num(self, v: int) -> int:
        """One object per value (ports, namespace cookies) for what stays in memory long."""
        if len(self._ints) >= self.max_entries:
            self._ints.clear()
        return self._ints.setdefault(v, v)

    def addr(self, family: int, raw: bytes) -> str:
        key = (family, raw)
        text = self._addrs.get(key)
        if text is None:
            text = format_addr(family, raw)
            if len(self._addrs) >= self.max_entries:
                self._addrs.clear()
            self._addrs[key] = text
        return text

    def owner(self, tgid: int, pid: int, uid: int, gid: int, cgroup_id: int, comm: bytes,
              joined: bool) -> Owner:
        key = (tgid, pid, uid, gid, cgroup_id, comm, joined)
        o = self._owners.get(key)
        if o is None:
            o = Owner(tgid, pid, uid, gid, cgroup_id, decode_comm(comm), joined)
            if len(self._owners) >= self.max_entries:
                self._owners.clear()
            self._owners[key] = o
        return o


_DEFAULT_INTERNER = Interner()


_SOCKET_KIND_BY_TYPE = {int(k): k for k in _SOCKET_KINDS}
_TCP_CLOSE = int(Kind.TCP_CLOSE)
_F_OWNER, _F_JOINED, _F_RELEASED = abi.F_OWNER, abi.F_OWNER_JOINED, abi.F_RELEASED
_F_ADOPTED, _F_TCP_INFO = abi.F_ADOPTED, abi.F_TCP_INFO
_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6
_UNPACK_EVENT = abi.EVENT_STRUCT.unpack_from


def decode_event(data: bytes | memoryview, clock_offset_ns: int, offset: int = 0,
                 intern: Interner = _DEFAULT_INTERNER) -> SocketEvent:
    """Decode one socket record (struct op_event) at offset. clock_offset_ns turns
    CLOCK_MONOTONIC into epoch time. The hot path of the agent: kept flat on purpose."""
    if len(data) - offset < abi.EVENT_SIZE:
        raise DecodeError(f"truncated event: {len(data) - offset} bytes, want {abi.EVENT_SIZE}")
    (ts, cookie, netns, tgid, pid, uid, gid, cgroup_id, comm, typ, family, protocol,
     sock_type, direction, flags, old_state, new_state, lport, rport, srtt, laddr, raddr,
     p_out, b_out, pl_out, p_in, b_in, pl_in, acked, received, retrans,
     start, peer_cookie) = _UNPACK_EVENT(data, offset)
    kind = _SOCKET_KIND_BY_TYPE.get(typ)
    if kind is None:
        raise DecodeError(f"unknown event type {typ}")
    if family != _AF_INET and family != _AF_INET6:
        raise DecodeError(f"unknown address family {family} in {kind.name}")
    owner = None
    if flags & _F_OWNER:
        owner = intern.owner(tgid, pid, uid, gid, cgroup_id, comm, bool(flags & _F_JOINED))
    addr = intern.addr
    return SocketEvent(
        kind, ts + clock_offset_ns, cookie, netns, owner, family, protocol, sock_type,
        _DIRECTIONS.get(direction, Direction.UNKNOWN), bool(flags & _F_RELEASED),
        old_state, new_state, addr(family, laddr), lport, addr(family, raddr), rport,
        Counters(p_out, b_out, pl_out, p_in, b_in, pl_in),
        # sock_ops CLOSE always has TCP info; an adopted connection's record sent at its
        # release has it when the agent saw a packet of it (the kernel's totals then).
        TcpInfo(acked, received, retrans, srtt)
        if typ == _TCP_CLOSE and flags & _F_TCP_INFO else None,
        start + clock_offset_ns if start else 0, peer_cookie, bool(flags & _F_ADOPTED))


@dataclass(frozen=True, slots=True)
class DnsPacketEvent:
    """A DNS packet copied from the kernel (cgroup_skb), tied to its socket by cookie.

    payload is what follows the UDP header, or the TCP segment payload for DNS over TCP
    (length-prefixed messages that may be split across segments), cut at the configured
    bound; wire_len is the payload's full length before the cut.
    """

    time_ns: int
    cookie: int
    direction: Direction  # OUTBOUND: sent by this socket; INBOUND: received
    family: int
    protocol: int  # IPPROTO_UDP or IPPROTO_TCP
    local_addr: str
    local_port: int
    peer_addr: str
    peer_port: int
    payload: bytes
    wire_len: int
    owner: Owner | None = None
    netns_cookie: int = 0
    tcp_seq: int | None = None  # TCP: sequence number of the payload's first byte


@dataclass(frozen=True, slots=True)
class ProcessEvent:
    """exec, fork, exit, or an open of a sensitive file (filtered in the kernel)."""

    kind: Kind  # EXEC | FORK | EXIT | FILE_OPEN
    time_ns: int
    tgid: int
    pid: int
    uid: int
    gid: int
    cgroup_id: int
    comm: str
    ppid: int = 0  # FORK: the parent's tgid
    child_pid: int = 0  # FORK: the new task
    path: str = ""  # EXEC: binary; FILE_OPEN: the path as the process passed it
    open_flags: int = 0
    sensitive: bool = True  # FILE_OPEN: matched a sensitive pattern (else: networked mode)


Event = SocketEvent | DnsPacketEvent | ProcessEvent | PairStats

PROCESS_KINDS = frozenset({Kind.EXEC, Kind.FORK, Kind.EXIT, Kind.FILE_OPEN})


def decode_record(data: bytes | memoryview, clock_offset_ns: int, offset: int = 0,
                  length: int | None = None,
                  intern: Interner = _DEFAULT_INTERNER) -> Event:
    """Decode any ring buffer record by its type byte (at the same offset in every layout).

    data[offset : offset + length] is the record (length: to the end of data when None)."""
    if length is None:
        length = len(data) - offset
    if length <= abi.TYPE_OFFSET:
        raise DecodeError(f"truncated record: {length} bytes")
    t = data[offset + abi.TYPE_OFFSET]
    if t == abi.EventType.DNS:
        return decode_dns_event(bytes(data[offset: offset + length]), clock_offset_ns)
    if t in PROCESS_KINDS:
        return decode_process_event(bytes(data[offset: offset + length]), clock_offset_ns)
    if length < abi.EVENT_SIZE:
        raise DecodeError(f"truncated event: {length} bytes, want {abi.EVENT_SIZE}")
    return decode_event(data, clock_offset_ns, offset, intern)


def decode_path(raw: bytes) -> str:
    """A kernel path: NUL-terminated, undecodable bytes escaped, control characters replaced."""
    text = raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def decode_process_event(data: bytes, clock_offset_ns: int) -> ProcessEvent:
    if len(data) < abi.PROC_EVENT_SIZE:
        raise DecodeError(f"truncated process event: {len(data)} bytes, "
                          f"want {abi.PROC_EVENT_SIZE}")
    c = abi.CProcEvent.from_buffer_copy(data[: abi.PROC_EVENT_SIZE])
    return ProcessEvent(
        kind=Kind(c.type), time_ns=c.ts_ns + clock_offset_ns, tgid=c.tgid, pid=c.pid,
        uid=c.uid, gid=c.gid, cgroup_id=c.cgroup_id, comm=decode_comm(bytes(c.comm)),
        ppid=c.ppid, child_pid=c.child_pid, path=decode_path(bytes(c.path)),
        open_flags=c.open_flags, sensitive=bool(c.match & abi.OPEN_SENSITIVE))


def decode_dns_event(data: bytes, clock_offset_ns: int) -> DnsPacketEvent:
    if len(data) < abi.DNS_HEADER_SIZE:
        raise DecodeError(f"truncated DNS event: {len(data)} bytes")
    buf = bytes(data[: abi.DNS_EVENT_SIZE]).ljust(abi.DNS_EVENT_SIZE, b"\0")
    c = abi.CDnsEvent.from_buffer_copy(buf)
    if c.family not in (socket.AF_INET, socket.AF_INET6):
        raise DecodeError(f"unknown address family {c.family} in DNS event")
    n = min(c.payload_len, abi.DNS_PAYLOAD_CAP, len(data) - abi.DNS_HEADER_SIZE)
    owner = None
    if c.flags & abi.F_OWNER:
        o = c.owner
        owner = Owner(o.tgid, o.pid, o.uid, o.gid, o.cgroup_id, decode_comm(bytes(o.comm)),
                      bool(c.flags & abi.F_OWNER_JOINED))
    return DnsPacketEvent(
        time_ns=c.ts_ns + clock_offset_ns,
        cookie=c.cookie,
        direction=Direction(c.direction) if c.direction in (0, 1, 2) else Direction.UNKNOWN,
        family=c.family,
        protocol=c.protocol,
        local_addr=format_addr(c.family, bytes(c.laddr)),
        local_port=c.lport,
        peer_addr=format_addr(c.family, bytes(c.raddr)),
        peer_port=c.rport,
        payload=bytes(c.payload[:n]),
        wire_len=c.wire_len,
        owner=owner,
        netns_cookie=c.netns_cookie,
        tcp_seq=c.tcp_seq if c.protocol == socket.IPPROTO_TCP else None,
    )

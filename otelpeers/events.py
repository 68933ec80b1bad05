"""Typed events: what the pipeline sees, whatever the source (kernel, recording, generator).

Kernel records (otelpeers.abi.CEvent) are decoded here into frozen dataclasses. Two event
kinds are made in user space by the kernel source itself (PEER_STATS and SOCK_STATS, reads
of the kernel's volume tables) so that a recording replays exactly what the live agent saw.
"""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass

from otelpeers import abi


class Kind(enum.IntEnum):
    SOCK_CREATE = abi.EventType.SOCK_CREATE
    BIND = abi.EventType.BIND
    CONNECT = abi.EventType.CONNECT
    ESTABLISHED = abi.EventType.ESTABLISHED
    TCP_CLOSE = abi.EventType.TCP_CLOSE
    PEER = abi.EventType.PEER
    RELEASE = abi.EventType.RELEASE
    LISTEN = abi.EventType.LISTEN
    DNS = abi.EventType.DNS
    EXEC = abi.EventType.EXEC
    FORK = abi.EventType.FORK
    EXIT = abi.EventType.EXIT
    FILE_OPEN = abi.EventType.FILE_OPEN
    # Made in user space from reads of the kernel's tables.
    PEER_STATS = 100  # final or periodic volume of one (socket, peer) of a non-TCP socket
    SOCK_STATS = 101  # periodic volume of a live socket
    SOCK_GONE = 102  # a live TCP socket's kernel entry vanished without a CLOSE being seen


Direction = abi.Direction

PROTO_NAMES = {
    socket.IPPROTO_TCP: "tcp",
    socket.IPPROTO_UDP: "udp",
    socket.IPPROTO_ICMP: "icmp",
    socket.IPPROTO_ICMPV6: "icmp",
}

TCP_STATE_NAMES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
    12: "NEW_SYN_RECV",
}


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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class TcpInfo:
    bytes_acked: int
    bytes_received: int
    total_retrans: int
    srtt_us: int


@dataclass(frozen=True, slots=True)
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


def decode_event(data: bytes, clock_offset_ns: int) -> SocketEvent:
    """Decode one ring buffer record. clock_offset_ns turns CLOCK_MONOTONIC into epoch time."""
    if len(data) < abi.EVENT_SIZE:
        raise DecodeError(f"truncated event: {len(data)} bytes, want {abi.EVENT_SIZE}")
    (ts, cookie, netns, tgid, pid, uid, gid, cgroup_id, comm, typ, family, protocol,
     sock_type, direction, flags, old_state, new_state, lport, rport, srtt, laddr, raddr,
     p_out, b_out, pl_out, p_in, b_in, pl_in, acked, received, retrans,
     _pad) = abi.EVENT_STRUCT.unpack_from(data)
    kind = _KINDS.get(typ)
    if kind is None or kind in PROCESS_KINDS or kind == Kind.DNS:
        raise DecodeError(f"unknown event type {typ}")
    if family != socket.AF_INET and family != socket.AF_INET6:
        raise DecodeError(f"unknown address family {family} in {kind.name}")
    owner = None
    if flags & abi.F_OWNER:
        owner = Owner(tgid, pid, uid, gid, cgroup_id, decode_comm(comm),
                      bool(flags & abi.F_OWNER_JOINED))
    tcp = None
    if kind == Kind.TCP_CLOSE:
        tcp = TcpInfo(acked, received, retrans, srtt)
    return SocketEvent(
        kind=kind,
        time_ns=ts + clock_offset_ns,
        cookie=cookie,
        netns_cookie=netns,
        owner=owner,
        family=family,
        protocol=protocol,
        sock_type=sock_type,
        direction=_DIRECTIONS.get(direction, Direction.UNKNOWN),
        released=bool(flags & abi.F_RELEASED),
        old_state=old_state,
        new_state=new_state,
        local_addr=format_addr(family, laddr),
        local_port=lport,
        peer_addr=format_addr(family, raddr),
        peer_port=rport,
        counters=Counters(p_out, b_out, pl_out, p_in, b_in, pl_in),
        tcp=tcp,
    )


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


Event = SocketEvent | DnsPacketEvent | ProcessEvent

PROCESS_KINDS = frozenset({Kind.EXEC, Kind.FORK, Kind.EXIT, Kind.FILE_OPEN})


def decode_record(data: bytes, clock_offset_ns: int) -> Event:
    """Decode any ring buffer record by its type byte (at the same offset in every layout)."""
    if len(data) <= abi.TYPE_OFFSET:
        raise DecodeError(f"truncated record: {len(data)} bytes")
    t = data[abi.TYPE_OFFSET]
    if t == abi.EventType.DNS:
        return decode_dns_event(data, clock_offset_ns)
    if t in PROCESS_KINDS:
        return decode_process_event(data, clock_offset_ns)
    return decode_event(data, clock_offset_ns)


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

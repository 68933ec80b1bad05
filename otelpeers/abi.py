"""The kernel/user ABI: mirrors of bpf/otelpeers.h, kept in one place.

Every struct that crosses between kernel and user space (ring buffer records, and the keys and
values of every map the agent reads or writes) is mirrored here twice: a ctypes Structure (to
build values field by field, and for tests) and a Layout, a struct format with the C name of
every field, used on the hot paths (struct is several times faster than ctypes).
tests/unit/test_abi.py compiles the header with the system C compiler and checks the size and
every field offset of both mirrors, so a change on one side cannot silently skew the other.
"""

from __future__ import annotations

import ctypes
import enum
import struct
from dataclasses import dataclass, field
from pathlib import Path

ABI_VERSION = 2
COMM_LEN = 16
ADDR_LEN = 16
EVENT_SIZE = 200

HEADER_PATH = Path(__file__).resolve().parent.parent / "bpf" / "otelpeers.h"


class EventType(enum.IntEnum):
    """enum op_event_type: the type byte of every ring buffer record."""

    SOCK_CREATE = 1  # reserved: no event
    BIND = 2
    CONNECT = 3  # reserved since ABI 2 (format-1 recordings have it)
    ESTABLISHED = 4  # reserved since ABI 2 (format-1 recordings have it)
    TCP_CLOSE = 5
    PEER = 6
    RELEASE = 7
    LISTEN = 8
    DNS = 9
    EXEC = 10
    FORK = 11
    EXIT = 12
    FILE_OPEN = 13
    KERNEL_REPLY = 14  # the kernel answered for a closed port (RST, ICMP error): owner kernel


EVENT_TYPE_SLOTS = 15  # OP_EV_MAX
TYPE_OFFSET = 64  # the type byte sits here in every record layout
DROP_PEER_TABLE_FULL = EVENT_TYPE_SLOTS  # OP_DROP_PEER_TABLE_FULL
DROP_SOCK_EVICTED = EVENT_TYPE_SLOTS + 1  # OP_DROP_SOCK_EVICTED
DROP_SLOTS = EVENT_TYPE_SLOTS + 2


class Direction(enum.IntEnum):
    UNKNOWN = 0
    OUTBOUND = 1
    INBOUND = 2


F_OWNER = 0x1
F_OWNER_JOINED = 0x2
F_RELEASED = 0x4
F_ADOPTED = 0x8  # seeded from sock_diag: the socket existed before the agent
F_KERNEL = 0x10  # sent by the kernel itself (owner tgid 0, comm "kernel")
F_TCP_INFO = 0x20  # tcp_* and srtt_us are valid (sock_ops CLOSE; adopted: at its last packet)
S_TCP_TRACKED = 0x100
S_TCP_CLOSED = 0x200
S_CONN = 0x400
S_ESTABLISHED = 0x800
S_ENDED = 0x1000
AGG_OVERFLOW_BYTE = 0xFF


@dataclass(frozen=True)
class Layout:
    """A C struct as a little-endian struct format, one (C field path, format) per field.

    Padding is written as ("_padN", "Nx"): it takes space and unpacks to nothing. Nested
    fields use C designators ("owner.tgid"), which offsetof() accepts, so every offset is
    checked against the compiler.
    """

    cname: str
    fields: tuple[tuple[str, str], ...]
    struct: struct.Struct = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "struct",
                           struct.Struct("<" + "".join(f for _, f in self.fields)))

    @property
    def size(self) -> int:
        return self.struct.size

    def offsets(self) -> dict[str, int]:
        out, fmt = {}, "<"
        for name, f in self.fields:
            out[name] = struct.calcsize(fmt)
            fmt += f
        return out

    def names(self) -> list[str]:
        """Field names in unpack order (padding left out)."""
        return [n for n, f in self.fields if not f.endswith("x")]


_OWNER = (("owner.tgid", "I"), ("owner.pid", "I"), ("owner.uid", "I"), ("owner.gid", "I"),
          ("owner.cgroup_id", "Q"), ("owner.comm", "16s"))


def _counters(prefix: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}.{n}", "Q") for n in (
        "packets_out", "bytes_out", "payload_out", "packets_in", "bytes_in", "payload_in"))


EVENT = Layout("op_event", (
    ("ts_ns", "Q"), ("cookie", "Q"), ("netns_cookie", "Q"), *_OWNER,
    ("type", "B"), ("family", "B"), ("protocol", "B"), ("sock_type", "B"), ("direction", "B"),
    ("flags", "B"), ("old_state", "B"), ("new_state", "B"), ("lport", "H"), ("rport", "H"),
    ("srtt_us", "I"), ("laddr", "16s"), ("raddr", "16s"), *_counters("counters"),
    ("tcp_bytes_acked", "Q"), ("tcp_bytes_received", "Q"), ("tcp_total_retrans", "I"),
    ("_pad0", "4x"), ("start_ns", "Q"), ("peer_cookie", "Q"),
))
EVENT_STRUCT = EVENT.struct

SOCK = Layout("op_sock", (
    *_OWNER, *_counters("c"), ("netns_cookie", "Q"), ("start_ns", "Q"), ("peer_cookie", "Q"),
    ("last_ns", "Q"), ("flags", "I"), ("bound_port", "H"), ("lport", "H"), ("rport", "H"),
    ("family", "B"), ("protocol", "B"), ("sock_type", "B"), ("direction", "B"),
    ("_pad0", "2x"), ("laddr", "16s"), ("raddr", "16s"),
    ("tcp_bytes_acked", "Q"), ("tcp_bytes_received", "Q"), ("tcp_total_retrans", "I"),
    ("srtt_us", "I"),
))
PEER_KEY = Layout("op_peer_key", (
    ("cookie", "Q"), ("raddr", "16s"), ("rport", "H"), ("protocol", "B"), ("family", "B"),
    ("_pad0", "4x"),
))
PEER = Layout("op_peer", (*_counters("c"), ("last_ns", "Q")))
AGG_KEY = Layout("op_agg_key", (
    ("netns_cookie", "Q"), ("tgid", "I"), ("port", "H"), ("family", "B"), ("protocol", "B"),
    ("direction", "B"), ("_pad0", "7x"), ("raddr", "16s"),
))
AGG = Layout("op_agg", (
    *_OWNER, ("opened", "Q"), ("failed", "Q"), ("closed", "Q"), ("lost", "Q"),
    *_counters("volume"), *_counters("lost_volume"),
))
LISTENER_KEY = Layout("op_listener_key", (("netns_cookie", "Q"), ("port", "H"), ("_pad0", "6x")))
TUPLE_KEY = Layout("op_tuple_key", (("laddr", "16s"), ("raddr", "16s"), ("lport", "H"),
                                    ("rport", "H"), ("_pad0", "4x")))
PATH_PREFIX = Layout("op_path_prefix", (("prefixlen", "I"), ("data", "64s")))
BASENAME = Layout("op_basename", (("name", "32s"),))

LAYOUTS = (EVENT, SOCK, PEER_KEY, PEER, AGG_KEY, AGG, LISTENER_KEY, TUPLE_KEY, PATH_PREFIX,
           BASENAME)
AGG_OVERFLOW_KEY = bytes([AGG_OVERFLOW_BYTE]) * AGG_KEY.size


# ---- ctypes mirrors ----------------------------------------------------------------------------
class COwner(ctypes.Structure):
    _fields_ = [
        ("tgid", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("gid", ctypes.c_uint32),
        ("cgroup_id", ctypes.c_uint64),
        ("comm", ctypes.c_char * COMM_LEN),
    ]


class CCounters(ctypes.Structure):
    _fields_ = [
        ("packets_out", ctypes.c_uint64),
        ("bytes_out", ctypes.c_uint64),
        ("payload_out", ctypes.c_uint64),
        ("packets_in", ctypes.c_uint64),
        ("bytes_in", ctypes.c_uint64),
        ("payload_in", ctypes.c_uint64),
    ]


class CEvent(ctypes.Structure):
    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("cookie", ctypes.c_uint64),
        ("netns_cookie", ctypes.c_uint64),
        ("owner", COwner),
        ("type", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("protocol", ctypes.c_uint8),
        ("sock_type", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("old_state", ctypes.c_uint8),
        ("new_state", ctypes.c_uint8),
        ("lport", ctypes.c_uint16),
        ("rport", ctypes.c_uint16),
        ("srtt_us", ctypes.c_uint32),
        ("laddr", ctypes.c_uint8 * ADDR_LEN),
        ("raddr", ctypes.c_uint8 * ADDR_LEN),
        ("counters", CCounters),
        ("tcp_bytes_acked", ctypes.c_uint64),
        ("tcp_bytes_received", ctypes.c_uint64),
        ("tcp_total_retrans", ctypes.c_uint32),
        ("_pad0", ctypes.c_uint32),
        ("start_ns", ctypes.c_uint64),
        ("peer_cookie", ctypes.c_uint64),
    ]


DNS_PAYLOAD_CAP = 1024
DNS_HEADER_SIZE = 120
DNS_EVENT_SIZE = DNS_HEADER_SIZE + DNS_PAYLOAD_CAP


class CDnsEvent(ctypes.Structure):
    """struct op_dns_event; payload_len bytes of payload are valid."""

    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("cookie", ctypes.c_uint64),
        ("netns_cookie", ctypes.c_uint64),
        ("owner", COwner),
        ("type", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("protocol", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("_pad0", ctypes.c_uint8),
        ("payload_len", ctypes.c_uint16),
        ("lport", ctypes.c_uint16),
        ("rport", ctypes.c_uint16),
        ("wire_len", ctypes.c_uint32),
        ("tcp_seq", ctypes.c_uint32),
        ("_pad1", ctypes.c_uint32),
        ("laddr", ctypes.c_uint8 * ADDR_LEN),
        ("raddr", ctypes.c_uint8 * ADDR_LEN),
        ("payload", ctypes.c_uint8 * DNS_PAYLOAD_CAP),
    ]


PATH_LEN = 256
OPEN_SENSITIVE = 0x1
OPEN_NETWORKED = 0x2
PROC_EVENT_SIZE = 328
PREFIX_LEN = 64
BASENAME_LEN = 32


class CProcEvent(ctypes.Structure):
    """struct op_proc_event: exec, fork, exit, sensitive file open."""

    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("cgroup_id", ctypes.c_uint64),
        ("tgid", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("ppid", ctypes.c_uint32),
        ("child_pid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("gid", ctypes.c_uint32),
        ("comm", ctypes.c_char * COMM_LEN),
        ("open_flags", ctypes.c_int32),
        ("match", ctypes.c_uint32),
        ("type", ctypes.c_uint8),
        ("_pad1", ctypes.c_uint8 * 7),
        ("path", ctypes.c_char * PATH_LEN),
    ]


class CPathPrefix(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("data", ctypes.c_char * PREFIX_LEN)]


class CBasename(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * BASENAME_LEN)]


class CSock(ctypes.Structure):
    """struct op_sock: the sockets map value."""

    _fields_ = [
        ("owner", COwner),
        ("c", CCounters),
        ("netns_cookie", ctypes.c_uint64),
        ("start_ns", ctypes.c_uint64),
        ("peer_cookie", ctypes.c_uint64),
        ("last_ns", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("bound_port", ctypes.c_uint16),
        ("lport", ctypes.c_uint16),
        ("rport", ctypes.c_uint16),
        ("family", ctypes.c_uint8),
        ("protocol", ctypes.c_uint8),
        ("sock_type", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("_pad0", ctypes.c_uint8 * 2),
        ("laddr", ctypes.c_uint8 * ADDR_LEN),
        ("raddr", ctypes.c_uint8 * ADDR_LEN),
        ("tcp_bytes_acked", ctypes.c_uint64),
        ("tcp_bytes_received", ctypes.c_uint64),
        ("tcp_total_retrans", ctypes.c_uint32),
        ("srtt_us", ctypes.c_uint32),
    ]


class CPeerKey(ctypes.Structure):
    """struct op_peer_key: the peers map key."""

    _fields_ = [
        ("cookie", ctypes.c_uint64),
        ("raddr", ctypes.c_uint8 * ADDR_LEN),
        ("rport", ctypes.c_uint16),
        ("protocol", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("_pad0", ctypes.c_uint32),
    ]


class CPeer(ctypes.Structure):
    _fields_ = [("c", CCounters), ("last_ns", ctypes.c_uint64)]


class CListenerKey(ctypes.Structure):
    _fields_ = [("netns_cookie", ctypes.c_uint64), ("port", ctypes.c_uint16),
                ("_pad0", ctypes.c_uint16), ("_pad1", ctypes.c_uint32)]


class CListener(ctypes.Structure):
    _fields_ = [("owner", COwner), ("cookie", ctypes.c_uint64)]


class CTupleKey(ctypes.Structure):
    _fields_ = [("laddr", ctypes.c_uint8 * ADDR_LEN), ("raddr", ctypes.c_uint8 * ADDR_LEN),
                ("lport", ctypes.c_uint16), ("rport", ctypes.c_uint16),
                ("_pad0", ctypes.c_uint32)]


class CAggKey(ctypes.Structure):
    _fields_ = [
        ("netns_cookie", ctypes.c_uint64),
        ("tgid", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("family", ctypes.c_uint8),
        ("protocol", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("_pad0", ctypes.c_uint8 * 7),
        ("raddr", ctypes.c_uint8 * ADDR_LEN),
    ]


class CAgg(ctypes.Structure):
    _fields_ = [
        ("owner", COwner),
        ("opened", ctypes.c_uint64),
        ("failed", ctypes.c_uint64),
        ("closed", ctypes.c_uint64),
        ("lost", ctypes.c_uint64),
        ("volume", CCounters),
        ("lost_volume", CCounters),
    ]


# C struct name -> ctypes mirror (every one is checked against the header).
CTYPES = {
    "op_owner": COwner, "op_counters": CCounters, "op_event": CEvent,
    "op_dns_event": CDnsEvent, "op_proc_event": CProcEvent, "op_path_prefix": CPathPrefix,
    "op_basename": CBasename, "op_sock": CSock, "op_peer_key": CPeerKey, "op_peer": CPeer,
    "op_listener_key": CListenerKey, "op_listener": CListener, "op_tuple_key": CTupleKey,
    "op_agg_key": CAggKey, "op_agg": CAgg,
}

for _layout in LAYOUTS:
    assert ctypes.sizeof(CTYPES[_layout.cname]) == _layout.size, _layout.cname
assert EVENT.size == EVENT_SIZE
assert ctypes.sizeof(CDnsEvent) == DNS_EVENT_SIZE, ctypes.sizeof(CDnsEvent)
assert CDnsEvent.payload.offset == DNS_HEADER_SIZE
assert ctypes.sizeof(CProcEvent) == PROC_EVENT_SIZE, ctypes.sizeof(CProcEvent)
assert CEvent.type.offset == CDnsEvent.type.offset == CProcEvent.type.offset == TYPE_OFFSET

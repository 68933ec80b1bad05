"""The kernel/user event ABI: a ctypes mirror of bpf/otelpeers.h, kept in one place.

tests/unit/test_abi.py compiles the header with the system C compiler and checks that every
offset and size here matches, so a change on one side cannot silently skew the other.
"""

from __future__ import annotations

import ctypes
import enum
import struct
from pathlib import Path

ABI_VERSION = 1
COMM_LEN = 16
ADDR_LEN = 16
EVENT_SIZE = 184

HEADER_PATH = Path(__file__).resolve().parent.parent / "bpf" / "otelpeers.h"


class EventType(enum.IntEnum):
    SOCK_CREATE = 1
    BIND = 2
    CONNECT = 3
    ESTABLISHED = 4
    TCP_CLOSE = 5
    PEER = 6
    RELEASE = 7
    LISTEN = 8
    DNS = 9
    EXEC = 10
    FORK = 11
    EXIT = 12
    FILE_OPEN = 13


EVENT_TYPE_SLOTS = 14  # OP_EV_MAX
TYPE_OFFSET = 64  # the type byte sits here in every record layout
DROP_SLOTS = EVENT_TYPE_SLOTS + 1
DROP_PEER_TABLE_FULL = EVENT_TYPE_SLOTS


class Direction(enum.IntEnum):
    UNKNOWN = 0
    OUTBOUND = 1
    INBOUND = 2


F_OWNER = 0x1
F_OWNER_JOINED = 0x2
F_RELEASED = 0x4


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


class CPeerKey(ctypes.Structure):
    """Key of the kernel's per-(socket, peer) volume table for non-TCP sockets."""

    _fields_ = [
        ("cookie", ctypes.c_uint64),
        ("raddr", ctypes.c_uint8 * ADDR_LEN),
        ("rport", ctypes.c_uint16),
        ("protocol", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("_pad0", ctypes.c_uint32),
    ]


# The hot path decodes with struct (several times faster than ctypes); this format is the
# same layout as CEvent, field for field, and the assertions below keep the two in step.
EVENT_STRUCT = struct.Struct("<QQQIIIIQ16sBBBBBBBBHHI16s16s6QQQII")

assert ctypes.sizeof(CEvent) == EVENT_SIZE == EVENT_STRUCT.size, ctypes.sizeof(CEvent)
assert ctypes.sizeof(CDnsEvent) == DNS_EVENT_SIZE, ctypes.sizeof(CDnsEvent)
assert CDnsEvent.payload.offset == DNS_HEADER_SIZE
assert ctypes.sizeof(CProcEvent) == PROC_EVENT_SIZE, ctypes.sizeof(CProcEvent)
assert CEvent.type.offset == CDnsEvent.type.offset == CProcEvent.type.offset == TYPE_OFFSET

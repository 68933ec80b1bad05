"""NETLINK_SOCK_DIAG (inet_diag) on the wire: dump requests and defensive reply parsing.

Layouts are the stable UAPI ones (linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h,
linux/tcp.h), packed and unpacked with struct; tests/unit/test_sockdiag_parse.py compiles
the system headers and checks every offset used here. Netlink is host byte order, except
ports and addresses (network order). Parsing never raises on kernel data: a truncated or
malformed message is counted in DumpCounters and skipped; a bad attribute ends the
attributes of its message only.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import NamedTuple

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

# inet_diag extensions: requested with bit (1 << (ext - 1)) in idiag_ext.
INET_DIAG_MEMINFO = 1
INET_DIAG_INFO = 2
INET_DIAG_SKMEMINFO = 7
INET_DIAG_SHUTDOWN = 8
INET_DIAG_PROTOCOL = 10
INET_DIAG_SKV6ONLY = 11
INET_DIAG_CGROUP_ID = 21

ALL_STATES = 0xFFFFFFFF
INET_DIAG_NOCOOKIE = 0xFFFFFFFF

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid: 16 bytes
NLATTR = struct.Struct("=HH")  # len, type
# inet_diag_req_v2: family, protocol, ext, pad (raw: sdiag_raw_protocol), states, sockid.
REQ_V2 = struct.Struct("=BBBBI48x")
# inet_diag_msg: family state timer retrans | sport dport (be16) src[16] dst[16] if
# cookie[2] | expires rqueue wqueue uid inode. 72 bytes.
DIAG_MSG = struct.Struct("=BBBBHH16s16sIIIIIIII")
DIAG_MSG_LEN = DIAG_MSG.size


def nlmsg_align(n: int) -> int:
    return (n + 3) & ~3


def cookie_from_words(lo: int, hi: int) -> int:
    """idiag_cookie[2] -> the u64 bpf_get_socket_cookie() returns: the kernel stores the
    cookie as cookie[0] = low 32 bits, cookie[1] = high 32 bits (sock_diag_save_cookie)."""
    return (hi << 32) | lo


def dump_request(family: int, protocol: int, *, seq: int, ext: int = 0,
                 raw_protocol: int = 0, states: int = ALL_STATES) -> bytes:
    """A SOCK_DIAG_BY_FAMILY dump request (nlmsghdr + inet_diag_req_v2)."""
    body = REQ_V2.pack(family, protocol, ext & 0xFF, raw_protocol, states)
    hdr = NLMSGHDR.pack(NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY,
                        NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    return hdr + body


def ext_bit(ext: int) -> int:
    return 1 << (ext - 1)


# ---- tcp_info: fields of the stable UAPI layout, read by offset --------------------------
# (name, offset, struct code). Bit fields (wscale, app_limited) are left out: their layout
# depends on the compiler and byte order.
TCP_INFO_FIELDS: tuple[tuple[str, int, str], ...] = (
    ("state", 0, "B"),
    ("ca_state", 1, "B"),
    ("retransmits", 2, "B"),
    ("probes", 3, "B"),
    ("backoff", 4, "B"),
    ("options", 5, "B"),
    ("rto_us", 8, "I"),
    ("ato_us", 12, "I"),
    ("snd_mss", 16, "I"),
    ("rcv_mss", 20, "I"),
    ("unacked", 24, "I"),
    ("sacked", 28, "I"),
    ("lost", 32, "I"),
    ("retrans", 36, "I"),
    ("last_data_sent_ms", 44, "I"),
    ("last_data_recv_ms", 52, "I"),
    ("last_ack_recv_ms", 56, "I"),
    ("pmtu", 60, "I"),
    ("rcv_ssthresh", 64, "I"),
    ("rtt_us", 68, "I"),  # smoothed RTT (srtt)
    ("rttvar_us", 72, "I"),
    ("snd_ssthresh", 76, "I"),
    ("snd_cwnd", 80, "I"),
    ("advmss", 84, "I"),
    ("reordering", 88, "I"),
    ("rcv_rtt_us", 92, "I"),
    ("rcv_space", 96, "I"),
    ("total_retrans", 100, "I"),
    ("pacing_rate", 104, "Q"),
    ("max_pacing_rate", 112, "Q"),
    ("bytes_acked", 120, "Q"),
    ("bytes_received", 128, "Q"),
    ("segs_out", 136, "I"),
    ("segs_in", 140, "I"),
    ("notsent_bytes", 144, "I"),
    ("min_rtt_us", 148, "I"),
    ("data_segs_in", 152, "I"),
    ("data_segs_out", 156, "I"),
    ("delivery_rate", 160, "Q"),
    ("busy_time_us", 168, "Q"),
    ("rwnd_limited_us", 176, "Q"),
    ("sndbuf_limited_us", 184, "Q"),
    ("delivered", 192, "I"),
    ("delivered_ce", 196, "I"),
    ("bytes_sent", 200, "Q"),
    ("bytes_retrans", 208, "Q"),
    ("dsack_dups", 216, "I"),
    ("reord_seen", 220, "I"),
    ("rcv_ooopack", 224, "I"),
    ("snd_wnd", 228, "I"),
)
TCP_INFO_KNOWN_LEN = 232  # end of the last field above (Linux >= 5.4 sends at least this)


def _fast_struct() -> struct.Struct:
    fmt, pos = "=", 0
    for _, offset, code in TCP_INFO_FIELDS:
        if offset > pos:
            fmt += f"{offset - pos}x"
        fmt += code
        pos = offset + struct.calcsize("=" + code)
    return struct.Struct(fmt)


_TCP_INFO_STRUCT = _fast_struct()
_FIELD_STRUCTS = tuple((name, offset, struct.Struct("=" + code))
                       for name, offset, code in TCP_INFO_FIELDS)


class DiagTcpInfo(NamedTuple):
    """struct tcp_info as the kernel reported it. A field the kernel's (shorter) struct did
    not include is None. `size` is the attribute's length. Immutable (a NamedTuple: one is
    made per TCP socket, and a 51-field frozen dataclass costs ten times more to build)."""

    size: int
    state: int | None = None
    ca_state: int | None = None
    retransmits: int | None = None
    probes: int | None = None
    backoff: int | None = None
    options: int | None = None
    rto_us: int | None = None
    ato_us: int | None = None
    snd_mss: int | None = None
    rcv_mss: int | None = None
    unacked: int | None = None
    sacked: int | None = None
    lost: int | None = None
    retrans: int | None = None
    last_data_sent_ms: int | None = None
    last_data_recv_ms: int | None = None
    last_ack_recv_ms: int | None = None
    pmtu: int | None = None
    rcv_ssthresh: int | None = None
    rtt_us: int | None = None
    rttvar_us: int | None = None
    snd_ssthresh: int | None = None
    snd_cwnd: int | None = None
    advmss: int | None = None
    reordering: int | None = None
    rcv_rtt_us: int | None = None
    rcv_space: int | None = None
    total_retrans: int | None = None
    pacing_rate: int | None = None
    max_pacing_rate: int | None = None
    bytes_acked: int | None = None
    bytes_received: int | None = None
    segs_out: int | None = None
    segs_in: int | None = None
    notsent_bytes: int | None = None
    min_rtt_us: int | None = None
    data_segs_in: int | None = None
    data_segs_out: int | None = None
    delivery_rate: int | None = None
    busy_time_us: int | None = None
    rwnd_limited_us: int | None = None
    sndbuf_limited_us: int | None = None
    delivered: int | None = None
    delivered_ce: int | None = None
    bytes_sent: int | None = None
    bytes_retrans: int | None = None
    dsack_dups: int | None = None
    reord_seen: int | None = None
    rcv_ooopack: int | None = None
    snd_wnd: int | None = None


def parse_tcp_info(data: bytes | memoryview) -> DiagTcpInfo:
    """Every known field that lies wholly inside `data`; the others stay None."""
    n = len(data)
    if n >= TCP_INFO_KNOWN_LEN:
        return _new_tcp_info(DiagTcpInfo, (n, *_TCP_INFO_STRUCT.unpack_from(data, 0)))
    values = {name: st.unpack_from(data, off)[0]
              for name, off, st in _FIELD_STRUCTS if off + st.size <= n}
    return DiagTcpInfo(n, **values)


_new_tcp_info = tuple.__new__

SK_MEMINFO_NAMES = ("rmem_alloc", "rcvbuf", "wmem_alloc", "sndbuf", "fwd_alloc",
                    "wmem_queued", "optmem", "backlog", "drops")


class SkMemInfo(NamedTuple):
    """INET_DIAG_SKMEMINFO (u32 array, SK_MEMINFO_*); fields the kernel did not send: None."""

    rmem_alloc: int | None = None
    rcvbuf: int | None = None
    wmem_alloc: int | None = None
    sndbuf: int | None = None
    fwd_alloc: int | None = None
    wmem_queued: int | None = None
    optmem: int | None = None
    backlog: int | None = None
    drops: int | None = None


def parse_skmeminfo(data: bytes | memoryview) -> SkMemInfo:
    count = min(len(data) // 4, len(SK_MEMINFO_NAMES))
    values = struct.unpack_from(f"={count}I", data, 0)
    return SkMemInfo(**dict(zip(SK_MEMINFO_NAMES, values, strict=False)))


# ---- one socket as the kernel described it -----------------------------------------------
class DiagMessage(NamedTuple):
    """One inet_diag_msg and the attributes otelpeers uses. A NamedTuple: made once per
    socket on a hot path, and turned into an ExistingSocket later."""

    family: int
    state: int
    timer: int
    retrans: int
    local_port: int
    remote_port: int
    local_raw: bytes  # 16 bytes as sent; IPv4 uses the first 4
    remote_raw: bytes
    interface: int
    cookie: int  # 0 when the kernel gave INET_DIAG_NOCOOKIE
    expires_ms: int
    rqueue: int
    wqueue: int
    uid: int
    inode: int
    protocol: int | None  # INET_DIAG_PROTOCOL when sent (raw sockets), else None
    tcp_info: DiagTcpInfo | None
    meminfo: SkMemInfo | None
    shutdown: int | None
    v6only: bool | None
    cgroup_id: int | None  # INET_DIAG_CGROUP_ID: the cgroup-v2 id the socket was made in


@dataclass
class DumpCounters:
    """What went wrong (or was odd) while reading dumps; every skip is counted here."""

    messages: int = 0  # SOCK_DIAG_BY_FAMILY messages seen
    truncated: int = 0  # message shorter than inet_diag_msg: skipped
    malformed: int = 0  # bad netlink header (length): the rest of that read is skipped
    bad_attributes: int = 0  # bad attribute length: that message's attributes end there
    short_attributes: int = 0  # a known attribute too short for its type: ignored
    foreign_seq: int = 0  # replies to another request: skipped
    unknown_type: int = 0  # netlink message types other than diag/done/error
    interrupted: int = 0  # NLM_F_DUMP_INTR: the table changed during the dump
    recv_truncated: int = 0  # a read did not fit the buffer (MSG_TRUNC)
    over_limit: int = 0  # sockets dropped because the caller's limit was reached
    no_cookie: int = 0  # INET_DIAG_NOCOOKIE
    errors: dict[str, int] = field(default_factory=dict)  # errno name -> count

    def error(self, name: str) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1

    def merge(self, other: DumpCounters) -> None:
        for name in ("messages", "truncated", "malformed", "bad_attributes",
                     "short_attributes", "foreign_seq", "unknown_type", "interrupted",
                     "recv_truncated", "over_limit", "no_cookie"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v


class DumpError(OSError):
    """The kernel refused a dump (NLMSG_ERROR), e.g. ENOENT when a protocol has no diag
    handler (raw sockets without CONFIG_INET_RAW_DIAG)."""


_NTOHS = socket.ntohs
_NLATTR_UNPACK = NLATTR.unpack_from
_WANTED = frozenset({INET_DIAG_INFO, INET_DIAG_SKMEMINFO, INET_DIAG_CGROUP_ID,
                     INET_DIAG_PROTOCOL, INET_DIAG_SHUTDOWN, INET_DIAG_SKV6ONLY})
_U8 = struct.Struct("=B")
_U64 = struct.Struct("=Q")
_I32 = struct.Struct("=i")


def parse_diag_message(payload: memoryview, counters: DumpCounters) -> DiagMessage | None:
    """An inet_diag_msg with its attributes; None (counted) when too short."""
    if len(payload) < DIAG_MSG_LEN:
        counters.truncated += 1
        return None
    (family, state, timer, retrans, sport, dport, src, dst, ifindex, c0, c1, expires,
     rqueue, wqueue, uid, inode) = DIAG_MSG.unpack_from(payload, 0)
    if c0 == INET_DIAG_NOCOOKIE and c1 == INET_DIAG_NOCOOKIE:
        counters.no_cookie += 1
        cookie = 0
    else:
        cookie = cookie_from_words(c0, c1)
    protocol: int | None = None
    tcp_info: DiagTcpInfo | None = None
    meminfo: SkMemInfo | None = None
    shutdown: int | None = None
    v6only: bool | None = None
    cgroup_id: int | None = None
    pos, end = DIAG_MSG_LEN, len(payload)
    while pos + 4 <= end:
        alen, atype = _NLATTR_UNPACK(payload, pos)
        if alen < 4 or pos + alen > end:
            counters.bad_attributes += 1
            break
        atype &= NLA_TYPE_MASK
        if atype in _WANTED:
            data = payload[pos + 4: pos + alen]
            if atype == INET_DIAG_INFO:
                tcp_info = parse_tcp_info(data)
            elif atype == INET_DIAG_SKMEMINFO:
                meminfo = parse_skmeminfo(data)
            elif atype == INET_DIAG_CGROUP_ID:
                if len(data) >= 8:
                    cgroup_id = _U64.unpack_from(data)[0]
                else:
                    counters.short_attributes += 1
            elif not data:
                counters.short_attributes += 1
            elif atype == INET_DIAG_PROTOCOL:
                protocol = data[0]
            elif atype == INET_DIAG_SHUTDOWN:
                shutdown = data[0]
            else:
                v6only = bool(data[0])
        pos += (alen + 3) & ~3
    return DiagMessage(family, state, timer, retrans, _NTOHS(sport), _NTOHS(dport), src, dst,
                       ifindex, cookie, expires, rqueue, wqueue, uid, inode, protocol,
                       tcp_info, meminfo, shutdown, v6only, cgroup_id)


def parse_dump_chunk(buf: bytes | memoryview, seq: int, out: list[DiagMessage],
                     counters: DumpCounters) -> bool:
    """Parse one read of a dump into `out`. Returns True once NLMSG_DONE was seen.

    Raises DumpError when the kernel refused the request or ended the dump with an error
    (sockets parsed before the error stay in `out`)."""
    view = memoryview(buf)
    pos, end = 0, len(view)
    while pos + NLMSGHDR.size <= end:
        mlen, mtype, mflags, mseq, _ = NLMSGHDR.unpack_from(view, pos)
        if mlen < NLMSGHDR.size or pos + mlen > end:
            counters.malformed += 1
            return False
        body = view[pos + NLMSGHDR.size: pos + mlen]
        pos += nlmsg_align(mlen)
        if mseq != seq:
            counters.foreign_seq += 1
            continue
        if mflags & NLM_F_DUMP_INTR:
            counters.interrupted += 1
        if mtype == SOCK_DIAG_BY_FAMILY:
            counters.messages += 1
            msg = parse_diag_message(body, counters)
            if msg is not None:
                out.append(msg)
        elif mtype == NLMSG_DONE:
            # The dump's own error (e.g. ENOENT: no handler for the protocol) is here.
            status = _I32.unpack_from(body)[0] if len(body) >= 4 else 0
            if status < 0:
                raise DumpError(-status, f"sock_diag dump failed: {_errno_name(-status)}")
            return True
        elif mtype == NLMSG_ERROR:
            err = -_I32.unpack_from(body)[0] if len(body) >= 4 else 0
            if err == 0:  # an ACK
                continue
            raise DumpError(err, f"sock_diag dump refused: {_errno_name(err)}")
        else:
            counters.unknown_type += 1
    if pos < end:
        counters.malformed += 1  # trailing bytes shorter than a header
    return False


def _errno_name(err: int) -> str:
    import errno

    return errno.errorcode.get(err, str(err))


# ---- the netlink socket ------------------------------------------------------------------
RECV_BUFFER = 1 << 20


class DiagSocket:
    """A NETLINK_SOCK_DIAG socket. Dumps the namespace it was created in (see netns.py)."""

    def __init__(self, *, timeout_s: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                  NETLINK_SOCK_DIAG)
        try:
            self.sock.settimeout(timeout_s)
            self.sock.bind((0, 0))
        except BaseException:
            self.sock.close()
            raise
        self._seq = 0
        self._buf = bytearray(RECV_BUFFER)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> DiagSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def dump(self, family: int, protocol: int, *, ext: int = 0, raw_protocol: int = 0,
             states: int = ALL_STATES, counters: DumpCounters | None = None,
             limit: int = sys.maxsize) -> list[DiagMessage]:
        """Every socket of (family, protocol) in this namespace, at most `limit` (the rest
        of the dump is read, dropped and counted in counters.over_limit).

        Raises DumpError (the kernel refused) or OSError (timeout, socket error)."""
        counters = counters if counters is not None else DumpCounters()
        self._seq += 1
        self.sock.send(dump_request(family, protocol, seq=self._seq, ext=ext,
                                    raw_protocol=raw_protocol, states=states))
        out: list[DiagMessage] = []
        buf, view = self._buf, memoryview(self._buf)
        while True:
            n, _, flags, _ = self.sock.recvmsg_into([buf])
            if flags & socket.MSG_TRUNC:
                counters.recv_truncated += 1
            if n == 0:
                return out  # peer closed: nothing more will come
            done = parse_dump_chunk(view[:n], self._seq, out, counters)
            if len(out) > limit:
                counters.over_limit += len(out) - limit
                del out[limit:]
            if done:
                return out


"""Live-host reads for the reverse_shell rule: what a process's standard streams are, which
network connections it holds, and whether it holds the other end of a terminal or pipe.

Everything here reads /proc (or a fake tree for tests) and is bounded: a few readlinks per
stream, at most max_fds descriptors per process, a capped read of /proc/PID/net/* tables. It
runs on the pipeline thread, which is acceptable only because the rule calls it for shell
execs (rare) and for processes around them. Every failed read means "unknown" (None or
nothing), never an error: processes exit at any moment.

A socket is identified first through pidfd_getfd(2) (Linux 5.6+, needs CAP_SYS_PTRACE as the
root agent has): a duplicate of the descriptor gives the socket cookie, which *is* the
agent's flow id, its addresses and the TCP state; the duplicate is closed at once. Where
that is not possible (a fake tree, an older kernel) the socket's inode is looked up in
/proc/PID/net/{tcp,tcp6,udp,udp6} of the holder, which also names the connection's peer.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
from dataclasses import dataclass

from otelpeers.process.procfs import parse_stat

SYS_PIDFD_GETFD = 438  # same number on every architecture (the unified syscall table)
SO_COOKIE = 57
MAX_STAT_BYTES = 4096
MAX_CHILDREN_BYTES = 4096
MAX_SOCKETS_EXAMINED = 16  # distinct sockets looked at per process
MAX_TABLE_BYTES = 1 << 20  # per /proc/PID/net/* table: about 6,500 connections
TCP_LISTEN = 0x0A
# Socket states that still have a peer (ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1/2,
# CLOSE_WAIT): the shell may still talk through them.
CONNECTED_STATES = frozenset({0x01, 0x02, 0x03, 0x04, 0x05, 0x08})
_TABLES = (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6),
           ("udp", socket.AF_INET), ("udp6", socket.AF_INET6))
_UDP_CONNECTED = 0x01  # a connected UDP socket shows TCP_ESTABLISHED in /proc/net/udp


@dataclass(frozen=True, slots=True)
class Fd:
    """One descriptor: kind is socket | pipe | pts | ptmx | tty | null | file | other; ident
    the socket or pipe inode, or the pseudo-terminal's index (-1 when none)."""

    fd: int
    kind: str
    ident: int = -1


@dataclass(frozen=True, slots=True)
class Conn:
    """A connected network socket held by a process."""

    inode: int
    transport: str  # tcp | udp
    local_addr: str
    local_port: int
    peer_addr: str
    peer_port: int
    state: int  # kernel TCP state number (udp: 1 when connected)
    cookie: int | None = None  # the socket cookie (= the agent's flow id), when known

    @property
    def flow_id(self) -> str | None:
        """The agent's flow id of this socket (otelpeers.flows), when the cookie is known."""
        if self.cookie is None:
            return None
        if self.transport == "tcp":
            return f"{self.cookie:x}"
        return f"{self.cookie:x}/{self.peer_addr}/{self.peer_port}"


def classify(fd: int, target: str) -> Fd:
    """A descriptor from its /proc/PID/fd link text."""
    if target.startswith("socket:[") and target.endswith("]"):
        return Fd(fd, "socket", _int(target[8:-1]))
    if target.startswith("pipe:[") and target.endswith("]"):
        return Fd(fd, "pipe", _int(target[6:-1]))
    if target in ("/dev/ptmx", "/dev/pts/ptmx"):
        return Fd(fd, "ptmx")
    if target.startswith("/dev/pts/"):
        return Fd(fd, "pts", _int(target[9:]))
    if target == "/dev/null":
        return Fd(fd, "null")
    if target.startswith("/dev/tty") or target == "/dev/console":
        return Fd(fd, "tty")
    if target.startswith("/"):
        return Fd(fd, "file")
    return Fd(fd, "other")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1


def parse_addr(hex_addr: str, family: int) -> str:
    """An address as /proc/net/tcp writes it: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_addr)
    swapped = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if family == socket.AF_INET6 and swapped[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, swapped[12:])
    return socket.inet_ntop(family, swapped)


def parse_table_line(line: str, family: int) -> tuple[int, str, int, str, int, int] | None:
    """(inode, local address, local port, peer address, peer port, state) of one line of
    /proc/net/{tcp,tcp6,udp,udp6}; None for the header or a malformed line."""
    parts = line.split()
    if len(parts) < 10 or ":" not in parts[1]:
        return None
    try:
        laddr, lport = parts[1].split(":")
        raddr, rport = parts[2].split(":")
        return (int(parts[9]), parse_addr(laddr, family), int(lport, 16),
                parse_addr(raddr, family), int(rport, 16), int(parts[3], 16))
    except (ValueError, OSError):
        return None


class ProcProbe:
    """Bounded reads of one procfs tree (see the module docstring); stats counts them."""

    def __init__(self, root: str = "/proc", *, max_fds: int = 64,
                 use_pidfd: bool | None = None) -> None:
        self.root = root.rstrip("/") or "/"
        self.max_fds = max_fds
        # pidfd_getfd only makes sense for the real /proc: a fake tree's pids are not ours.
        self.use_pidfd = (self.root == "/proc") if use_pidfd is None else use_pidfd
        self._libc: ctypes.CDLL | None = None
        self.stats = {"readlinks": 0, "reads": 0, "pidfd": 0, "pidfd_failed": 0,
                      "table_reads": 0, "table_truncated": 0}

    # ---- one process ---------------------------------------------------------------------
    def stat(self, pid: int) -> tuple[str, int] | None:
        """(comm, ppid), or None when the process is gone."""
        raw = self._read(f"{pid}/stat", MAX_STAT_BYTES)
        st = parse_stat(raw.decode("utf-8", "replace")) if raw else None
        return (st.comm, st.ppid) if st is not None else None

    def exe_name(self, pid: int) -> str | None:
        target = self._readlink(f"{pid}/exe")
        if not target:
            return None
        return os.path.basename(target.removesuffix(" (deleted)")) or None

    def argv(self, pid: int, limit: int = 256) -> tuple[str, ...]:
        raw = self._read(f"{pid}/cmdline", limit)
        if not raw:
            return ()
        return tuple(a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0"))

    def std_fds(self, pid: int) -> tuple[Fd, ...]:
        """Descriptors 0, 1 and 2 (the ones that exist)."""
        out = []
        for fd in (0, 1, 2):
            target = self._readlink(f"{pid}/fd/{fd}")
            if target is not None:
                out.append(classify(fd, target))
        return tuple(out)

    def fds(self, pid: int) -> tuple[Fd, ...]:
        """At most max_fds descriptors of the process, lowest first among those listed."""
        names: list[int] = []
        try:
            with os.scandir(f"{self.root}/{pid}/fd") as it:
                for entry in it:
                    if entry.name.isdigit():
                        names.append(int(entry.name))
                        if len(names) >= self.max_fds:
                            break
        except OSError:
            return ()
        out = []
        for fd in sorted(names):
            target = self._readlink(f"{pid}/fd/{fd}")
            if target is not None:
                out.append(classify(fd, target))
        return tuple(out)

    def pty_index(self, pid: int, fd: int) -> int | None:
        """The pseudo-terminal index of a /dev/ptmx descriptor (its fdinfo tty-index)."""
        raw = self._read(f"{pid}/fdinfo/{fd}", 1024)
        if not raw:
            return None
        for line in raw.split(b"\n"):
            if line.startswith(b"tty-index:"):
                return _int(line.split(b":", 1)[1].strip().decode("ascii", "replace"))
        return None

    def children(self, pid: int, limit: int) -> tuple[int, ...]:
        """Children of the process's main thread, at most limit of them."""
        raw = self._read(f"{pid}/task/{pid}/children", MAX_CHILDREN_BYTES)
        if not raw:
            return ()
        out = []
        for word in raw.split()[:limit]:
            if word.isdigit():
                out.append(int(word))
        return tuple(out)

    # ---- sockets -------------------------------------------------------------------------
    def connections(self, pid: int, sockets: list[Fd], limit: int = 8
                    ) -> tuple[list[Conn], int]:
        """(the connected TCP/UDP sockets, the number of listening ones) among the given
        socket descriptors of pid; Unix sockets are neither. Stops once more than limit
        network sockets are found, and after MAX_SOCKETS_EXAMINED distinct sockets."""
        out: list[Conn] = []
        listening = 0
        pending: set[int] = set()
        seen: set[int] = set()
        for f in sockets:
            if f.ident in seen:
                continue  # the same socket on several descriptors (dup2 to 0, 1, 2)
            seen.add(f.ident)
            if len(seen) > MAX_SOCKETS_EXAMINED or len(out) + listening > limit:
                break
            known, conn = self._via_pidfd(pid, f) if self.use_pidfd else (False, None)
            if isinstance(conn, Conn):
                out.append(conn)
            elif conn == "listening":
                listening += 1
            elif not known:
                pending.add(f.ident)
        if pending:
            conns, n = self._via_tables(pid, pending)
            out.extend(conns)
            listening += n
        return out, listening

    def accepted(self, pid: int, conn: Conn) -> bool | None:
        """True when the connection's local port is also a listening port in the holder's
        network namespace (it was accepted: inbound); None when that cannot be read."""
        if conn.transport != "tcp":
            return False
        found = False
        for name, family in _TABLES[:2]:
            lines = self._table(pid, name)
            if lines is None:
                return None
            found = True
            for line in lines:
                row = parse_table_line(line, family)
                if row is not None and row[5] == TCP_LISTEN and row[2] == conn.local_port:
                    return True
        return False if found else None

    def _via_pidfd(self, pid: int, f: Fd) -> tuple[bool, Conn | str | None]:
        """(True, the connection, "listening", or None for anything else) from a duplicate
        of the descriptor; (False, None): unknown, use the tables."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            self.stats["pidfd_failed"] += 1
            return False, None
        try:
            if self._libc is None:
                self._libc = ctypes.CDLL(None, use_errno=True)
            dup = self._libc.syscall(SYS_PIDFD_GETFD, pidfd, f.fd, 0)
        finally:
            os.close(pidfd)
        if dup < 0:
            self.stats["pidfd_failed"] += 1
            return False, None
        self.stats["pidfd"] += 1
        return True, _describe_socket(dup, f.ident)

    def _via_tables(self, pid: int, inodes: set[int]) -> tuple[list[Conn], int]:
        out = []
        listening = 0
        for name, family in _TABLES:
            if not inodes:
                break
            lines = self._table(pid, name)
            for line in lines or ():
                row = parse_table_line(line, family)
                if row is None or row[0] not in inodes:
                    continue
                inode, laddr, lport, raddr, rport, state = row
                inodes.discard(inode)
                transport = name.rstrip("6")
                if transport == "tcp" and state == TCP_LISTEN:
                    listening += 1
                    continue
                connected = (state in CONNECTED_STATES if transport == "tcp"
                             else state == _UDP_CONNECTED)
                if connected and rport != 0:
                    out.append(Conn(inode, transport, laddr, lport, raddr, rport, state))
        return out, listening

    def _table(self, pid: int, name: str) -> list[str] | None:
        raw = self._read(f"{pid}/net/{name}", MAX_TABLE_BYTES + 1)
        if raw is None:
            return None
        self.stats["table_reads"] += 1
        if len(raw) > MAX_TABLE_BYTES:
            self.stats["table_truncated"] += 1
            raw = raw[:MAX_TABLE_BYTES].rsplit(b"\n", 1)[0]
        return raw.decode("ascii", "replace").splitlines()[1:]

    # ---- raw reads -----------------------------------------------------------------------
    def _read(self, rel: str, limit: int) -> bytes | None:
        self.stats["reads"] += 1
        try:
            with open(f"{self.root}/{rel}", "rb", buffering=0) as fh:
                return _read_up_to(fh, limit)
        except OSError:
            return None

    def _readlink(self, rel: str) -> str | None:
        self.stats["readlinks"] += 1
        try:
            return os.readlink(f"{self.root}/{rel}")
        except OSError:
            return None


def _read_up_to(fh: object, limit: int) -> bytes:
    """procfs files return short reads: read until EOF or limit."""
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        b = fh.read(min(left, 65536))  # type: ignore[attr-defined]
        if not b:
            break
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def _describe_socket(fd: int, inode: int) -> Conn | str | None:
    """Family, addresses, cookie and state of our duplicate of a socket ("listening" for a
    listener, None for anything else that is not a connection); closes fd."""
    try:
        s = socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        return None
    with s:
        if s.family not in (socket.AF_INET, socket.AF_INET6):
            return None  # a Unix socket: not a network connection
        if s.type == socket.SOCK_STREAM and s.proto in (0, socket.IPPROTO_TCP):
            transport = "tcp"
        elif s.type == socket.SOCK_DGRAM and s.proto in (0, socket.IPPROTO_UDP):
            transport = "udp"
        else:
            return None
        try:
            peer = s.getpeername()
            local = s.getsockname()
        except OSError:  # not connected: a listener, an unconnected UDP socket
            try:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    return "listening"
            except OSError:
                pass
            return None
        try:
            cookie = struct.unpack("<Q", s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]
        except OSError:
            cookie = None
        state = 1
        if transport == "tcp":
            try:
                state = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
            except OSError:
                state = 1
            if state not in CONNECTED_STATES:
                return None
        return Conn(inode, transport, _unmap(local[0]), local[1], _unmap(peer[0]), peer[1],
                    state, cookie)


def _unmap(addr: str) -> str:
    """IPv4-mapped IPv6 addresses as IPv4, as the agent shows them."""
    return addr[7:] if addr.startswith("::ffff:") and "." in addr else addr

"""Every inet socket that exists right now, in every network namespace the agent can reach,
with its kernel socket cookie and the process that owns it.

For the sockets that were there before the agent attached its programs: listeners started
long before, long-lived connections, and everything that survived an agent restart.

    result = enumerate_sockets()
    for s in result.sockets: s.cookie, s.netns_cookie, s.state_name, s.owner, ...

How (see docs/existing-sockets.md):
1. namespaces: the agent's own, every distinct /proc/*/ns/net, /run/netns bind mounts
   (netns.py); later also namespaces only an open fd names (found by step 3);
2. in each, a NETLINK_SOCK_DIAG socket opened inside it dumps TCP (every state), UDP and
   raw sockets of both families (diagwire.py). The cookie is the one BPF programs see;
3. one bounded walk of /proc/*/fd maps socket inodes to the processes holding them, and
   the oldest holder becomes the owner (sockowners.py).

Nothing here loads BPF or changes kernel state. Needs root (CAP_SYS_ADMIN to enter other
namespaces, CAP_SYS_PTRACE-equivalent access to read other processes' fds); without it the
agent's own namespace and its own processes are still enumerated, and the rest is counted.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from otelpeers.kernel.cgroup import find_cgroup2_mount
from otelpeers.kernel.diagwire import (
    ALL_STATES,
    INET_DIAG_INFO,
    INET_DIAG_SKMEMINFO,
    DiagMessage,
    DiagSocket,
    DiagTcpInfo,
    DumpCounters,
    DumpError,
    SkMemInfo,
    ext_bit,
)
from otelpeers.kernel.netns import (
    DiscoveryStats,
    NetnsRef,
    discover_namespaces,
    netns_cookie,
    nsfs_device,
    run_in_netns,
    self_netns_inode,
)
from otelpeers.kernel.sockowners import (
    OwnerResolver,
    OwnerStats,
    SocketOwner,
    WalkStats,
    walk_fds,
)

__all__ = [
    "ExistingSocket", "SnapshotLimits", "SnapshotResult", "SnapshotStats", "NamespaceReport",
    "SocketOwner", "DiagTcpInfo", "SkMemInfo", "enumerate_sockets", "TCP_STATE_NAMES",
    "STATES_WITHOUT_TIME_WAIT",
]

IPPROTO_RAW = 255

TCP_STATE_NAMES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
    12: "NEW_SYN_RECV",
}
TCP_ESTABLISHED, TCP_TIME_WAIT, TCP_CLOSE, TCP_LISTEN = 1, 6, 7, 10
# For `tcp_states`: TIME_WAIT entries have no owner and no future; a busy host has many.
STATES_WITHOUT_TIME_WAIT = ALL_STATES & ~(1 << TCP_TIME_WAIT)
# TCP sockets with no file yet (accept queue) or no longer (closed by the application):
# the listener on the same port is the best owner known.
_JOINABLE_STATES = frozenset({1, 3, 4, 5, 8, 9, 11, 12})

_PROTO_NAMES = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp",
                socket.IPPROTO_ICMP: "icmp", socket.IPPROTO_ICMPV6: "icmp", IPPROTO_RAW: "raw"}


@dataclass(frozen=True, slots=True)
class DumpSpec:
    name: str  # tcp4, tcp6, udp4, udp6, raw4, raw6
    family: int
    protocol: int
    sock_type: int


DUMPS = {
    "tcp": (DumpSpec("tcp4", socket.AF_INET, socket.IPPROTO_TCP, socket.SOCK_STREAM),
            DumpSpec("tcp6", socket.AF_INET6, socket.IPPROTO_TCP, socket.SOCK_STREAM)),
    "udp": (DumpSpec("udp4", socket.AF_INET, socket.IPPROTO_UDP, socket.SOCK_DGRAM),
            DumpSpec("udp6", socket.AF_INET6, socket.IPPROTO_UDP, socket.SOCK_DGRAM)),
    "raw": (DumpSpec("raw4", socket.AF_INET, IPPROTO_RAW, socket.SOCK_RAW),
            DumpSpec("raw6", socket.AF_INET6, IPPROTO_RAW, socket.SOCK_RAW)),
}


@dataclass(frozen=True, slots=True)
class ExistingSocket:
    """One socket found by enumerate_sockets().

    `cookie` equals bpf_get_socket_cookie() for the same socket and `netns_cookie` equals
    bpf_get_netns_cookie(), so both join with the kernel programs' tables. Addresses are
    text; an IPv4-mapped IPv6 address is written as IPv4 (as otelpeers.events does), the
    family stays AF_INET6."""

    cookie: int  # 0 only if the kernel gave none (counted)
    netns_cookie: int | None  # None before Linux 5.14 (no SO_NETNS_COOKIE)
    netns_inode: int
    family: int  # AF_INET / AF_INET6
    protocol: int  # IPPROTO_TCP / UDP; raw: the socket's protocol (ICMP, ...) or 255
    sock_type: int  # SOCK_STREAM / DGRAM / RAW
    state: int  # TCP state numbers; UDP: 7 (CLOSE) bound, 1 (ESTABLISHED) connected
    local_addr: str
    local_port: int
    remote_addr: str
    remote_port: int
    uid: int  # idiag_uid: the socket's uid (its creator's fsuid), host user namespace
    inode: int  # 0: no file (TIME_WAIT, accept queue, closed by the application, kernel)
    interface: int  # bound device / IPv6 scope, 0 when none
    owner: SocketOwner | None
    holders: tuple[int, ...]  # every tgid holding an fd of it, owner first (oldest first)
    owner_joined: bool  # owner is the listener's on the same port (no fd of its own)
    cgroup_id: int | None  # INET_DIAG_CGROUP_ID: cgroup-v2 id where the socket was made
    tcp_info: DiagTcpInfo | None
    meminfo: SkMemInfo | None
    shutdown: int | None  # bit 0: no more receives, bit 1: no more sends
    rqueue: int
    wqueue: int

    @property
    def transport(self) -> str:
        return _PROTO_NAMES.get(self.protocol, str(self.protocol))

    @property
    def state_name(self) -> str:
        if self.sock_type == socket.SOCK_STREAM:
            return TCP_STATE_NAMES.get(self.state, str(self.state))
        return {TCP_ESTABLISHED: "CONNECTED", TCP_CLOSE: "BOUND"}.get(self.state,
                                                                        str(self.state))

    @property
    def is_listener(self) -> bool:
        return self.sock_type == socket.SOCK_STREAM and self.state == TCP_LISTEN


@dataclass(frozen=True)
class SnapshotLimits:
    max_namespaces: int = 4096
    max_sockets: int = 1_000_000
    max_processes: int = 100_000  # /proc entries walked for fds
    max_fds_per_process: int = 262_144
    walk_budget_s: float = 5.0  # the fd walk stops after this long (counted)
    netlink_timeout_s: float = 5.0  # one read of a dump


@dataclass
class NamespaceReport:
    inode: int
    source: str  # self, proc, run-netns, fd
    path: str
    cookie: int | None = None
    sockets: dict[str, int] = field(default_factory=dict)  # dump name -> sockets
    errors: dict[str, str] = field(default_factory=dict)  # dump name (or "enter") -> error


@dataclass
class SnapshotStats:
    namespaces: list[NamespaceReport] = field(default_factory=list)
    discovery: DiscoveryStats = field(default_factory=DiscoveryStats)
    dump: DumpCounters = field(default_factory=DumpCounters)
    walk: WalkStats = field(default_factory=WalkStats)
    owners: OwnerStats = field(default_factory=OwnerStats)
    unreachable_namespaces: int = 0  # found but could not be entered (gone, not permitted)
    unsupported: dict[str, int] = field(default_factory=dict)  # dump name -> namespaces
    dump_errors: int = 0  # dumps that failed (timeouts, refusals other than unsupported)
    duplicates: int = 0  # the same cookie reported twice (rehashed during a dump)
    sockets_cut: int = 0  # sockets over max_sockets
    with_owner: int = 0
    owner_joined: int = 0  # owned through the listener
    without_owner: int = 0  # no holder found (no fd, kernel socket, walk cut, gone)
    dump_s: float = 0.0
    walk_s: float = 0.0
    elapsed_s: float = 0.0

    def namespace_count(self) -> int:
        return len(self.namespaces)


@dataclass(frozen=True)
class SnapshotResult:
    sockets: tuple[ExistingSocket, ...]
    stats: SnapshotStats
    # When the snapshot started: a socket's creation time is not knowable from sock_diag;
    # this is an upper bound on it (the socket existed then) and the documented start of
    # flows adopted from the snapshot. Both clocks, to line up with events (monotonic).
    started_ns: int  # Unix epoch
    started_mono_ns: int  # CLOCK_MONOTONIC (bpf_ktime_get_ns)

    def by_cookie(self) -> dict[int, ExistingSocket]:
        return {s.cookie: s for s in self.sockets}

    def listeners(self) -> list[ExistingSocket]:
        return [s for s in self.sockets if s.is_listener]


# ---- addresses ---------------------------------------------------------------------------
_V4_MAPPED = b"\0" * 10 + b"\xff\xff"
_addr_cache: dict[tuple[int, bytes], str] = {}


def format_addr(family: int, raw: bytes) -> str:
    key = (family, raw)
    text = _addr_cache.get(key)
    if text is not None:
        return text
    if family == socket.AF_INET:
        text = socket.inet_ntop(socket.AF_INET, raw[:4])
    elif family == socket.AF_INET6 and raw[:12] == _V4_MAPPED:
        text = socket.inet_ntop(socket.AF_INET, raw[12:16])
    elif family == socket.AF_INET6:
        text = socket.inet_ntop(socket.AF_INET6, raw[:16])
    else:
        text = ""
    if len(_addr_cache) >= 65536:
        _addr_cache.clear()
    _addr_cache[key] = text
    return text


# ---- the snapshot ------------------------------------------------------------------------
_UNSUPPORTED = {errno.ENOENT, errno.EOPNOTSUPP, errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT}


@dataclass
class _Found:
    ns: NamespaceReport
    spec: DumpSpec
    msg: DiagMessage


def _open_diag(ref: NetnsRef, timeout_s: float) -> tuple[DiagSocket, int | None]:
    def make() -> tuple[DiagSocket, int | None]:
        diag = DiagSocket(timeout_s=timeout_s)
        return diag, netns_cookie(diag.sock)

    if ref.source == "self":
        return make()
    return run_in_netns(ref.path, make, expect_inode=ref.inode)


class _Dumper:
    """Dumps namespaces one by one into `found`, within the socket budget."""

    def __init__(self, specs: list[DumpSpec], *, tcp_info: bool, meminfo: bool,
                 tcp_states: int, limits: SnapshotLimits, stats: SnapshotStats) -> None:
        self.specs = specs
        self.tcp_info = tcp_info
        self.meminfo = meminfo
        self.tcp_states = tcp_states
        self.limits = limits
        self.stats = stats
        self.budget = limits.max_sockets
        self.found: list[_Found] = []

    def dump(self, ref: NetnsRef) -> None:
        stats = self.stats
        report = NamespaceReport(ref.inode, ref.source, ref.path)
        stats.namespaces.append(report)
        try:
            diag, report.cookie = _open_diag(ref, self.limits.netlink_timeout_s)
        except OSError as exc:
            report.errors["enter"] = str(exc)
            stats.unreachable_namespaces += 1
            return
        with diag:
            for spec in self.specs:
                self._dump_one(diag, spec, report)

    def _dump_one(self, diag: DiagSocket, spec: DumpSpec, report: NamespaceReport) -> None:
        stats = self.stats
        tcp = spec.protocol == socket.IPPROTO_TCP
        ext = ext_bit(INET_DIAG_SKMEMINFO) if self.meminfo else 0
        if tcp and self.tcp_info:
            ext |= ext_bit(INET_DIAG_INFO)
        try:
            msgs = diag.dump(spec.family, spec.protocol, ext=ext,
                             raw_protocol=IPPROTO_RAW if spec.protocol == IPPROTO_RAW else 0,
                             states=self.tcp_states if tcp else ALL_STATES,
                             counters=stats.dump, limit=self.budget)
        except DumpError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            if exc.errno in _UNSUPPORTED:
                stats.unsupported[spec.name] = stats.unsupported.get(spec.name, 0) + 1
            else:
                stats.dump_errors += 1
                stats.dump.error(name)
            report.errors[spec.name] = name
            return
        except OSError as exc:  # timeout, socket error: this dump only
            stats.dump_errors += 1
            stats.dump.error(type(exc).__name__)
            report.errors[spec.name] = str(exc) or type(exc).__name__
            return
        self.budget -= len(msgs)
        report.sockets[spec.name] = len(msgs)
        self.found.extend(_Found(report, spec, m) for m in msgs)


def enumerate_sockets(*, protocols: Iterable[str] = ("tcp", "udp", "raw"),
                      all_namespaces: bool = True, tcp_info: bool = True,
                      meminfo: bool = False, tcp_states: int = ALL_STATES,
                      owners: bool = True, limits: SnapshotLimits | None = None,
                      proc_root: str = "/proc", run_netns_dir: str = "/run/netns",
                      cgroup_root: str | None = None) -> SnapshotResult:
    """Snapshot every inet socket of the host (see the module docstring).

    protocols: any of tcp, udp, raw (raw needs CONFIG_INET_RAW_DIAG; where the kernel has no
    handler it is counted in stats.unsupported, not an error). tcp_states: a bit mask
    (1 << state) of TCP states to dump, all by default. owners=False skips the /proc walk.
    cgroup_root: the cgroup-v2 mount (found in /proc/mounts when None).

    Call it after the BPF programs are attached: a socket made during the snapshot is then
    seen by the programs, by the snapshot, or by both (join on the cookie), never by
    neither."""
    limits = limits or SnapshotLimits()
    unknown = set(protocols) - set(DUMPS)
    if unknown:
        raise ValueError(f"unknown protocols {sorted(unknown)}: use tcp, udp, raw")
    specs = [spec for name in ("tcp", "udp", "raw") if name in set(protocols)
             for spec in DUMPS[name]]
    started_ns, started_mono_ns = time.time_ns(), time.monotonic_ns()
    t0 = time.monotonic()
    stats = SnapshotStats()
    if all_namespaces:
        refs = discover_namespaces(proc_root=proc_root, run_netns_dir=run_netns_dir,
                                   max_namespaces=limits.max_namespaces,
                                   stats=stats.discovery)
    else:
        refs = [NetnsRef(self_netns_inode(), "self", "")]
    dumper = _Dumper(specs, tcp_info=tcp_info, meminfo=meminfo, tcp_states=tcp_states,
                     limits=limits, stats=stats)
    for ref in refs:
        dumper.dump(ref)
    stats.dump_s = time.monotonic() - t0

    holders: dict[int, list[int]] = {}
    resolver: OwnerResolver | None = None
    if owners:
        t1 = time.monotonic()
        walk = walk_fds(proc_root, max_processes=limits.max_processes,
                        max_fds_per_process=limits.max_fds_per_process,
                        deadline=t1 + limits.walk_budget_s,
                        nsfs_dev=nsfs_device() if all_namespaces else None)
        stats.walk = walk.stats
        holders = walk.holders
        # Namespaces that only an open fd names (no process lives there, no bind mount).
        if all_namespaces:
            seen = {r.inode for r in refs}
            for inode, path in walk.netns_fds.items():
                if inode in seen:
                    continue
                if len(stats.namespaces) >= limits.max_namespaces:
                    stats.discovery.cut += 1
                    continue
                seen.add(inode)
                dumper.dump(NetnsRef(inode, "fd", path))
        resolver = OwnerResolver(proc_root, cgroup_root=cgroup_root or find_cgroup2_mount())
        stats.walk_s = time.monotonic() - t1
    stats.sockets_cut = stats.dump.over_limit

    sockets = _build(dumper.found, holders, resolver, stats)
    if resolver is not None:
        stats.owners = resolver.stats
    stats.elapsed_s = time.monotonic() - t0
    return SnapshotResult(tuple(sockets), stats, started_ns, started_mono_ns)


def _build(found: list[_Found], holders: dict[int, list[int]],
           resolver: OwnerResolver | None, stats: SnapshotStats) -> list[ExistingSocket]:
    by_cookie: dict[int, ExistingSocket] = {}
    nameless: list[ExistingSocket] = []  # cookie 0: cannot be deduplicated
    for f in found:
        m, spec, ns = f.msg, f.spec, f.ns
        pids = holders.get(m.inode) if m.inode else None
        ordered = resolver.order(pids) if (pids and resolver is not None) else ()
        owner = resolver.owner(ordered) if (ordered and resolver is not None) else None
        protocol = spec.protocol
        if protocol == IPPROTO_RAW and m.protocol is not None:
            protocol = m.protocol
        s = ExistingSocket(
            cookie=m.cookie, netns_cookie=ns.cookie, netns_inode=ns.inode,
            family=m.family, protocol=protocol, sock_type=spec.sock_type, state=m.state,
            local_addr=format_addr(m.family, m.local_raw), local_port=m.local_port,
            remote_addr=format_addr(m.family, m.remote_raw), remote_port=m.remote_port,
            uid=m.uid, inode=m.inode, interface=m.interface, owner=owner, holders=ordered,
            owner_joined=False, cgroup_id=m.cgroup_id, tcp_info=m.tcp_info,
            meminfo=m.meminfo, shutdown=m.shutdown, rqueue=m.rqueue, wqueue=m.wqueue)
        if s.cookie == 0:
            nameless.append(s)
        else:
            if s.cookie in by_cookie:
                stats.duplicates += 1
            by_cookie[s.cookie] = s  # the later report is the newer state
    sockets = list(by_cookie.values()) + nameless
    sockets = _join_listeners(sockets, stats)
    for s in sockets:
        if s.owner is None:
            stats.without_owner += 1
        else:
            stats.with_owner += 1
    return sockets


def _join_listeners(sockets: list[ExistingSocket],
                    stats: SnapshotStats) -> list[ExistingSocket]:
    """TCP sockets without a file of their own take the owner of the listener on their
    (namespace, local port, local address or wildcard)."""
    listeners: dict[tuple[int, int], list[ExistingSocket]] = {}
    for s in sockets:
        if s.is_listener and s.owner is not None:
            listeners.setdefault((s.netns_inode, s.local_port), []).append(s)
    if not listeners:
        return sockets
    out = []
    for s in sockets:
        if (s.owner is None and s.inode == 0 and s.sock_type == socket.SOCK_STREAM
                and s.state in _JOINABLE_STATES):
            cands = listeners.get((s.netns_inode, s.local_port), ())
            best = next((c for c in cands if c.local_addr == s.local_addr), None) or next(
                (c for c in cands if c.local_addr in ("0.0.0.0", "::")), None)
            if best is not None:
                stats.owner_joined += 1
                s = _with_owner(s, best)
        out.append(s)
    return out


def _with_owner(s: ExistingSocket, listener: ExistingSocket) -> ExistingSocket:
    return replace(s, owner=listener.owner, holders=listener.holders, owner_joined=True)

"""Sockets older than the agent, written into the kernel's tables at start (issue 11).

The programs learn a socket's owner where a hook runs in its process (sock_create, connect,
post_bind, listen) and follow a TCP connection from connect() or accept. A server that
started before the agent, or a connection opened before it, passed those hooks unseen. Right
after the programs are attached, enumerate_sockets() (sock_diag, see sockdiag.py) lists what
exists, and this module seeds:

- `listeners`: one entry per listening TCP socket with an owner, keyed like on_listen's
  (netns cookie, port), so connections accepted from now on take the server's owner;
  plus the listener's own `sockets` entry (bound_port set), so its release removes the
  listener entry as it does for listeners the programs saw;
- `sockets`: one entry per TCP connection in ESTABLISHED or CLOSE_WAIT that a process holds
  (an fd of it was found), flagged OP_F_ADOPTED, with owner, addresses, direction (inbound
  when a listener of the same namespace has its local port), start = the snapshot's start
  (the agent's start: sock_diag does not know when a connection began) and counters from
  zero. cgroup_skb counts its bytes from then on, the periodic scan reports it as open, and
  its release (cgroup/sock_release) sends its one record: it never had sock_ops state
  callbacks, which can only be asked for at connect or accept.

- `sockets`, UDP: one entry per UDP socket a process holds, with its owner (not a flow:
  UDP flows start with packets, and now carry the owner).

Races: a connection released between the attach and its seed would leave an entry that never
ends, so after seeding a second, cheap sock_diag pass (no owners) withdraws every adopted
entry whose socket no process holds any more. Entries the programs made meanwhile win: a
listener entry already there is newer (NOEXIST); a socket entry cgroup_skb made keeps its
counters. Nothing here fails the agent's start: errors are counted and logged.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from otelpeers import abi
from otelpeers.kernel import bpfsys
from otelpeers.kernel.sockdiag import (
    ExistingSocket,
    SnapshotLimits,
    SnapshotResult,
    enumerate_sockets,
)

log = logging.getLogger(__name__)

TCP_ESTABLISHED, TCP_CLOSE_WAIT, TCP_LISTEN = 1, 8, 10
ADOPTABLE_STATES = frozenset({TCP_ESTABLISHED, TCP_CLOSE_WAIT})
# Bounded: the agent's start waits for this.
SEED_LIMITS = SnapshotLimits(walk_budget_s=3.0, netlink_timeout_s=2.0)
_CHECK_STATES = sum(1 << s for s in ADOPTABLE_STATES)


@dataclass
class AdoptionStats:
    """What seeding did; exported as agent counters (source.adoption.*)."""

    sockets_enumerated: int = 0
    listeners_seeded: int = 0
    listeners_present: int = 0  # the programs had seen this listener already: kept theirs
    listeners_without_owner: int = 0  # not seeded: no process holds it (or walk cut)
    connections_adopted: int = 0
    udp_sockets_seeded: int = 0  # UDP sockets whose owner the programs now know
    connections_without_owner: int = 0  # adopted, owner unknown (fd walk cut or raced)
    connections_withdrawn: int = 0  # gone before their entry took hold: entry removed
    skipped_no_netns_cookie: int = 0  # kernel before 5.14: cannot key the tables
    errors: int = 0  # enumeration or map writes that failed
    elapsed_ms: int = 0
    # Not counters: what the source tells the flow table (LISTEN events for the seeded
    # listeners, at the snapshot's time).
    started_ns: int = 0  # the snapshot's start, Unix epoch ns
    listeners: list[ExistingSocket] = field(default_factory=list)

    def counters(self) -> dict[str, int]:
        return {k: int(v) for k, v in asdict(self).items()
                if k not in ("started_ns", "listeners")}


@dataclass
class SeedPlan:
    """The map entries to write, built from a snapshot without touching the kernel."""

    listeners: list[tuple[bytes, bytes]] = field(default_factory=list)  # key, op_listener
    listener_socks: list[tuple[int, bytes]] = field(default_factory=list)  # cookie, op_sock
    udp_socks: list[tuple[int, bytes]] = field(default_factory=list)  # cookie, op_sock
    connections: list[tuple[int, bytes]] = field(default_factory=list)  # cookie, op_sock


def raw_addr(family: int, text: str) -> bytes:
    """The kernel's 16 address bytes (IPv4 in the first 4; an IPv4-mapped address of an
    AF_INET6 socket, written as IPv4 by sockdiag, back in its mapped form)."""
    if not text:
        return bytes(abi.ADDR_LEN)
    packed = ipaddress.ip_address(text).packed
    if family == socket.AF_INET6 and len(packed) == 4:
        return b"\0" * 10 + b"\xff\xff" + packed
    return packed.ljust(abi.ADDR_LEN, b"\0")


def kernel_owner(s: ExistingSocket) -> abi.COwner:
    """The owner of a socket sock_diag found, as the kernel tables keep it."""
    o = abi.COwner()
    if s.owner is None:
        return o
    o.tgid = o.pid = s.owner.tgid  # a thread id is unknowable here: the main thread's
    o.uid = s.owner.uid if s.owner.uid is not None else s.uid
    o.gid = s.owner.gid or 0
    o.cgroup_id = s.owner.cgroup_id or s.cgroup_id or 0
    o.comm = s.owner.comm.encode("utf-8", "replace")[: abi.COMM_LEN - 1]
    return o


def _sock(s: ExistingSocket, flags: int) -> abi.CSock:
    v = abi.CSock()
    v.owner = kernel_owner(s)
    v.netns_cookie = s.netns_cookie or 0
    v.flags = flags | (abi.F_OWNER if s.owner is not None else 0)
    if s.owner is not None and s.owner_joined:
        v.flags |= abi.F_OWNER_JOINED
    v.family, v.protocol, v.sock_type = s.family, s.protocol, s.sock_type
    v.lport = s.local_port
    v.laddr[:] = raw_addr(s.family, s.local_addr)
    return v


def _tuple(s: ExistingSocket) -> tuple[bytes, int, bytes, int]:
    """Addresses as IPv4-mapped IPv6 so both families of a local pair agree (the kernel's
    tuples map does the same)."""
    return (raw_addr(socket.AF_INET6, s.local_addr), s.local_port,
            raw_addr(socket.AF_INET6, s.remote_addr), s.remote_port)


def plan_seed(snap: SnapshotResult, stats: AdoptionStats) -> SeedPlan:
    """Which listeners and connections to seed, and with what (see the module docstring)."""
    plan = SeedPlan()
    tcp = [s for s in snap.sockets if s.protocol == socket.IPPROTO_TCP and s.cookie
           and s.family in (socket.AF_INET, socket.AF_INET6)]
    listening: set[tuple[int, int]] = set()
    for s in tcp:
        if s.state != TCP_LISTEN:
            continue
        if s.netns_cookie is None:
            stats.skipped_no_netns_cookie += 1
            continue
        listening.add((s.netns_cookie, s.local_port))
        if s.owner is None:
            stats.listeners_without_owner += 1
            continue
        key = abi.LISTENER_KEY.struct.pack(s.netns_cookie, s.local_port)
        plan.listeners.append((key, bytes(abi.CListener(owner=kernel_owner(s), cookie=s.cookie))))
        v = _sock(s, abi.F_ADOPTED)
        v.bound_port = s.local_port
        plan.listener_socks.append((s.cookie, bytes(v)))
        stats.listeners.append(s)
    conns = [s for s in tcp if s.state in ADOPTABLE_STATES and s.inode]
    by_tuple = {_tuple(s): s.cookie for s in conns}
    for s in conns:
        if s.netns_cookie is None:
            stats.skipped_no_netns_cookie += 1
            continue
        v = _sock(s, abi.F_ADOPTED | abi.S_CONN | abi.S_ESTABLISHED)
        inbound = (s.netns_cookie, s.local_port) in listening
        v.direction = abi.Direction.INBOUND if inbound else abi.Direction.OUTBOUND
        v.start_ns = snap.started_mono_ns
        v.rport = s.remote_port
        v.raddr[:] = raw_addr(s.family, s.remote_addr)
        la, lp, ra, rp = _tuple(s)
        v.peer_cookie = by_tuple.get((ra, rp, la, lp), 0)  # both ends on this host
        if s.owner is None:
            stats.connections_without_owner += 1
        plan.connections.append((s.cookie, bytes(v)))
    for s in snap.sockets:
        # UDP: the owner is all the programs need (flows start with packets); a socket whose
        # owner is unknown gains nothing from an entry.
        if (s.protocol == socket.IPPROTO_UDP and s.cookie and s.inode and s.owner is not None
                and s.family in (socket.AF_INET, socket.AF_INET6)):
            if s.netns_cookie is None:
                stats.skipped_no_netns_cookie += 1
                continue
            plan.udp_socks.append((s.cookie, bytes(_sock(s, abi.F_ADOPTED))))
    return plan


def _merge_counters(existing: bytes | None, new: bytes) -> bytes:
    """Keep what cgroup_skb counted since the attach in an entry it made itself."""
    if existing is None:
        return new
    old = abi.CSock.from_buffer_copy(existing)
    if old.flags & (abi.S_CONN | abi.F_OWNER):
        return b""  # the programs know this socket better than the snapshot: leave it
    v = abi.CSock.from_buffer_copy(new)
    v.c, v.last_ns = old.c, old.last_ns
    return bytes(v)


def write_plan(maps: dict[str, bpfsys.BpfMap], plan: SeedPlan,
               stats: AdoptionStats) -> list[tuple[int, int]]:
    """Write the plan; returns (cookie, netns cookie) of the connections seeded."""
    listeners, sockets = maps["listeners"], maps["sockets"]
    for key, value in plan.listeners:
        try:
            listeners.update(key, value, bpfsys.BPF_NOEXIST)
            stats.listeners_seeded += 1
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                stats.listeners_present += 1
            else:
                stats.errors += 1
                log.debug("listener seed failed: %s", exc)
    seeded: list[tuple[int, int]] = []
    for cookie, value in [*plan.listener_socks, *plan.udp_socks, *plan.connections]:
        key = cookie.to_bytes(8, "little")
        try:
            merged = _merge_counters(sockets.lookup(key), value)
            if not merged:
                continue
            sockets.update(key, merged)
        except OSError as exc:
            stats.errors += 1
            log.debug("socket seed failed: %s", exc)
            continue
        v = abi.CSock.from_buffer_copy(value)
        if v.flags & abi.S_CONN:
            seeded.append((cookie, v.netns_cookie))
            stats.connections_adopted += 1
        elif v.protocol == socket.IPPROTO_UDP:
            stats.udp_sockets_seeded += 1
    return seeded


def withdraw_gone(maps: dict[str, bpfsys.BpfMap], seeded: list[tuple[int, int]],
                  check: SnapshotResult, stats: AdoptionStats) -> None:
    """Remove adopted entries whose socket no process holds any more: its release may have
    run before the entry was written, and nothing else would ever end it. Only namespaces
    the check dumped without error are judged."""
    held = {s.cookie for s in check.sockets if s.inode and s.state in ADOPTABLE_STATES}
    dumped = {r.cookie for r in check.stats.namespaces if r.cookie is not None and not r.errors}
    sockets = maps["sockets"]
    for cookie, netns in seeded:
        if cookie in held or netns not in dumped:
            continue
        try:
            sockets.delete(cookie.to_bytes(8, "little"))
        except OSError as exc:
            stats.errors += 1
            log.debug("withdraw failed: %s", exc)
            continue
        stats.connections_withdrawn += 1
        stats.connections_adopted -= 1


Enumerate = Callable[..., SnapshotResult]


def adopt_existing(maps: dict[str, bpfsys.BpfMap], *,
                   enumerate_fn: Enumerate = enumerate_sockets) -> AdoptionStats:
    """Seed the kernel tables with what existed before the programs were attached. Call it
    after the attach and before declaring the agent ready. Never raises (counted, logged)."""
    stats = AdoptionStats()
    t0 = time.monotonic()
    try:
        snap = enumerate_fn(protocols=("tcp", "udp"), tcp_info=False, limits=SEED_LIMITS)
        stats.sockets_enumerated = len(snap.sockets)
        stats.started_ns = snap.started_ns
        seeded = write_plan(maps, plan_seed(snap, stats), stats)
        if seeded:
            check = enumerate_fn(protocols=("tcp",), tcp_info=False, owners=False,
                                 tcp_states=_CHECK_STATES, limits=SEED_LIMITS)
            withdraw_gone(maps, seeded, check, stats)
    except Exception as exc:  # the agent runs without the old sockets rather than not at all
        stats.errors += 1
        log.error("could not adopt the sockets that existed before the agent: %s", exc,
                  exc_info=log.isEnabledFor(logging.DEBUG))
    stats.elapsed_ms = int((time.monotonic() - t0) * 1000)
    log.info("existing sockets: %d enumerated, %d listeners seeded, %d UDP sockets owned, "
             "%d connections adopted (%d without owner, %d withdrawn), %d errors, %d ms",
             stats.sockets_enumerated, stats.listeners_seeded, stats.udp_sockets_seeded,
             stats.connections_adopted,
             stats.connections_without_owner, stats.connections_withdrawn, stats.errors,
             stats.elapsed_ms)
    return stats

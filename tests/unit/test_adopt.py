"""Seeding the kernel tables from a sock_diag snapshot (otelpeers/kernel/adopt.py), against
in-memory maps with the kernel's update semantics. The real maps: tests/kernel/
test_existing_sockets.py."""

from __future__ import annotations

import errno
import socket
from dataclasses import replace

from otelpeers import abi
from otelpeers.kernel.adopt import (
    AdoptionStats,
    adopt_existing,
    plan_seed,
    raw_addr,
    withdraw_gone,
    write_plan,
)
from otelpeers.kernel.bpfsys import BPF_NOEXIST, BpfError
from otelpeers.kernel.sockdiag import (
    ExistingSocket,
    NamespaceReport,
    SnapshotResult,
    SnapshotStats,
    SocketOwner,
)

NS, OTHER_NS = 4096, 8192
NGINX = SocketOwner(tgid=200, comm="nginx", uid=33, gid=34, cgroup_id=7, cgroup_path="/x",
                    start_boot_ns=1)
CURL = SocketOwner(tgid=300, comm="curl", uid=1000, gid=1000, cgroup_id=None,
                   cgroup_path=None, start_boot_ns=2)
MONO_START = 123_456_789


def sock(cookie: int, state: int, lport: int, *, raddr: str = "", rport: int = 0,
         owner: SocketOwner | None = NGINX, netns: int | None = NS, inode: int = 1,
         family: int = socket.AF_INET, laddr: str = "127.0.0.1") -> ExistingSocket:
    return ExistingSocket(
        cookie=cookie, netns_cookie=netns, netns_inode=netns or 1, family=family,
        protocol=socket.IPPROTO_TCP, sock_type=socket.SOCK_STREAM, state=state,
        local_addr=laddr, local_port=lport, remote_addr=raddr, remote_port=rport, uid=5,
        inode=inode, interface=0, owner=owner, holders=(owner.tgid,) if owner else (),
        owner_joined=False, cgroup_id=9, tcp_info=None, meminfo=None, shutdown=None,
        rqueue=0, wqueue=0)


def snapshot(*socks: ExistingSocket, namespaces: tuple[int, ...] = (NS,)) -> SnapshotResult:
    stats = SnapshotStats(namespaces=[NamespaceReport(n, "self", "", cookie=n)
                                      for n in namespaces])
    return SnapshotResult(tuple(socks), stats, 0, MONO_START)


class FakeMap:
    """update/lookup/delete with the kernel's flags and errors."""

    def __init__(self) -> None:
        self.items: dict[bytes, bytes] = {}

    def lookup(self, key: bytes) -> bytes | None:
        return self.items.get(key)

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        if flags == BPF_NOEXIST and key in self.items:
            raise BpfError(errno.EEXIST, "exists")
        self.items[key] = value

    def delete(self, key: bytes) -> bool:
        return self.items.pop(key, None) is not None


def maps() -> dict[str, FakeMap]:
    return {"listeners": FakeMap(), "sockets": FakeMap()}


def entry(m: dict[str, FakeMap], cookie: int) -> abi.CSock | None:
    raw = m["sockets"].lookup(cookie.to_bytes(8, "little"))
    return None if raw is None else abi.CSock.from_buffer_copy(raw)


LISTENER = sock(10, 10, 8080)
SERVER_END = sock(11, 1, 8080, raddr="127.0.0.1", rport=50000)
CLIENT_END = sock(12, 1, 50000, raddr="127.0.0.1", rport=8080, owner=CURL)


def test_listener_entry_is_keyed_like_the_kernels_with_the_owner() -> None:
    stats = AdoptionStats()
    plan = plan_seed(snapshot(LISTENER), stats)
    ((key, value),) = plan.listeners
    assert key == abi.LISTENER_KEY.struct.pack(NS, 8080)
    lst = abi.CListener.from_buffer_copy(value)
    assert lst.cookie == 10
    o = lst.owner
    assert (o.tgid, o.pid, o.uid, o.gid, o.cgroup_id, o.comm) == (200, 200, 33, 34, 7, b"nginx")
    # the listener's own socket entry lets its release remove the listener entry
    ((cookie, raw),) = plan.listener_socks
    s = abi.CSock.from_buffer_copy(raw)
    assert cookie == 10 and s.bound_port == 8080 and s.netns_cookie == NS
    assert s.flags == abi.F_OWNER | abi.F_ADOPTED  # not a connection: the scan skips it
    assert plan.connections == []
    assert stats.listeners == [LISTENER]  # for the source's LISTEN events
    assert "listeners" not in stats.counters() and "started_ns" not in stats.counters()


def test_listeners_without_owner_or_netns_cookie_are_counted_not_seeded() -> None:
    stats = AdoptionStats()
    plan = plan_seed(snapshot(replace(LISTENER, owner=None),
                              replace(LISTENER, cookie=13, netns_cookie=None)), stats)
    assert plan.listeners == []
    assert stats.listeners_without_owner == 1 and stats.skipped_no_netns_cookie == 1


def test_connections_get_direction_owner_start_and_their_local_pair() -> None:
    stats = AdoptionStats()
    plan = plan_seed(snapshot(LISTENER, SERVER_END, CLIENT_END), stats)
    conns = {c: abi.CSock.from_buffer_copy(v) for c, v in plan.connections}
    assert set(conns) == {11, 12}
    srv, cli = conns[11], conns[12]
    assert srv.direction == abi.Direction.INBOUND and cli.direction == abi.Direction.OUTBOUND
    for s in (srv, cli):
        assert s.flags == abi.F_OWNER | abi.F_ADOPTED | abi.S_CONN | abi.S_ESTABLISHED
        assert s.start_ns == MONO_START and s.netns_cookie == NS
        assert s.protocol == socket.IPPROTO_TCP and s.sock_type == socket.SOCK_STREAM
        assert bytes(s.c) == bytes(abi.CCounters())  # bytes count from adoption on
    assert (srv.lport, srv.rport, cli.lport, cli.rport) == (8080, 50000, 50000, 8080)
    assert bytes(srv.laddr)[:4] == socket.inet_aton("127.0.0.1")
    assert srv.peer_cookie == 12 and cli.peer_cookie == 11
    assert cli.owner.tgid == 300 and cli.owner.uid == 1000 and cli.owner.cgroup_id == 9


def test_only_held_open_connections_are_adopted() -> None:
    """No fd (accept queue, closed by the application) or a closing state: their release
    already ran or never will, so an entry would never end."""
    stats = AdoptionStats()
    plan = plan_seed(snapshot(
        replace(SERVER_END, cookie=20, inode=0), replace(SERVER_END, cookie=21, state=4),
        replace(SERVER_END, cookie=22, state=6), replace(SERVER_END, cookie=23, state=8),
        replace(SERVER_END, cookie=24, owner=None)), stats)
    assert sorted(c for c, _ in plan.connections) == [23, 24]  # CLOSE_WAIT, and no owner
    assert stats.connections_without_owner == 1
    no_owner = abi.CSock.from_buffer_copy(dict(plan.connections)[24])
    assert not no_owner.flags & abi.F_OWNER


def test_mapped_ipv4_of_an_ipv6_socket_goes_back_to_its_mapped_form() -> None:
    assert raw_addr(socket.AF_INET6, "10.0.0.1") == b"\0" * 10 + b"\xff\xff" + bytes(
        [10, 0, 0, 1])
    assert raw_addr(socket.AF_INET, "10.0.0.1") == bytes([10, 0, 0, 1]) + bytes(12)
    assert raw_addr(socket.AF_INET6, "") == bytes(16)


def test_entries_the_programs_made_meanwhile_win() -> None:
    m = maps()
    newer = abi.CListener(cookie=99)
    m["listeners"].update(abi.LISTENER_KEY.struct.pack(NS, 8080), bytes(newer))
    counted = abi.CSock()
    counted.c.payload_out, counted.last_ns = 700, 55  # cgroup_skb since the attach
    m["sockets"].update((11).to_bytes(8, "little"), bytes(counted))
    owned = abi.CSock(flags=abi.F_OWNER)  # a process-context hook ran: it knows better
    m["sockets"].update((12).to_bytes(8, "little"), bytes(owned))
    stats = AdoptionStats()
    seeded = write_plan(m, plan_seed(snapshot(LISTENER, SERVER_END, CLIENT_END), stats), stats)
    assert stats.listeners_present == 1 and stats.listeners_seeded == 0
    assert abi.CListener.from_buffer_copy(
        m["listeners"].lookup(abi.LISTENER_KEY.struct.pack(NS, 8080))).cookie == 99
    srv = entry(m, 11)
    assert srv is not None and srv.flags & abi.F_ADOPTED and srv.c.payload_out == 700
    assert srv.last_ns == 55
    assert bytes(entry(m, 12)) == bytes(owned)
    assert seeded == [(11, NS)] and stats.connections_adopted == 1


def test_connections_gone_before_the_seed_took_hold_are_withdrawn() -> None:
    m = maps()
    stats = AdoptionStats()
    other = replace(CLIENT_END, cookie=30, netns_cookie=OTHER_NS, remote_port=9)
    seeded = write_plan(m, plan_seed(snapshot(LISTENER, SERVER_END, CLIENT_END, other),
                                     stats), stats)
    assert stats.connections_adopted == 3
    # the check still finds 11 held; 12 is gone; OTHER_NS could not be dumped: not judged
    check = snapshot(SERVER_END, namespaces=(NS,))
    check.stats.namespaces.append(NamespaceReport(OTHER_NS, "proc", "", cookie=OTHER_NS,
                                                  errors={"tcp4": "ETIMEDOUT"}))
    withdraw_gone(m, seeded, check, stats)
    assert entry(m, 11) is not None and entry(m, 12) is None and entry(m, 30) is not None
    assert stats.connections_withdrawn == 1 and stats.connections_adopted == 2


def test_adoption_never_fails_the_start() -> None:
    def broken(**_kw: object) -> SnapshotResult:
        raise OSError(errno.EPERM, "not permitted")

    stats = adopt_existing(maps(), enumerate_fn=broken)  # type: ignore[arg-type]
    assert stats.errors == 1 and stats.connections_adopted == 0
    assert stats.counters()["errors"] == 1


def test_adopt_existing_enumerates_seeds_and_checks() -> None:
    calls: list[dict[str, object]] = []

    def fake(**kw: object) -> SnapshotResult:
        calls.append(kw)
        if len(calls) == 1:
            return snapshot(LISTENER, SERVER_END, CLIENT_END)
        return snapshot(SERVER_END, CLIENT_END)

    m = maps()
    stats = adopt_existing(m, enumerate_fn=fake)  # type: ignore[arg-type]
    assert (stats.sockets_enumerated, stats.listeners_seeded, stats.connections_adopted,
            stats.connections_withdrawn, stats.errors) == (3, 1, 2, 0, 0)
    assert calls[0]["protocols"] == ("tcp", "udp") and calls[1]["owners"] is False
    assert entry(m, 10) is not None and entry(m, 11) is not None


def test_udp_sockets_get_their_owner_only() -> None:
    udp = replace(sock(40, 7, 5353, owner=CURL), protocol=socket.IPPROTO_UDP,
                  sock_type=socket.SOCK_DGRAM)
    stats = AdoptionStats()
    plan = plan_seed(snapshot(udp, replace(udp, cookie=41, owner=None)), stats)
    ((cookie, raw),) = plan.udp_socks
    v = abi.CSock.from_buffer_copy(raw)
    assert cookie == 40 and v.owner.tgid == 300 and v.protocol == socket.IPPROTO_UDP
    assert v.flags == abi.F_OWNER | abi.F_ADOPTED and v.lport == 5353  # not a connection
    assert plan.connections == [] and plan.listeners == []
    m = maps()
    assert write_plan(m, plan, stats) == [] and stats.udp_sockets_seeded == 1
    assert entry(m, 40) is not None

"""enumerate_sockets() against real sockets, and its cookies against what BPF programs see.

A small bcc program (post_bind and sock_ops) is attached to a cgroup this test creates, not
at the root, and the test's peer processes are moved into that cgroup before they open any
socket: the program sees exactly their sockets, and records the socket cookie, netns cookie
and cgroup id it was given. The snapshot must report the same numbers for the same sockets.
Everything (links, programs, the cgroup, processes, namespaces) is removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import NetNs, netns

from otelpeers.kernel import bpfsys
from otelpeers.kernel.cgroup import find_cgroup2_mount
from otelpeers.kernel.netns import netns_cookie, run_in_netns, self_netns_inode
from otelpeers.kernel.sockdiag import (
    STATES_WITHOUT_TIME_WAIT,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    TCP_TIME_WAIT,
    ExistingSocket,
    SnapshotResult,
    enumerate_sockets,
)

pytestmark = pytest.mark.kernel

PEER = str(Path(__file__).with_name("sockdiag_peer.py"))
SO_COOKIE = 57  # asm-generic/socket.h

PROBE_C = r"""
#include <uapi/linux/bpf.h>

struct key_t { u32 kind; u32 port; };  /* kind: IPPROTO_TCP/UDP (bind), 100/101 (estab.) */
struct val_t { u64 cookie; u64 netns_cookie; u64 cgroup_id; u32 tgid; u32 pad; };
BPF_HASH(seen, struct key_t, struct val_t, 1024);

static __always_inline int on_bind(struct bpf_sock *sk)
{
    struct key_t k = {};
    struct val_t v = {};
    k.kind = sk->protocol;
    k.port = sk->src_port;
    v.cookie = bpf_get_socket_cookie(sk);
    v.netns_cookie = bpf_get_netns_cookie(sk);
    v.cgroup_id = bpf_get_current_cgroup_id();
    v.tgid = bpf_get_current_pid_tgid() >> 32;
    seen.update(&k, &v);
    return 1;
}

int sdtest_bind4(struct bpf_sock *sk) { return on_bind(sk); }
int sdtest_bind6(struct bpf_sock *sk) { return on_bind(sk); }

int sdtest_sockops(struct bpf_sock_ops *skops)
{
    u32 op = skops->op;
    if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
        return 1;
    struct key_t k = {};
    struct val_t v = {};
    k.kind = op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB ? 100 : 101;
    k.port = skops->local_port;
    v.cookie = bpf_get_socket_cookie(skops);
    seen.update(&k, &v);
    return 1;
}
"""


@dataclass(frozen=True)
class Seen:
    cookie: int
    netns_cookie: int
    cgroup_id: int
    tgid: int


class Probe:
    """The test program, attached to a fresh cgroup; processes started through `argv` run in
    that cgroup from their first instruction on."""

    def __init__(self) -> None:
        from bcc import BPF

        mount = find_cgroup2_mount()
        assert mount, "cgroup v2 is not mounted"
        self.cgroup = Path(mount) / f"otp-sockdiag-test-{os.getpid()}"
        self.cgroup.mkdir()
        self.links: list[int] = []
        self.bpf = None
        self.cgroup_fd = -1
        try:
            self.cgroup_fd = os.open(self.cgroup, os.O_RDONLY | os.O_DIRECTORY)
            self.bpf = BPF(text=PROBE_C.encode())
            for name, prog_type, attach in (
                    ("sdtest_bind4", BPF.CGROUP_SOCK, bpfsys.CGROUP_INET4_POST_BIND),
                    ("sdtest_bind6", BPF.CGROUP_SOCK, bpfsys.CGROUP_INET6_POST_BIND),
                    ("sdtest_sockops", BPF.SOCK_OPS, bpfsys.CGROUP_SOCK_OPS)):
                at = attach if prog_type == BPF.CGROUP_SOCK else -1
                fn = self.bpf.load_func(name.encode(), prog_type, attach_type=at)
                self.links.append(bpfsys.link_create(fn.fd, self.cgroup_fd, attach))
        except BaseException:
            self.close()
            raise

    def argv(self, argv: list[str]) -> list[str]:
        procs = str(self.cgroup / "cgroup.procs")
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv]

    def get(self, kind: int, port: int) -> Seen:
        table = self.bpf[b"seen"]  # type: ignore[index]
        for k, v in table.items():
            if k.kind == kind and k.port == port:
                return Seen(v.cookie, v.netns_cookie, v.cgroup_id, v.tgid)
        raise AssertionError(f"the BPF program saw no socket of kind {kind} on port {port}")

    def clear(self) -> None:
        self.bpf[b"seen"].clear()  # type: ignore[index]

    def close(self) -> None:
        for fd in self.links:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.links.clear()
        if self.bpf is not None:
            with contextlib.suppress(Exception):
                self.bpf.cleanup()
            self.bpf = None
        if self.cgroup_fd >= 0:
            os.close(self.cgroup_fd)
            self.cgroup_fd = -1
        # The cgroup can go once its processes are gone (they are waited for by then).
        for _ in range(100):
            try:
                self.cgroup.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)  # a just-reaped process may still be leaving the cgroup
        self.cgroup.rmdir()


@pytest.fixture
def probe() -> Iterator[Probe]:
    p = Probe()
    try:
        yield p
    finally:
        p.close()
    assert not p.cgroup.exists()


@dataclass(frozen=True)
class PeerInfo:
    pid: int
    child: int
    listen: int
    client: int
    udp: int


def _readline(p: subprocess.Popen[str], timeout: float) -> str:
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(p.stdout.readline()))  # type: ignore[union-attr]
    t.start()
    t.join(timeout)
    return got[0].strip() if got else ""


@contextlib.contextmanager
def holder(probe: Probe, addr: str, *, ns: NetNs | None = None,
           fork: bool = False) -> Iterator[PeerInfo]:
    argv = [sys.executable, PEER, addr] + (["--fork"] if fork else [])
    if ns is not None:
        argv = ns.cmd(*argv)
    p = subprocess.Popen(probe.argv(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = _readline(p, 15.0)
        assert line.startswith("READY"), f"peer did not start: {line!r}"
        fields = dict(kv.split("=") for kv in line.split()[1:])
        yield PeerInfo(*(int(fields[k]) for k in ("pid", "child", "listen", "client", "udp")))
    finally:
        p.stdin.close()  # type: ignore[union-attr]
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        assert p.returncode == 0, p.stderr.read()  # type: ignore[union-attr]


def find(result: SnapshotResult, *, netns_inode: int, protocol: int, state: int,
         local_port: int, remote_port: int | None = None) -> ExistingSocket:
    hits = [s for s in result.sockets
            if s.netns_inode == netns_inode and s.protocol == protocol and s.state == state
            and s.local_port == local_port
            and (remote_port is None or s.remote_port == remote_port)]
    assert len(hits) == 1, (f"expected one socket {protocol}/{state} on port {local_port} in "
                            f"netns {netns_inode}, got {hits}")
    return hits[0]


def check_peer(result: SnapshotResult, probe: Probe, info: PeerInfo, netns_inode: int,
               *, fork: bool) -> None:
    tcp, udp = socket.IPPROTO_TCP, socket.IPPROTO_UDP
    lst = find(result, netns_inode=netns_inode, protocol=tcp, state=TCP_LISTEN,
               local_port=info.listen)
    cli = find(result, netns_inode=netns_inode, protocol=tcp, state=TCP_ESTABLISHED,
               local_port=info.client, remote_port=info.listen)
    srv = find(result, netns_inode=netns_inode, protocol=tcp, state=TCP_ESTABLISHED,
               local_port=info.listen, remote_port=info.client)
    dgram = find(result, netns_inode=netns_inode, protocol=udp, state=7,
                 local_port=info.udp)

    # The cookies BPF programs see, for the same sockets.
    seen_lst = probe.get(tcp, info.listen)
    seen_udp = probe.get(udp, info.udp)
    assert lst.cookie == seen_lst.cookie
    assert dgram.cookie == seen_udp.cookie
    assert cli.cookie == probe.get(100, info.client).cookie
    assert srv.cookie == probe.get(101, info.listen).cookie
    assert len({lst.cookie, cli.cookie, srv.cookie, dgram.cookie}) == 4
    # The namespace cookie and the cgroup id, as the programs got them.
    for s in (lst, cli, srv, dgram):
        assert s.netns_cookie == seen_lst.netns_cookie
        assert s.cgroup_id == seen_lst.cgroup_id  # INET_DIAG_CGROUP_ID: where it was made
    # Owners.
    assert seen_lst.tgid == info.pid
    for s in (lst, cli, srv, dgram):
        assert s.owner is not None and s.owner.tgid == info.pid, s
        assert s.owner.cgroup_id == seen_lst.cgroup_id  # == bpf_get_current_cgroup_id()
        assert s.owner.uid == 0 and s.owner.gid == 0 and s.uid == 0
        assert s.owner.comm.startswith("python")
        assert s.owner.cgroup_path == "/" + probe.cgroup.name
        assert not s.owner_joined
    # A forked worker inherits every fd; the master (older) stays the owner.
    expected = (info.pid, info.child) if fork else (info.pid,)
    assert lst.holders == cli.holders == srv.holders == dgram.holders == expected
    # Addresses and the kernel's TCP counters (3000 bytes one way, 1000 the other).
    assert (cli.remote_addr, cli.local_addr) == (lst.local_addr, lst.local_addr)
    assert cli.tcp_info is not None and srv.tcp_info is not None
    assert cli.tcp_info.bytes_acked == 3000 + 1  # the kernel counts the SYN as acked
    assert cli.tcp_info.bytes_received == 1000
    assert srv.tcp_info.bytes_received == 3000
    assert cli.tcp_info.segs_out is not None and cli.tcp_info.segs_out >= 3
    assert cli.tcp_info.rtt_us is not None and cli.tcp_info.rtt_us > 0
    assert cli.inode and srv.inode and lst.inode and dgram.inode


@pytest.mark.parametrize("addr", ["127.0.0.1", "::1"])
def test_root_namespace_cookies_owners_and_tcp_info(probe: Probe, addr: str) -> None:
    own = self_netns_inode()
    with holder(probe, addr, fork=True) as info:
        result = enumerate_sockets()
        check_peer(result, probe, info, own, fork=True)
        report = next(n for n in result.stats.namespaces if n.inode == own)
        assert report.source == "self" and report.errors.keys() <= {"raw4", "raw6"}
        assert result.stats.dump.truncated == result.stats.dump.malformed == 0
        assert not result.stats.walk.out_of_time
    after = enumerate_sockets()
    gone = {probe.get(socket.IPPROTO_TCP, info.listen).cookie,
            probe.get(socket.IPPROTO_UDP, info.udp).cookie}
    assert not gone & {s.cookie for s in after.sockets}


def test_test_namespace(probe: Probe) -> None:
    with netns() as ns:
        ns_inode = os.stat(f"/run/netns/{ns.name}").st_ino
        with holder(probe, ns.ns_ip, ns=ns) as info:
            result = enumerate_sockets()
            check_peer(result, probe, info, ns_inode, fork=False)
            report = next(n for n in result.stats.namespaces if n.inode == ns_inode)
            assert report.cookie == probe.get(socket.IPPROTO_TCP, info.listen).netns_cookie
            assert report.cookie != next(n.cookie for n in result.stats.namespaces
                                         if n.source == "self")
            # Without the other namespaces, only the agent's own is dumped.
            own_only = enumerate_sockets(all_namespaces=False)
            assert {s.netns_inode for s in own_only.sockets} <= {self_netns_inode()}
            assert info.listen not in {s.local_port for s in own_only.sockets
                                       if s.netns_inode == ns_inode}


def _listener_in(path: str, addr: str) -> tuple[socket.socket, int | None]:
    def make() -> tuple[socket.socket, int | None]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((addr, 0))
        s.listen(4)
        return s, netns_cookie(s)

    return run_in_netns(path, make)


def test_namespace_with_no_process_is_found_through_run_netns() -> None:
    """A socket this (root-namespace) process made inside a namespace nobody lives in."""
    with netns() as ns:
        path = f"/run/netns/{ns.name}"
        ns_inode = os.stat(path).st_ino
        lst, cookie = _listener_in(path, ns.ns_ip)
        with lst:
            assert os.readlink("/proc/thread-self/ns/net") != f"net:[{ns_inode}]"
            result = enumerate_sockets()
            s = find(result, netns_inode=ns_inode, protocol=socket.IPPROTO_TCP,
                     state=TCP_LISTEN, local_port=lst.getsockname()[1])
            assert s.cookie == int.from_bytes(
                lst.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), sys.byteorder)
            assert s.netns_cookie == cookie
            assert s.owner is not None and s.owner.tgid == os.getpid()
            report = next(n for n in result.stats.namespaces if n.inode == ns_inode)
            assert report.source == "run-netns"



@pytest.mark.parametrize("opened_via", ["proc", "bind-mount"])
def test_namespace_named_only_by_an_open_fd(opened_via: str) -> None:
    """`ip netns del` removed the bind mount and no process lives there; this process keeps
    the namespace open (an fd, opened through /proc/.../ns/net or through the bind mount
    that is gone now) and a listener made inside it."""
    name = f"otp-sd-{os.getpid()}"
    path = f"/run/netns/{name}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        if opened_via == "proc":
            ns_fd = run_in_netns(path, lambda: os.open("/proc/thread-self/ns/net", os.O_RDONLY))
        else:
            ns_fd = os.open(path, os.O_RDONLY)
        lst, cookie = _listener_in(path, "127.0.0.1")
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    try:
        ns_inode = os.fstat(ns_fd).st_ino
        result = enumerate_sockets()
        s = find(result, netns_inode=ns_inode, protocol=socket.IPPROTO_TCP, state=TCP_LISTEN,
                 local_port=lst.getsockname()[1])
        assert s.owner is not None and s.owner.tgid == os.getpid()
        assert s.netns_cookie == cookie
        report = next(n for n in result.stats.namespaces if n.inode == ns_inode)
        assert report.source == "fd" and report.path.startswith(f"/proc/{os.getpid()}/fd/")
    finally:
        lst.close()
        os.close(ns_fd)
    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                      text=True).stdout


def test_accept_queue_socket_takes_the_listener_owner() -> None:
    """A connection the server has not accept()ed yet has no file: owned via its listener."""
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(4)
        port = lst.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as cli:
            result = enumerate_sockets(protocols=("tcp",))
            own = self_netns_inode()
            queued = find(result, netns_inode=own, protocol=socket.IPPROTO_TCP,
                          state=TCP_ESTABLISHED, local_port=port,
                          remote_port=cli.getsockname()[1])
            assert queued.inode == 0 and queued.owner_joined
            assert queued.owner is not None and queued.owner.tgid == os.getpid()
            assert result.stats.owner_joined >= 1


def test_time_wait_keeps_the_cookie_and_can_be_left_out() -> None:
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(4)
        port = lst.getsockname()[1]
        cli = socket.create_connection(("127.0.0.1", port))
        srv, _ = lst.accept()
        cookie = int.from_bytes(cli.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), sys.byteorder)
        cport = cli.getsockname()[1]
        cli.close()  # the active closer ends in TIME_WAIT
        srv.recv(1)  # EOF: the FIN arrived
        srv.close()
        own = self_netns_inode()
        deadline = time.monotonic() + 5
        while True:  # the last ACK moves the client end from FIN_WAIT2 to TIME_WAIT
            result = enumerate_sockets(protocols=("tcp",), all_namespaces=False)
            tw = [s for s in result.sockets if s.local_port == cport and s.remote_port == port]
            if tw and tw[0].state == TCP_TIME_WAIT or time.monotonic() > deadline:
                break
            time.sleep(0.01)  # softirq work on loopback; no event to wait on
        assert len(tw) == 1 and tw[0].state == TCP_TIME_WAIT, tw
        assert tw[0].cookie == cookie and tw[0].owner is None and tw[0].inode == 0
        assert tw[0].netns_inode == own
        result = enumerate_sockets(protocols=("tcp",), all_namespaces=False,
                                   tcp_states=STATES_WITHOUT_TIME_WAIT)
        assert cookie not in {s.cookie for s in result.sockets}
        assert port in {s.local_port for s in result.sockets if s.state == TCP_LISTEN}

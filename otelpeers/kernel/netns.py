"""Network namespaces the agent can reach, and objects (sockets) made inside them.

A namespace is found through a path that names it: a process's /proc/PID/ns/net, a bind
mount under /run/netns (`ip netns add`), or an open namespace fd in /proc/PID/fd. Namespaces
are told apart by their nsfs inode.

Entering one uses setns(2), which changes only the calling *thread*. `run_in_netns` does it in
a short-lived thread of its own that enters, runs one function, goes back and exits, so no
other thread of the agent ever runs in a foreign namespace. A socket keeps the namespace it
was created in, so a netlink socket opened there can be used from any thread afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

CLONE_NEWNET = 0x40000000
SO_NETNS_COOKIE = 71  # asm-generic/socket.h (x86_64, arm64); Linux >= 5.14
SELF_NETNS = "/proc/thread-self/ns/net"
RUN_NETNS = "/run/netns"

T = TypeVar("T")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


@dataclass(frozen=True, slots=True)
class NetnsRef:
    """One network namespace and a path that enters it."""

    inode: int
    source: str  # "self" (the agent's own), "proc" (a process's), "run-netns", "fd"
    path: str  # opened to enter it; the agent's own is entered by not entering anything


@dataclass
class DiscoveryStats:
    processes: int = 0  # /proc entries looked at
    unreadable: int = 0  # ns/net links that could not be read (process gone, no permission)
    stale_run_netns: int = 0  # /run/netns entries that are not a namespace (no bind mount)
    cut: int = 0  # namespaces left out because max_namespaces was reached


def parse_net_link(target: str) -> int | None:
    """'net:[4026531840]' -> 4026531840; anything else -> None."""
    if target.startswith("net:[") and target.endswith("]"):
        digits = target[5:-1]
        if digits.isdigit():
            return int(digits)
    return None


def self_netns_inode() -> int:
    return os.stat(SELF_NETNS).st_ino


def nsfs_device() -> int:
    """The device of the nsfs pseudo filesystem: a /run/netns entry that is a real namespace
    has it; a leftover plain file (the bind mount is gone) does not."""
    return os.stat(SELF_NETNS).st_dev


def discover_namespaces(*, proc_root: str = "/proc", run_netns_dir: str = RUN_NETNS,
                        self_inode: int | None = None, nsfs_dev: int | None = None,
                        max_pids: int = 1_000_000, max_namespaces: int = 4096,
                        stats: DiscoveryStats | None = None) -> list[NetnsRef]:
    """Every distinct namespace named by a process or by /run/netns, the agent's own first.

    One readlink per process. A namespace seen through several paths is listed once, with
    the first path found (processes before /run/netns)."""
    stats = stats if stats is not None else DiscoveryStats()
    own = self_netns_inode() if self_inode is None else self_inode
    refs = [NetnsRef(own, "self", "")]
    seen = {own}

    def add(ref: NetnsRef) -> None:
        if ref.inode in seen:
            return
        if len(refs) >= max_namespaces:
            stats.cut += 1
            return
        seen.add(ref.inode)
        refs.append(ref)

    try:
        with os.scandir(proc_root) as it:
            names = sorted((e.name for e in it if e.name.isdigit()), key=int)
    except OSError:
        names = []
    for name in names[:max_pids]:
        stats.processes += 1
        path = f"{proc_root}/{name}/ns/net"
        try:
            inode = parse_net_link(os.readlink(path))
        except OSError:
            inode = None
        if inode is None:
            stats.unreadable += 1
            continue
        add(NetnsRef(inode, "proc", path))

    dev = nsfs_device() if nsfs_dev is None else nsfs_dev
    try:
        with os.scandir(run_netns_dir) as it:
            entries = sorted(e.name for e in it)
    except OSError:
        entries = []
    for name in entries:
        path = f"{run_netns_dir}/{name}"
        try:
            st = os.stat(path)
        except OSError:
            stats.stale_run_netns += 1
            continue
        if st.st_dev != dev:
            stats.stale_run_netns += 1
            continue
        add(NetnsRef(st.st_ino, "run-netns", path))
    return refs


class NetnsEnterError(OSError):
    """The namespace could not be entered (gone, or not permitted)."""


def run_in_netns(path: str, fn: Callable[[], T], *, expect_inode: int | None = None) -> T:
    """Run fn() in a new thread that has entered the network namespace at `path`.

    The thread returns to its original namespace before it exits (and would take a foreign
    one with it if that failed: the thread ends either way). What fn() creates (sockets)
    stays in the namespace it was made in. With expect_inode, a path that now names another
    namespace (the process exited and its pid was reused) is refused."""
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            error.append(NetnsEnterError(exc.errno, f"cannot open {path}: {exc.strerror}"))
            return
        try:
            inode = os.fstat(target).st_ino
            if expect_inode is not None and inode != expect_inode:
                error.append(NetnsEnterError(
                    0, f"{path} now names namespace {inode}, not {expect_inode}"))
                return
            home = os.open(SELF_NETNS, os.O_RDONLY | os.O_CLOEXEC)
            try:
                try:
                    _setns(target)
                except OSError as exc:
                    error.append(NetnsEnterError(
                        exc.errno, f"cannot enter {path}: {os.strerror(exc.errno or 0)}"))
                    return
                try:
                    result.append(fn())
                finally:
                    # The thread ends right after, so a failed return cannot leak the
                    # namespace into other work; still, try to leave cleanly.
                    with contextlib.suppress(OSError):
                        _setns(home)
            finally:
                os.close(home)
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)
        finally:
            os.close(target)

    t = threading.Thread(target=body, name="otelpeers-netns", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def netns_cookie(sock: socket.socket) -> int | None:
    """SO_NETNS_COOKIE of the socket's namespace (what bpf_get_netns_cookie returns for
    sockets in it); None before Linux 5.14."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
    except OSError:
        return None
    return int.from_bytes(raw, sys.byteorder) if len(raw) == 8 else None

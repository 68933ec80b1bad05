"""Which processes hold which sockets: one bounded walk of /proc/*/fd.

A socket fd is a link 'socket:[INODE]'; socket inodes are unique host-wide (sockfs), so one
walk serves every network namespace. Open namespace fds ('net:[INODE]') are noted on the
way: they can name namespaces that no process lives in.

The walk is bounded by processes, fds per process and time; every cut is counted. Owner
details come from procfs (otelpeers.process.procfs) and the cgroup-v2 tree: the cgroup id
is the inode of the process's cgroup directory, which is what bpf_get_current_cgroup_id()
returns for that process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from otelpeers.process.procfs import ProcFS

_SOCKET = "socket:["
_NET = "net:["


@dataclass
class WalkStats:
    processes: int = 0  # process fd directories read
    processes_cut: int = 0  # processes not walked (max_processes or the time budget)
    unreadable: int = 0  # fd directories that could not be listed (gone, not permitted)
    fds: int = 0  # fd links read
    fd_lists_cut: int = 0  # processes with more fds than max_fds_per_process
    socket_fds: int = 0
    out_of_time: bool = False  # the time budget ended the walk
    elapsed_s: float = 0.0


@dataclass
class FdWalk:
    holders: dict[int, list[int]] = field(default_factory=dict)  # socket inode -> tgids
    netns_fds: dict[int, str] = field(default_factory=dict)  # netns inode -> a path to it
    stats: WalkStats = field(default_factory=WalkStats)


def walk_fds(proc_root: str = "/proc", *, max_processes: int = 100_000,
             max_fds_per_process: int = 262_144, deadline: float | None = None,
             clock: Callable[[], float] = time.monotonic,
             nsfs_dev: int | None = None) -> FdWalk:
    """Map socket inode -> the processes holding it, in /proc order, each pid once.
    `deadline` is a clock() value after which no further process is walked. With nsfs_dev
    (netns.nsfs_device()), namespace fds whose link no longer names them are found too."""
    now = clock
    started = now()
    walk = FdWalk()
    st = walk.stats
    holders = walk.holders
    try:
        with os.scandir(proc_root) as it:
            pids = sorted((e.name for e in it if e.name.isdigit()), key=int)
    except OSError:
        pids = []
    if len(pids) > max_processes:
        st.processes_cut += len(pids) - max_processes
        pids = pids[:max_processes]
    for index, name in enumerate(pids):
        if deadline is not None and now() > deadline:
            st.out_of_time = True
            st.processes_cut += len(pids) - index
            break
        try:
            dirfd = os.open(f"{proc_root}/{name}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            st.unreadable += 1
            continue
        try:
            try:
                fds = os.listdir(dirfd)
            except OSError:
                st.unreadable += 1
                continue
            st.processes += 1
            if len(fds) > max_fds_per_process:
                st.fd_lists_cut += 1
                fds = fds[:max_fds_per_process]
            pid = int(name)
            st.fds += len(fds)
            for fd in fds:
                try:
                    target = os.readlink(fd, dir_fd=dirfd)
                except OSError:
                    continue  # closed meanwhile
                if target.startswith(_SOCKET):
                    digits = target[8:-1]
                    if not digits.isdigit():
                        continue
                    st.socket_fds += 1
                    pids_of = holders.get(int(digits))
                    if pids_of is None:
                        holders[int(digits)] = [pid]
                    elif pids_of[-1] != pid:  # dup'ed fds of one process count once
                        pids_of.append(pid)
                elif target.startswith(_NET):
                    digits = target[5:-1]
                    if digits.isdigit():
                        walk.netns_fds.setdefault(int(digits), f"{proc_root}/{name}/fd/{fd}")
                elif target == "/" and nsfs_dev is not None:
                    # A namespace fd opened through a bind mount that was unmounted since
                    # (`ip netns del`) reads as "/": stat tells it from a real "/".
                    path = f"{proc_root}/{name}/fd/{fd}"
                    try:
                        fst = os.stat(path)
                    except OSError:
                        continue
                    if fst.st_dev == nsfs_dev:
                        walk.netns_fds.setdefault(fst.st_ino, path)
        finally:
            os.close(dirfd)
    st.elapsed_s = now() - started
    return walk


@dataclass(frozen=True, slots=True)
class SocketOwner:
    """The process chosen as a socket's owner, with what the kernel's op_owner holds.

    uid/gid are the real ids (bpf_get_current_uid_gid() reports those); comm is the main
    thread's (the kernel reports the calling thread's, which may differ); pid is left to the
    caller (a thread id is unknowable here: use tgid)."""

    tgid: int
    comm: str
    uid: int | None
    gid: int | None
    cgroup_id: int | None  # inode of the cgroup-v2 directory; None when not found
    cgroup_path: str | None  # the 0:: path of /proc/PID/cgroup
    start_boot_ns: int  # process start in ns since boot (ProcessTable.lookup start_hint_ns)


@dataclass
class OwnerStats:
    read: int = 0  # processes read
    vanished: int = 0  # holders gone (or pid reused) before they could be read
    cgroup_unknown: int = 0  # owners whose cgroup directory could not be found


class OwnerResolver:
    """Reads owner details once per pid; orders a socket's holders oldest first."""

    def __init__(self, proc_root: str = "/proc", *, cgroup_root: str | None = None) -> None:
        self.procfs = ProcFS(proc_root)
        self.cgroup_root = cgroup_root.rstrip("/") if cgroup_root else None
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.stats = OwnerStats()
        self._starts: dict[int, int | None] = {}
        self._owners: dict[int, SocketOwner | None] = {}
        self._cgroup_ids: dict[str, int | None] = {}

    def start_ticks(self, pid: int) -> int | None:
        if pid not in self._starts:
            stat = self.procfs.stat(pid)
            self._starts[pid] = stat.start_ticks if stat else None
        return self._starts[pid]

    def order(self, pids: list[int]) -> tuple[int, ...]:
        """Holders oldest first (the pre-fork master before its workers), then by pid;
        processes already gone last."""
        if len(pids) == 1:
            return (pids[0],)
        far = 1 << 62

        def key(pid: int) -> tuple[int, int]:
            start = self.start_ticks(pid)
            return (far if start is None else start, pid)

        return tuple(sorted(set(pids), key=key))

    def owner(self, holders: tuple[int, ...]) -> SocketOwner | None:
        """The first holder that can still be read."""
        for pid in holders:
            info = self.read(pid)
            if info is not None:
                return info
        return None

    def read(self, pid: int) -> SocketOwner | None:
        if pid in self._owners:
            return self._owners[pid]
        info = self._read(pid)
        self._owners[pid] = info
        return info

    def _read(self, pid: int) -> SocketOwner | None:
        stat = self.procfs.stat(pid)
        if stat is None:
            self.stats.vanished += 1
            return None
        known = self._starts.setdefault(pid, stat.start_ticks)
        if known is not None and known != stat.start_ticks:
            self.stats.vanished += 1  # pid reused since it was ordered
            return None
        status = self.procfs.status(pid)
        cg = self.procfs.cgroup(pid)
        cgroup_path = cg[0] if cg else None
        cgroup_id = self._cgroup_id(cgroup_path)
        if cgroup_id is None:
            self.stats.cgroup_unknown += 1
        self.stats.read += 1
        return SocketOwner(
            tgid=pid,
            comm=stat.comm,
            uid=status.uid if status else None,
            gid=status.gid if status else None,
            cgroup_id=cgroup_id,
            cgroup_path=cgroup_path,
            start_boot_ns=stat.start_ticks * 1_000_000_000 // self.hz,
        )

    def _cgroup_id(self, path: str | None) -> int | None:
        if path is None or self.cgroup_root is None or not path.startswith("/"):
            return None
        if path not in self._cgroup_ids:
            try:
                ino: int | None = os.stat(self.cgroup_root + path.rstrip("/")
                                          if path != "/" else self.cgroup_root).st_ino
            except OSError:
                ino = None
            if len(self._cgroup_ids) < 65536:
                self._cgroup_ids[path] = ino
            return ino
        return self._cgroup_ids[path]

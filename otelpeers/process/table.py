"""ProcessTable: pid -> process context (executable, command line, user, container, ...).

Read from procfs on first sight, cached (bounded LRU), revalidated by start time so that a
reused pid is never given the context of the process that had it before. Exited processes
stay for config.process.exited_grace_s so that flows closing after their owner's exit
still get its context. Thread safe: the prefetch worker reads /proc, the exporter asks for
attributes from its own thread; /proc reads and executable hashing happen outside the lock,
and the pipeline thread itself only peeks at the cache (ProcessStage).

A process caught between exec and the kernel setting up its arguments has an empty
/proc/PID/cmdline: such an entry is re-read on its next lookups (CMDLINE_RETRIES).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cachetools import Cache, LRUCache

from otelpeers.config import ProcessConfig
from otelpeers.process.container import container_from_cgroup
from otelpeers.process.procfs import MAX_COMM, ProcFS, RawProcess, sanitize
from otelpeers.process.redact import redact_argv

MAX_ANCESTRY = 16
MAX_HASH_BYTES = 256 * 1024 * 1024  # larger executables are not hashed (cost)
MAX_HASH_ENTRIES = 4096  # distinct executables remembered
MAX_NAME_ENTRIES = 4096  # uid/gid -> name entries remembered
REVALIDATE_S = 1.0  # a cached live entry's start time is re-checked at most this often
COMM_RECHECK_S = 0.1  # ... or this often when the kernel's comm differs (exec, named thread)
_DELETED = " (deleted)"
CMDLINE_RETRIES = 5  # lookups that re-read an empty command line of a live process



@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    ppid: int
    start_time_ticks: int
    comm: str
    exe_path: str | None
    exe_name: str | None
    command_line: str | None  # redacted when config.process.redact_command_lines
    command_line_truncated: bool
    uid: int | None  # real
    euid: int | None
    gid: int | None  # real
    egid: int | None
    user_name: str | None  # of euid
    real_user_name: str | None  # of uid
    group_name: str | None  # of egid
    vpid: int | None  # pid in the innermost pid namespace, when nested
    creation_time_ns: int | None  # Unix epoch ns (boot time has 1 s resolution)
    cgroup_path: str | None  # cgroup-v2 path
    cgroup_line: str | None  # the /proc/PID/cgroup line that names the cgroup
    container_id: str | None
    container_runtime: str | None
    pid_ns: int | None
    net_ns: int | None
    mnt_ns: int | None
    exe_sha256: str | None
    ancestry: tuple[tuple[int, str], ...]  # (pid, executable name), parent first

    @property
    def name(self) -> str:
        return self.exe_name or self.comm


class _LRU(LRUCache):  # type: ignore[type-arg]
    """An LRUCache that reports what it evicts for lack of room."""

    def __init__(self, maxsize: int, on_evict: Callable[[Any], None]) -> None:
        super().__init__(maxsize=maxsize)
        self._on_evict = on_evict

    def peek(self, key: Any) -> Any:
        """The value without making it most recently used (ancestry walks are not uses)."""
        return Cache.__getitem__(self, key) if key in self else None

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()
        self._on_evict(key)
        return key, value


def exe_name_of(path: str | None) -> str | None:
    if not path:
        return None
    if path.endswith(_DELETED):  # the binary was replaced or removed while running
        path = path[: -len(_DELETED)]
    return os.path.basename(path) or None


class ProcessTable:
    def __init__(self, config: ProcessConfig, procfs_root: str = "/proc", *,
                 clock: Callable[[], float] = time.monotonic,
                 procfs: ProcFS | None = None) -> None:
        if config.max_processes < 1:
            raise ValueError(
                f"process.max_processes must be >= 1, got {config.max_processes}")
        if config.max_command_line < 16:
            raise ValueError(
                f"process.max_command_line must be >= 16 bytes, got {config.max_command_line}")
        self.config = config
        self.procfs = procfs if procfs is not None else ProcFS(procfs_root)
        self._clock = clock
        self._lock = threading.RLock()
        self._cache = _LRU(config.max_processes, self._evicted)
        self._checked: dict[int, float] = {}  # tgid -> clock() of the last start-time check
        self._exited: OrderedDict[int, int] = OrderedDict()  # tgid -> exit time (epoch ns)
        self._hashes: LRUCache[tuple[int, int, int, int], str] = LRUCache(MAX_HASH_ENTRIES)
        self._names: LRUCache[tuple[str, int], str | None] = LRUCache(MAX_NAME_ENTRIES)
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._boot_s = self.procfs.boot_time_s()
        self._stats = dict.fromkeys((
            "lookups", "hits", "misses", "vanished", "reused", "reread_exec", "evictions",
            "expired", "hash_computed", "hash_hits", "hash_skipped", "hash_errors",
            "ancestry_reads", "cmdline_empty", "cmdline_reread"), 0)
        self._cmdline_pending: dict[int, int] = {}  # tgid -> re-reads left
        self._hash_lock = threading.Lock()  # the digest cache; hashing itself is unlocked

    # ---- public API ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._stats, "size": len(self._cache), "exited": len(self._exited)}

    def lookup(self, tgid: int, *, start_hint_ns: int | None = None,
               comm_hint: str | None = None) -> ProcessInfo | None:
        """The process tgid, or None when it is gone and was never seen.

        start_hint_ns: the process's start time in ns since boot (as the kernel knows it);
        when given and different from the cached one, the entry is read again (pid reuse).
        comm_hint: the kernel's comm for it; a difference triggers an early re-check (exec).
        """
        if tgid <= 0:
            return None
        with self._lock:
            self._stats["lookups"] += 1
            info = self._cache.get(tgid)
            if info is not None:
                fresh = self._revalidate(tgid, info, start_hint_ns, comm_hint)
                if fresh is not None and tgid not in self._cmdline_pending:
                    self._stats["hits"] += 1
                    return fresh
                if fresh is not None:
                    return self._retry_cmdline(tgid, fresh)
            self._stats["misses"] += 1
        return self._load(tgid)

    def on_exec(self, tgid: int) -> None:
        """The process replaced its image: forget what was read about it."""
        with self._lock:
            self._forget(tgid)

    def on_exit(self, tgid: int, now_ns: int) -> None:
        """The process exited at now_ns (epoch ns); kept for exited_grace_s after it."""
        with self._lock:
            if tgid in self._cache:
                self._exited[tgid] = now_ns
                self._exited.move_to_end(tgid)
                self._checked.pop(tgid, None)  # the next lookup re-checks (pid reuse)

    def expire(self, now_ns: int) -> int:
        """Evict processes that exited more than exited_grace_s ago; returns how many."""
        grace_ns = int(self.config.exited_grace_s * 1e9)
        n = 0
        with self._lock:
            while self._exited:
                tgid, at = next(iter(self._exited.items()))
                if now_ns - at < grace_ns:
                    break
                self._forget(tgid)
                n += 1
            self._stats["expired"] += n
        return n

    def seed(self) -> int:
        """Read every process present now (at most max_processes); returns how many."""
        n = 0
        # Ascending: parents usually have lower pids, so their children's ancestry walks
        # stop at a cached parent.
        for pid in sorted(self.procfs.pids(self.config.max_processes)):
            if self.lookup(pid) is not None:
                n += 1
        return n

    def peek(self, tgid: int) -> ProcessInfo | None:
        """The cached context of tgid, without reading /proc (for the pipeline thread)."""
        with self._lock:
            return self._cache.peek(tgid)

    def user_name(self, uid: int | None) -> str | None:
        with self._lock:
            return self._user_name(uid)

    # ---- internals ----------------------------------------------------------------------

    def _evicted(self, tgid: int) -> None:
        self._stats["evictions"] += 1
        self._cmdline_pending.pop(tgid, None)
        self._exited.pop(tgid, None)
        self._checked.pop(tgid, None)

    def _forget(self, tgid: int) -> None:
        self._cache.pop(tgid, None)
        self._cmdline_pending.pop(tgid, None)
        self._exited.pop(tgid, None)
        self._checked.pop(tgid, None)

    def _start_matches(self, info: ProcessInfo, start_ns: int) -> bool:
        tick_ns = 1_000_000_000 // self._hz
        return abs(info.start_time_ticks * tick_ns - start_ns) <= tick_ns

    def _revalidate(self, tgid: int, info: ProcessInfo, start_hint_ns: int | None,
                    comm_hint: str | None) -> ProcessInfo | None:
        """info if it still describes process tgid (or its exited self), else None."""
        hint_differs = start_hint_ns is not None and not self._start_matches(info, start_hint_ns)
        since = self._clock() - self._checked.get(tgid, float("-inf"))
        exited = tgid in self._exited
        # An exited entry is re-checked (pid reuse) on the first lookup after the exit, then
        # at most every COMM_RECHECK_S: a busy server's exited parent is looked up for every
        # connection its listener accepted.
        if not (hint_differs or (exited and since >= COMM_RECHECK_S) or since >= REVALIDATE_S
                or (comm_hint is not None and comm_hint != info.comm
                    and since >= COMM_RECHECK_S)):
            return info
        st = self.procfs.stat(tgid)
        if st is None:
            # Gone: the cached entry is the best there is, unless the caller asks about
            # another process instance with that pid.
            self._checked[tgid] = self._clock()
            return None if hint_differs else info
        if st.start_ticks != info.start_time_ticks:
            self._stats["reused"] += 1
            self._forget(tgid)
            return None
        if st.comm != info.comm:  # exec (or prctl(PR_SET_NAME)) since it was read
            self._stats["reread_exec"] += 1
            self._forget(tgid)
            return None
        if exited:  # alive with the same start time: the exit report was not about it
            self._exited.pop(tgid, None)
        self._checked[tgid] = self._clock()
        return info

    def _load(self, tgid: int) -> ProcessInfo | None:
        """Read tgid from /proc (outside the lock: reads and hashing may be slow), then
        cache it."""
        raw = self.procfs.read_process(tgid, self.config.max_command_line)
        if raw is None:
            with self._lock:
                self._stats["vanished"] += 1
            return None
        if not raw.argv and raw.exe_path:
            # Between exec and the kernel setting up the new arguments: read once more.
            os.sched_yield()
            cmd = self.procfs.cmdline(tgid, self.config.max_command_line)
            if cmd is not None and cmd[0]:
                raw = replace(raw, argv=cmd[0], cmdline_truncated=cmd[1])
        digest = self._exe_sha256(raw.pid) if (
            self.config.hash_executables and raw.exe_path) else None
        with self._lock:
            info = self._build(raw, digest)
            self._cache[tgid] = info
            self._checked[tgid] = self._clock()
            if not raw.argv and raw.exe_path:
                self._cmdline_pending[tgid] = CMDLINE_RETRIES
                self._stats["cmdline_empty"] += 1
            return info

    def _retry_cmdline(self, tgid: int, info: ProcessInfo) -> ProcessInfo:
        """A live process whose command line read empty: read it again (lock held)."""
        left = self._cmdline_pending.pop(tgid, 0)
        cmd = self.procfs.cmdline(tgid, self.config.max_command_line)
        if cmd is None or not cmd[0]:
            if left > 1:
                self._cmdline_pending[tgid] = left - 1
            return info
        self._stats["cmdline_reread"] += 1
        argv, truncated = cmd
        raw_argv = redact_argv(argv) if self.config.redact_command_lines else list(argv)
        text = sanitize(" ".join(raw_argv), self.config.max_command_line)
        text = text + " …" if truncated and not text.endswith("…") else text
        fresh = replace(info, command_line=text, command_line_truncated=truncated)
        self._cache[tgid] = fresh
        return fresh

    def _build(self, raw: RawProcess, exe_sha256: str | None) -> ProcessInfo:
        st = raw.status
        uid, euid = (st.uid, st.euid) if st else (None, None)
        gid, egid = (st.gid, st.egid) if st else (None, None)
        ref = container_from_cgroup(raw.cgroup_v2, raw.cgroup_v1)
        cgroup_line = f"0::{raw.cgroup_v2}" if raw.cgroup_v2 is not None else (
            raw.cgroup_v1[0] if raw.cgroup_v1 else None)
        creation = None
        if self._boot_s is not None:
            creation = self._boot_s * 1_000_000_000 + raw.start_ticks * (1_000_000_000 // self._hz)
        return ProcessInfo(
            pid=raw.pid,
            ppid=raw.ppid,
            start_time_ticks=raw.start_ticks,
            comm=raw.comm,
            exe_path=raw.exe_path,
            exe_name=sanitize(exe_name_of(raw.exe_path) or "", 255) or None,
            command_line=self._command_line(raw),
            command_line_truncated=raw.cmdline_truncated,
            uid=uid, euid=euid, gid=gid, egid=egid,
            user_name=self._user_name(euid),
            real_user_name=self._user_name(uid),
            group_name=self._group_name(egid),
            vpid=st.nspid[-1] if st and len(st.nspid) > 1 else None,
            creation_time_ns=creation,
            cgroup_path=raw.cgroup_v2,
            cgroup_line=cgroup_line,
            container_id=ref.id if ref else None,
            container_runtime=ref.runtime if ref else None,
            pid_ns=raw.pid_ns,
            net_ns=raw.net_ns,
            mnt_ns=raw.mnt_ns,
            exe_sha256=exe_sha256,
            ancestry=self._ancestry(raw),
        )

    def _command_line(self, raw: RawProcess) -> str | None:
        if not raw.argv:  # kernel threads and zombies have none
            return None
        argv = redact_argv(raw.argv) if self.config.redact_command_lines else list(raw.argv)
        text = sanitize(" ".join(argv), self.config.max_command_line)
        return text + " …" if raw.cmdline_truncated and not text.endswith("…") else text

    def _ancestry(self, raw: RawProcess) -> tuple[tuple[int, str], ...]:
        """Up the parent chain, at most MAX_ANCESTRY steps; cached parents end the walk."""
        chain: list[tuple[int, str]] = []
        seen = {raw.pid}
        pid, child_start = raw.ppid, raw.start_ticks
        while pid > 0 and pid not in seen and len(chain) < MAX_ANCESTRY:
            seen.add(pid)
            cached = self._cache.peek(pid)
            # A parent starts before its child; a later start means a reused pid.
            if (cached is not None and pid not in self._exited
                    and cached.start_time_ticks <= child_start):
                chain.append((pid, cached.name))
                chain.extend(cached.ancestry[: MAX_ANCESTRY - len(chain)])
                break
            self._stats["ancestry_reads"] += 1
            st = self.procfs.stat(pid)
            if st is None:
                break
            chain.append((pid, exe_name_of(self.procfs.exe(pid)) or st.comm))
            pid, child_start = st.ppid, st.start_ticks
        return tuple(chain)

    def _count(self, name: str) -> None:
        with self._hash_lock:
            self._stats[name] += 1

    def _exe_sha256(self, pid: int) -> str | None:
        """Called without the table lock: a large binary must not stall other lookups."""
        # Opened through /proc/PID/exe: the very file the process runs, whatever its mount
        # namespace, even if the path was since replaced.
        try:
            fd = os.open(self.procfs.path(pid, "exe"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._count("hash_errors")
            return None
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            with self._hash_lock:
                digest = self._hashes.get(key)
            if digest is not None:
                self._count("hash_hits")
                return digest
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_HASH_BYTES:
                self._count("hash_skipped")
                return None
            import hashlib  # here: OpenSSL's libcrypto only where executables are hashed

            with os.fdopen(fd, "rb", closefd=False) as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            with self._hash_lock:
                self._hashes[key] = digest
                self._stats["hash_computed"] += 1
            return digest
        except OSError:
            self._count("hash_errors")
            return None
        finally:
            os.close(fd)

    def _user_name(self, uid: int | None) -> str | None:
        return self._name("u", uid)

    def _group_name(self, gid: int | None) -> str | None:
        return self._name("g", gid)

    def _name(self, kind: str, num: int | None) -> str | None:
        if num is None:
            return None
        key = (kind, num)
        try:
            return self._names[key]
        except KeyError:
            pass
        try:
            name: str | None = (pwd.getpwuid(num).pw_name if kind == "u"
                                else grp.getgrgid(num).gr_name)
        except (KeyError, OverflowError):
            name = None  # no such user on this host (a container's own user, often)
        self._names[key] = sanitize(name, MAX_COMM) if name else None
        return self._names[key]

"""Read one process from a procfs tree, tolerating its exit at any moment.

A process can exit (and its pid be reused) between any two reads, and some files are
unreadable for kernel threads or without privilege. Each reader therefore returns None for
"unknown" instead of raising, and read_process() re-reads the start time at the end so that
fields from two different processes are never mixed into one record.

The root is a parameter so that tests can point it at a fake tree in a temporary directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

MAX_COMM = 64  # the kernel's comm is 16 bytes; be lenient, but bounded
MAX_PATH = 4096
MAX_CGROUP_BYTES = 8192
MAX_STATUS_BYTES = 16384
MAX_STAT_BYTES = 4096
MAX_ARGS = 1024  # arguments kept from a command line

# FileNotFoundError/ProcessLookupError (gone), PermissionError (not ours to read), ESRCH,
# EINVAL...: every OSError from procfs means "unknown", never a crash.
_GONE = OSError
_NS_LINK = re.compile(r"^[a-z_]+:\[(\d+)\]$")


def sanitize(text: str, limit: int) -> str:
    """Replace control (non-printable) characters with '?' and cap the length ('…' marks a
    cut). Same rule as otelpeers.events.decode_comm, so comms from both sides compare equal."""
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else "?" for ch in text)
    if len(text) > limit:
        return text[: max(limit - 1, 0)] + "…"
    return text


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Stat:
    comm: str
    state: str
    ppid: int
    start_ticks: int  # field 22: start time after boot, in clock ticks


@dataclass(frozen=True, slots=True)
class Status:
    uid: int | None  # real
    euid: int | None
    gid: int | None
    egid: int | None
    nspid: tuple[int, ...]  # pid in each nested pid namespace, outermost first


@dataclass(frozen=True, slots=True)
class RawProcess:
    """What procfs said about one process; None marks a field that could not be read."""

    pid: int
    comm: str
    ppid: int
    start_ticks: int
    status: Status | None
    argv: tuple[str, ...] | None  # decoded, unsanitised, bounded in bytes
    cmdline_truncated: bool
    exe_path: str | None
    cgroup_v2: str | None  # the path of the "0::" line
    cgroup_v1: tuple[str, ...]  # the other lines, as written
    pid_ns: int | None
    net_ns: int | None
    mnt_ns: int | None


def parse_stat(text: str) -> Stat | None:
    """Parse /proc/PID/stat. comm may hold spaces and ')': split at the LAST ')'."""
    open_at = text.find("(")
    close_at = text.rfind(")")
    if open_at < 0 or close_at < open_at:
        return None
    rest = text[close_at + 1:].split()
    # rest[0] is field 3 (state); ppid is field 4, starttime field 22.
    if len(rest) < 20:
        return None
    try:
        ppid = int(rest[1])
        start = int(rest[19])
    except ValueError:
        return None
    return Stat(sanitize(text[open_at + 1: close_at], MAX_COMM), rest[0][:1], ppid, start)


def parse_status(text: str) -> Status:
    ids: dict[str, list[int]] = {}
    nspid: tuple[int, ...] = ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid"):
            try:
                ids[key] = [int(v) for v in value.split()]
            except ValueError:
                continue
        elif key == "NSpid":
            try:
                nspid = tuple(int(v) for v in value.split()[:32])
            except ValueError:
                nspid = ()
    uid = ids.get("Uid", [])
    gid = ids.get("Gid", [])
    return Status(
        uid=uid[0] if len(uid) > 0 else None,
        euid=uid[1] if len(uid) > 1 else None,
        gid=gid[0] if len(gid) > 0 else None,
        egid=gid[1] if len(gid) > 1 else None,
        nspid=nspid,
    )


def parse_cmdline(raw: bytes, limit: int) -> tuple[tuple[str, ...], bool]:
    """NUL-separated arguments, at most limit bytes; returns (argv, truncated)."""
    truncated = len(raw) > limit
    raw = raw[:limit]
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    if not raw:
        return (), truncated
    parts = raw.split(b"\0")
    if len(parts) > MAX_ARGS:
        parts, truncated = parts[:MAX_ARGS], True
    return tuple(_decode(p) for p in parts), truncated


def parse_cgroup(text: str) -> tuple[str | None, tuple[str, ...]]:
    """Return (v2 path or None, the v1 lines)."""
    v2: str | None = None
    v1: list[str] = []
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("0::"):
            v2 = sanitize(line[3:], MAX_PATH)
        elif len(v1) < 32:
            v1.append(sanitize(line, MAX_PATH))
    return v2, tuple(v1)


def parse_ns_link(target: str) -> int | None:
    """'net:[4026531840]' -> 4026531840."""
    m = _NS_LINK.match(target)
    return int(m.group(1)) if m else None


class ProcFS:
    """Reads of one procfs tree. Every method returns None when the answer is unknown."""

    def __init__(self, root: str = "/proc") -> None:
        self.root = root.rstrip("/") or "/"

    def path(self, pid: int, name: str) -> str:
        return f"{self.root}/{pid}/{name}"

    def _read(self, pid: int, name: str, limit: int) -> bytes | None:
        try:
            with open(self.path(pid, name), "rb", buffering=0) as f:
                return f.read(limit)
        except _GONE:
            return None

    def _readlink(self, pid: int, name: str) -> str | None:
        try:
            return os.readlink(self.path(pid, name))
        except _GONE:
            return None

    def stat(self, pid: int) -> Stat | None:
        raw = self._read(pid, "stat", MAX_STAT_BYTES)
        return parse_stat(_decode(raw)) if raw else None

    def status(self, pid: int) -> Status | None:
        raw = self._read(pid, "status", MAX_STATUS_BYTES)
        return parse_status(_decode(raw)) if raw else None

    def cmdline(self, pid: int, limit: int) -> tuple[tuple[str, ...], bool] | None:
        raw = self._read(pid, "cmdline", limit + 1)  # one more byte tells a cut
        return parse_cmdline(raw, limit) if raw is not None else None

    def exe(self, pid: int) -> str | None:
        target = self._readlink(pid, "exe")
        return sanitize(target, MAX_PATH) if target else None

    def cgroup(self, pid: int) -> tuple[str | None, tuple[str, ...]] | None:
        raw = self._read(pid, "cgroup", MAX_CGROUP_BYTES)
        return parse_cgroup(_decode(raw)) if raw is not None else None

    def namespace(self, pid: int, name: str) -> int | None:
        target = self._readlink(pid, f"ns/{name}")
        return parse_ns_link(target) if target else None

    def pids(self, limit: int) -> list[int]:
        """Numeric entries of the root, at most limit of them."""
        out: list[int] = []
        try:
            with os.scandir(self.root) as it:
                for entry in it:
                    if entry.name.isdigit():
                        out.append(int(entry.name))
                        if len(out) >= limit:
                            break
        except OSError:
            return out
        return out

    def boot_time_s(self) -> int | None:
        """btime from <root>/stat: boot time in Unix seconds."""
        try:
            with open(f"{self.root}/stat", "rb") as f:
                for line in f.read(65536).splitlines():
                    if line.startswith(b"btime "):
                        return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return None

    def read_process(self, pid: int, max_cmdline: int) -> RawProcess | None:
        """One process, or None when it is gone (or its pid was reused while reading)."""
        st = self.stat(pid)
        if st is None:
            return None
        cmd = self.cmdline(pid, max_cmdline)
        cg = self.cgroup(pid)
        raw = RawProcess(
            pid=pid,
            comm=st.comm,
            ppid=st.ppid,
            start_ticks=st.start_ticks,
            status=self.status(pid),
            argv=cmd[0] if cmd is not None else None,
            cmdline_truncated=cmd[1] if cmd is not None else False,
            exe_path=self.exe(pid),
            cgroup_v2=cg[0] if cg is not None else None,
            cgroup_v1=cg[1] if cg is not None else (),
            pid_ns=self.namespace(pid, "pid"),
            net_ns=self.namespace(pid, "net"),
            mnt_ns=self.namespace(pid, "mnt"),
        )
        again = self.stat(pid)
        if again is None:
            # Gone while we read: what we read is still this process's, where readable.
            return raw
        if again.start_ticks != st.start_ticks:
            return None  # pid reused mid-read: the fields may come from two processes
        return raw

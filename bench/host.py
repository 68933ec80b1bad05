"""Host plumbing for the benchmarks: sysctl, bpftool, /proc, network namespaces.

Parsers are pure functions (unit-tested); everything that changes the host restores it in
a finally block.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROG_PREFIX = "otelp_"


def sh(*argv: str, timeout: float = 30, check: bool = True) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


# ---- sysctl ----------------------------------------------------------------------
def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def sysctl_get(name: str) -> str:
    return _sysctl_path(name).read_text().strip()


def sysctl_set(name: str, value: str) -> None:
    _sysctl_path(name).write_text(f"{value}\n")


@contextlib.contextmanager
def sysctl(name: str, value: str) -> Iterator[str]:
    """Set a sysctl for the duration of a block; the old value comes back in finally."""
    old = sysctl_get(name)
    sysctl_set(name, value)
    try:
        yield old
    finally:
        sysctl_set(name, old)


# ---- BPF programs and maps ---------------------------------------------------------
@dataclass(frozen=True)
class ProgStat:
    name: str
    run_time_ns: int
    run_cnt: int
    programs: int = 1  # bcc cuts names to 15 characters: same-named programs are summed


def parse_prog_stats(progs: list[dict[str, Any]], prefix: str = PROG_PREFIX
                     ) -> dict[str, ProgStat]:
    """`bpftool prog show -j` -> run statistics of the agent's programs, by name.

    The agent's programs are the otelp_* ones and every program sharing a map with them
    (its tracepoints, which bcc names tracepoint__<category>...).
    """
    ours = map_ids_of_programs(progs, prefix)
    out: dict[str, ProgStat] = {}
    for p in progs:
        name = str(p.get("name", ""))
        if not (name.startswith(prefix) or ours & {int(i) for i in p.get("map_ids", [])}):
            continue
        prev = out.get(name)
        rt, rc, n = int(p.get("run_time_ns", 0)), int(p.get("run_cnt", 0)), 1
        if prev is not None:
            rt, rc, n = rt + prev.run_time_ns, rc + prev.run_cnt, n + prev.programs
        out[name] = ProgStat(name, rt, rc, n)
    return out


def prog_stats_delta(before: dict[str, ProgStat], after: dict[str, ProgStat]
                     ) -> dict[str, dict[str, float]]:
    """Per program: runs, total ns and mean ns per run between two readings."""
    out: dict[str, dict[str, float]] = {}
    for name, a in sorted(after.items()):
        b = before.get(name, ProgStat(name, 0, 0))
        runs, ns = a.run_cnt - b.run_cnt, a.run_time_ns - b.run_time_ns
        out[name] = {"runs": runs, "run_time_ns": ns, "programs": a.programs,
                     "ns_per_run": round(ns / runs, 1) if runs else 0.0}
    return out


def read_prog_stats() -> dict[str, ProgStat]:
    return parse_prog_stats(json.loads(sh("bpftool", "prog", "show", "-j") or "[]"))


def parse_map_memory(maps: list[dict[str, Any]], names: set[str]) -> dict[str, int]:
    """`bpftool map show -j` -> bytes_memlock of the named maps (bcc names are cut to 15)."""
    wanted = {n[:15] for n in names}
    out: dict[str, int] = {}
    for m in maps:
        name = str(m.get("name", ""))
        if name in wanted:
            out[name] = out.get(name, 0) + int(m.get("bytes_memlock", 0))
    return out


def map_ids_of_programs(progs: list[dict[str, Any]], prefix: str = PROG_PREFIX) -> set[int]:
    ids: set[int] = set()
    for p in progs:
        if str(p.get("name", "")).startswith(prefix):
            ids.update(int(i) for i in p.get("map_ids", []))
    return ids


def read_agent_map_memory() -> dict[str, int]:
    """bytes_memlock of every map used by a loaded otelp_* program, by map name."""
    progs = json.loads(sh("bpftool", "prog", "show", "-j") or "[]")
    ids = map_ids_of_programs(progs)
    maps = json.loads(sh("bpftool", "map", "show", "-j") or "[]")
    out: dict[str, int] = {}
    for m in maps:
        if int(m.get("id", -1)) in ids:
            name = str(m.get("name", ""))
            out[name] = out.get(name, 0) + int(m.get("bytes_memlock", 0))
    return out


def attached_cgroup_programs() -> list[str]:
    """Names of otelp_* programs attached anywhere in the cgroup tree (should be none)."""
    out = sh("bpftool", "cgroup", "tree", check=False)
    return [ln.split()[-1] for ln in out.splitlines() if PROG_PREFIX in ln]


# ---- /proc -------------------------------------------------------------------------
def _kib_field(text: str, key: str) -> int | None:
    """The kB value of ``key:`` in a /proc status or smaps_rollup text."""
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return None


def parse_vm_rss_kib(status_text: str) -> int | None:
    return _kib_field(status_text, "VmRSS:")


def rss_bytes(pid: int) -> int | None:
    try:
        kib = parse_vm_rss_kib(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None
    return None if kib is None else kib * 1024


def parse_pss_kib(rollup_text: str) -> int | None:
    return _kib_field(rollup_text, "Pss:")


def tree_pss_bytes(pid: int) -> int | None:
    """Proportional set size of pid and its descendants: each shared page (the interpreter,
    libc, the modules' files) split between the processes that map it, so a page counts
    once in the total, where a sum of VmRSS counts it in every process."""
    total = 0
    for p in [pid, *child_pids(pid)]:
        try:
            kib = parse_pss_kib(Path(f"/proc/{p}/smaps_rollup").read_text())
        except OSError:
            kib = None
        if kib is None and p == pid:
            return None
        total += (kib or 0) * 1024
    return total


def parse_mapped_libraries(maps_text: str) -> set[str]:
    """File names of the shared objects in a /proc/PID/maps text."""
    out = set()
    for line in maps_text.splitlines():
        f = line.split(maxsplit=5)
        if len(f) == 6 and ".so" in f[5]:
            out.add(f[5].rsplit("/", 1)[-1].strip())
    return out


def mapped_libraries(pid: int) -> list[str]:
    try:
        return sorted(parse_mapped_libraries(Path(f"/proc/{pid}/maps").read_text()))
    except OSError:
        return []


def child_pids(pid: int) -> list[int]:
    """Every descendant of pid (children of all its threads, recursively)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                kids = [int(k) for k in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
            except (OSError, ValueError):
                continue
            out += kids
            todo += kids
    return out


def tree_rss_bytes(pid: int) -> tuple[int | None, int]:
    """(VmRSS of pid, VmRSS summed over its descendants): an agent with helper processes
    (span export in a child) is measured whole. Shared pages count once per process: a
    conservative total."""
    return rss_bytes(pid), sum(rss_bytes(c) or 0 for c in child_pids(pid))


def parse_cpu_ticks(stat_text: str) -> int:
    """utime + stime (clock ticks) from /proc/PID/stat; comm may contain spaces."""
    rest = stat_text[stat_text.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of pid and its descendants (None once pid is gone)."""
    own = cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(cpu_seconds(c) or 0.0 for c in child_pids(pid))


def cpu_seconds(pid: int) -> float | None:
    try:
        return parse_cpu_ticks(Path(f"/proc/{pid}/stat").read_text()) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def host_busy() -> tuple[int, int]:
    """(all jiffies, idle + iowait jiffies) of the whole host, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values), values[3] + values[4]


def busy_cores(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Cores the host kept busy between two host_busy() readings (all of them: 2.0 on a
    saturated 2-core host)."""
    total, idle = after[0] - before[0], after[1] - before[1]
    return (1 - idle / total) * (os.cpu_count() or 1) if total > 0 else 0.0


# ---- host description ----------------------------------------------------------------
def parse_cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def host_meta() -> dict[str, Any]:
    try:
        cpu = parse_cpu_model(Path("/proc/cpuinfo").read_text())
    except OSError:
        cpu = "unknown"
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1), "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# ---- network namespace ---------------------------------------------------------------
@dataclass(frozen=True)
class NetNs:
    name: str
    host_if: str
    host_ip: str
    ns_ip: str

    def cmd(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]


@contextlib.contextmanager
def netns(index: int = 0) -> Iterator[NetNs]:
    """A namespace joined by a veth pair; every process in it is killed, and it is deleted."""
    n = (os.getpid() + index) % 200 + 20
    ns = NetNs(f"otp-bench-{os.getpid()}-{index}", f"otpbh{n}", f"10.232.{n}.1",
               f"10.232.{n}.2")
    ns_if = f"otpbn{n}"
    sh("ip", "netns", "add", ns.name)
    try:
        sh("ip", "link", "add", ns.host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns.name)
        sh("ip", "addr", "add", f"{ns.host_ip}/24", "dev", ns.host_if)
        sh("ip", "link", "set", ns.host_if, "up")
        sh("ip", "-n", ns.name, "addr", "add", f"{ns.ns_ip}/24", "dev", ns_if)
        sh("ip", "-n", ns.name, "link", "set", ns_if, "up")
        sh("ip", "-n", ns.name, "link", "set", "lo", "up")
        yield ns
    finally:
        pids = sh("ip", "netns", "pids", ns.name, check=False)
        for pid in pids.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        sh("ip", "link", "del", ns.host_if, check=False)
        sh("ip", "netns", "del", ns.name, check=False)

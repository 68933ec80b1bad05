"""`otelpeers check`: can this host run the agent? One row per requirement, each with a fix.

Every check runs even when an earlier one failed (a non-root run still prints the whole
table), and no check attaches anything: programs are loaded into the kernel and closed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import platform
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otelpeers.config import Config
from otelpeers.kernel.cgroup import find_cgroup2_mount, is_cgroup2_dir

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39
CAP_NAMES = {CAP_NET_ADMIN: "NET_ADMIN", CAP_SYS_ADMIN: "SYS_ADMIN", CAP_PERFMON: "PERFMON",
             CAP_BPF: "BPF"}

SYS_BPF = {"x86_64": 321, "aarch64": 280}
BPF_MAP_CREATE = 0
BPF_MAP_TYPE_ARRAY = 2

TRACEFS = Path("/sys/kernel/tracing")
PROGRAM_PREFIX = "otelp_"
DEFAULT_LOCK_PATH = "/run/otelpeers.lock"
MAX_DETAIL = 240  # characters; compiler and verifier errors can be pages long

SETUP_FIX = "run `sudo scripts/setup.sh` (or `sudo make setup`)"
ROOT_FIX = "run as root (sudo otelpeers check), or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _short(text: str) -> str:
    """First non-empty line, bounded, so one bad row cannot flood the table."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= MAX_DETAIL else line[: MAX_DETAIL - 3] + "..."


def _result(name: str, ok: bool, detail: str, fix: str = "") -> CheckResult:
    return CheckResult(name, ok, _short(detail), "" if ok else fix)


# ---- privileges ---------------------------------------------------------------------------

def parse_cap_eff(status_text: str) -> int:
    """The effective capability mask from a /proc/<pid>/status text."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split(":", 1)[1].strip(), 16)
    raise ValueError("no CapEff line in /proc/self/status")


def cap_names(mask: int) -> list[str]:
    return [name for bit, name in sorted(CAP_NAMES.items()) if mask >> bit & 1]


def check_privileges(status_text: str | None = None, euid: int | None = None) -> CheckResult:
    """Root (with its capabilities), or CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN. Kernels before
    5.8 have no CAP_BPF; there CAP_SYS_ADMIN stands in for BPF and PERFMON."""
    name = "privileges"
    euid = os.geteuid() if euid is None else euid
    try:
        text = Path("/proc/self/status").read_text() if status_text is None else status_text
        mask = parse_cap_eff(text)
    except (OSError, ValueError) as exc:
        return _result(name, False, f"cannot read capabilities: {exc}", ROOT_FIX)
    have = set(cap_names(mask))
    modern = {"BPF", "PERFMON", "NET_ADMIN"} <= have
    legacy = {"SYS_ADMIN", "NET_ADMIN"} <= have
    who = "root" if euid == 0 else f"uid {euid}"
    held = ", ".join(sorted(have)) or "none of BPF, PERFMON, NET_ADMIN, SYS_ADMIN"
    if modern or legacy:
        return _result(name, True, f"{who}; effective capabilities include {held}")
    missing = sorted({"BPF", "PERFMON", "NET_ADMIN"} - have)
    return _result(name, False, f"{who}; missing CAP_{', CAP_'.join(missing)} (have: {held})",
                   ROOT_FIX)


# ---- bpf() syscall ------------------------------------------------------------------------

def probe_bpf_syscall(machine: str | None = None) -> str | None:
    """Create and close a one-entry array map; None when that works, else the reason."""
    machine = machine or platform.machine()
    nr = SYS_BPF.get(machine)
    if nr is None:
        return f"unsupported architecture {machine} (known: {', '.join(SYS_BPF)})"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.syscall.restype = ctypes.c_long
    # bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries, map_flags;
    # the rest stays zero, which the kernel requires of fields it knows but we do not set.
    attr = ctypes.create_string_buffer(72)
    struct.pack_into("5I", attr, 0, BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0)
    fd = libc.syscall(ctypes.c_long(nr), ctypes.c_int(BPF_MAP_CREATE), ctypes.byref(attr),
                      ctypes.c_uint(ctypes.sizeof(attr)))
    if fd < 0:
        err = ctypes.get_errno()
        code = errno.errorcode.get(err, str(err))
        return f"bpf(BPF_MAP_CREATE) failed: {code} ({os.strerror(err)})"
    os.close(fd)
    return None


def check_bpf_syscall() -> CheckResult:
    name = "bpf() syscall"
    reason = probe_bpf_syscall()
    if reason is None:
        return _result(name, True, "created and closed an array map")
    if "ENOSYS" in reason:
        fix = "use a kernel built with CONFIG_BPF_SYSCALL=y"
    elif "EPERM" in reason:
        fix = (ROOT_FIX + "; in a container also allow bpf() in its seccomp profile; on kernels "
               "before 5.11 raise the memlock limit (ulimit -l unlimited)")
    else:
        fix = "check dmesg and the kernel's BPF configuration"
    return _result(name, False, reason, fix)


# ---- cgroup v2 and tracefs ----------------------------------------------------------------

def check_cgroup2(config: Config, mounts_text: str | None = None) -> CheckResult:
    name = "cgroup v2"
    configured = config.kernel.cgroup_path
    path = configured or find_cgroup2_mount(mounts_text)
    if path is None:
        return _result(name, False, "no cgroup2 entry in /proc/mounts",
                       "mount -t cgroup2 none /sys/fs/cgroup/unified (or set kernel.cgroup_path)")
    source = "kernel.cgroup_path" if configured else "/proc/mounts"
    if not is_cgroup2_dir(path):
        return _result(name, False, f"{path} (from {source}) is not a cgroup-v2 directory",
                       "point kernel.cgroup_path at the cgroup2 mount point from /proc/mounts")
    return _result(name, True, f"{path} (from {source})")


def check_tracefs(tracefs: Path = TRACEFS) -> CheckResult:
    name = "tracefs"
    events = tracefs / "events"
    try:
        if not events.is_dir():
            return _result(name, False, f"{events} does not exist",
                           f"mount -t tracefs nodev {tracefs} (scripts/setup.sh does it)")
        missing = [f"{c}:{e}" for c, e, _a in TRACEPOINTS if not events.joinpath(c, e).is_dir()]
        if missing:
            return _result(name, False, f"tracepoints missing in {events}: {', '.join(missing)}",
                           "use a kernel with CONFIG_INET, CONFIG_FTRACE_SYSCALLS and "
                           "tracepoints (Linux >= 5.10)")
    except PermissionError:
        return _result(name, False, f"{tracefs} is not readable", ROOT_FIX)
    return _result(name, True, f"{events} has the {len(TRACEPOINTS)} tracepoints used")


# ---- bcc: compile, load each program type, ring buffer ------------------------------------

# Each function is loaded with the attach type the agent uses, never attached. The socket
# programs need only UAPI headers; the tracepoint program also needs tracefs (bcc builds its
# argument struct from the event's format file) and is compiled apart so that a failure there
# is not blamed on the headers. otelp_chk_tp is not called tracepoint__*, so bcc does not
# auto-attach it.
PROBE_SOURCE = r"""
int otelp_chk_skb(struct __sk_buff *skb) { return 1; }
int otelp_chk_sock(struct bpf_sock *sk) { return 1; }
int otelp_chk_addr(struct bpf_sock_addr *ctx) { return 1; }
int otelp_chk_ops(struct bpf_sock_ops *ops) { return 0; }
"""

# Every tracepoint the agent uses: (category, event, an argument the agent reads). listen()
# is seen by sock_ops (TCP_LISTEN_CB), with the socket's network namespace.
TRACEPOINTS = (
    ("sched", "sched_process_exec", "pid"),
    ("sched", "sched_process_fork", "child_pid"),
    ("sched", "sched_process_exit", "pid"),
    ("syscalls", "sys_enter_openat", "flags"),
    ("syscalls", "sys_enter_openat2", "usize"),
)
TRACEPOINT_SOURCE = "".join(
    f"int otelp_chk_tp{i}(struct tracepoint__{c}__{e} *args) {{ return args->{a}; }}\n"
    for i, (c, e, a) in enumerate(TRACEPOINTS))

RINGBUF_SOURCE = r"""
BPF_RINGBUF_OUTPUT(otelp_chk_rb, %(pages)d);
int otelp_chk_rb_skb(struct __sk_buff *skb) {
    u64 *v = otelp_chk_rb.ringbuf_reserve(sizeof(u64));
    if (!v)
        return 1;
    *v = skb->len;
    otelp_chk_rb.ringbuf_submit(v, 0);
    return 1;
}
"""

ProgramCheck = tuple[str, str, str, tuple[tuple[str, str | None], ...]]

# (row name, function, bcc program type attribute, [(attach label, BPFAttachType attribute)])
PROGRAM_CHECKS: tuple[ProgramCheck, ...] = (
    ("prog cgroup_skb", "otelp_chk_skb", "CGROUP_SKB",
     (("ingress", "CGROUP_INET_INGRESS"), ("egress", "CGROUP_INET_EGRESS"))),
    ("prog cgroup_sock", "otelp_chk_sock", "CGROUP_SOCK",
     (("sock_create", "CGROUP_INET_SOCK_CREATE"), ("post_bind4", "CGROUP_INET4_POST_BIND"),
      ("post_bind6", "CGROUP_INET6_POST_BIND"), ("sock_release", "CGROUP_INET_SOCK_RELEASE"))),
    ("prog cgroup_sock_addr", "otelp_chk_addr", "CGROUP_SOCK_ADDR",
     (("connect4", "CGROUP_INET4_CONNECT"), ("connect6", "CGROUP_INET6_CONNECT"),
      ("sendmsg4", "CGROUP_UDP4_SENDMSG"), ("sendmsg6", "CGROUP_UDP6_SENDMSG"),
      ("recvmsg4", "CGROUP_UDP4_RECVMSG"), ("recvmsg6", "CGROUP_UDP6_RECVMSG"))),
    ("prog sock_ops", "otelp_chk_ops", "SOCK_OPS", (("sock_ops", None),)),
)
TRACEPOINT_CHECKS: tuple[ProgramCheck, ...] = tuple(
    ("prog tracepoint", f"otelp_chk_tp{i}", "TRACEPOINT", ((f"{c}:{e}", None),))
    for i, (c, e, _a) in enumerate(TRACEPOINTS))


def _headers_dir() -> str:
    build = Path("/lib/modules") / os.uname().release / "build"
    return str(build.resolve()) if build.exists() else f"{build} (missing)"


def _load_program(bpf_cls: Any, attach_cls: Any, b: Any, check: ProgramCheck) -> CheckResult:
    row, func, prog_type, attaches = check
    loaded: list[str] = []
    for label, attach in attaches:
        kwargs = {"attach_type": getattr(attach_cls, attach)} if attach else {}
        try:
            fn = b.load_func(func, getattr(bpf_cls, prog_type), **kwargs)
        except Exception as exc:
            return _result(row, False, f"kernel refused {label}: {exc}", _refusal_fix(exc))
        os.close(fn.fd)
        b.funcs.pop(func.encode(), None)  # the next attach type needs a fresh load
        loaded.append(label)
    return _result(row, True, "loaded " + ", ".join(loaded))


def _refusal_fix(exc: Exception) -> str:
    if os.geteuid() != 0 or "super-user" in str(exc) or "not permitted" in str(exc):
        return ROOT_FIX
    return ("use Linux >= 5.10 with CONFIG_CGROUP_BPF=y and CONFIG_BPF_EVENTS=y; the verifier "
            "log is printed above")


def _compile_fix() -> str:
    if os.geteuid() != 0:
        return ROOT_FIX + " (bcc needs privileges to compile and to read tracefs)"
    return SETUP_FIX + " to install kernel headers and link /lib/modules/$(uname -r)/build"


def check_bcc_programs(config: Config) -> list[CheckResult]:
    """bcc import, a compile against the kernel headers, each program type, ring buffer."""
    rows = [c[0] for c in PROGRAM_CHECKS] + ["prog tracepoint", "ring buffer"]
    try:
        import bcc
        from bcc import BPF, BPFAttachType
    except Exception as exc:
        return [_result("bcc", False, f"cannot import bcc: {exc}",
                        "apt-get install python3-bpfcc, then " + SETUP_FIX)] + [
            _result(row, False, "not tried: bcc is unavailable", SETUP_FIX)
            for row in ["kernel headers", *rows]]
    results = [_result("bcc", True, f"bcc {getattr(bcc, '__version__', '?')} from "
                       f"{Path(bcc.__file__).parent}")]
    headers = _headers_dir()
    try:
        b = BPF(text=PROBE_SOURCE)
    except Exception as exc:
        results.append(_result("kernel headers", False,
                               f"bcc could not compile a test program with {headers}: {exc}",
                               _compile_fix()))
        results += [_result(c[0], False, "not tried: the test program did not compile",
                            "fix kernel headers first") for c in PROGRAM_CHECKS]
    else:
        try:
            results.append(_result("kernel headers", True, f"bcc compiles with {headers}"))
            results += [_load_program(BPF, BPFAttachType, b, c) for c in PROGRAM_CHECKS]
        finally:
            b.cleanup()
    results.append(_check_tracepoint(BPF, BPFAttachType))
    results.append(_check_ringbuf(BPF, config.kernel.ringbuf_pages))
    return results


def _check_tracepoint(bpf_cls: Any, attach_cls: Any) -> CheckResult:
    names = ", ".join(f"{c}:{e}" for c, e, _a in TRACEPOINTS)
    try:
        b = bpf_cls(text=TRACEPOINT_SOURCE)
    except Exception as exc:
        return _result("prog tracepoint", False, f"cannot compile programs for {names}: {exc}",
                       _compile_fix() + "; mount tracefs")
    try:
        loaded = []
        for check in TRACEPOINT_CHECKS:
            r = _load_program(bpf_cls, attach_cls, b, check)
            if not r.ok:
                return r
            loaded.append(check[3][0][0])
        return _result("prog tracepoint", True, "loaded " + ", ".join(loaded))
    finally:
        b.cleanup()


def _check_ringbuf(bpf_cls: Any, pages: int) -> CheckResult:
    name = "ring buffer"
    try:
        b = bpf_cls(text=RINGBUF_SOURCE % {"pages": pages})
    except Exception as exc:
        fix = (_compile_fix() if os.geteuid() != 0 else "ring buffers need Linux >= 5.8; "
               "lower kernel.ringbuf_pages if memory is short")
        return _result(name, False, f"cannot create a {pages}-page ring buffer: {exc}", fix)
    try:
        fn = b.load_func("otelp_chk_rb_skb", bpf_cls.CGROUP_SKB)
        os.close(fn.fd)
        b.funcs.pop(b"otelp_chk_rb_skb", None)
    except Exception as exc:
        return _result(name, False, f"a program using the ring buffer was refused: {exc}",
                       _refusal_fix(exc))
    finally:
        b.cleanup()
    return _result(name, True, f"{pages} pages ({pages * 4} KiB with 4 KiB pages) created, "
                   "reserve/submit verified")


# ---- stale programs -----------------------------------------------------------------------

def _agent_running(lock_path: str) -> bool:
    """True while an agent holds its host lock (a shared probe fails against its lock)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the probe lock
    return False


def check_stale_programs(config: Config, mounts_text: str | None = None) -> CheckResult:
    name = "stale programs"
    path = config.kernel.cgroup_path or find_cgroup2_mount(mounts_text)
    if path is None:
        return _result(name, False, "not tried: no cgroup v2 hierarchy", "fix cgroup v2 first")
    try:
        from otelpeers.kernel.bpfsys import list_attached
    except ImportError as exc:
        return _result(name, False, f"cannot list attached programs: {exc}",
                       "reinstall otelpeers (" + SETUP_FIX + ")")
    try:
        ours = [p for p in list_attached(path) if p.name.startswith(PROGRAM_PREFIX)]
    except OSError as exc:
        return _result(name, False, f"cannot query programs on {path}: {exc}", ROOT_FIX)
    if not ours:
        return _result(name, True, f"no otelp_* programs attached to {path}")
    try:
        from otelpeers.kernel.loader import LOCK_PATH as lock_path
    except ImportError:
        lock_path = DEFAULT_LOCK_PATH
    listing = ", ".join(f"{p.name} (id {p.prog_id})" for p in ours[:6])
    more = f" and {len(ours) - 6} more" if len(ours) > 6 else ""
    if _agent_running(lock_path):
        return _result(name, True, f"{len(ours)} otelp_* programs on {path} belong to the "
                       f"running agent ({lock_path} is held)")
    return _result(name, False, f"{len(ours)} left attached to {path} by an agent that is gone: "
                   f"{listing}{more}",
                   "start `otelpeers run` (it removes them at start), or "
                   f"`bpftool cgroup detach {path} <attach type> id <id>`")


# ---- program cache ------------------------------------------------------------------------

def check_program_cache(config: Config) -> CheckResult:
    """Whether the next start loads compiled programs from kernel.program_cache or compiles."""
    from otelpeers.kernel import progcache
    from otelpeers.kernel.loader import cflags_for, program_text

    directory = config.kernel.program_cache
    name = "program cache"
    if not directory:
        return _result(name, True, "off (kernel.program_cache is \"\"): every start compiles")
    key = progcache.cache_key(program_text(), cflags_for(config))
    try:
        progcache.read(directory, key)
    except progcache.NoEntry:
        return _result(name, True, f"nothing kept in {directory} for this kernel and "
                       "configuration yet: the next start compiles (about 2 s) and keeps it")
    except progcache.UnsafeCache as exc:
        return _result(name, False, f"{directory} is not used: {exc}",
                       f"`chown root: {directory} && chmod 700 {directory}` (a link: replace "
                       "it with a directory), or point kernel.program_cache at a directory "
                       "only root can write")
    except progcache.CacheRefused as exc:
        return _result(name, True, f"the entry in {directory} is unusable ({exc}): the "
                       "next start compiles and replaces it")
    return _result(name, True, f"programs compiled for this kernel and configuration are kept "
                   f"in {directory}: the next start loads them without compiling")


# ---- table --------------------------------------------------------------------------------

def _guarded(name: str, fn: Callable[[], CheckResult | list[CheckResult]]) -> list[CheckResult]:
    """A check that raises becomes a failed row: the table must always print."""
    try:
        out = fn()
    except Exception as exc:
        return [_result(name, False, f"check crashed: {type(exc).__name__}: {exc}",
                        "report this as an otelpeers bug")]
    return out if isinstance(out, list) else [out]


def run_checks(config: Config) -> list[CheckResult]:
    results: list[CheckResult] = []
    results += _guarded("privileges", check_privileges)
    results += _guarded("bpf() syscall", check_bpf_syscall)
    results += _guarded("cgroup v2", lambda: check_cgroup2(config))
    results += _guarded("tracefs", check_tracefs)
    results += _guarded("bcc", lambda: check_bcc_programs(config))
    results += _guarded("stale programs", lambda: check_stale_programs(config))
    results += _guarded("program cache", lambda: check_program_cache(config))
    return results


def format_table(results: list[CheckResult]) -> str:
    """Aligned columns CHECK, RESULT, DETAIL, FIX (fix only on failed rows) and a summary."""
    header = ("CHECK", "RESULT", "DETAIL", "FIX")
    rows = [(r.name, "PASS" if r.ok else "FAIL", r.detail, "" if r.ok else r.fix)
            for r in results]
    has_fix = any(r.fix for r in results if not r.ok)
    ncols = 4 if has_fix else 3
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(ncols - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [row[i].ljust(widths[i]) for i in range(ncols - 1)] + [row[ncols - 1]]
        lines.append("  ".join(cells).rstrip())
    failed = sum(not r.ok for r in results)
    lines.append("")
    lines.append(f"{len(results)} checks, {failed} failed" if failed
                 else f"all {len(results)} checks passed")
    return "\n".join(lines)


def main_check(config: Config) -> int:
    """Print the table; 0 when every check passed, else 1."""
    results = run_checks(config)
    print(format_table(results), flush=True)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    from otelpeers.config import load_config

    sys.exit(main_check(load_config()))

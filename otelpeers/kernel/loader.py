"""Compile, load and attach the socket sensors; detach everything on every exit path.

bcc compiles and loads in a short-lived child process (otelpeers/kernel/compiler.py), which
hands the agent the file descriptors of every map, program and tracepoint attachment over a
unix socket; the agent itself never maps LLVM, clang or libbcc. Maps are then reached through
otelpeers.kernel.bpfsys.

Programs attach at the cgroup-v2 root with BPF links by default: the kernel detaches a link
when the agent's last fd for it closes, which covers SIGKILL too. The legacy mode
(BPF_PROG_ATTACH) exists for kernels without cgroup links; such attachments outlive their
loader, so every start first removes otelpeers programs that a dead instance left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import json
import logging
import os
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otelpeers import abi
from otelpeers.config import Config
from otelpeers.kernel import bpfsys, objload
from otelpeers.kernel.cgroup import find_cgroup2_mount

if TYPE_CHECKING:
    from otelpeers.kernel.adopt import AdoptionStats

log = logging.getLogger(__name__)

BPF_DIR = Path(__file__).resolve().parent.parent.parent / "bpf"
# One BPF object: process sensors share the socket sensors' ring buffer and drop counters.
# The files are joined as text because bcc only generates tracepoint argument structs for
# tracepoints named in the main source, not in included files.
SOURCES = (BPF_DIR / "sockets.bpf.c", BPF_DIR / "process.bpf.c")
LOCK_PATH = "/run/otelpeers.lock"
COMPILE_TIMEOUT_S = 120.0
# BPF_ATTACH_TYPE values bcc's load_func takes as expected_attach_type (-1: none).
_BCC_NO_ATTACH = -1


class SensorError(RuntimeError):
    """The sensors cannot start; the message names the problem and the fix."""


@dataclass(frozen=True)
class ProgramSpec:
    name: str
    prog_type: str  # attribute of bcc.BPF
    attach_type: int
    expected_attach: bool  # cgroup_sock and cgroup_sock_addr must be loaded with it


PROGRAMS = (
    ProgramSpec("otelp_sock_new", "CGROUP_SOCK", bpfsys.CGROUP_INET_SOCK_CREATE, True),
    ProgramSpec("otelp_sock_rel", "CGROUP_SOCK", bpfsys.CGROUP_INET_SOCK_RELEASE, True),
    ProgramSpec("otelp_bind4", "CGROUP_SOCK", bpfsys.CGROUP_INET4_POST_BIND, True),
    ProgramSpec("otelp_bind6", "CGROUP_SOCK", bpfsys.CGROUP_INET6_POST_BIND, True),
    ProgramSpec("otelp_conn4", "CGROUP_SOCK_ADDR", bpfsys.CGROUP_INET4_CONNECT, True),
    ProgramSpec("otelp_conn6", "CGROUP_SOCK_ADDR", bpfsys.CGROUP_INET6_CONNECT, True),
    ProgramSpec("otelp_send4", "CGROUP_SOCK_ADDR", bpfsys.CGROUP_UDP4_SENDMSG, True),
    ProgramSpec("otelp_send6", "CGROUP_SOCK_ADDR", bpfsys.CGROUP_UDP6_SENDMSG, True),
    ProgramSpec("otelp_recv4", "CGROUP_SOCK_ADDR", bpfsys.CGROUP_UDP4_RECVMSG, True),
    ProgramSpec("otelp_recv6", "CGROUP_SOCK_ADDR", bpfsys.CGROUP_UDP6_RECVMSG, True),
    ProgramSpec("otelp_sockops", "SOCK_OPS", bpfsys.CGROUP_SOCK_OPS, False),
    ProgramSpec("otelp_skb_egr", "CGROUP_SKB", bpfsys.CGROUP_INET_EGRESS, False),
    ProgramSpec("otelp_skb_ingr", "CGROUP_SKB", bpfsys.CGROUP_INET_INGRESS, False),
)


def cflags_for(config: Config) -> list[str]:
    k, d = config.kernel, config.dns
    flags = [
        f"-I{BPF_DIR}",
        f"-DOP_RINGBUF_PAGES={k.ringbuf_pages}",
        f"-DOP_MAX_SOCKETS={k.max_sockets}",
        f"-DOP_MAX_PEERS={k.max_peers}",
        f"-DOP_MAX_LISTENERS={k.max_listeners}",
        f"-DOP_MAX_PAIRS={k.max_pairs}",
        f"-DOP_DNS_MAX_PAYLOAD={d.max_payload}",
        f"-DOP_NETWORKED_OPENS={int(config.process.file_opens_of_networked_processes)}",
    ]
    ports = list(d.ports)[:4] + [0] * (4 - min(len(d.ports), 4))
    flags += [f"-DOP_DNS_PORT{i}={p}" for i, p in enumerate(ports)]
    rst, icmp = kernel_reply_tracepoints()
    flags += [f"-DOP_KERNEL_RST={int(rst)}", f"-DOP_KERNEL_ICMP={int(icmp)}"]
    flags.append(f"-DOP_SKB_NETNS={int(skb_netns_cookie())}")
    return flags


@functools.cache
def skb_netns_cookie() -> bool:
    """Whether cgroup_skb programs may call bpf_get_netns_cookie (newer kernels): a
    connection adopted at its first packet then knows its namespace, and so its listener."""
    return bpfsys.helper_allowed(bpfsys.PROG_TYPE_CGROUP_SKB, bpfsys.FUNC_GET_NETNS_COOKIE)


TRACEFS = objload.TRACEFS_EVENTS
# Fields the kernel-reply probes read (bpf/sockets.bpf.c); older kernels have the same
# tracepoints with other layouts, where the probes are left out instead of failing to compile.
KERNEL_REPLY_FIELDS = {
    "tcp/tcp_send_reset": ("const void * skaddr;", " reason;", "__u8 saddr[28];",
                           "__u8 daddr[28];"),
    "icmp/icmp_send": ("int type;", "int code;", "__u8 saddr[4];", "__u8 daddr[4];",
                       "__u16 sport;", "__u16 dport;"),
}


@functools.cache
def kernel_reply_tracepoints(roots: tuple[str, ...] = TRACEFS) -> tuple[bool, bool]:
    """(tcp:tcp_send_reset, icmp:icmp_send) usable as the probes expect, from their formats."""
    found = []
    for name, fields in KERNEL_REPLY_FIELDS.items():
        text = ""
        for root in roots:
            try:
                text = Path(root, name, "format").read_text()
                break
            except OSError:
                continue
        ok = bool(text) and all(f in text for f in fields)
        if not ok:
            log.warning("tracepoint %s is missing or has another layout on this kernel: "
                        "packets the kernel sends on its own (%s) are not attributed to the "
                        "kernel owner", name.replace("/", ":"),
                        "resets to closed ports" if name.startswith("tcp")
                        else "ICMP errors")
        found.append(ok)
    return found[0], found[1]


def program_text() -> str:
    return "\n".join(f"#line 1 \"{p.name}\"\n{p.read_text()}" for p in SOURCES)


def generated_source(config: Config) -> str:
    """The C text bcc compiles, with the config's sizes, for --debug printing."""
    return "\n".join(f"// {f}" for f in cflags_for(config)) + "\n" + program_text()


class KernelSensors:
    """Owns every map, program and attachment (as file descriptors); a context manager.

    After start(): maps[name] is a bpfsys.BpfMap for each kernel table, ringbuf_fd the ring
    buffer's map fd, and agg_active the index (0: agg_a, 1: agg_b) of the aggregate table
    the kernel currently writes.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.cgroup_path = ""
        self.stale_removed: list[bpfsys.AttachedProgram] = []
        self.maps: dict[str, bpfsys.BpfMap] = {}
        self.programs: dict[str, int] = {}  # name -> program fd (cgroup and tracepoint)
        self.ringbuf_fd = -1
        self.agg_active = 0
        self.adoption: AdoptionStats | None = None  # what start() seeded (adopt_existing)
        self.cache_outcome = ""  # "hit" or "compiled": how the programs were obtained
        self._tracepoints: list[int] = []  # perf event fds: open = attached
        self._links: list[int] = []
        self._legacy: list[tuple[int, int]] = []  # (prog fd, attach type)
        self._cgroup_fd = -1
        self._lock_fd = -1

    def __enter__(self) -> KernelSensors:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> KernelSensors:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        if os.geteuid() != 0:
            raise SensorError(
                "otelpeers needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN) to load "
                "eBPF programs; run it with sudo. `otelpeers check` lists every requirement.")
        path = self.config.kernel.cgroup_path or find_cgroup2_mount()
        if not path or not os.path.isdir(path):
            raise SensorError(
                "no cgroup v2 hierarchy is mounted; mount one with "
                "`mount -t cgroup2 none /sys/fs/cgroup/unified` or set kernel.cgroup_path")
        self.cgroup_path = path
        self._take_lock()
        self._cgroup_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        self.stale_removed = bpfsys.detach_stale(path)
        for prog in self.stale_removed:
            log.warning("removed stale otelpeers program %s (id %d) left attached by an earlier "
                        "instance", prog.name, prog.prog_id)
        self._load_in_child()
        self._fill_sensitive_paths()
        self._arm_aggregates()
        self._attach_all()
        if self.config.kernel.adopt_existing:
            # After the attach: a socket made meanwhile is seen by the programs, the
            # snapshot, or both, never by neither (see kernel/adopt.py).
            from otelpeers.kernel.adopt import adopt_existing

            self.adoption = adopt_existing(self.maps)

    def _take_lock(self) -> None:
        try:
            fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SensorError(f"cannot open {LOCK_PATH}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SensorError(
                "another otelpeers agent is running on this host (it holds "
                f"{LOCK_PATH}); stop it first: one agent per host sees every socket") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _load_in_child(self) -> None:
        """bcc compiles and loads in a child; the fds come back over a socketpair."""
        compilation = _take_pending(self.config) or Compilation(self.config)
        try:
            answer, fds = compilation.result()
            self._take_fds(answer, fds)
        finally:
            compilation.close()
        self.cache_outcome = report_cache(answer, self.config.kernel.program_cache)

    def _take_fds(self, answer: dict[str, list[str]], fds: list[int]) -> None:
        it = iter(fds)
        for name in answer["maps"]:
            fd = next(it)
            if name == "events":
                self.ringbuf_fd = fd
            else:
                self.maps[name] = bpfsys.BpfMap(fd, name)
        for name in answer["programs"]:
            self.programs[name] = next(it)
        for _tp in answer["tracepoints"]:
            self._tracepoints.append(next(it))
        for name in answer["tracepoint_programs"]:
            self.programs[name] = next(it)
        missing = {p.name for p in PROGRAMS} - set(self.programs)
        if missing or self.ringbuf_fd < 0:
            raise SensorError(f"the compiler child did not return {sorted(missing)}")

    def _fill_sensitive_paths(self) -> None:
        """The kernel-side file filter: path prefixes (LPM trie) and basenames (hash)."""
        one = b"\x01"
        prefixes = self.maps["sensitive_prefixes"]
        for p in self.config.process.sensitive_prefixes:
            raw = p.encode()[: abi.PREFIX_LEN]
            prefixes.update(abi.PATH_PREFIX.struct.pack(len(raw) * 8, raw), one)
        names = self.maps["sensitive_basenames"]
        for n in self.config.process.sensitive_basenames:
            names.update(abi.BASENAME.struct.pack(n.encode()[: abi.BASENAME_LEN - 1]), one)

    def _arm_aggregates(self) -> None:
        """Both aggregate tables get their overflow entry; agg_a is the current one."""
        zero = bytes(abi.AGG.size)
        for name in ("agg_a", "agg_b"):
            self.maps[name].update(abi.AGG_OVERFLOW_KEY, zero, bpfsys.BPF_NOEXIST)
        self.maps["agg_current"].update(struct.pack("I", 0),
                                        struct.pack("I", self.maps["agg_a"].fd))
        self.agg_active = 0

    def _attach_all(self) -> None:
        legacy = self.config.kernel.attach_mode == "legacy"
        for spec in PROGRAMS:
            fd = self.programs[spec.name]
            try:
                if legacy:
                    bpfsys.prog_attach(fd, self._cgroup_fd, spec.attach_type)
                    self._legacy.append((fd, spec.attach_type))
                else:
                    self._links.append(bpfsys.link_create(fd, self._cgroup_fd, spec.attach_type))
            except OSError as exc:
                raise SensorError(
                    f"cannot attach {spec.name} to {self.cgroup_path}: {exc.strerror}") from exc

    def attached_program_ids(self) -> frozenset[int]:
        return frozenset(bpfsys.prog_id(fd) for fd in self.programs.values())

    def close(self) -> None:
        """Detach and unload everything; safe to call more than once and after a failed start."""
        for fd in self._links:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._links.clear()
        for prog_fd, at in self._legacy:
            try:
                bpfsys.prog_detach(prog_fd, self._cgroup_fd, at)
            except OSError as exc:
                log.error("could not detach program fd %d (attach type %d): %s", prog_fd, at, exc)
        self._legacy.clear()
        for fd in [*self._tracepoints, *self.programs.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._tracepoints.clear()
        self.programs.clear()
        for m in self.maps.values():
            with contextlib.suppress(OSError):
                m.close()
        self.maps.clear()
        if self.ringbuf_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.ringbuf_fd)
            self.ringbuf_fd = -1
        if self._cgroup_fd >= 0:
            os.close(self._cgroup_fd)
            self._cgroup_fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


class Compilation:
    """One run of the compiler child: started at construction, result() waits for it."""

    def __init__(self, config: Config) -> None:
        self.request = {"text": program_text(), "cflags": cflags_for(config),
                        "programs": [[p.name, p.prog_type,
                                      p.attach_type if p.expected_attach else _BCC_NO_ATTACH]
                                     for p in PROGRAMS],
                        "cache_dir": config.kernel.program_cache}
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "otelpeers.kernel.compiler", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                cwd=str(BPF_DIR.parent), env=_child_env())
        except OSError as exc:
            self._sock.close()
            raise SensorError(f"cannot start the compiler child: {exc}") from exc
        finally:
            theirs.close()
        self._sock.settimeout(COMPILE_TIMEOUT_S)
        self._sock.sendall(json.dumps(self.request).encode())

    def result(self) -> tuple[dict[str, list[str]], list[int]]:
        """The child's answer and the fds (ours from now on); raises SensorError."""
        try:
            data, fds, _flags, _addr = socket.recv_fds(self._sock, 1 << 20, 512)
        except (TimeoutError, OSError) as exc:
            raise SensorError(f"the compiler child did not answer: {exc}") from exc
        if not data:
            raise SensorError(f"the compiler child exited early (status {self._proc.wait()}); "
                              "its messages are above")
        answer = json.loads(data)
        if "error" in answer:
            for fd in fds:
                os.close(fd)
            raise _stage_error(answer)
        with contextlib.suppress(OSError):
            self._sock.send(b"ok")
        return answer, fds

    def close(self) -> None:
        self._sock.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def report_cache(answer: dict[str, Any], directory: str) -> str:
    """Log how the programs were obtained; returns "hit" or "compiled"."""
    if answer.get("cache") == "hit":
        log.info("sensors loaded from the program cache in %s (not compiled)", directory)
        return "hit"
    for problem in answer.get("cache_problems") or ():
        log.warning("program cache %s: %s; the sensors were compiled (set "
                    "kernel.program_cache to a private directory, or to \"\" to "
                    "compile at every start)", directory, problem)
    log.info("sensors compiled%s", f"; kept in the program cache in {directory} for the "
             "next start" if answer.get("cache_kept") else "")
    return "compiled"


_pending: Compilation | None = None


def precompile(config: Config) -> None:
    """Start compiling the sensors now, in the child, while the caller builds the rest of
    the agent; the next KernelSensors(config).start() takes the result (start-up overlaps
    compiling with importing and assembling, instead of following it). Needs no privileges
    until the programs are loaded, which the child does."""
    global _pending
    if _pending is None:
        _pending = Compilation(config)
        atexit.register(_drop_pending)


def _take_pending(config: Config) -> Compilation | None:
    global _pending
    c, _pending = _pending, None
    if c is not None and (c.request["cflags"] != cflags_for(config)
                          or c.request["cache_dir"] != config.kernel.program_cache):
        c.close()  # compiled for another configuration: start again
        return None
    return c


def _drop_pending() -> None:
    global _pending
    c, _pending = _pending, None
    if c is not None:
        c.close()


def _child_env() -> dict[str, str]:
    """The child imports otelpeers from this checkout, whatever the working directory."""
    env = dict(os.environ)
    root = str(BPF_DIR.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _stage_error(answer: dict[str, str]) -> SensorError:
    stage, msg, prog = answer.get("stage"), answer.get("error", ""), answer.get("program", "")
    if stage == "import":
        return SensorError(
            "the bcc Python bindings are not importable; install Debian's python3-bpfcc "
            "(scripts/setup.sh does) and run otelpeers from the project's .venv")
    if stage == "tracepoint":
        return SensorError(f"the kernel refused a tracepoint program: {msg}")
    if stage == "program":
        return SensorError(f"the kernel refused program {prog}: {msg}")
    if stage == "compile":
        release = os.uname().release
        return SensorError(
            f"bcc could not compile the sensors ({msg}); kernel headers for {release} are "
            f"probably missing: install them, or link the distro's generic headers into "
            f"/lib/modules/{release}/build (scripts/setup.sh does this)")
    return SensorError(f"the compiler child failed: {msg} {answer.get('traceback', '')}")

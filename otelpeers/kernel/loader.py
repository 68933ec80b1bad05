"""Compile, load and attach the socket sensors; detach everything on every exit path.

Programs attach at the cgroup-v2 root with BPF links by default: the kernel detaches a link
when the agent's last fd for it closes, which covers SIGKILL too. The legacy mode
(BPF_PROG_ATTACH) exists for kernels without cgroup links; such attachments outlive their
loader, so every start first removes otelpeers programs that a dead instance left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otelpeers.config import Config
from otelpeers.kernel import bpfsys
from otelpeers.kernel.cgroup import find_cgroup2_mount

log = logging.getLogger(__name__)

BPF_DIR = Path(__file__).resolve().parent.parent.parent / "bpf"
# One BPF object: process sensors share the socket sensors' ring buffer and drop counters.
# The files are joined as text because bcc only generates tracepoint argument structs for
# tracepoints named in the main source, not in included files.
SOURCES = (BPF_DIR / "sockets.bpf.c", BPF_DIR / "process.bpf.c")
LOCK_PATH = "/run/otelpeers.lock"


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
        f"-DOP_DNS_MAX_PAYLOAD={d.max_payload}",
        f"-DOP_NETWORKED_OPENS={int(config.process.file_opens_of_networked_processes)}",
    ]
    ports = list(d.ports)[:4] + [0] * (4 - min(len(d.ports), 4))
    flags += [f"-DOP_DNS_PORT{i}={p}" for i, p in enumerate(ports)]
    return flags


def program_text() -> str:
    return "\n".join(f"#line 1 \"{p.name}\"\n{p.read_text()}" for p in SOURCES)


def generated_source(config: Config) -> str:
    """The C text bcc compiles, with the config's sizes, for --debug printing."""
    return "\n".join(f"// {f}" for f in cflags_for(config)) + "\n" + program_text()


def _release_compiler_heap() -> None:
    """clang/LLVM free what they used to compile, but glibc keeps the pages; hand them back
    (measured: about 35 MB of the agent's RSS)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class KernelSensors:
    """Owns the loaded BPF object and every attachment; use as a context manager."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.bpf: Any = None
        self.cgroup_path = ""
        self.stale_removed: list[bpfsys.AttachedProgram] = []
        self._links: list[int] = []
        self._legacy: list[tuple[int, int]] = []  # (prog fd, attach type)
        self._cgroup_fd = -1
        self._lock_fd = -1

    def __enter__(self) -> KernelSensors:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.close()
            raise

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
        self.bpf = self._compile()
        _release_compiler_heap()
        self._fill_sensitive_paths()
        self._attach_all()

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

    def _compile(self) -> Any:
        try:
            from bcc import BPF
        except ImportError as exc:
            raise SensorError(
                "the bcc Python bindings are not importable; install Debian's python3-bpfcc "
                "(scripts/setup.sh does) and run otelpeers from the project's .venv") from exc
        try:
            return BPF(text=program_text().encode(), cflags=cflags_for(self.config))
        except Exception as exc:
            if "Failed to load BPF program" in str(exc):  # tracepoints load at compile time
                raise SensorError(f"the kernel refused a tracepoint program: {exc}") from exc
            release = os.uname().release
            raise SensorError(
                f"bcc could not compile the sensors ({exc}); kernel headers for {release} are "
                f"probably missing: install them, or link the distro's generic headers into "
                f"/lib/modules/{release}/build (scripts/setup.sh does this)") from exc

    def _fill_sensitive_paths(self) -> None:
        """The kernel-side file filter: path prefixes (LPM trie) and basenames (hash)."""
        from otelpeers import abi

        prefixes = self.bpf[b"sensitive_prefixes"]
        for p in self.config.process.sensitive_prefixes:
            raw = p.encode()[: abi.PREFIX_LEN]
            prefixes[abi.CPathPrefix(len(raw) * 8, raw)] = ctypes.c_uint8(1)
        names = self.bpf[b"sensitive_basenames"]
        for n in self.config.process.sensitive_basenames:
            names[abi.CBasename(n.encode()[: abi.BASENAME_LEN - 1])] = ctypes.c_uint8(1)

    def _attach_all(self) -> None:
        from bcc import BPF

        legacy = self.config.kernel.attach_mode == "legacy"
        for spec in PROGRAMS:
            prog_type = getattr(BPF, spec.prog_type)
            at = spec.attach_type if spec.expected_attach else -1
            try:
                fn = self.bpf.load_func(spec.name.encode(), prog_type, attach_type=at)
            except Exception as exc:
                raise SensorError(f"the kernel refused program {spec.name}: {exc}") from exc
            try:
                if legacy:
                    bpfsys.prog_attach(fn.fd, self._cgroup_fd, spec.attach_type)
                    self._legacy.append((fn.fd, spec.attach_type))
                else:
                    self._links.append(bpfsys.link_create(fn.fd, self._cgroup_fd, spec.attach_type))
            except OSError as exc:
                raise SensorError(
                    f"cannot attach {spec.name} to {self.cgroup_path}: {exc.strerror}") from exc

    def attached_program_ids(self) -> frozenset[int]:
        if self.bpf is None:
            return frozenset()
        return frozenset(bpfsys.prog_id(fn.fd) for fn in self.bpf.funcs.values())

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
        if self.bpf is not None:
            with contextlib.suppress(Exception):
                self.bpf.cleanup()  # tracepoints, maps, program fds
            self.bpf = None
        if self._cgroup_fd >= 0:
            os.close(self._cgroup_fd)
            self._cgroup_fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

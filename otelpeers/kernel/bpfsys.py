"""The few bpf(2) commands bcc does not wrap: cgroup links, attachment queries, detach.

Links (BPF_LINK_CREATE) are how otelpeers attaches by default: the kernel detaches a link
when its last file descriptor closes, so even a SIGKILLed agent leaves nothing attached.
Queries find programs left by an agent that attached the legacy way (BPF_PROG_ATTACH
survives its loader) so a new start can remove them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
from dataclasses import dataclass

PROGRAM_PREFIX = "otelp_"

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)

BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_LINK_CREATE = 28
BPF_F_ALLOW_MULTI = 2

# enum bpf_attach_type values for the cgroup hooks otelpeers uses.
CGROUP_INET_INGRESS = 0
CGROUP_INET_EGRESS = 1
CGROUP_INET_SOCK_CREATE = 2
CGROUP_SOCK_OPS = 3
CGROUP_INET4_POST_BIND = 12
CGROUP_INET6_POST_BIND = 13
CGROUP_INET4_CONNECT = 10
CGROUP_INET6_CONNECT = 11
CGROUP_UDP4_SENDMSG = 14
CGROUP_UDP6_SENDMSG = 15
CGROUP_UDP4_RECVMSG = 19
CGROUP_UDP6_RECVMSG = 20
CGROUP_INET_SOCK_RELEASE = 34

CGROUP_ATTACH_TYPES = (
    CGROUP_INET_INGRESS, CGROUP_INET_EGRESS, CGROUP_INET_SOCK_CREATE, CGROUP_SOCK_OPS,
    CGROUP_INET4_POST_BIND, CGROUP_INET6_POST_BIND, CGROUP_INET4_CONNECT, CGROUP_INET6_CONNECT,
    CGROUP_UDP4_SENDMSG, CGROUP_UDP6_SENDMSG, CGROUP_UDP4_RECVMSG, CGROUP_UDP6_RECVMSG,
    CGROUP_INET_SOCK_RELEASE,
)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    pass


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    ret = _libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"bpf(cmd={cmd}): {os.strerror(err)}")
    return ret


def _attr(*fields: tuple[int, str, int], size: int = 128) -> ctypes.Array[ctypes.c_char]:
    """A zeroed bpf_attr with (offset, struct format, value) fields filled in."""
    import struct

    buf = ctypes.create_string_buffer(size)
    for offset, fmt, value in fields:
        struct.pack_into(fmt, buf, offset, value)
    return buf


def link_create(prog_fd: int, cgroup_fd: int, attach_type: int) -> int:
    """Attach with a BPF link; returns the link fd (closing it detaches)."""
    return _bpf(BPF_LINK_CREATE, _attr((0, "I", prog_fd), (4, "I", cgroup_fd),
                                       (8, "I", attach_type)))


def prog_attach(prog_fd: int, cgroup_fd: int, attach_type: int) -> None:
    """Legacy attach: survives the loader; must be detached explicitly."""
    _bpf(BPF_PROG_ATTACH, _attr((0, "I", cgroup_fd), (4, "I", prog_fd),
                                (8, "I", attach_type), (12, "I", BPF_F_ALLOW_MULTI)))


def prog_detach(prog_fd: int, cgroup_fd: int, attach_type: int) -> None:
    _bpf(BPF_PROG_DETACH, _attr((0, "I", cgroup_fd), (4, "I", prog_fd), (8, "I", attach_type)))


def query_prog_ids(cgroup_fd: int, attach_type: int, max_ids: int = 64) -> list[int]:
    ids = (ctypes.c_uint32 * max_ids)()
    attr = _attr((0, "I", cgroup_fd), (4, "I", attach_type),
                 (16, "Q", ctypes.addressof(ids)), (24, "I", max_ids))
    try:
        _bpf(BPF_PROG_QUERY, attr)
    except BpfError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT):  # attach type unknown to this kernel
            return []
        raise
    import struct

    count = struct.unpack_from("I", attr, 24)[0]
    return list(ids[: min(count, max_ids)])


def prog_fd_by_id(prog_id: int) -> int:
    return _bpf(BPF_PROG_GET_FD_BY_ID, _attr((0, "I", prog_id)))


def prog_name(prog_fd: int) -> str:
    info = ctypes.create_string_buffer(256)
    attr = _attr((0, "I", prog_fd), (4, "I", ctypes.sizeof(info)),
                 (8, "Q", ctypes.addressof(info)))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return info.raw[64:80].split(b"\0", 1)[0].decode("ascii", "replace")


def prog_id(prog_fd: int) -> int:
    info = ctypes.create_string_buffer(256)
    attr = _attr((0, "I", prog_fd), (4, "I", ctypes.sizeof(info)),
                 (8, "Q", ctypes.addressof(info)))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    import struct

    return struct.unpack_from("I", info, 4)[0]


@dataclass(frozen=True)
class AttachedProgram:
    prog_id: int
    name: str
    attach_type: int


def list_attached(cgroup_path: str) -> list[AttachedProgram]:
    """Programs attached to a cgroup, for every attach type otelpeers uses."""
    fd = os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
    found: list[AttachedProgram] = []
    try:
        for at in CGROUP_ATTACH_TYPES:
            for pid in query_prog_ids(fd, at):
                try:
                    pfd = prog_fd_by_id(pid)
                except BpfError:
                    continue  # gone meanwhile
                try:
                    found.append(AttachedProgram(pid, prog_name(pfd), at))
                finally:
                    os.close(pfd)
    finally:
        os.close(fd)
    return found


def detach_stale(cgroup_path: str, keep_ids: frozenset[int] = frozenset()) -> list[AttachedProgram]:
    """Detach otelpeers programs attached the legacy way by an earlier, dead instance.

    Programs attached through a live link cannot be detached this way (EINVAL/EPERM): they
    belong to a running agent, and are reported, not touched.
    """
    removed: list[AttachedProgram] = []
    fd = os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for prog in list_attached(cgroup_path):
            if not prog.name.startswith(PROGRAM_PREFIX) or prog.prog_id in keep_ids:
                continue
            try:
                pfd = prog_fd_by_id(prog.prog_id)
            except BpfError:
                continue
            try:
                prog_detach(pfd, fd, prog.attach_type)
                removed.append(prog)
            except BpfError:
                pass
            finally:
                os.close(pfd)
    finally:
        os.close(fd)
    return removed

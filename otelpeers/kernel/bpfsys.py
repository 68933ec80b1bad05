"""The bpf(2) commands the agent uses itself: map access (single and batched), object
info, cgroup links, attachment queries and detach. The agent never imports bcc (the compiler
runs in a short-lived child, otelpeers/kernel/compiler.py): every map is reached through
these wrappers with the ctypes mirrors of otelpeers/abi.py.

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
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

PROGRAM_PREFIX = "otelp_"

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_LOOKUP_AND_DELETE_BATCH = 25
BPF_LINK_CREATE = 28
BPF_PROG_LOAD = 5
PROG_TYPE_CGROUP_SKB = 8
FUNC_GET_NETNS_COOKIE = 122
BPF_F_ALLOW_MULTI = 2
BPF_ANY = 0
BPF_NOEXIST = 1

# enum bpf_map_type values the agent reads
MAP_TYPE_HASH = 1
MAP_TYPE_ARRAY = 2
MAP_TYPE_PERCPU_ARRAY = 6
MAP_TYPE_LRU_HASH = 9
MAP_TYPE_ARRAY_OF_MAPS = 12
MAP_TYPE_HASH_OF_MAPS = 13
MAP_TYPE_RINGBUF = 27
_PERCPU_TYPES = frozenset({5, MAP_TYPE_PERCPU_ARRAY, 10})  # percpu hash, array, lru hash

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


def raw_syscall(nr: int, *args: Any) -> int:
    """libc's syscall(2): the result, or -1 with the error in ctypes.get_errno(). The one
    libc handle the loader uses (bpf(2) here, perf_event_open(2) in objload)."""
    return int(_libc.syscall(nr, *args))


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
    buf = ctypes.create_string_buffer(size)
    for offset, fmt, value in fields:
        struct.pack_into(fmt, buf, offset, value)
    return buf


def helper_allowed(prog_type: int, helper: int) -> bool:
    """Whether this kernel lets a program of prog_type call helper: loads `r0 = helper(ctx);
    r0 = 1; exit` and closes it. False also without the privilege to load programs."""
    insns = (struct.pack("<BBhi", 0x85, 0, 0, helper)  # call helper (r1 = ctx)
             + struct.pack("<BBhi", 0xB7, 0, 0, 1)  # r0 = 1
             + struct.pack("<BBhi", 0x95, 0, 0, 0))  # exit
    code = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = _attr((0, "I", prog_type), (4, "I", 3),
                 (8, "Q", ctypes.addressof(code)), (16, "Q", ctypes.addressof(license_)))
    try:
        fd = _bpf(BPF_PROG_LOAD, attr)
    except OSError:
        return False
    os.close(fd)
    return True


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               flags: int = 0, name: str = "", inner_map_fd: int = 0) -> int:
    """BPF_MAP_CREATE; returns the map fd (close-on-exec, as every bpf(2) fd)."""
    attr = _attr((0, "I", map_type), (4, "I", key_size), (8, "I", value_size),
                 (12, "I", max_entries), (16, "I", flags), (20, "I", inner_map_fd))
    raw = name.encode("ascii", "replace")[:15]
    ctypes.memmove(ctypes.addressof(attr) + 28, raw, len(raw))  # map_name[16]
    return _bpf(BPF_MAP_CREATE, attr)


def prog_load(prog_type: int, insns: bytes, *, license_: str = "GPL", kern_version: int = 0,
              name: str = "", expected_attach_type: int = 0) -> int:
    """BPF_PROG_LOAD; returns the program fd. A refusal raises BpfError with the tail of
    the verifier's log (the load is repeated with the log on, as bpftool does)."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license_.encode("ascii", "replace"))

    def attempt(log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = _attr((0, "I", prog_type), (4, "I", len(insns) // 8),
                     (8, "Q", ctypes.addressof(code)), (16, "Q", ctypes.addressof(lic)),
                     (40, "I", kern_version), (68, "I", expected_attach_type))
        if log is not None:
            struct.pack_into("IIQ", attr, 24, 1, ctypes.sizeof(log), ctypes.addressof(log))
        raw = name.encode("ascii", "replace")[:15]
        ctypes.memmove(ctypes.addressof(attr) + 48, raw, len(raw))  # prog_name[16]
        return _bpf(BPF_PROG_LOAD, attr)

    try:
        return attempt(None)
    except BpfError as exc:
        if exc.errno not in (errno.EACCES, errno.EINVAL):
            raise
        log = ctypes.create_string_buffer(1 << 20)
        try:
            return attempt(log)  # a refusal can be transient (memory); then it loads here
        except BpfError as again:
            tail = log.value.decode("ascii", "replace").strip()[-1500:]
            raise BpfError(again.errno, f"{again.strerror}; verifier: {tail}") from None


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


# ---- maps ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MapInfo:
    map_type: int
    map_id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


def map_info(map_fd: int) -> MapInfo:
    """struct bpf_map_info of a map fd (BPF_OBJ_GET_INFO_BY_FD)."""
    info = ctypes.create_string_buffer(128)
    _bpf(BPF_OBJ_GET_INFO_BY_FD, _attr((0, "I", map_fd), (4, "I", ctypes.sizeof(info)),
                                       (8, "Q", ctypes.addressof(info))))
    typ, mid, ks, vs, me, fl = struct.unpack_from("6I", info, 0)
    name = info.raw[24:40].split(b"\0", 1)[0].decode("ascii", "replace")
    return MapInfo(typ, mid, ks, vs, me, fl, name)


def parse_cpu_list(text: str) -> int:
    """Number of CPUs in a kernel CPU list such as "0-3,8-11" (the highest index + 1)."""
    top = -1
    for part in text.strip().split(","):
        if part:
            top = max(top, int(part.split("-")[-1]))
    return top + 1


@cache
def possible_cpus() -> int:
    """Per-CPU map values hold one slot per possible CPU, not per online CPU."""
    with open("/sys/devices/system/cpu/possible") as f:
        return parse_cpu_list(f.read())


class BpfMap:
    """A map reached by fd: single-element access and batched reads, raw bytes in and out.

    Callers pack and unpack with the struct layouts of otelpeers.abi; per-CPU maps return
    possible_cpus() values, each padded to 8 bytes, one after the other.
    """

    BATCH = 4096  # elements per batch syscall, at most
    # Bytes of one batch's keys and values, at most: per-CPU values grow with the CPU count,
    # and the buffers are kept for the map's life (a 4096-element batch of a per-CPU map
    # would hold megabytes on a big host). Smaller batches only mean more syscalls.
    BATCH_BYTES = 256 * 1024

    def __init__(self, fd: int, name: str = "") -> None:
        self.fd = fd
        self.info = map_info(fd)
        self.name = name or self.info.name
        self.key_size = self.info.key_size
        self.percpu = self.info.map_type in _PERCPU_TYPES
        self.ncpus = possible_cpus() if self.percpu else 1
        self.value_stride = (self.info.value_size + 7) & ~7 if self.percpu else self.info.value_size
        self.value_size = self.value_stride * self.ncpus
        self._key = ctypes.create_string_buffer(max(self.key_size, 8))
        self._value = ctypes.create_string_buffer(max(self.value_size, 8))
        self._elem_attr = _attr((0, "I", fd), (8, "Q", ctypes.addressof(self._key)),
                                (16, "Q", ctypes.addressof(self._value)))
        # BPF_MAP_DELETE_ELEM refuses any field set after the key (EINVAL)
        self._delete_attr = _attr((0, "I", fd), (8, "Q", ctypes.addressof(self._key)))
        self._batch_keys: ctypes.Array[ctypes.c_char] | None = None
        self._batch_values: ctypes.Array[ctypes.c_char] | None = None
        self._tokens = ctypes.create_string_buffer(16)

    def _set_key(self, key: bytes) -> None:
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name}: key of {len(key)} bytes, want {self.key_size}")
        ctypes.memmove(self._key, key, self.key_size)

    def lookup(self, key: bytes) -> bytes | None:
        self._set_key(key)
        struct.pack_into("Q", self._elem_attr, 24, 0)
        ret = _libc.syscall(_SYS_BPF, BPF_MAP_LOOKUP_ELEM, self._elem_attr, 128)
        if ret < 0:
            err = ctypes.get_errno()
            if err == errno.ENOENT:
                return None
            raise BpfError(err, f"lookup in map {self.name}: {os.strerror(err)}")
        return self._value.raw[: self.value_size]

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        self._set_key(key)
        if len(value) != self.value_size:
            raise ValueError(f"map {self.name}: value of {len(value)} bytes, "
                             f"want {self.value_size}")
        ctypes.memmove(self._value, value, self.value_size)
        struct.pack_into("Q", self._elem_attr, 24, flags)
        _bpf(BPF_MAP_UPDATE_ELEM, self._elem_attr)

    def delete(self, key: bytes) -> bool:
        self._set_key(key)
        ret = _libc.syscall(_SYS_BPF, BPF_MAP_DELETE_ELEM, self._delete_attr, 128)
        if ret < 0:
            err = ctypes.get_errno()
            if err == errno.ENOENT:
                return False
            raise BpfError(err, f"delete in map {self.name}: {os.strerror(err)}")
        return True

    def batches(self, delete: bool = False) -> Iterator[tuple[memoryview, memoryview, int]]:
        """Every element, in batches (BPF_MAP_LOOKUP[_AND_DELETE]_BATCH): (keys, values, n),
        views of reused buffers, valid until the next batch is asked for; unpack them in
        place. With delete, each element read is removed in the same kernel operation."""
        if self._batch_keys is None:
            n = self.batch_elements()
            self._batch_keys = ctypes.create_string_buffer(n * self.key_size)
            self._batch_values = ctypes.create_string_buffer(n * self.value_size)
        else:  # as many as the kept buffers hold (grown once by a large bucket: ENOSPC)
            n = len(self._batch_keys) // self.key_size
        assert self._batch_values is not None
        cmd = BPF_MAP_LOOKUP_AND_DELETE_BATCH if delete else BPF_MAP_LOOKUP_BATCH
        tokens = ctypes.addressof(self._tokens)
        first = True
        while True:
            attr = _attr((0, "Q", 0 if first else tokens), (8, "Q", tokens + 8),
                         (16, "Q", ctypes.addressof(self._batch_keys)),
                         (24, "Q", ctypes.addressof(self._batch_values)),
                         (32, "I", n), (36, "I", self.fd))
            ret = _libc.syscall(_SYS_BPF, cmd, attr, 128)
            err = ctypes.get_errno() if ret < 0 else 0
            if ret < 0 and err != errno.ENOENT:
                if err == errno.ENOSPC and n < 1 << 20:  # a bucket larger than the batch
                    n *= 4
                    self._batch_keys = ctypes.create_string_buffer(n * self.key_size)
                    self._batch_values = ctypes.create_string_buffer(n * self.value_size)
                    continue
                raise BpfError(err, f"batch read of map {self.name}: {os.strerror(err)}")
            got = struct.unpack_from("I", attr, 32)[0]
            if got:
                # cast to unsigned bytes: views of c_char arrays ("<c") never compare equal
                # to bytes
                yield (memoryview(self._batch_keys).cast("B")[: got * self.key_size],
                       memoryview(self._batch_values).cast("B")[: got * self.value_size], got)
            if ret < 0:  # ENOENT: the walk is complete
                return
            ctypes.memmove(tokens, tokens + 8, 8)  # the next call starts where this one ended
            first = False

    def batch_elements(self) -> int:
        """Elements asked for per batch syscall: BATCH, fewer where they would pass
        BATCH_BYTES (never under 64)."""
        return max(64, min(self.BATCH, self.BATCH_BYTES // (self.key_size + self.value_size)))

    def read_all(self, delete: bool = False) -> tuple[bytes, bytes, int]:
        """Every element as (keys, values, count), packed back to back (copies: small maps)."""
        keys, values, total = [], [], 0
        for k, v, n in self.batches(delete):
            keys.append(bytes(k))
            values.append(bytes(v))
            total += n
        return b"".join(keys), b"".join(values), total

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def sum_percpu(raw: bytes, stride: int, fmt: str) -> tuple[int, ...]:
    """Sum a per-CPU value (one struct per CPU, `stride` bytes apart) field by field."""
    st = struct.Struct(fmt)
    totals = [0] * len(st.unpack_from(raw, 0))
    for off in range(0, len(raw) - st.size + 1, stride):
        for i, v in enumerate(st.unpack_from(raw, off)):
            totals[i] += v
    return tuple(totals)

"""Load a cached compile (otelpeers/kernel/progcache.py) into the kernel without bcc.

Maps first (a map-in-map after its template), then each program with this start's map fds
written into its map loads, then the tracepoint programs attached the way bcc attaches
them: a perf event of the tracepoint on CPU 0 for every process, with the program set on it
(PERF_EVENT_IOC_SET_BPF); the program runs on every CPU while that event's fd is open.
The answer has the shape of a compile's (otelpeers/kernel/compiler.py), so the agent takes
the fds the same way whichever path produced them.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import platform
import struct
from typing import Any

from otelpeers.kernel import bpfsys
from otelpeers.kernel.progcache import CacheRefused, Entry, patched

TRACEFS_EVENTS = ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events")
_SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}.get(platform.machine(), 298)
PERF_TYPE_TRACEPOINT = 2
PERF_SAMPLE_RAW = 1 << 10
PERF_ATTR_SIZE = 112  # PERF_ATTR_SIZE_VER5
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408


def tracepoint_id(category: str, event: str) -> int:
    for root in TRACEFS_EVENTS:
        try:
            with open(os.path.join(root, category, event, "id")) as f:
                return int(f.read())
        except (OSError, ValueError):
            continue
    raise CacheRefused(f"tracepoint {category}:{event} is not in tracefs")


def attach_tracepoint(category: str, event: str, prog_fd: int) -> int:
    """The perf event fd that keeps prog_fd attached to the tracepoint while it is open."""
    attr = ctypes.create_string_buffer(PERF_ATTR_SIZE)
    struct.pack_into("IIQQQ", attr, 0, PERF_TYPE_TRACEPOINT, PERF_ATTR_SIZE,
                     tracepoint_id(category, event), 1, PERF_SAMPLE_RAW)
    struct.pack_into("I", attr, 48, 1)  # wakeup_events
    fd = bpfsys.raw_syscall(_SYS_PERF_EVENT_OPEN, ctypes.byref(attr), -1, 0, -1,
                            PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"perf_event_open({category}:{event}): {os.strerror(err)}")
    try:
        fcntl.ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
        fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)
    except OSError:
        os.close(fd)
        raise
    return int(fd)


def instantiate(entry: Entry) -> tuple[dict[str, Any], list[int]]:
    """(answer, fds) as the compiler child sends them; on any failure every fd made here is
    closed (nothing stays loaded or attached) and CacheRefused says what failed."""
    made: list[int] = []
    try:
        return _instantiate(entry, made)
    except (OSError, CacheRefused) as exc:
        for fd in made:
            os.close(fd)
        raise CacheRefused(str(exc)) from None


def _instantiate(entry: Entry, made: list[int]) -> tuple[dict[str, Any], list[int]]:
    index = {m.name: i for i, m in enumerate(entry.maps)}
    map_fds = [-1] * len(entry.maps)
    for pass_ in (False, True):  # templates before the maps of maps made from them
        for i, m in enumerate(entry.maps):
            if bool(m.inner) != pass_:
                continue
            inner = map_fds[index[m.inner]] if m.inner else 0
            try:
                fd = bpfsys.map_create(m.map_type, m.key_size, m.value_size, m.max_entries,
                                       m.flags, m.name, inner)
            except OSError as exc:
                raise CacheRefused(f"map {m.name}: {exc}") from None
            made.append(fd)
            map_fds[i] = fd
    progs: dict[str, int] = {}
    for p in entry.programs:
        try:
            fd = bpfsys.prog_load(p.prog_type, patched(p, map_fds), license_=p.license,
                                  kern_version=p.kern_version, name=p.name,
                                  expected_attach_type=p.attach_type)
        except OSError as exc:
            raise CacheRefused(f"program {p.name}: {exc}") from None
        made.append(fd)
        progs[p.name] = fd
    perf_fds, tp_names = [], []
    for p in entry.programs:
        if p.tracepoint:
            category, _, event = p.tracepoint.partition(":")
            fd = attach_tracepoint(category, event, progs[p.name])
            made.append(fd)
            perf_fds.append(fd)
            tp_names.append(p.tracepoint)
    cgroup = [p.name for p in entry.programs if not p.tracepoint]
    traced = [p.name for p in entry.programs if p.tracepoint]
    answer = {"maps": [m.name for m in entry.maps], "programs": cgroup,
              "tracepoints": tp_names, "tracepoint_programs": traced}
    fds = map_fds + [progs[n] for n in cgroup] + perf_fds + [progs[n] for n in traced]
    return answer, fds

"""Resources: one per owning process (not the agent), on top of one host resource."""

from __future__ import annotations

import platform
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache
from opentelemetry.sdk.resources import OTELResourceDetector, Resource

from otelpeers import attributes as A
from otelpeers.events import Owner

if TYPE_CHECKING:  # the span export process builds resources without the process table
    from otelpeers.process.table import ProcessInfo, ProcessTable

AttributeValue = (str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int]
                  | Sequence[float])
ProcessAttributes = Callable[[Owner], Mapping[str, AttributeValue]]

MACHINE_ID_PATHS = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


class _ProcessResource(Resource):
    """A Resource whose hash is computed once.

    The OTLP encoder groups spans by resource with a dict, hashing each span's resource;
    Resource.__hash__ serialises all attributes to JSON every time, which costs more than
    the rest of the grouping. Resources are immutable, so caching the hash is safe.
    """

    def __init__(self, attributes: Mapping[str, AttributeValue]) -> None:
        super().__init__(dict(attributes))
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def detect_host_resource() -> Resource:
    """host.* and os.type of this machine, overridden by OTEL_RESOURCE_ATTRIBUTES."""
    attrs: dict[str, AttributeValue] = {
        A.HOST_NAME: socket.gethostname(),
        A.HOST_ARCH: platform.machine(),
        A.OS_TYPE: platform.system().lower(),
    }
    for path in MACHINE_ID_PATHS:
        try:
            machine_id = path.read_text().strip()
        except OSError:
            continue
        if machine_id:
            attrs[A.HOST_ID] = machine_id[:64]
            break
    # OTELResourceDetector reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; the
    # per-process service.name still wins over the latter (merged on top later).
    return Resource(attrs).merge(OTELResourceDetector().detect())


def default_process_attributes(owner: Owner) -> Mapping[str, AttributeValue]:
    """What the kernel event alone tells about a process (no /proc lookups)."""
    return {
        A.SERVICE_NAME: owner.comm or A.UNKNOWN_SERVICE,
        A.PROCESS_PID: owner.tgid,
        A.PROCESS_EXECUTABLE_NAME: owner.comm,
    }


def info_attributes(info: ProcessInfo) -> dict[str, AttributeValue]:
    """ProcessInfo -> resource attributes; None fields are left out, never guessed."""
    attrs: dict[str, AttributeValue] = {
        A.SERVICE_NAME: info.name or A.UNKNOWN_SERVICE,
        A.PROCESS_PID: info.pid,
        A.PROCESS_PARENT_PID: info.ppid,
        A.PROCESS_CONTEXT: "procfs",
    }
    optional: dict[str, Any] = {
        A.PROCESS_EXECUTABLE_NAME: info.exe_name,
        A.PROCESS_EXECUTABLE_PATH: info.exe_path,
        A.PROCESS_COMMAND_LINE: info.command_line,
        A.PROCESS_OWNER: info.user_name,
        A.PROCESS_USER_ID: info.euid,
        A.PROCESS_USER_NAME: info.user_name,
        A.PROCESS_REAL_USER_ID: info.uid,
        A.PROCESS_REAL_USER_NAME: info.real_user_name,
        A.PROCESS_GROUP_ID: info.egid,
        A.PROCESS_GROUP_NAME: info.group_name,
        A.PROCESS_VPID: info.vpid,
        A.PROCESS_LINUX_CGROUP: info.cgroup_line,
        A.CONTAINER_ID: info.container_id,
        A.CONTAINER_RUNTIME_NAME: info.container_runtime,
        A.PROCESS_EXE_SHA256: info.exe_sha256,
        A.NETNS_INODE: info.net_ns,
        A.PIDNS_INODE: info.pid_ns,
        A.MNTNS_INODE: info.mnt_ns,
    }
    attrs.update({k: v for k, v in optional.items() if v is not None})
    if info.creation_time_ns is not None:
        attrs[A.PROCESS_CREATION_TIME] = datetime.fromtimestamp(
            info.creation_time_ns / 1e9, UTC).isoformat()
    if info.ancestry:
        attrs[A.PROCESS_ANCESTRY] = [name for _, name in info.ancestry]
        attrs[A.PROCESS_ANCESTRY_PIDS] = [pid for pid, _ in info.ancestry]
    return attrs


def table_process_attributes(table: ProcessTable) -> ProcessAttributes:
    """Resource attributes for the process that owned a socket, from the process table.

    When /proc has nothing (the process exited before it was read), only what the kernel
    said is used, and otelpeers.process.context says "exited"."""

    def attributes(owner: Owner) -> dict[str, AttributeValue]:
        info = table.lookup(owner.tgid, comm_hint=owner.comm)
        if info is None:
            attrs: dict[str, AttributeValue] = {
                A.SERVICE_NAME: owner.comm or A.UNKNOWN_SERVICE,
                A.PROCESS_PID: owner.tgid,
                A.PROCESS_USER_ID: owner.uid,
                A.PROCESS_GROUP_ID: owner.gid,
                A.PROCESS_CONTEXT: "exited",
            }
            name = table.user_name(owner.uid)
            if name is not None:
                attrs[A.PROCESS_OWNER] = name
        else:
            attrs = info_attributes(info)
        if owner.cgroup_id:
            attrs[A.PROCESS_CGROUP_ID] = owner.cgroup_id
        return attrs

    return attributes


class ResourceCache:
    """Owner -> Resource, bounded LRU keyed by (tgid, comm); thread safe."""

    def __init__(self, host: Resource, process_attributes: ProcessAttributes | None,
                 max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"export.max_live_resources must be >= 1, got {max_entries}")
        self._host = dict(host.attributes)
        self._attrs = process_attributes or default_process_attributes
        self._cache: LRUCache[tuple[int, str], Resource] = LRUCache(maxsize=max_entries)
        self._lock = threading.Lock()
        self.unknown = _ProcessResource({**self._host, A.SERVICE_NAME: A.UNKNOWN_SERVICE})
        self.attribute_errors = 0

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, owner: Owner | None) -> Resource:
        if owner is None:
            return self.unknown
        key = (owner.tgid, owner.comm)
        with self._lock:
            res = self._cache.get(key)
        if res is not None:
            return res
        if owner.is_kernel:  # no process to look up: pid 0 is the kernel, never /proc/0
            proc: dict[str, AttributeValue] = {
                A.SERVICE_NAME: A.KERNEL_SERVICE, A.PROCESS_PID: 0,
                A.PROCESS_EXECUTABLE_NAME: A.KERNEL_SERVICE, A.OWNER_KERNEL: True}
        else:
            proc = self._make_attributes(owner)
        res = _ProcessResource({**self._host, **proc})
        with self._lock:
            self._cache[key] = res
        return res

    def _make_attributes(self, owner: Owner) -> dict[str, AttributeValue]:
        try:
            proc = dict(self._attrs(owner))
        except Exception:  # a broken lookup must not stop export; counted, defaults used
            self.attribute_errors += 1
            proc = dict(default_process_attributes(owner))
        proc.setdefault(A.SERVICE_NAME, proc.get(A.PROCESS_EXECUTABLE_NAME) or owner.comm
                        or A.UNKNOWN_SERVICE)
        return proc

"""Resources: one per owning process (not the agent), on top of one host resource."""

from __future__ import annotations

import platform
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from cachetools import LRUCache
from opentelemetry.sdk.resources import OTELResourceDetector, Resource

from otelpeers import attributes as A
from otelpeers.events import Owner

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
        try:
            proc = dict(self._attrs(owner))
        except Exception:  # a broken lookup must not stop export; counted, defaults used
            self.attribute_errors += 1
            proc = dict(default_process_attributes(owner))
        proc.setdefault(A.SERVICE_NAME, proc.get(A.PROCESS_EXECUTABLE_NAME) or owner.comm
                        or A.UNKNOWN_SERVICE)
        res = _ProcessResource({**self._host, **proc})
        with self._lock:
            self._cache[key] = res
        return res

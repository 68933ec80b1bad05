"""Container id and runtime from a cgroup path.

Runtimes put each container in a cgroup whose last components name it:

    docker (cgroupfs driver)       /docker/<64 hex>
    docker (systemd driver)        /system.slice/docker-<64 hex>.scope
    containerd CRI (systemd)       /kubepods.slice/.../cri-containerd-<64 hex>.scope
    CRI-O                          /kubepods.slice/.../crio-<64 hex>.scope
    podman                         /machine.slice/libpod-<64 hex>.scope, /libpod_parent/libpod-<id>
    kubernetes, cgroupfs driver    /kubepods/<qos>/pod<uid>/<64 hex>   (runtime not named: None)
    LXC                            /lxc/<name>, /lxc.payload.<name>

The innermost match wins (docker-in-docker). Shapes not listed give None: an id is never
guessed. Conmon processes (crio-conmon-<id>, libpod-conmon-<id>) are not in the container.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_HEX64 = r"[0-9a-f]{64}"
_SCOPED = re.compile(rf"^(docker|cri-containerd|crio|libpod)-({_HEX64})(?:\.scope)?$")
_BARE = re.compile(rf"^{_HEX64}$")
_LXC_PAYLOAD = re.compile(r"^lxc\.payload\.([\w.\-]{1,64})$")
_LXC_NAME = re.compile(r"^[\w.\-]{1,64}$")
_RUNTIME = {"docker": "docker", "cri-containerd": "containerd", "crio": "cri-o", "libpod": "podman"}
# A bare 64-hex directory under these parents names its runtime.
_BARE_PARENT = {"docker": "docker"}


@dataclass(frozen=True, slots=True)
class ContainerRef:
    id: str
    runtime: str | None  # None: the shape gives the id but not which runtime made it


def container_from_path(path: str | None) -> ContainerRef | None:
    """The container of one cgroup path, or None when the path is not a known shape."""
    if not path:
        return None
    parts = [p for p in path.split("/") if p]
    for i in range(len(parts) - 1, -1, -1):
        part = parts[i]
        m = _SCOPED.match(part)
        if m:
            return ContainerRef(m.group(2), _RUNTIME[m.group(1)])
        if _BARE.match(part):
            parent = parts[i - 1] if i > 0 else ""
            if parent in _BARE_PARENT:
                return ContainerRef(part, _BARE_PARENT[parent])
            if any(p.startswith("kubepods") for p in parts[:i]):
                return ContainerRef(part, None)
            continue
        m = _LXC_PAYLOAD.match(part)
        if m:
            return ContainerRef(m.group(1), "lxc")
        if i > 0 and parts[i - 1] == "lxc" and _LXC_NAME.match(part):
            return ContainerRef(part, "lxc")
    return None


def container_from_cgroup(v2_path: str | None, v1_lines: Iterable[str] = ()) -> ContainerRef | None:
    """Prefer the cgroup-v2 path; on hybrid/v1 hosts look at each v1 hierarchy's path."""
    ref = container_from_path(v2_path)
    if ref is not None:
        return ref
    for line in v1_lines:
        fields = line.split(":", 2)
        if len(fields) == 3:
            ref = container_from_path(fields[2])
            if ref is not None:
                return ref
    return None

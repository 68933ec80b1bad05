"""Finding the cgroup-v2 hierarchy the agent attaches its socket programs to."""

from __future__ import annotations

import re
from pathlib import Path

PROC_MOUNTS = Path("/proc/mounts")

# /proc/mounts escapes space, tab, newline and backslash in paths as 3-digit octal.
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def cgroup2_mounts(mounts_text: str) -> list[str]:
    """Every cgroup2 mount point in a /proc/mounts text, in file order."""
    points = []
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            points.append(_unescape(fields[1]))
    return points


def find_cgroup2_mount(mounts_text: str | None = None) -> str | None:
    """The first cgroup2 mount point (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid
    layouts); None when cgroup v2 is not mounted. Reads /proc/mounts when no text is given."""
    if mounts_text is None:
        try:
            mounts_text = PROC_MOUNTS.read_text()
        except OSError:
            return None
    points = cgroup2_mounts(mounts_text)
    return points[0] if points else None


def is_cgroup2_dir(path: str | Path) -> bool:
    """True for a directory of a cgroup-v2 hierarchy: only v2 has cgroup.controllers in every
    cgroup, so this tells v2 from v1 and from plain directories without statfs()."""
    return (Path(path) / "cgroup.controllers").is_file()

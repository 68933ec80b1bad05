"""Process, user, container and file context for socket owners, read from procfs."""

from __future__ import annotations

from otelpeers.process.container import ContainerRef, container_from_cgroup, container_from_path
from otelpeers.process.redact import REDACTED, redact_argv, redact_command_line
from otelpeers.process.table import ProcessInfo, ProcessTable

__all__ = [
    "REDACTED",
    "ContainerRef",
    "ProcessInfo",
    "ProcessTable",
    "container_from_cgroup",
    "container_from_path",
    "redact_argv",
    "redact_command_line",
]

"""Shared test behaviour: the `kernel` marker.

Tests marked `kernel` load real BPF programs. Where that is impossible (not root, bpf()
refused, bcc missing) they are skipped on a developer machine, but FAIL when CI=true: a CI
run that silently skipped every kernel test would prove nothing.
"""

from __future__ import annotations

import functools
import os

import pytest


@functools.lru_cache(maxsize=1)
def bpf_unavailable_reason() -> str | None:
    """Why kernel tests cannot run here, or None when they can (checked once per session)."""
    if os.geteuid() != 0:
        return "not running as root"
    try:
        import bcc  # noqa: F401
    except Exception as exc:  # ImportError, or OSError when libbcc.so cannot load
        return f"bcc is not importable ({exc}); run `sudo scripts/setup.sh`"
    from otelpeers.preflight import probe_bpf_syscall

    return probe_bpf_syscall()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _require_bpf() -> None:
    reason = bpf_unavailable_reason()
    if reason is None:
        return
    if _in_ci():
        pytest.fail(f"kernel test needs BPF, but {reason}. CI=true turns this skip into a "
                    "failure; run the suite as root on a BPF-capable host (sudo make test).",
                    pytrace=False)
    pytest.skip(f"kernel test needs BPF: {reason} (run `sudo make test`)")


@pytest.fixture
def require_bpf() -> None:
    """Skip (fail when CI=true) unless this process can load BPF programs."""
    _require_bpf()


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Every `kernel` test gets require_bpf's behaviour without having to ask for it.
    if item.get_closest_marker("kernel") is not None:
        _require_bpf()

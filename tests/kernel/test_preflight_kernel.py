"""`otelpeers check` on the real kernel: every row passes as root, and without capabilities
the whole table still prints with failing rows and fixes."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from otelpeers.preflight import PROGRAM_CHECKS

pytestmark = pytest.mark.kernel

EXPECTED_ROWS = ["privileges", "bpf() syscall", "cgroup v2", "tracefs", "bcc", "kernel headers",
                 *[c[0] for c in PROGRAM_CHECKS], "prog tracepoint", "ring buffer",
                 "stale programs", "program cache"]
PR_CAPBSET_DROP = 24


def _run_check(preexec=None) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    return subprocess.run([sys.executable, "-m", "otelpeers", "check"], capture_output=True,
                          text=True, timeout=120, preexec_fn=preexec)


def _rows(stdout: str) -> dict[str, str]:
    """Row name -> PASS/FAIL, parsed by the header's column positions."""
    lines = stdout.splitlines()
    header = lines[0]
    status_col, detail_col = header.index("RESULT"), header.index("DETAIL")
    rows = {}
    for line in lines[1:]:
        if not line.strip():
            break
        rows[line[:status_col].strip()] = line[status_col:detail_col].strip()
    return rows


def test_check_passes_as_root() -> None:
    proc = _run_check()
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    rows = _rows(proc.stdout)
    assert list(rows) == EXPECTED_ROWS, report
    failed = [name for name, status in rows.items() if status != "PASS"]
    assert not failed, report
    assert proc.returncode == 0, report
    assert f"all {len(EXPECTED_ROWS)} checks passed" in proc.stdout


def _drop_all_capabilities() -> None:
    # Runs in the child before exec: with an empty bounding set even uid 0 execs with no
    # capabilities, like root inside a locked-down container.
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)


def test_check_without_capabilities_prints_every_row_and_fails() -> None:
    proc = _run_check(preexec=_drop_all_capabilities)
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 1, report
    rows = _rows(proc.stdout)
    assert list(rows) == EXPECTED_ROWS, report
    for name in ("privileges", "bpf() syscall", "ring buffer"):
        assert rows[name] == "FAIL", report
    assert "FIX" in proc.stdout.splitlines()[0]
    assert "run as root" in proc.stdout
    assert "failed" in proc.stdout.splitlines()[-1]

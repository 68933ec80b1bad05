"""Process context of real processes: a process tree, and a process of another user.

Marked `kernel` with the rest of the root-only suite (running as another user needs root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from otelpeers import attributes as A
from otelpeers.config import ProcessConfig
from otelpeers.events import Owner
from otelpeers.process.table import ProcessTable

pytestmark = pytest.mark.kernel

CHILD = ("import subprocess, sys; p = subprocess.Popen(['sleep', '30']); "
         "print(p.pid, flush=True); sys.stdin.read(); p.kill(); p.wait()")


def test_process_tree_ancestry() -> None:
    sh = shutil.which("sh")
    assert sh is not None
    # "; true" keeps sh alive as the parent instead of exec-ing python.
    proc = subprocess.Popen([sh, "-c", f'"{sys.executable}" -c "{CHILD}"; true'],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        sleep_pid = int(proc.stdout.readline())  # Popen returns once sleep has exec'd
        table = ProcessTable(ProcessConfig(hash_executables=False))
        info = table.lookup(sleep_pid)
        assert info is not None and info.exe_name == "sleep"
        names = [name for _, name in info.ancestry]
        pids = [pid for pid, _ in info.ancestry]
        assert names[0].startswith("python")
        assert pids[1] == proc.pid and names[1] == os.path.basename(os.path.realpath(sh))
        assert pids[2] == os.getpid()
        attrs = table.resource_attributes(
            Owner(sleep_pid, sleep_pid, os.getuid(), os.getgid(), 0, "sleep"))
        assert attrs[A.PROCESS_PARENT_PID] == pids[0]
        assert attrs[A.PROCESS_COMMAND_LINE] == "sleep 30"
    finally:
        proc.communicate("")


def test_process_of_unprivileged_user() -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is needed for this test; apt-get install util-linux")
    proc = subprocess.Popen(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         "import sys; print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        table = ProcessTable(ProcessConfig(hash_executables=True))
        attrs = table.resource_attributes(Owner(proc.pid, proc.pid, 65534, 65534, 0, "python3"))
        assert attrs[A.PROCESS_USER_ID] == 65534 and attrs[A.PROCESS_REAL_USER_ID] == 65534
        assert attrs[A.PROCESS_OWNER] == "nobody"
        assert attrs[A.PROCESS_GROUP_ID] == 65534
        # Hashed through /proc/PID/exe although the process belongs to someone else.
        assert len(attrs[A.PROCESS_EXE_SHA256]) == 64
    finally:
        proc.communicate("")

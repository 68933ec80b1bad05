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
from otelpeers.otel.resources import table_process_attributes
from otelpeers.process.table import ProcessTable

pytestmark = pytest.mark.kernel

# The grandchild prints once it runs, i.e. after its exec completed and the kernel set up
# its arguments: only then does the child report its pid, so /proc/PID/cmdline is final
# (Popen returns as soon as exec starts, when cmdline may still read empty).
GRANDCHILD = "import sys; print(1, flush=True); sys.stdin.read()"
CHILD = ("import subprocess, sys; "
         "p = subprocess.Popen([sys.executable, '-c', sys.argv[1], 'marker-arg'], "
         "stdin=subprocess.PIPE, stdout=subprocess.PIPE); p.stdout.readline(); "
         "print(p.pid, flush=True); sys.stdin.read(); p.kill(); p.wait()")


def test_process_tree_ancestry() -> None:
    sh = shutil.which("sh")
    assert sh is not None
    # "; true" keeps sh alive as the parent instead of exec-ing python.
    proc = subprocess.Popen([sh, "-c", f'"{sys.executable}" -c "{CHILD}" "$0"; true',
                             GRANDCHILD],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        leaf_pid = int(proc.stdout.readline())
        table = ProcessTable(ProcessConfig(hash_executables=False))
        info = table.lookup(leaf_pid)
        assert info is not None and info.exe_name.startswith("python")
        names = [name for _, name in info.ancestry]
        pids = [pid for pid, _ in info.ancestry]
        assert names[0].startswith("python")
        assert pids[1] == proc.pid and names[1] == os.path.basename(os.path.realpath(sh))
        assert pids[2] == os.getpid()
        attrs = table_process_attributes(table)(
            Owner(leaf_pid, leaf_pid, os.getuid(), os.getgid(), 0, "python3"))
        assert attrs[A.PROCESS_PARENT_PID] == pids[0]
        assert attrs[A.PROCESS_COMMAND_LINE] == f"{sys.executable} -c {GRANDCHILD} marker-arg"
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
        owner = Owner(proc.pid, proc.pid, 65534, 65534, 0, "python3")
        attrs = table_process_attributes(table)(owner)
        assert attrs[A.PROCESS_USER_ID] == 65534 and attrs[A.PROCESS_REAL_USER_ID] == 65534
        assert attrs[A.PROCESS_OWNER] == "nobody"
        assert attrs[A.PROCESS_GROUP_ID] == 65534
        # Hashed through /proc/PID/exe although the process belongs to someone else.
        assert len(attrs[A.PROCESS_EXE_SHA256]) == 64
    finally:
        proc.communicate("")

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest

from otelpeers import attributes as A
from otelpeers.config import ProcessConfig
from otelpeers.events import Owner
from otelpeers.otel.resources import table_process_attributes
from otelpeers.process.procfs import ProcFS, RawProcess, Stat
from otelpeers.process.table import MAX_ANCESTRY, ProcessTable
from otelpeers.testing.fakeproc import FakeProc

HEX = "0123456789abcdef" * 4


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def owner(tgid: int, comm: str = "app", uid: int = 1000) -> Owner:
    return Owner(tgid=tgid, pid=tgid, uid=uid, gid=uid, cgroup_id=77, comm=comm)


@pytest.fixture
def fp(tmp_path) -> FakeProc:
    f = FakeProc(tmp_path / "proc")
    f.add(1, comm="systemd", ppid=0, start_ticks=1, uid=0, exe="/usr/lib/systemd/systemd",
          argv=["/sbin/init"])
    return f


def table(fp: FakeProc, clock: Clock | None = None, **cfg) -> ProcessTable:
    config = ProcessConfig(**{"hash_executables": False, **cfg})
    return ProcessTable(config, str(fp.root), clock=clock or Clock())


def test_normal_process_attributes(fp: FakeProc) -> None:
    fp.add(100, comm="bash", ppid=1, start_ticks=10, exe="/usr/bin/bash", argv=["bash"])
    fp.add(200, comm="nginx: worker", ppid=100, start_ticks=500, uid=0, euid=33, gid=33,
           argv=["nginx: worker process"], exe="/usr/sbin/nginx (deleted)",
           cgroup="0::/kubepods.slice/p.slice/cri-containerd-" + HEX + ".scope\n",
           nspid=[200, 7], ns={"pid": 5, "net": 6, "mnt": 8})
    t = table(fp)
    info = t.lookup(200)
    assert info is not None
    assert info.exe_name == "nginx" and info.exe_path == "/usr/sbin/nginx (deleted)"
    assert info.ancestry == ((100, "bash"), (1, "systemd"))
    assert (info.container_id, info.container_runtime) == (HEX, "containerd")
    assert info.vpid == 7
    attrs = table_process_attributes(t)(owner(200, "nginx: worker"))
    assert attrs[A.SERVICE_NAME] == "nginx"
    assert attrs[A.PROCESS_PID] == 200 and attrs[A.PROCESS_PARENT_PID] == 100
    assert attrs[A.PROCESS_USER_ID] == 33 and attrs[A.PROCESS_REAL_USER_ID] == 0
    assert attrs[A.PROCESS_REAL_USER_NAME] == "root"
    assert attrs[A.CONTAINER_ID] == HEX and attrs[A.CONTAINER_RUNTIME_NAME] == "containerd"
    assert attrs[A.PROCESS_LINUX_CGROUP].startswith("0::/kubepods.slice/")
    assert (attrs[A.PIDNS_INODE], attrs[A.NETNS_INODE], attrs[A.MNTNS_INODE]) == (5, 6, 8)
    assert attrs[A.PROCESS_ANCESTRY] == ["bash", "systemd"]
    assert attrs[A.PROCESS_ANCESTRY_PIDS] == [100, 1]
    assert attrs[A.PROCESS_CONTEXT] == "procfs"
    assert attrs[A.PROCESS_CREATION_TIME].startswith("2023-11-14T22:13:")  # btime + 5 s
    assert A.PROCESS_EXE_SHA256 not in attrs  # hashing off
    for value in attrs.values():
        assert value is not None


def test_secret_never_in_attributes(fp: FakeProc) -> None:
    fp.add(300, argv=["app", "--db-url", "postgres://u:hunter2Zq@db/x", "--token", "t0kenZq",
                      "API_KEY=k3yZq"])
    attrs = t_attrs = table_process_attributes(table(fp))(owner(300))
    text = repr(t_attrs)
    for secret in ("hunter2Zq", "t0kenZq", "k3yZq"):
        assert secret not in text
    assert attrs[A.PROCESS_COMMAND_LINE].startswith("app --db-url postgres://u:REDACTED@db/x")
    unredacted = table_process_attributes(table(fp, redact_command_lines=False))(owner(300))
    assert "hunter2Zq" in unredacted[A.PROCESS_COMMAND_LINE]  # the test can fail


def test_megabyte_command_line_bounded(fp: FakeProc) -> None:
    fp.add(301, argv=["app", "x" * 1_000_000])
    info = table(fp, max_command_line=4096).lookup(301)
    assert info is not None and info.command_line_truncated
    assert len(info.command_line) <= 4096 + 2


def test_kernel_thread_and_unknowns(fp: FakeProc) -> None:
    fp.add(2, comm="kthreadd", ppid=0, argv=b"", exe=None, cgroup=None, uid=0)
    fp.add(302, comm="kworker/0:1", ppid=2, argv=b"", exe=None, cgroup=None, uid=0)
    attrs = table_process_attributes(table(fp))(owner(302, "kworker/0:1", uid=0))
    assert attrs[A.SERVICE_NAME] == "kworker/0:1"  # no exe: comm
    for key in (A.PROCESS_EXECUTABLE_PATH, A.PROCESS_EXECUTABLE_NAME, A.PROCESS_COMMAND_LINE,
                A.CONTAINER_ID, A.PROCESS_LINUX_CGROUP):
        assert key not in attrs
    assert attrs[A.PROCESS_ANCESTRY] == ["kthreadd"]


def test_unknown_user_is_left_out(fp: FakeProc) -> None:
    fp.add(303, uid=4_000_000, gid=4_000_000)
    attrs = table_process_attributes(table(fp))(owner(303))
    assert attrs[A.PROCESS_USER_ID] == 4_000_000
    assert A.PROCESS_OWNER not in attrs and A.PROCESS_GROUP_NAME not in attrs


def test_exited_before_read_falls_back_to_kernel_facts(fp: FakeProc) -> None:
    t = table(fp)
    attrs = table_process_attributes(t)(owner(999, "gone", uid=0))
    assert attrs == {A.SERVICE_NAME: "gone", A.PROCESS_PID: 999, A.PROCESS_USER_ID: 0,
                     A.PROCESS_GROUP_ID: 0, A.PROCESS_CONTEXT: "exited",
                     A.PROCESS_OWNER: "root", A.PROCESS_CGROUP_ID: 77}
    assert t.stats["vanished"] == 1


def test_pid_reuse_detected_by_start_time(fp: FakeProc) -> None:
    clock = Clock()
    fp.add(400, comm="old", start_ticks=100, argv=["old"], exe="/bin/old")
    t = table(fp, clock)
    assert t.lookup(400).exe_name == "old"
    fp.add(400, comm="new", start_ticks=900, argv=["new"], exe="/bin/new")
    assert t.lookup(400).exe_name == "old"  # within the revalidation interval: cached
    clock.t += 2
    assert t.lookup(400).exe_name == "new"
    assert t.stats["reused"] == 1


def test_start_hint_forces_reread(fp: FakeProc) -> None:
    fp.add(401, comm="old", start_ticks=100, exe="/bin/old")
    t = table(fp)
    hz = os.sysconf("SC_CLK_TCK")
    assert t.lookup(401, start_hint_ns=100 * 10**9 // hz).exe_name == "old"
    fp.add(401, comm="new", start_ticks=900, exe="/bin/new")
    assert t.lookup(401, start_hint_ns=100 * 10**9 // hz).exe_name == "old"  # same instance
    assert t.lookup(401, start_hint_ns=900 * 10**9 // hz).exe_name == "new"


def test_exec_detected_by_comm(fp: FakeProc) -> None:
    clock = Clock()
    fp.add(402, comm="sh", start_ticks=100, exe="/bin/sh")
    t = table(fp, clock)
    assert table_process_attributes(t)(owner(402, "sh"))[A.SERVICE_NAME] == "sh"
    fp.add(402, comm="curl", start_ticks=100, exe="/usr/bin/curl")  # exec keeps start time
    clock.t += 0.2
    assert table_process_attributes(t)(owner(402, "curl"))[A.SERVICE_NAME] == "curl"
    assert t.stats["reread_exec"] == 1
    assert len(t) == 1
    t.on_exec(402)
    assert len(t) == 0  # forgotten: the next lookup reads the new image


def test_exit_grace_then_expiry(fp: FakeProc) -> None:
    fp.add(500, comm="brief", exe="/bin/brief")
    t = table(fp, exited_grace_s=60)
    assert t.lookup(500) is not None
    fp.remove(500)
    t.on_exit(500, now_ns=10**18)
    assert t.lookup(500).exe_name == "brief"  # kept through the grace period
    assert t.expire(10**18 + 59 * 10**9) == 0
    assert t.lookup(500) is not None
    assert t.expire(10**18 + 61 * 10**9) == 1
    assert t.lookup(500) is None
    assert t.stats["expired"] == 1


def test_exited_pid_reused_during_grace(fp: FakeProc) -> None:
    fp.add(501, comm="a", start_ticks=10, exe="/bin/a")
    t = table(fp)
    t.lookup(501)
    t.on_exit(501, now_ns=1)
    fp.add(501, comm="b", start_ticks=20, exe="/bin/b")
    assert t.lookup(501).exe_name == "b"


def test_seed_reads_current_processes(fp: FakeProc) -> None:
    for pid in range(600, 620):
        fp.add(pid, ppid=1)
    t = table(fp)
    assert t.seed() == 21
    assert t.stats["ancestry_reads"] <= 1  # parents already cached end the walk


def test_ancestry_bounded_and_loop_safe(fp: FakeProc) -> None:
    for pid in range(700, 740):
        fp.add(pid, comm=f"p{pid}", exe=None, ppid=pid - 1 if pid > 700 else 739)  # a cycle
    info = table(fp).lookup(739)
    assert len(info.ancestry) == MAX_ANCESTRY
    assert info.ancestry[0] == (738, "p738")


class MemProcFS(ProcFS):
    """Processes that exist only while asked about: a churn of short-lived pids, no disk."""

    def stat(self, pid: int) -> Stat | None:
        return Stat(f"w{pid % 7}", "S", 1, pid)

    def exe(self, pid: int) -> str | None:
        return "/usr/bin/worker"

    def read_process(self, pid: int, max_cmdline: int) -> RawProcess | None:
        return RawProcess(pid, f"w{pid % 7}", 1, pid, None, ("worker", str(pid)), False,
                          "/usr/bin/worker", "/", (), None, None, None)


def test_bounded_under_100k_churned_pids() -> None:
    cfg = ProcessConfig(max_processes=1000, hash_executables=False, exited_grace_s=1)
    t = ProcessTable(cfg, procfs=MemProcFS("/nonexistent"), clock=Clock())
    start = time.perf_counter()
    for pid in range(2, 100_002):
        assert t.lookup(pid) is not None
        if pid % 3 == 0:
            t.on_exit(pid, now_ns=pid * 10**6)
        if pid % 1000 == 0:
            t.expire(now_ns=pid * 10**6)
        assert len(t) <= 1000
    elapsed = time.perf_counter() - start
    s = t.stats
    assert s["size"] <= 1000 and s["exited"] <= 1000
    assert s["evictions"] + s["expired"] >= 99_000 - 1000
    assert len(t._checked) <= 1000  # side tables bounded with the cache
    assert elapsed < 10, elapsed


def test_exe_hash_cached_by_file_identity(fp: FakeProc, tmp_path) -> None:
    binary = tmp_path / "bin"
    binary.write_bytes(b"\x7fELF" + b"x" * 5000)
    fp.add(800, exe=str(binary))
    fp.add(801, exe=str(binary))
    t = table(fp, hash_executables=True)
    want = hashlib.sha256(binary.read_bytes()).hexdigest()
    assert t.lookup(800).exe_sha256 == want
    assert t.lookup(801).exe_sha256 == want
    assert (t.stats["hash_computed"], t.stats["hash_hits"]) == (1, 1)
    binary.write_bytes(b"\x7fELF" + b"y" * 6000)  # replaced: new identity, new digest
    fp.add(802, exe=str(binary))
    assert t.lookup(802).exe_sha256 == hashlib.sha256(binary.read_bytes()).hexdigest() != want
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(257 * 1024 * 1024)  # sparse: no disk used
    fp.add(803, exe=str(big))
    assert t.lookup(803).exe_sha256 is None and t.stats["hash_skipped"] == 1
    assert A.PROCESS_EXE_SHA256 in table_process_attributes(t)(owner(800))


def test_config_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="process.max_processes"):
        ProcessTable(ProcessConfig(max_processes=0))


def test_real_proc_current_process() -> None:
    t = ProcessTable(ProcessConfig())
    info = t.lookup(os.getpid())
    assert info is not None
    assert info.exe_path == os.path.realpath(sys.executable)
    assert info.exe_name.startswith("python")
    assert info.ancestry and info.ancestry[0][0] == os.getppid()
    assert info.euid == os.geteuid() and info.net_ns == os.stat("/proc/self/ns/net").st_ino
    with open(os.path.realpath(sys.executable), "rb") as f:
        assert info.exe_sha256 == hashlib.file_digest(f, "sha256").hexdigest()


def test_real_process_secret_redacted() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()",
                             "--password=hunter2Zq", "--api-key", "k3yZq"],
                            stdin=subprocess.PIPE)
    try:
        # The child has exec'd once /proc/PID/cmdline shows its arguments.
        deadline = time.monotonic() + 10
        t = ProcessTable(ProcessConfig(hash_executables=False))
        while time.monotonic() < deadline:
            with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
                if b"hunter2Zq" in f.read():
                    break
        attrs = table_process_attributes(t)(owner(proc.pid, "python3"))
        assert attrs[A.PROCESS_CONTEXT] == "procfs"
        assert "--password=REDACTED" in attrs[A.PROCESS_COMMAND_LINE]
        assert "hunter2Zq" not in repr(attrs) and "k3yZq" not in repr(attrs)
        assert attrs[A.PROCESS_ANCESTRY_PIDS][0] == os.getpid()
    finally:
        proc.communicate(b"")


def test_empty_command_line_of_a_live_process_is_read_again(fp: FakeProc) -> None:
    """Between exec and the kernel setting up the arguments, cmdline reads empty: the entry
    is re-read on the next lookups instead of keeping no command line forever."""
    fp.add(901, comm="sleep", argv=b"", exe="/usr/bin/sleep")
    t = table(fp)
    info = t.lookup(901)
    assert info is not None and info.command_line is None
    assert t.stats["cmdline_empty"] == 1
    (fp.root / "901" / "cmdline").write_bytes(b"sleep\x0030\x00")  # exec finished
    attrs = table_process_attributes(t)(owner(901, "sleep"))
    assert attrs[A.PROCESS_COMMAND_LINE] == "sleep 30"
    assert t.stats["cmdline_reread"] == 1
    assert t.lookup(901).command_line == "sleep 30"
    assert t.stats["cmdline_reread"] == 1  # settled: no more re-reads


def test_kernel_threads_are_not_retried(fp: FakeProc) -> None:
    fp.add(902, comm="kworker/1:0", argv=b"", exe=None)
    t = table(fp)
    t.lookup(902)
    t.lookup(902)
    assert t.stats["cmdline_empty"] == 0 and t.stats["cmdline_reread"] == 0


def test_prefetcher_reads_proc_off_the_calling_thread(fp: FakeProc) -> None:
    import threading

    from otelpeers.process.prefetch import Prefetcher

    fp.add(903, comm="curl", argv=("curl", "x"), exe="/usr/bin/curl")
    t = table(fp)
    readers: list[str] = []
    real = t.procfs.read_process

    def spy(pid, limit):  # noqa: ANN001, ANN202
        readers.append(threading.current_thread().name)
        return real(pid, limit)

    t.procfs.read_process = spy  # type: ignore[method-assign]
    pf = Prefetcher(t, max_pending=2)
    try:
        pf.request(903, "curl")
        assert pf.wait_idle(5)
        assert readers == ["otelpeers-procfs"] and t.peek(903) is not None
        with pf._cond:  # a full queue drops and counts, never blocks
            for pid in (1, 2, 3):
                pf._pending[pid] = None
        pf.request(904)
        assert pf.stats["dropped"] == 1
    finally:
        pf.close()

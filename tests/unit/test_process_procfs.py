from __future__ import annotations

import os
import sys

import pytest

from otelpeers.process.procfs import (
    ProcFS,
    parse_cgroup,
    parse_cmdline,
    parse_ns_link,
    parse_stat,
    parse_status,
    sanitize,
)
from otelpeers.testing.fakeproc import FakeProc, stat_line


def test_stat_comm_with_parens_spaces_and_controls() -> None:
    st = parse_stat(stat_line(42, "a) (b c\x1b[31m) x", 7, 123456))
    assert st is not None
    assert st.comm == "a) (b c?[31m) x"
    assert (st.ppid, st.start_ticks, st.state) == (7, 123456, "S")


@pytest.mark.parametrize("text", [
    "", "42 noparens S 1", "42 (x) S 1 2 3", "42 (x) S abc " + "0 " * 30])
def test_malformed_stat_is_unknown(text: str) -> None:
    assert parse_stat(text) is None


def test_status_ids_and_nspid() -> None:
    st = parse_status(
        "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t100\t101\t101\t101\nNSpid:\t900\t12\t1\n")
    assert (st.uid, st.euid, st.gid, st.egid, st.nspid) == (1000, 0, 100, 101, (900, 12, 1))
    empty = parse_status("Name:\tx\n")
    assert (empty.uid, empty.euid, empty.nspid) == (None, None, ())


def test_cmdline_bounded_and_truncation_flagged() -> None:
    argv, cut = parse_cmdline(b"a\0bb\0", 100)
    assert (argv, cut) == (("a", "bb"), False)
    argv, cut = parse_cmdline(b"x" * 1_000_000, 4096)
    assert cut and len(argv[0]) == 4096
    assert parse_cmdline(b"", 10) == ((), False)


def test_cgroup_and_ns_links() -> None:
    v2, v1 = parse_cgroup("12:memory:/docker/abc\n0::/system.slice/x.service\n")
    assert v2 == "/system.slice/x.service"
    assert v1 == ("12:memory:/docker/abc",)
    assert parse_ns_link("net:[4026531840]") == 4026531840
    assert parse_ns_link("garbage") is None


def test_sanitize_caps_and_replaces() -> None:
    assert sanitize("a\nb\x00c", 100) == "a?b?c"
    out = sanitize("x" * 50, 10)
    assert len(out) == 10 and out.endswith("…")


def test_read_normal_process(tmp_path) -> None:
    fp = FakeProc(tmp_path)
    fp.add(50, comm="web (main)", ppid=1, start_ticks=777, uid=33, euid=0, gid=44,
           argv=["/srv/web", "--port", "80"], exe="/srv/web",
           cgroup="0::/system.slice/docker-" + "a" * 64 + ".scope\n",
           ns={"pid": 11, "net": 22, "mnt": 33})
    raw = ProcFS(str(tmp_path)).read_process(50, 4096)
    assert raw is not None
    assert raw.comm == "web (main)" and raw.ppid == 1 and raw.start_ticks == 777
    assert raw.status is not None
    assert (raw.status.uid, raw.status.euid, raw.status.gid) == (33, 0, 44)
    assert raw.argv == ("/srv/web", "--port", "80")
    assert raw.exe_path == "/srv/web"
    assert (raw.pid_ns, raw.net_ns, raw.mnt_ns) == (11, 22, 33)
    assert raw.cgroup_v2 is not None and raw.cgroup_v2.endswith(".scope")


def test_missing_and_unreadable_files_are_unknown(tmp_path) -> None:
    fp = FakeProc(tmp_path)
    fp.add(60)
    fp.remove(60, "exe", "status", "ns", "cgroup")
    (tmp_path / "60" / "cmdline").unlink()
    (tmp_path / "60" / "cmdline").mkdir()  # read fails with IsADirectoryError
    raw = ProcFS(str(tmp_path)).read_process(60, 4096)
    assert raw is not None
    assert raw.exe_path is None and raw.status is None and raw.argv is None
    assert raw.net_ns is None and raw.cgroup_v2 is None
    assert ProcFS(str(tmp_path)).read_process(61, 4096) is None  # never existed


class _VanishAfter(ProcFS):
    """Runs `action` once, just after the first read of `trigger`: the process changes
    between two reads, as a real one can."""

    def __init__(self, root: str, trigger: str, action) -> None:
        super().__init__(root)
        self.trigger, self.action, self.done = trigger, action, False

    def _read(self, pid: int, name: str, limit: int) -> bytes | None:
        out = super()._read(pid, name, limit)
        if name == self.trigger and not self.done:
            self.done = True
            self.action()
        return out


def test_vanished_mid_read_keeps_what_was_read(tmp_path) -> None:
    fp = FakeProc(tmp_path)
    fp.add(70, argv=["app", "x"])
    procfs = _VanishAfter(str(tmp_path), "cmdline", lambda: fp.remove(70))
    raw = procfs.read_process(70, 4096)
    assert raw is not None
    assert raw.argv == ("app", "x")  # read before it vanished
    assert raw.status is None and raw.exe_path is None and raw.net_ns is None


def test_pid_reused_mid_read_gives_nothing(tmp_path) -> None:
    fp = FakeProc(tmp_path)
    fp.add(80, start_ticks=100, argv=["old"])
    procfs = _VanishAfter(str(tmp_path), "cmdline",
                          lambda: fp.add(80, start_ticks=200, argv=["new"]))
    assert procfs.read_process(80, 4096) is None  # fields would mix two processes
    assert procfs.read_process(80, 4096).argv == ("new",)


def test_pids_bounded(tmp_path) -> None:
    fp = FakeProc(tmp_path)
    for pid in range(100, 110):
        fp.add(pid)
    (tmp_path / "self").mkdir()
    assert sorted(ProcFS(str(tmp_path)).pids(100)) == list(range(100, 110))
    assert len(ProcFS(str(tmp_path)).pids(3)) == 3
    assert ProcFS(str(tmp_path)).boot_time_s() == 1700000000


def test_real_proc_self() -> None:
    raw = ProcFS().read_process(os.getpid(), 4096)
    assert raw is not None
    assert raw.ppid == os.getppid()
    assert raw.status is not None and raw.status.uid == os.getuid()
    assert raw.exe_path == os.path.realpath(sys.executable)
    assert raw.net_ns == os.stat("/proc/self/ns/net").st_ino

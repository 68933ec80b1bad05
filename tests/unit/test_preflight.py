"""Pure parts of `otelpeers check`: mount parsing, capability parsing, the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelpeers import preflight
from otelpeers.config import Config, KernelConfig
from otelpeers.kernel.cgroup import cgroup2_mounts, find_cgroup2_mount, is_cgroup2_dir
from otelpeers.preflight import (
    CAP_BPF,
    CAP_NET_ADMIN,
    CAP_PERFMON,
    CAP_SYS_ADMIN,
    CheckResult,
    check_cgroup2,
    check_privileges,
    check_tracefs,
    format_table,
    parse_cap_eff,
)

# /proc/mounts of the project's hybrid-layout machine (cgroup v1 controllers + unified v2).
HYBRID = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
nodev /sys/kernel/tracing tracefs rw,relatime 0 0
"""
UNIFIED = """\
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
cgroup2 /run/other cgroup2 rw 0 0
"""
V1_ONLY = """\
tmpfs /sys/fs/cgroup tmpfs rw 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0
"""


def _status(cap_eff: int) -> str:
    return (f"Name:\tpython3\nUmask:\t0022\nCapInh:\t0000000000000000\n"
            f"CapPrm:\t{cap_eff:016x}\nCapEff:\t{cap_eff:016x}\nCapBnd:\t000001ffffffffff\n")


def _caps(*bits: int) -> int:
    return sum(1 << b for b in bits)


# ---- cgroup mounts ------------------------------------------------------------------------

def test_hybrid_layout_finds_unified() -> None:
    assert find_cgroup2_mount(HYBRID) == "/sys/fs/cgroup/unified"


def test_unified_layout_takes_the_first_cgroup2_entry() -> None:
    assert find_cgroup2_mount(UNIFIED) == "/sys/fs/cgroup"
    assert cgroup2_mounts(UNIFIED) == ["/sys/fs/cgroup", "/run/other"]


def test_v1_only_has_no_cgroup2() -> None:
    assert find_cgroup2_mount(V1_ONLY) is None
    assert find_cgroup2_mount("") is None


def test_mount_point_escapes_are_decoded() -> None:
    assert find_cgroup2_mount("none /mnt/my\\040cgroup cgroup2 rw 0 0\n") == "/mnt/my cgroup"


def test_type_must_match_exactly() -> None:
    # The filesystem type is the third field; "cgroup2" in a path or an option does not count.
    text = "cgroup /sys/fs/cgroup2 cgroup rw,cgroup2 0 0\nshort line\n"
    assert find_cgroup2_mount(text) is None


def test_reads_proc_mounts_by_default() -> None:
    expected = find_cgroup2_mount(Path("/proc/mounts").read_text())
    assert find_cgroup2_mount() == expected


def test_is_cgroup2_dir(tmp_path: Path) -> None:
    assert not is_cgroup2_dir(tmp_path)
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    assert is_cgroup2_dir(tmp_path)


def test_check_cgroup2_uses_configured_path(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("")
    cfg = Config(kernel=KernelConfig(cgroup_path=str(tmp_path)))
    r = check_cgroup2(cfg, mounts_text=V1_ONLY)
    assert r.ok and str(tmp_path) in r.detail and "kernel.cgroup_path" in r.detail


def test_check_cgroup2_rejects_non_cgroup2_dir(tmp_path: Path) -> None:
    cfg = Config(kernel=KernelConfig(cgroup_path=str(tmp_path)))
    r = check_cgroup2(cfg, mounts_text=HYBRID)
    assert not r.ok and "not a cgroup-v2 directory" in r.detail and r.fix


def test_check_cgroup2_without_mount_fails_with_fix() -> None:
    r = check_cgroup2(Config(), mounts_text=V1_ONLY)
    assert not r.ok and "mount -t cgroup2" in r.fix


# ---- capabilities -------------------------------------------------------------------------

def test_parse_cap_eff() -> None:
    assert parse_cap_eff(_status(0x1FFFFFFFFFF)) == 0x1FFFFFFFFFF
    assert parse_cap_eff(_status(0)) == 0
    with pytest.raises(ValueError, match="CapEff"):
        parse_cap_eff("Name:\tx\n")


def test_root_with_full_caps_passes() -> None:
    r = check_privileges(_status(0x1FFFFFFFFFF), euid=0)
    assert r.ok and r.fix == ""
    assert "root" in r.detail and "BPF" in r.detail


def test_non_root_with_bpf_caps_passes() -> None:
    r = check_privileges(_status(_caps(CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN)), euid=1000)
    assert r.ok and "uid 1000" in r.detail


def test_sys_admin_stands_in_for_bpf_on_old_kernels() -> None:
    assert check_privileges(_status(_caps(CAP_SYS_ADMIN, CAP_NET_ADMIN)), euid=1000).ok


@pytest.mark.parametrize("caps", [
    0,
    _caps(CAP_BPF, CAP_PERFMON),          # no NET_ADMIN: cannot attach cgroup programs
    _caps(CAP_BPF, CAP_NET_ADMIN),        # no PERFMON
    _caps(CAP_SYS_ADMIN),
])
def test_missing_caps_fail_naming_them(caps: int) -> None:
    r = check_privileges(_status(caps), euid=1000)
    assert not r.ok
    assert "missing CAP_" in r.detail and "root" in r.fix
    if not caps >> CAP_NET_ADMIN & 1:
        assert "CAP_NET_ADMIN" in r.detail


def test_root_without_caps_fails() -> None:
    # root in a restricted container: uid 0 alone does not make bpf() work.
    assert not check_privileges(_status(0), euid=0).ok


def test_unreadable_status_fails() -> None:
    r = check_privileges("garbage", euid=0)
    assert not r.ok and "cannot read capabilities" in r.detail


# ---- tracefs ------------------------------------------------------------------------------

def test_tracefs_missing(tmp_path: Path) -> None:
    r = check_tracefs(tmp_path)
    assert not r.ok and "mount -t tracefs" in r.fix


def test_tracefs_without_the_tracepoint(tmp_path: Path) -> None:
    (tmp_path / "events").mkdir()
    r = check_tracefs(tmp_path)
    assert not r.ok and "sched:sched_process_exec" in r.detail


def test_tracefs_with_the_tracepoints(tmp_path: Path) -> None:
    for category, event, _arg in preflight.TRACEPOINTS:
        (tmp_path / "events" / category / event).mkdir(parents=True)
    assert check_tracefs(tmp_path).ok
    (tmp_path / "events" / "syscalls" / "sys_enter_openat2").rmdir()
    r = check_tracefs(tmp_path)
    assert not r.ok and "syscalls:sys_enter_openat2" in r.detail


# ---- bpf() syscall probe ------------------------------------------------------------------

def test_unknown_architecture_is_reported() -> None:
    reason = preflight.probe_bpf_syscall("sparc64")
    assert reason is not None and "sparc64" in reason


# ---- table --------------------------------------------------------------------------------

def test_table_aligns_columns_and_shows_fix_only_for_failures() -> None:
    results = [
        CheckResult("privileges", True, "root", "should not be shown"),
        CheckResult("bpf() syscall", False, "bpf(BPF_MAP_CREATE) failed: EPERM", "run as root"),
        CheckResult("tracefs", True, "mounted"),
    ]
    text = format_table(results)
    lines = text.splitlines()
    assert lines[0].split() == ["CHECK", "RESULT", "DETAIL", "FIX"]
    rows = lines[1:4]
    status_col = lines[0].index("RESULT")
    detail_col = lines[0].index("DETAIL")
    fix_col = lines[0].index("FIX")
    expected = [("PASS", "root"), ("FAIL", "bpf("), ("PASS", "mounted")]
    for row, (status, detail) in zip(rows, expected, strict=True):
        assert row[status_col:].startswith(status)
        assert row[detail_col:].startswith(detail)
    assert rows[1][fix_col:] == "run as root"
    assert "should not be shown" not in text
    assert lines[-1] == "3 checks, 1 failed"


def test_table_without_failures_has_no_fix_column() -> None:
    text = format_table([CheckResult("a", True, "x"), CheckResult("bb", True, "y")])
    assert "FIX" not in text
    assert text.splitlines()[-1] == "all 2 checks passed"


def test_results_from_checks_carry_no_fix_when_passing() -> None:
    r = check_privileges(_status(0x1FFFFFFFFFF), euid=0)
    assert r.fix == ""


def test_long_details_are_bounded_to_one_line() -> None:
    r = preflight._result("x", False, "first line " + "y" * 1000 + "\nsecond line", "fix")
    assert "\n" not in r.detail and len(r.detail) <= preflight.MAX_DETAIL
    assert r.detail.startswith("first line")


def test_crashing_check_becomes_a_failed_row() -> None:
    def boom() -> CheckResult:
        raise RuntimeError("kaput")

    (row,) = preflight._guarded("boom", boom)
    assert not row.ok and "kaput" in row.detail and row.fix


def test_main_check_exit_status(monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    mixed = [CheckResult("a", True, "ok"), CheckResult("b", False, "no", "f")]
    monkeypatch.setattr(preflight, "run_checks", lambda cfg: mixed)
    assert preflight.main_check(Config()) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "1 failed" in out
    monkeypatch.setattr(preflight, "run_checks", lambda cfg: [CheckResult("a", True, "ok")])
    assert preflight.main_check(Config()) == 0


def _cache_config(directory: str) -> Config:
    return Config(kernel=KernelConfig(program_cache=directory))


def test_program_cache_rows(tmp_path: Path) -> None:
    from otelpeers.kernel import progcache
    from otelpeers.kernel.loader import cflags_for, program_text

    off = preflight.check_program_cache(_cache_config(""))
    assert off.ok and "every start compiles" in off.detail
    d = tmp_path / "cache"
    cfg = _cache_config(str(d))
    first = preflight.check_program_cache(cfg)
    assert first.ok and "next start compiles" in first.detail
    key = progcache.cache_key(program_text(), cflags_for(cfg))
    exit_insn = bytes([0x95, 0, 0, 0, 0, 0, 0, 0])
    progcache.write(str(d), progcache.Entry(key, (), (progcache.ProgDef(
        "otelp_sock_new", 9, 2, "GPL", 0, exit_insn, (), ""),)))
    kept = preflight.check_program_cache(cfg)
    assert kept.ok and "without compiling" in kept.detail
    Path(progcache.entry_path(str(d), key)).write_text("{}")
    broken = preflight.check_program_cache(cfg)
    assert broken.ok and "unusable" in broken.detail and "replaces it" in broken.detail
    d.chmod(0o777)
    unsafe = preflight.check_program_cache(cfg)
    assert not unsafe.ok and "writable by others" in unsafe.detail
    assert "chmod 700" in unsafe.fix

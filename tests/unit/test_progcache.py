"""The program cache's format and directory rules, without the kernel."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from otelpeers.kernel import progcache
from otelpeers.kernel.progcache import CacheRefused, Entry, MapDef, NoEntry, ProgDef


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def map_load(dst: int, fd: int, src: int = progcache.PSEUDO_MAP_FD) -> bytes:
    return insn(0x18, dst, src, 0, fd) + insn(0, 0, 0, 0, 0)  # ld_imm64 is two slots


EXIT = insn(0x95)
PROGRAM = map_load(1, 7) + insn(0xB7, 0, 0, 0, 1) + map_load(2, 5) + EXIT


def entry(key: str = "k" * 64) -> Entry:
    maps = (MapDef("sockets", 9, 8, 64, 1024, 0, ""), MapDef("agg_a", 1, 16, 48, 64, 0, ""),
            MapDef("agg_current", 12, 4, 4, 1, 0, "agg_a"))
    relocs = progcache.relocations(PROGRAM, {7: 0, 5: 2})
    progs = (ProgDef("otelp_conn4", 18, 10, "GPL", 0, PROGRAM, relocs, ""),
             ProgDef("tracepoint__sched__sched_process_exec", 5, 0, "GPL", 393664, EXIT, (),
                     "sched:sched_process_exec"))
    return Entry(key, maps, progs)


def test_relocations_find_every_map_load() -> None:
    assert progcache.relocations(PROGRAM, {7: 0, 5: 2}) == ((0, 0), (3, 2))


@pytest.mark.parametrize("code, why", [
    (map_load(1, 9), "not one of the maps"),
    (map_load(1, 7, src=2), "pseudo source 2"),  # a map value (global data)
    (insn(0x85, 0, progcache.PSEUDO_KFUNC_CALL, 0, 1234) + EXIT, "kernel function"),
    (PROGRAM[:-3], "whole number"),
])
def test_programs_that_need_more_than_map_fds_are_not_cached(code: bytes, why: str) -> None:
    with pytest.raises(CacheRefused, match=why):
        progcache.relocations(code, {7: 0, 5: 2})


def test_patched_writes_this_starts_fds_and_nothing_else() -> None:
    prog = entry().programs[0]
    out = progcache.patched(prog, [40, 41, 42])
    assert struct.unpack_from("<i", out, 4)[0] == 40  # slot 0 -> map 0
    assert struct.unpack_from("<i", out, 3 * 8 + 4)[0] == 42  # slot 3 -> map 2
    assert [out[i] for i in range(0, len(out), 8)] == [PROGRAM[i]
                                                       for i in range(0, len(PROGRAM), 8)]
    assert out[16:24] == PROGRAM[16:24]


def test_round_trip() -> None:
    e = entry()
    assert progcache.from_json(json.loads(json.dumps(progcache.to_json(e))), e.key) == e


def _tampered(change: dict[str, object], where: str = "programs") -> dict[str, object]:
    data = progcache.to_json(entry())
    data[where][0] |= change  # type: ignore[index]
    return data


@pytest.mark.parametrize("data, why", [
    ({"format": 99}, "format"),
    (progcache.to_json(entry("other")), "another key"),
    (_tampered({"name": "x; rm -rf /"}), "not a name"),
    (_tampered({"prog_type": -1}), "not an integer"),
    (_tampered({"prog_type": True}), "not an integer"),
    (_tampered({"insns": "!!notbase64"}), "base64"),
    (_tampered({"relocs": [[1, 0]]}), "does not point at a map load"),  # the second slot
    (_tampered({"relocs": [[0, 3]]}), "does not point at a map load"),  # no such map
    (_tampered({"inner": "nowhere"}, "maps"), "template"),
    (_tampered({"tracepoint": "../../x:id"}), "category:event"),
])
def test_entries_are_checked_field_by_field(data: dict[str, object], why: str) -> None:
    with pytest.raises(CacheRefused, match=why):
        progcache.from_json(data, "k" * 64)


def test_cache_key_follows_text_and_flags() -> None:
    k = progcache.cache_key("int x;", ["-DA=1"])
    assert k == progcache.cache_key("int x;", ["-DA=1"])
    assert k != progcache.cache_key("int x; ", ["-DA=1"])
    assert k != progcache.cache_key("int x;", ["-DA=2"])


def test_write_then_read(tmp_path: Path) -> None:
    d = str(tmp_path / "cache")
    e = entry()
    progcache.write(d, e)
    assert os.stat(d).st_mode & 0o777 == 0o700
    assert os.stat(progcache.entry_path(d, e.key)).st_mode & 0o777 == 0o600
    assert progcache.read(d, e.key) == e
    assert [n for n in os.listdir(d) if n.endswith(".tmp")] == []


def test_missing_is_no_entry(tmp_path: Path) -> None:
    with pytest.raises(NoEntry):
        progcache.read(str(tmp_path / "absent"), "k" * 64)
    with pytest.raises(NoEntry):
        progcache.read(str(tmp_path), "k" * 64)


def test_writable_by_others_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "cache"
    e = entry()
    progcache.write(str(d), e)
    path = Path(progcache.entry_path(str(d), e.key))
    path.chmod(0o666)
    with pytest.raises(CacheRefused, match="writable by others"):
        progcache.read(str(d), e.key)
    path.chmod(0o600)
    d.chmod(0o777)
    with pytest.raises(CacheRefused, match="writable by others"):
        progcache.read(str(d), e.key)
    with pytest.raises(CacheRefused, match="writable by others"):
        progcache.write(str(d), e)


def test_links_are_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    e = entry()
    progcache.write(str(real), e)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(CacheRefused, match="link"):
        progcache.read(str(tmp_path / "link"), e.key)
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    Path(progcache.entry_path(str(d), e.key)).symlink_to(progcache.entry_path(str(real), e.key))
    with pytest.raises(CacheRefused):
        progcache.read(str(d), e.key)


def test_oversized_and_non_json_are_refused(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    d = str(tmp_path)
    e = entry()
    path = Path(progcache.entry_path(d, e.key))
    path.write_text("{not json")
    path.chmod(0o600)
    with pytest.raises(CacheRefused, match="not JSON"):
        progcache.read(d, e.key)
    progcache.write(d, e)
    monkeypatch.setattr(progcache, "MAX_ENTRY_BYTES", 100)
    with pytest.raises(CacheRefused, match="over 100"):
        progcache.read(d, e.key)


def test_prune_keeps_the_most_recently_used(tmp_path: Path) -> None:
    d = str(tmp_path)
    for i in range(5):
        progcache.write(d, entry(f"{i:064d}"))
        os.utime(progcache.entry_path(d, f"{i:064d}"), (1000 + i, 1000 + i))
    os.utime(progcache.entry_path(d, f"{0:064d}"), (2000, 2000))  # read recently
    removed = progcache.prune(d, keep=3)
    assert sorted(removed) == [f"sensors-{i:064d}.json" for i in (1, 2)]
    assert len(os.listdir(d)) == 3


def test_the_agent_logs_each_cache_problem_and_whether_the_compile_was_kept(
        caplog: pytest.LogCaptureFixture) -> None:
    from otelpeers.kernel.loader import report_cache

    caplog.set_level("INFO", logger="otelpeers.kernel.loader")
    assert report_cache({"cache": "hit"}, "/c") == "hit"
    assert "loaded from the program cache in /c" in caplog.text
    caplog.clear()
    assert report_cache({"cache": "compiled", "cache_kept": True, "cache_problems": []},
                        "/c") == "compiled"
    assert "kept in the program cache in /c" in caplog.text
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    caplog.clear()
    answer = {"cache": "compiled", "cache_kept": False,
              "cache_problems": ["entry not used: owned by uid 1000", "not written: EROFS"]}
    assert report_cache(answer, "/c") == "compiled"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and "owned by uid 1000" in warnings[0]
    assert "EROFS" in warnings[1] and "kept in the program cache" not in caplog.text

"""Compiled sensors kept between starts, so that only the first start pays for clang.

bcc compiles the C text with clang at every start (1.3-2.3 s on a 2-core host). What it
produces is plain data: the maps' definitions and each program's instructions, in which
every map reference is a 64-bit load of the map's fd (BPF_PSEUDO_MAP_FD). The compiler
child records that after a compile (capture), in one JSON entry per key; a later start with
the same key creates the maps, writes their new fds into the recorded instruction slots and
loads the programs without bcc or clang (otelpeers/kernel/objload.py). The kernel's
verifier checks cached programs exactly as it checks freshly compiled ones.

The key covers everything the compile depends on: the C text, the cflags (table sizes,
probed kernel features), the kernel (release and build), the machine and bcc's version.
A different kernel or configuration is a new entry; at most MAX_ENTRIES are kept, least
recently used first out.

The agent loads what it reads here into the kernel as root, so an entry is used only from a
directory and file owned by this user and writable by nobody else, read without following
links, bounded in size and checked field by field; anything else is refused with a reason
and the agent compiles instead.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 1
MAX_ENTRIES = 8
MAX_ENTRY_BYTES = 16 << 20
MAX_INSNS = 1 << 20  # the kernel's own limit on a program's instructions
_NAME = re.compile(r"^[A-Za-z0-9_.]{1,64}$")
_TRACEPOINT = re.compile(r"^(?:\w{1,64}:\w{1,64})?$")  # category:event, names under tracefs
LD_IMM64 = 0x18  # BPF_LD | BPF_DW | BPF_IMM: the first of two slots
CALL = 0x85
PSEUDO_MAP_FD = 1
PSEUDO_KFUNC_CALL = 2


class CacheRefused(Exception):
    """An entry that cannot be used (the message says why); the agent compiles instead."""


class NoEntry(CacheRefused):
    """Nothing cached for this key yet (the first start, or after a change)."""


class UnsafeCache(CacheRefused):
    """The directory or file may have been written by someone else: never used."""


@dataclass(frozen=True)
class MapDef:
    name: str
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    inner: str  # the template map of a map-in-map ("" for others)


@dataclass(frozen=True)
class ProgDef:
    name: str
    prog_type: int
    attach_type: int  # expected attach type given at load (0 where none is needed)
    license: str
    kern_version: int
    insns: bytes  # as compiled, map fds as they were in the compiler
    relocs: tuple[tuple[int, int], ...]  # (instruction index, index into Entry.maps)
    tracepoint: str  # "category:event" for tracepoint programs, "" for cgroup programs


@dataclass(frozen=True)
class Entry:
    key: str
    maps: tuple[MapDef, ...]
    programs: tuple[ProgDef, ...]


def bcc_version() -> str:
    """bcc's version without importing bcc (which maps LLVM)."""
    try:
        spec = importlib.util.find_spec("bcc")
    except (ImportError, ValueError):
        return ""
    if spec is None or not spec.origin:
        return ""
    try:
        return Path(spec.origin).with_name("version.py").read_text()[:200]
    except OSError:
        return ""


def cache_key(text: str, cflags: list[str]) -> str:
    u = os.uname()
    material = [FORMAT, text, list(cflags), u.release, u.version, u.machine, bcc_version()]
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()


def relocations(insns: bytes, map_fds: dict[int, int]) -> tuple[tuple[int, int], ...]:
    """(slot, map index) of every map fd load; CacheRefused where the program needs more
    than map fds rewritten (map values, BTF ids, kernel function calls)."""
    if len(insns) % 8:
        raise CacheRefused(f"{len(insns)} bytes of instructions is not a whole number")
    out = []
    for i in range(len(insns) // 8):
        code, regs, _off, imm = struct.unpack_from("<BBhi", insns, i * 8)
        src = regs >> 4
        if code == LD_IMM64 and src:
            if src != PSEUDO_MAP_FD:
                raise CacheRefused(f"instruction {i} loads pseudo source {src}")
            if imm not in map_fds:
                raise CacheRefused(f"instruction {i} refers to fd {imm}, not one of the maps")
            out.append((i, map_fds[imm]))
        elif code == CALL and src == PSEUDO_KFUNC_CALL:
            raise CacheRefused(f"instruction {i} calls a kernel function (needs BTF)")
    return tuple(out)


def patched(prog: ProgDef, fds: list[int]) -> bytes:
    """The program's instructions with the maps' fds of this start."""
    buf = bytearray(prog.insns)
    for slot, index in prog.relocs:
        struct.pack_into("<i", buf, slot * 8 + 4, fds[index])
    return bytes(buf)


# ---- the file ------------------------------------------------------------------------------
def to_json(entry: Entry) -> dict[str, Any]:
    return {
        "format": FORMAT, "key": entry.key,
        "maps": [vars(m) for m in entry.maps],
        "programs": [{**{k: v for k, v in vars(p).items() if k not in ("insns", "relocs")},
                      "insns": base64.b64encode(p.insns).decode(),
                      "relocs": [list(r) for r in p.relocs]} for p in entry.programs],
    }


def _int(obj: dict[str, Any], name: str, top: int = (1 << 32) - 1) -> int:
    v = obj.get(name)
    if type(v) is not int or not 0 <= v <= top:
        raise CacheRefused(f"field {name!r} is {v!r}, not an integer in 0..{top}")
    return v


def _str(obj: dict[str, Any], name: str, empty: bool = False) -> str:
    v = obj.get(name)
    if not isinstance(v, str) or not (_NAME.match(v) or (empty and v == "")):
        raise CacheRefused(f"field {name!r} is {v!r}, not a name")
    return v


def from_json(data: Any, key: str) -> Entry:
    """The entry, checked field by field; CacheRefused names the first problem."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CacheRefused("not an entry of this format")
    if data.get("key") != key:
        raise CacheRefused("written for another key")
    raw_maps, raw_progs = data.get("maps"), data.get("programs")
    if not isinstance(raw_maps, list) or not isinstance(raw_progs, list) or not raw_progs:
        raise CacheRefused("maps or programs missing")
    maps = []
    for m in raw_maps:
        if not isinstance(m, dict):
            raise CacheRefused("a map is not an object")
        maps.append(MapDef(_str(m, "name"), _int(m, "map_type"), _int(m, "key_size"),
                           _int(m, "value_size"), _int(m, "max_entries"), _int(m, "flags"),
                           _str(m, "inner", empty=True)))
    names = [m.name for m in maps]
    for m in maps:
        if m.inner and (m.inner not in names or m.inner == m.name):
            raise CacheRefused(f"map {m.name}'s template {m.inner} is not a plain map here")
    programs = []
    for p in raw_progs:
        if not isinstance(p, dict) or not isinstance(p.get("insns"), str):
            raise CacheRefused("a program is not an object with instructions")
        try:
            insns = base64.b64decode(p["insns"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CacheRefused(f"program instructions are not base64: {exc}") from None
        if not insns or len(insns) % 8 or len(insns) // 8 > MAX_INSNS:
            raise CacheRefused(f"program {p.get('name')!r} has {len(insns)} bytes of code")
        relocs = p.get("relocs")
        if not isinstance(relocs, list):
            raise CacheRefused("relocations missing")
        pairs = []
        for r in relocs:
            if (not isinstance(r, list) or len(r) != 2 or not all(type(x) is int for x in r)
                    or not 0 <= r[0] < len(insns) // 8 or not 0 <= r[1] < len(maps)
                    or insns[r[0] * 8] != LD_IMM64 or insns[r[0] * 8 + 1] >> 4 != 1):
                raise CacheRefused(f"relocation {r!r} does not point at a map load")
            pairs.append((r[0], r[1]))
        tracepoint = p.get("tracepoint")
        if not isinstance(tracepoint, str) or not _TRACEPOINT.match(tracepoint):
            raise CacheRefused(f"field 'tracepoint' is {tracepoint!r}, not category:event")
        programs.append(ProgDef(_str(p, "name"), _int(p, "prog_type"), _int(p, "attach_type"),
                                _str(p, "license"), _int(p, "kern_version"), insns,
                                tuple(pairs), tracepoint))
    return Entry(key, tuple(maps), tuple(programs))


# ---- the directory -------------------------------------------------------------------------
def _private(st: os.stat_result, what: str) -> None:
    if st.st_uid != os.geteuid():
        raise UnsafeCache(f"{what} is owned by uid {st.st_uid}, not by this user")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeCache(f"{what} is writable by others (mode {stat.S_IMODE(st.st_mode):o})")


def _check_dir(directory: str) -> None:
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        raise NoEntry(f"{directory} does not exist yet") from None
    except OSError as exc:
        raise CacheRefused(f"{directory}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeCache(f"{directory} is not a directory (or is a link)")
    _private(st, directory)


def entry_path(directory: str, key: str) -> str:
    return os.path.join(directory, f"sensors-{key}.json")


def read(directory: str, key: str) -> Entry:
    """The entry for key; CacheRefused if there is none or it may not be used."""
    _check_dir(directory)
    path = entry_path(directory, key)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NoEntry("no entry yet") from None
    except OSError as exc:  # ELOOP: a link
        raise UnsafeCache(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeCache(f"{path} is not a regular file")
        _private(st, path)
        if st.st_size > MAX_ENTRY_BYTES:
            raise CacheRefused(f"{path} is {st.st_size} bytes, over {MAX_ENTRY_BYTES}")
        raw = f.read(MAX_ENTRY_BYTES + 1)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CacheRefused(f"{path} is not JSON: {exc}") from None
    entry = from_json(data, key)
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: pruned last
    return entry


def write(directory: str, entry: Entry) -> None:
    """Atomically (a temporary file renamed over the entry), private, then prune."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    _check_dir(directory)
    fd, tmp = tempfile.mkstemp(prefix=".sensors-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(to_json(entry), f, separators=(",", ":"))
        os.replace(tmp, entry_path(directory, entry.key))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    prune(directory)


def discard(directory: str, key: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(entry_path(directory, key))


def prune(directory: str, keep: int = MAX_ENTRIES) -> list[str]:
    """Remove all but the keep most recently used entries; returns the removed names."""
    entries = []
    for name in os.listdir(directory):
        if name.startswith("sensors-") and name.endswith(".json"):
            with contextlib.suppress(OSError):
                entries.append((os.lstat(os.path.join(directory, name)).st_mtime, name))
    entries.sort(reverse=True)
    removed = [name for _mtime, name in entries[keep:]]
    for name in removed:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))
    return removed


"""Build a fake procfs tree in a directory: for tests and benchmarks without real processes.

Files are laid out as the kernel does (PID/stat, status, cmdline, cgroup, exe and ns/*
symlinks), so ProcFS and ProcessTable read them through the same code as /proc.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path


def stat_line(pid: int, comm: str, ppid: int, start_ticks: int, state: str = "S") -> str:
    # Fields 3..52 after "(comm)": state ppid pgrp session tty tpgid flags ... starttime(22)
    tail = [state, str(ppid)] + ["0"] * 17 + [str(start_ticks)] + ["0"] * 30
    return f"{pid} ({comm}) {' '.join(tail)}\n"


class FakeProc:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "stat").write_text("cpu  0 0 0 0\nbtime 1700000000\n")

    def add(self, pid: int, *, comm: str = "app", ppid: int = 1, start_ticks: int = 1000,
            uid: int = 1000, euid: int | None = None, gid: int = 1000,
            nspid: Sequence[int] | None = None, argv: Sequence[str] | bytes | None = ("app",),
            exe: str | None = "/usr/bin/app", cgroup: str | None = "0::/user.slice\n",
            ns: dict[str, int] | None = None) -> Path:
        d = self.root / str(pid)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        (d / "stat").write_text(stat_line(pid, comm, ppid, start_ticks))
        e = uid if euid is None else euid
        ids = " ".join(str(n) for n in (nspid or (pid,)))
        (d / "status").write_text(
            f"Name:\t{comm[:15]}\nUid:\t{uid}\t{e}\t{e}\t{e}\nGid:\t{gid}\t{gid}\t{gid}\t{gid}\n"
            f"NSpid:\t{ids}\n")
        if argv is not None:
            raw = argv if isinstance(argv, bytes) else b"".join(
                a.encode() + b"\0" for a in argv)
            (d / "cmdline").write_bytes(raw)
        if exe is not None:
            os.symlink(exe, d / "exe")
        if cgroup is not None:
            (d / "cgroup").write_text(cgroup)
        (d / "ns").mkdir()
        for name, inode in (ns or {"pid": 4026531836, "net": 4026531840,
                                   "mnt": 4026531841}).items():
            os.symlink(f"{name}:[{inode}]", d / "ns" / name)
        return d

    def remove(self, pid: int, *names: str) -> None:
        """Remove the process (no names) or some of its files (a vanishing process)."""
        d = self.root / str(pid)
        if not names:
            shutil.rmtree(d, ignore_errors=True)
            return
        for name in names:
            p = d / name
            if p.is_symlink() or p.is_file():
                p.unlink()
            elif p.is_dir():
                shutil.rmtree(p)

"""The connection storm tool (bench/storm.c): build it, run servers in a netns, run clients."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.host import NetNs

SOURCE = Path(__file__).with_name("storm.c")
BUILD = Path(__file__).resolve().parent.parent / "build" / "bench"


def build() -> Path:
    """Compile storm.c once per source version (gcc -O2); returns the binary."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    binary = BUILD / f"storm-{digest}"
    if not binary.exists():
        BUILD.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_suffix(".tmp")
        p = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(tmp), str(SOURCE)],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"cannot build {SOURCE} (needs gcc): {p.stderr.strip()}")
        tmp.rename(binary)
    return binary


def _readline(p: subprocess.Popen, timeout: float) -> str:
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(p.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return out[0].strip() if out else ""


def _kill_group(p: subprocess.Popen) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=10)


@contextlib.contextmanager
def server(ns: NetNs, port: int = 0, workers: int = 2, hold: bool = False) -> Iterator[int]:
    """A storm server in the namespace (all worker processes killed at exit); yields its port."""
    argv = ns.cmd(str(build()), "server", ns.ns_ip, str(port), str(workers),
                  "hold" if hold else "close")
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        line = _readline(p, 15)
        if not line.startswith("READY"):
            raise RuntimeError(f"storm server did not start: {line!r}")
        yield int(line.split()[1])
    finally:
        _kill_group(p)


@dataclass(frozen=True)
class StormResult:
    attempted: int
    ok: int
    failed: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0


def parse_client_output(text: str) -> StormResult:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            d = json.loads(line)
            return StormResult(int(d["attempted"]), int(d["ok"]), int(d["failed"]),
                               float(d["elapsed_s"]))
    raise ValueError(f"no result line in storm client output: {text[-200:]!r}")


def client(ns: NetNs, port: int, *, rate: float, seconds: float, procs: int = 2) -> StormResult:
    """Short connections from the root namespace to the server; rate 0 = as fast as possible."""
    argv = [str(build()), "client", ns.ns_ip, str(port), str(rate), str(seconds), str(procs)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if p.returncode != 0:
        raise RuntimeError(f"storm client failed ({p.returncode}): {p.stderr.strip()}")
    return parse_client_output(p.stdout)


@contextlib.contextmanager
def held(ns: NetNs, ports: list[int], count: int, rate: float,
         timeout: float = 120) -> Iterator[tuple[int, int]]:
    """count idle connections to the ports, open for the block; yields (held, failed)."""
    argv = [str(build()), "hold", ns.ns_ip, ",".join(map(str, ports)), str(count), str(rate)]
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = _readline(p, timeout)
        if not line.startswith("HELD"):
            raise RuntimeError(f"storm hold did not finish within {timeout}s: {line!r}")
        _, n, failed = line.split()
        yield int(n), int(failed)
    finally:
        _kill_group(p)

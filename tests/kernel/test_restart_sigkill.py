"""The real agent (`python -m otelpeers run --print-flows`) killed with SIGKILL mid-transfer
and started again (issue 11): the kernel detaches every program with the dead process (BPF
links), and the next agent adopts the connection that stayed up, with its owner and the bytes
after its own start. Real agent processes, real client and server, loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import assert_tcp_lifetime, peer

from otelpeers.events import TcpInfo

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
PHASE = 100_000
HEADERS_PER_PACKET = 120


class AgentRun:
    """The agent as users run it, printing one JSON line per completed flow."""

    def __init__(self, tmp: Path, name: str) -> None:
        cfg = tmp / f"{name}.yaml"
        cfg.write_text(f"kernel:\n  stats_interval_s: 0.5\n"
                       f"detect:\n  state_dir: {tmp / name / 'state'}\n"
                       f"export:\n  files:\n    directory: {tmp / name / 'otlp'}\n")
        ready = tmp / f"{name}.ready"
        self._err = tmp / f"{name}.stderr"
        self.flows: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        with self._err.open("w") as err:  # a file: a pipe nobody reads could block the agent
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "otelpeers", "run", "--print-flows", "--no-live-view",
                 "--config", str(cfg), "--ready-file", str(ready)],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 120
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"agent did not attach: {self.stderr()[-3000:]}")
            time.sleep(0.05)  # the agent writes this file once; nothing else to wait on

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.flows.append(json.loads(line))
                self._cond.notify_all()

    def stderr(self) -> str:
        return self._err.read_text(errors="replace")

    def wait_flow(self, pred: Callable[[dict[str, Any]], bool],
                  timeout: float = 30.0) -> dict[str, Any]:
        with self._cond:
            hit = self._cond.wait_for(lambda: next((f for f in self.flows if pred(f)), None),
                                      timeout)
        assert hit, f"no matching flow within {timeout}s: {self.flows[-10:]}"
        return hit

    def children(self) -> list[int]:
        kids: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            kids += [int(p) for p in (task / "children").read_text().split()]
        return kids

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self._reader.join(10)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self._reader.join(10)
        return self.stderr()


def _attached_otelp_programs() -> str:
    out = subprocess.run(["bpftool", "cgroup", "tree"], capture_output=True, text=True,
                         check=True).stdout
    return "\n".join(line for line in out.splitlines() if "otelp_" in line)


def _until(what: str, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition the kernel settles (no event to wait on), with a deadline."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


def test_sigkill_mid_transfer_then_restart_adopts_the_connection(tmp_path: Path) -> None:
    assert _attached_otelp_programs() == "", "another agent is attached: run under the lock"
    server = peer("tcp-echo-accepted", "127.0.0.1")
    client = None
    first = second = None
    try:
        port = server.ready()
        client = peer("tcp-client-phases", "127.0.0.1", str(port), str(PHASE))
        cport = client.ready()
        assert server._line(15) == "ACCEPTED"  # opened before any agent

        first = AgentRun(tmp_path, "first")
        assert "otelp_" in _attached_otelp_programs()
        kids = first.children()
        os.kill(client.p.pid, signal.SIGUSR1)  # a transfer starts...
        first.kill()  # ...and the agent dies with SIGKILL in the middle of it
        assert client._line(15) == f"SENT {PHASE}"
        # BPF links die with the last fd: nothing of the dead agent stays attached, and its
        # children (the span export process) do not outlive it.
        _until("programs still attached after SIGKILL", lambda: _attached_otelp_programs() == "")
        _until(f"children of the killed agent still run: {kids}",
               lambda: all(_gone(k) for k in kids))

        second = AgentRun(tmp_path, "second")
        os.kill(client.p.pid, signal.SIGUSR1)
        assert client._line(15) == f"SENT {PHASE}"
        os.kill(client.p.pid, signal.SIGUSR2)
        assert client.finish().strip() == "DONE"
        server.finish()
        ends = {}
        for lp, pp, pid in ((cport, port, client.p.pid), (port, cport, server.p.pid)):
            f = second.wait_flow(lambda f, lp=lp, pp=pp: f["local_port"] == lp
                                 and f["peer_port"] == pp and f["complete"])
            assert f["adopted"] and f["owner"] is not None and f["owner"]["pid"] == pid, f
            # Only what passed after the second agent's start: one phase each way.
            assert f["bytes_sent"] == PHASE and f["bytes_received"] == PHASE, f
            assert PHASE <= f["wire_bytes_sent"] <= (
                PHASE + f["packets_sent"] * HEADERS_PER_PACKET), f
            # The kernel's totals hold both lifetimes (the first agent's part died with it).
            t = f["tcp"] and TcpInfo(*(f["tcp"][k] for k in (
                "bytes_acked", "bytes_received", "retransmits", "srtt_us")))
            assert_tcp_lifetime(t, 2 * PHASE, 2 * PHASE)
            ends[lp] = f
        assert ends[cport]["direction"] == "outbound" and ends[port]["direction"] == "inbound"
        err = second.stop()
        assert second.proc.returncode == 0, err[-3000:]
        second = None
        assert _attached_otelp_programs() == ""
    finally:
        for a in (first, second):
            if a is not None:
                a.kill()
        server.kill()
        if client is not None:
            client.kill()

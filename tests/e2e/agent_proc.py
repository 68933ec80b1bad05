"""The agent as users run it, in a subprocess, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class AgentProcess:
    """`python -m otelpeers run --no-live-view --config CFG --ready-file R`; started by the
    constructor, ready once the sensors are attached; stop() sends SIGTERM and waits."""

    def __init__(self, tmp: Path, config_yaml: str, env: dict[str, str] | None = None,
                 ready_timeout_s: float = 60.0) -> None:
        self.config = tmp / "agent.yaml"
        self.config.write_text(config_yaml)
        self.ready = tmp / "agent.ready"
        self.ready.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otelpeers", "run", "--no-live-view", "--config",
             str(self.config), "--ready-file", str(self.ready)],
            cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + ready_timeout_s
        try:
            while not self.ready.exists():
                if self.proc.poll() is not None:
                    raise AssertionError(f"agent exited: {self.proc.communicate()}")
                if time.monotonic() > deadline:
                    raise AssertionError("agent did not attach in time")
                time.sleep(0.05)  # the agent writes this file once; nothing else to wait on
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 60.0) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, out, err

"""Fixtures for end-to-end tests against a real collector (rotel-agent)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from otlp_sink import OtlpSink, free_port  # tests/e2e is on sys.path under pytest


def rotel_binary() -> Path | None:
    try:
        import rotel
    except ImportError:
        return None
    p = Path(rotel.__file__).parent / "rotel-agent"
    return p if p.exists() else None


def wait_listening(port: int, proc: subprocess.Popen, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rotel-agent exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # the port is not open yet; nothing to wait on but the clock
    raise TimeoutError(f"rotel-agent did not listen on {port} within {timeout_s} s")


class Rotel:
    @classmethod
    def on_port(cls, tmp: Path, grpc_port: int, sink: OtlpSink) -> Rotel:
        """rotel listening for OTLP/gRPC on a given port, forwarding to sink."""
        return cls(tmp, ["--exporter", "otlp", "--otlp-exporter-endpoint",
                         f"http://127.0.0.1:{sink.port}", "--otlp-exporter-protocol", "grpc"],
                   grpc_port=grpc_port)

    def __init__(self, tmp: Path, exporter_args: list[str], grpc_port: int | None = None) -> None:
        binary = rotel_binary()
        if binary is None:
            if os.environ.get("CI") == "true":
                pytest.fail("rotel is not installed (pip install rotel)")
            pytest.skip("rotel is not installed (pip install rotel)")
        self.grpc_port, self.http_port = grpc_port or free_port(), free_port()
        self.log = tmp / "rotel.log"
        cmd = [str(binary), "start",
               "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
               "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
               "--pid-file", str(tmp / "rotel.pid"), "--log-file", str(self.log),
               "--batch-timeout", "50ms", *exporter_args]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        try:
            wait_listening(self.grpc_port, self.proc)
            wait_listening(self.http_port, self.proc)
        except BaseException:
            self.stop()
            raise

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def sink():
    s = OtlpSink()
    yield s
    s.stop()


@pytest.fixture
def rotel(tmp_path, sink):
    r = Rotel(tmp_path, ["--exporter", "otlp", "--otlp-exporter-endpoint",
                         f"http://127.0.0.1:{sink.port}", "--otlp-exporter-protocol", "grpc"])
    try:
        yield r
    finally:
        r.stop()  # rotel.log stays in the test's tmp_path for post-mortems


# Real metrics stores (VictoriaMetrics, Prometheus) from scripts/test-backends.sh.
from backends import prometheus, victoria_metrics  # noqa: E402, F401  (fixtures)

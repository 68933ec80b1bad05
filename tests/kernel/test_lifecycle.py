"""Attach/detach on every exit path, stale programs, record/replay, losses, bad starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from harness import Agent

from otelpeers.config import Config
from otelpeers.kernel import bpfsys
from otelpeers.kernel.cgroup import find_cgroup2_mount
from otelpeers.kernel.loader import PROGRAMS, KernelSensors, SensorError

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]


def ours() -> list[bpfsys.AttachedProgram]:
    cg = find_cgroup2_mount()
    assert cg
    return [p for p in bpfsys.list_attached(cg) if p.name.startswith(bpfsys.PROGRAM_PREFIX)]


def agent_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "otelpeers", *args]


def wait_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"agent exited early: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError("agent did not report ready")
        time.sleep(0.05)  # polling a file the agent writes once its sensors are attached


_spawned: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def reap_agents() -> Iterator[None]:
    """Whatever a test asserts, no agent it started outlives it."""
    yield
    while _spawned:
        p = _spawned.pop()
        if p.poll() is None:
            p.kill()
            p.wait()


def spawn(*args: str) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(agent_cmd(*args), cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    _spawned.append(p)
    return p


def start_agent(tmp_path: Path, *extra: str, config: Path | None = None) -> subprocess.Popen[bytes]:
    ready = tmp_path / f"ready-{time.monotonic_ns()}"
    args = ["run", "--no-live-view", "--ready-file", str(ready), *extra]
    if config is not None:
        args += ["--config", str(config)]
    p = spawn(*args)
    wait_file(ready, p)
    return p


def test_sensors_attach_every_program_and_detach_on_close() -> None:
    assert ours() == []
    with KernelSensors(Config()) as s:
        attached = ours()
        assert {p.name for p in attached} == {spec.name for spec in PROGRAMS}
        assert {p.prog_id for p in attached} <= s.attached_program_ids()
    assert ours() == []


def test_failed_start_leaves_nothing_attached(monkeypatch: pytest.MonkeyPatch) -> None:
    from otelpeers.kernel import loader

    real = bpfsys.link_create
    calls = {"n": 0}

    def flaky(prog_fd: int, cgroup_fd: int, attach_type: int) -> int:
        calls["n"] += 1
        if calls["n"] == 5:
            raise bpfsys.BpfError(1, "injected failure")
        return real(prog_fd, cgroup_fd, attach_type)

    monkeypatch.setattr(loader.bpfsys, "link_create", flaky)
    with pytest.raises(SensorError, match="cannot attach"):
        KernelSensors(Config()).start()
    assert ours() == []


def test_second_agent_is_refused_while_one_runs() -> None:
    with KernelSensors(Config()), pytest.raises(SensorError, match="another otelpeers agent"):
        KernelSensors(Config()).start()
    assert ours() == []


def test_sigkill_with_links_leaves_nothing(tmp_path: Path) -> None:
    p = start_agent(tmp_path)
    assert len(ours()) == len(PROGRAMS)
    p.kill()
    p.wait()
    assert ours() == []  # the kernel released the links with the process


def test_sigkill_in_legacy_mode_then_restart_removes_stale(tmp_path: Path) -> None:
    cfg = tmp_path / "legacy.yaml"
    cfg.write_text("kernel:\n  attach_mode: legacy\n")
    p = start_agent(tmp_path, config=cfg)
    p.kill()
    p.wait()
    stale = ours()
    assert len(stale) == len(PROGRAMS)  # BPF_PROG_ATTACH outlives its loader: measured
    with KernelSensors(Config()) as s:
        assert {x.prog_id for x in s.stale_removed} == {x.prog_id for x in stale}
        now = ours()
        assert len(now) == len(PROGRAMS)  # ours only, none twice
        assert not {x.prog_id for x in now} & {x.prog_id for x in stale}
    assert ours() == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_flushes_open_flows(tmp_path: Path, sig: int) -> None:
    import socket

    p = start_agent(tmp_path, "--print-flows")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    c.sendall(b"x" * 1234)
    assert conn.recv(2000)
    local_port = c.getsockname()[1]
    # No wait needed: on a signal the agent drains the ring buffer before it ends the flows.
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    c.close()
    conn.close()
    srv.close()
    assert p.returncode == 0, err
    flows = [json.loads(line) for line in out.decode().splitlines()]
    open_flow = [f for f in flows if f["local_port"] == local_port]
    assert open_flow, (flows, err)
    assert open_flow[0]["complete"] is False and open_flow[0]["close_reason"] == "shutdown"
    assert ours() == []


def test_record_then_replay(tmp_path: Path) -> None:
    import socket

    rec = tmp_path / "events.jsonl"
    ready = tmp_path / "ready"
    p = spawn("record", "--output", str(rec), "--ready-file", str(ready))
    wait_file(ready, p)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    c.sendall(b"r" * 4321)
    got = 0
    while got < 4321:
        got += len(conn.recv(65536))
    port = c.getsockname()[1]
    c.close()
    conn.close()
    srv.close()
    # Wait until the recording holds the close of our connection, then stop the recorder.
    deadline = time.monotonic() + 20
    while True:
        text = rec.read_text() if rec.exists() else ""
        if f'"local_port":{port}' in text and '"kind":"TCP_CLOSE"' in text:
            break
        assert time.monotonic() < deadline, "recording never showed the connection"
        time.sleep(0.1)  # the recorder flushes once a second
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=30)
    out = subprocess.run(agent_cmd("replay", str(rec), "--print-flows"), cwd=ROOT,
                         capture_output=True, text=True, check=True)
    flows = [json.loads(line) for line in out.stdout.splitlines()]
    mine = [f for f in flows if f["local_port"] == port and f["direction"] == "outbound"]
    assert len(mine) == 1 and mine[0]["bytes_sent"] == 4321
    assert mine[0]["owner"]["pid"] == os.getpid()


def test_ring_buffer_overflow_is_counted() -> None:
    import socket

    cfg = Config()
    cfg = replace(cfg, kernel=replace(cfg.kernel, ringbuf_pages=1))
    a = Agent(cfg)
    try:
        a.source.stop()  # stop consuming so the 4 KiB buffer must overflow
        a._thread.join(timeout=10)
        for _ in range(200):  # each release of a UDP socket is one event
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.close()
        drops = a.source.read_drops()
        assert drops.get("ringbuf_release", 0) >= 200 - 4096 // 184
    finally:
        a.sensors.close()
    assert ours() == []


def test_not_root_is_a_clear_error() -> None:
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        *agent_cmd("run", "--duration", "1", "--no-live-view")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "needs root" in p.stderr and "sudo" in p.stderr
    assert "Traceback" not in p.stderr
    assert ours() == []


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("kernel:\n  ringbuf_pages: 3\n")
    p = subprocess.run(agent_cmd("run", "--config", str(cfg)), cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "kernel.ringbuf_pages" in p.stderr and "power of two" in p.stderr
    assert ours() == []


def test_precompiled_sensors_are_taken_by_the_next_start() -> None:
    """The agent may start the compiler child before it builds the rest of itself."""
    from otelpeers.kernel import loader

    loader.precompile(Config())
    assert loader._pending is not None
    with KernelSensors(Config()) as s:
        assert loader._pending is None  # taken, not compiled twice
        assert {p.name for p in ours()} == {spec.name for spec in PROGRAMS}
        assert {"sockets", "agg_a", "agg_b", "agg_current"} <= set(s.maps)
    assert ours() == []
    loader.precompile(Config())  # never taken (e.g. the start failed): the child is reaped
    loader._drop_pending()
    assert loader._pending is None

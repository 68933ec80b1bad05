"""Compiled programs kept between starts: the first start compiles, later ones load the
recorded programs without bcc, and the sensors they give see real traffic the same way."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from harness import Agent, tcp_exchange

from otelpeers.config import Config
from otelpeers.events import Kind, ProcessEvent
from otelpeers.kernel import progcache
from otelpeers.kernel.loader import PROGRAMS, KernelSensors, cflags_for, program_text

pytestmark = pytest.mark.kernel


def config(cache: Path) -> Config:
    c = Config()
    return replace(c, kernel=replace(c.kernel, program_cache=str(cache)))


def entry_file(cfg: Config) -> Path:
    key = progcache.cache_key(program_text(), cflags_for(cfg))
    return Path(progcache.entry_path(cfg.kernel.program_cache, key))


def loopback_flow_seen(agent: Agent) -> None:
    """A real connection and a real exec reach the pipeline (cgroup programs, ring buffer
    and a tracepoint program all work)."""
    ex = tcp_exchange("127.0.0.1", 300, 700)
    client, port = ex.client, ex.port
    c = agent.wait_flow(lambda r: r.owner is not None and r.owner.tgid == client.p.pid)
    assert (c.peer_addr, c.peer_port) == ("127.0.0.1", port)
    assert c.counters.payload_out == 300 and c.counters.payload_in == 700
    agent.wait_event(lambda e: isinstance(e, ProcessEvent) and e.kind == Kind.EXEC
                     and e.tgid == client.p.pid)


def test_second_start_loads_the_first_starts_compile(tmp_path: Path) -> None:
    cfg = config(tmp_path / "cache")
    first = Agent(cfg)
    try:
        assert first.sensors.cache_outcome == "compiled"
        loopback_flow_seen(first)
    finally:
        first.stop()
    path = entry_file(cfg)
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700
    entry = progcache.read(str(tmp_path / "cache"), path.name[len("sensors-"):-len(".json")])
    assert {p.name for p in PROGRAMS} <= {p.name for p in entry.programs}
    assert any(p.tracepoint == "sched:sched_process_exec" for p in entry.programs)

    second = Agent(cfg)
    try:
        assert second.sensors.cache_outcome == "hit"
        assert {p.name for p in PROGRAMS} <= set(second.sensors.programs)
        loopback_flow_seen(second)
    finally:
        second.stop()


def test_an_entry_the_kernel_refuses_is_replaced_by_a_compile(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(tmp_path / "cache")
    with KernelSensors(cfg) as s:
        assert s.cache_outcome == "compiled"
    path = entry_file(cfg)
    data = json.loads(path.read_text())
    # A well-formed entry whose first program the verifier rejects: "exit" with r0 unset.
    exit_only = bytes([0x95, 0, 0, 0, 0, 0, 0, 0])
    data["programs"][0] |= {"insns": base64.b64encode(exit_only).decode(),
                            "relocs": []}
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING), KernelSensors(cfg) as s:
        assert s.cache_outcome == "compiled"
    assert "did not load and was removed" in caplog.text and "verifier" in caplog.text
    with KernelSensors(cfg) as s:  # rewritten by that compile
        assert s.cache_outcome == "hit"


def test_a_cache_others_can_write_is_not_used(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    cfg = config(cache)
    with KernelSensors(cfg) as s:
        assert s.cache_outcome == "compiled"
    cache.chmod(0o777)
    with caplog.at_level(logging.WARNING), KernelSensors(cfg) as s:
        assert s.cache_outcome == "compiled"
    assert "writable by others" in caplog.text

"""Baseline rules live: the real sensors, a short learning period, then real traffic.

lateral_movement: SSH-port fan-out from one binary to namespace hosts it never reached while
learning fires exactly lateral_movement with that binary as actor; an admin tool reaching
the same hosts it reached while learning fires nothing. volume_anomaly: a binary that sent
a little to a namespace server while learning uploads 150 MB to it; the same server sent a
little again by a control binary fires nothing.

The binaries are copies of the Python interpreter under their own names, so the agent sees
distinct executables (actors are keyed by executable).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from harness import PEERS, Agent, NetNs, Proc, netns

from otelpeers.config import Config
from otelpeers.detect.engine import DetectStage
from otelpeers.flows import FlowRecord

pytestmark = pytest.mark.kernel

LEARN_S = 6.0  # the learning period of these tests (event time from the agent's first event)
HOSTS = 4


def config(state: Path) -> Config:
    c = Config()
    # In-process rules: these tests read the engine's learning clock, which the pipeline
    # thread holds only then; the live detection tests elsewhere run the default (rules in
    # their own process).
    return replace(c, detect=replace(c.detect, learning_period_s=LEARN_S, state_dir=str(state),
                                     separate_process=False))


def binary(tmp: Path, name: str) -> str:
    """A copy of this interpreter named `name` (its own executable, as an attacker's tool)."""
    path = tmp / name
    shutil.copy(os.path.realpath(sys.executable), path)
    return str(path)


def run_peer(exe: str, *args: str) -> None:
    p = Proc([exe, PEERS, *args])
    try:
        assert p.finish(timeout=30).strip().endswith("DONE")
    finally:
        p.kill()


@contextlib.contextmanager
def sinks(n: int, port: int) -> Iterator[list[NetNs]]:
    """n namespaces, each with a server reading everything on its address:port."""
    with contextlib.ExitStack() as stack:
        spaces = [stack.enter_context(netns()) for _ in range(n)]
        for ns in spaces:
            p = Proc(ns.cmd(sys.executable, PEERS, "tcp-sink", ns.ns_ip, str(port)))
            stack.callback(p.kill)
            assert p.ready() == port
        yield spaces


def detect_stage(agent: Agent) -> DetectStage:
    stage = agent.pipeline.stage("detect")
    assert isinstance(stage, DetectStage)
    return stage


def flows_of(agent: Agent, exe: str, n: int, after_ns: int = 0) -> list[FlowRecord]:
    """Wait until the agent has completed n outbound flows of this binary, after after_ns."""
    name = Path(exe).name[:15]

    def mine(r: FlowRecord) -> bool:
        return (r.owner is not None and r.owner.comm == name and r.start_ns >= after_ns
                and r.direction.name == "OUTBOUND")

    agent.wait_flow(lambda r: sum(map(mine, list(agent.records))) >= n, timeout=20)
    return [r for r in list(agent.records) if mine(r)]


def wait_learning_over(agent: Agent, baseline: list[FlowRecord]) -> int:
    """Check the baseline flows were learned, then wait out the learning period (a duration
    of event time, not an event). Returns the wall-clock time it ended (ns)."""
    ctx = detect_stage(agent).engine.ctx
    assert ctx.learning_start_ns is not None
    late = [r for r in baseline if not ctx.learning(r.start_ns)]
    assert not late, f"baseline flows after the learning period: {late}"
    end = ctx.learning_start_ns + int(LEARN_S * 1e9)
    time.sleep(max(0.0, (end - time.time_ns()) / 1e9) + 0.2)
    return end


def ours(agent: Agent, *exes: str) -> Callable[[], list]:
    names = {Path(e).name for e in exes}
    return lambda: [d for d in list(agent.detections)
                    if d.actor.executable in names or (d.actor.owner is not None
                                                       and d.actor.owner.comm in names)]


def test_fan_out_on_port_22_is_lateral_movement_and_the_admin_tool_is_not(
        tmp_path: Path) -> None:
    probe = binary(tmp_path, "lateral-probe")
    admin = binary(tmp_path, "admin-tool")
    with sinks(HOSTS, 22) as spaces:
        ips = [ns.ns_ip for ns in spaces]
        agent = Agent(config(tmp_path / "state"))
        try:
            # Baseline: the admin tool reaches every host, the probe only the first.
            run_peer(admin, "tcp-connect-each", "22", "64", *ips)
            run_peer(probe, "tcp-connect-each", "22", "64", ips[0])
            baseline = flows_of(agent, admin, HOSTS) + flows_of(agent, probe, 1)
            end = wait_learning_over(agent, baseline)

            run_peer(admin, "tcp-connect-each", "22", "64", *ips)
            run_peer(probe, "tcp-connect-each", "22", "64", *ips)
            d = agent.wait_detection(lambda d: d.rule.name == "lateral_movement"
                                     and d.actor.executable == "lateral-probe", timeout=20)
            # Every flow of the second round has been judged before we look for others.
            after = flows_of(agent, admin, HOSTS, end) + flows_of(agent, probe, HOSTS, end)
            assert all(r.start_ns >= end for r in after)
            found = ours(agent, probe, admin)()
        finally:
            agent.stop()
    assert d.evidence["peers"] == tuple(ips[1:]) and d.evidence["ports"] == (22,)
    assert d.evidence["baseline_hosts"] == 1 and d.evidence["baseline_ports"] == (22,)
    assert d.actor.pid is not None and d.actor.owner is not None
    assert d.evidence_span is not None and any(r.flow_id == d.evidence_span.ident
                                               for r in after)
    # Exactly one detection from these two binaries: the probe's lateral movement.
    assert [(x.rule.name, x.actor.executable) for x in found] == [
        ("lateral_movement", "lateral-probe")], [x.summary for x in found]
    # The learned baseline was written to the state directory at the agent's exit.
    assert (tmp_path / "state" / "baselines.json").is_file()


def test_large_upload_after_a_small_baseline_is_volume_anomaly(tmp_path: Path) -> None:
    bulk = binary(tmp_path, "bulk-upload")
    small = binary(tmp_path, "small-upload")
    with sinks(1, 8080) as (ns,):
        agent = Agent(config(tmp_path / "state"))
        try:
            for exe in (bulk, small):
                run_peer(exe, "tcp-connect-each", "8080", str(1_000_000), ns.ns_ip)
            baseline = flows_of(agent, bulk, 1) + flows_of(agent, small, 1)
            end = wait_learning_over(agent, baseline)
            run_peer(small, "tcp-connect-each", "8080", str(1_000_000), ns.ns_ip)
            run_peer(bulk, "tcp-connect-each", "8080", str(150_000_000), ns.ns_ip)
            d = agent.wait_detection(lambda d: d.rule.name == "volume_anomaly"
                                     and d.actor.executable == "bulk-upload", timeout=20)
            after = flows_of(agent, small, 1, end) + flows_of(agent, bulk, 1, end)
            found = ours(agent, bulk, small)()
        finally:
            agent.stop()
    ev = d.evidence
    (upload,) = [r for r in after if r.owner is not None and r.owner.comm == "bulk-upload"]
    assert ev["peer"] == ns.ns_ip and ev["baseline_peer_known"] is True
    # Fired once 100 MB were counted (while open or at the end), never more than was sent.
    assert 100_000_000 <= ev["bytes"] <= upload.counters.payload_out and ev["ratio"] >= 10
    assert upload.counters.payload_out >= 150_000_000
    assert d.evidence_span is not None and d.evidence_span.ident in {r.flow_id for r in after}
    assert [(x.rule.name, x.actor.executable) for x in found] == [
        ("volume_anomaly", "bulk-upload")], [x.summary for x in found]

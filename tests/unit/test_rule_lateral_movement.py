"""lateral_movement through the real engine: baseline, fan-out, admins, windows, persistence."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from otelpeers.config import ConfigError, parse_config
from otelpeers.detect.engine import Engine
from otelpeers.detect.model import ActorKind, EvidenceKind
from otelpeers.detect.rules.lateral_movement import LateralMovement
from otelpeers.detect.settings import DetectConfig
from otelpeers.detect.store import BaselineStore
from otelpeers.events import Direction
from otelpeers.flows import CloseReason, FlowRecord
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import T0, flow, owner

S = 10**9
H = 3600 * S
LEARN_S = 3600.0
AFTER = T0 + 2 * H  # well after the learning period
_ids = iter(range(0x10000, 1 << 40))


def engine(**rule: object) -> Engine:
    cfg = parse_config({"detect": {"learning_period_s": LEARN_S,
                                   "rules": {"lateral_movement": rule}}}).detect
    return Engine(cfg, [LateralMovement])


def ssh(host: str, t: int, *, comm: str = "ssh", port: int = 22, failed: bool = False,
        complete: bool = True) -> FlowRecord:
    f = flow(f"{next(_ids):x}", proc=owner(100, comm), peer=host, peer_port=port,
             start_ns=t, complete=complete,
             close_reason=CloseReason.CONNECT_FAILED if failed else CloseReason.CLOSED)
    return f


def zeek(src: str, host: str, t: int, port: int = 22) -> FlowRecord:
    return replace(flow(f"{next(_ids):x}", proc=None, local=src, peer=host, peer_port=port,
                        start_ns=t), owner=None)


def run(e: Engine, *flows: FlowRecord, progress: bool = False) -> list:
    out = []
    for f in flows:
        out += e.evaluate(Outputs(progress=[f]) if progress else Outputs(flows=[f]))
    return out


def learn(e: Engine, *flows: FlowRecord) -> None:
    """The first flow starts the learning clock; all of these are baseline."""
    assert run(e, *flows) == []


def test_fan_out_to_new_hosts_on_an_admin_port_fires_once_with_evidence() -> None:
    e = engine()
    learn(e, ssh("10.0.0.5", T0), ssh("10.0.0.5", T0 + 10 * S))
    d = run(e, ssh("10.0.0.6", AFTER), ssh("10.0.0.5", AFTER + S),
            ssh("10.0.0.7", AFTER + 2 * S))
    assert d == []  # two new hosts (and a known one) are not a fan-out yet
    last = ssh("10.0.1.8", AFTER + 3 * S)
    (det,) = run(e, last)
    assert det.rule.name == "lateral_movement" and det.actor.key == "ssh"
    assert det.actor.kind == ActorKind.PROCESS
    ev = det.evidence
    assert ev["peers"] == ("10.0.0.6", "10.0.0.7", "10.0.1.8") and ev["ports"] == (22,)
    assert ev["baseline_hosts"] == 1 and ev["baseline_ports"] == (22,)
    assert ev["new_ports"] == () and ev["failed"] == 0
    assert det.peer is not None and det.peer.cidr == "10.0.0.0/23"
    assert det.evidence_span is not None and det.evidence_span.kind == EvidenceKind.FLOW
    assert det.evidence_span.ident == last.flow_id and det.time_ns == last.start_ns
    assert "3 internal hosts" in det.summary and "port(s) 22" in det.summary
    # Two more new hosts: not yet double the fan-out; the engine would dedup anyway.
    assert run(e, ssh("10.0.0.9", AFTER + 4 * S), ssh("10.0.0.10", AFTER + 5 * S)) == []


def test_new_port_scores_higher_than_new_hosts_on_a_known_port() -> None:
    e = engine()
    learn(e, ssh("10.0.0.5", T0, comm="a"), ssh("10.0.0.5", T0, comm="b"))
    (known,) = run(e, *[ssh(f"10.0.0.{i}", AFTER + i * S, comm="a") for i in range(6, 9)])
    (new,) = run(e, *[ssh(f"10.0.0.{i}", AFTER + i * S, comm="b", port=5985)
                      for i in range(6, 9)])
    assert new.evidence["new_ports"] == (5985,) and new.score > known.score


def test_admin_hosts_reaching_new_servers_on_their_ports_are_baseline() -> None:
    e = engine(broad_hosts=5)
    learn(e, *[ssh(f"10.0.0.{i}", T0 + i * S, comm="ansible") for i in range(1, 7)])
    # Other servers, same port: an administrator's ordinary day.
    assert run(e, *[ssh(f"10.0.2.{i}", AFTER + i * S, comm="ansible")
                    for i in range(1, 20)]) == []
    # A port it never used, on three hosts: that is new.
    (d,) = run(e, *[ssh(f"10.0.2.{i}", AFTER + H + i * S, comm="ansible", port=445)
                    for i in range(1, 4)])
    assert d.evidence["new_ports"] == (445,)


def test_nothing_fires_during_learning_nor_for_outside_hosts_or_other_ports() -> None:
    e = engine()
    assert run(e, *[ssh(f"10.0.0.{i}", T0 + i * S) for i in range(1, 30)]) == []
    assert run(e, *[ssh(f"93.184.216.{i}", AFTER + i * S, comm="x") for i in range(1, 30)]) == []
    assert run(e, *[ssh(f"10.0.3.{i}", AFTER + i * S, comm="y", port=443)
                    for i in range(1, 30)]) == []
    assert run(e, *[replace(ssh(f"10.0.4.{i}", AFTER + i * S, comm="z"),
                            direction=Direction.INBOUND) for i in range(1, 30)]) == []


def test_failed_attempts_count_and_score_lower() -> None:
    e = engine()
    learn(e, ssh("10.0.0.1", T0, comm="ok"), ssh("10.0.0.1", T0, comm="bad"))
    (answered,) = run(e, *[ssh(f"192.168.1.{i}", AFTER + i * S, comm="ok") for i in range(3)])
    (failed,) = run(e, *[ssh(f"192.168.1.{i}", AFTER + i * S, comm="bad", failed=True)
                         for i in range(3)])
    assert failed.evidence["failed"] == 3 and failed.score < answered.score


def test_contacts_further_apart_than_the_window_do_not_add_up() -> None:
    e = engine(window_s=3600)
    learn(e, ssh("10.0.0.1", T0))
    assert run(e, *[ssh(f"10.0.0.{i}", AFTER + i * 2 * H) for i in range(2, 8)]) == []
    # Slow, but within the window: fires.
    (d,) = run(e, *[ssh(f"10.0.9.{i}", AFTER + 20 * H + i * 1500 * S) for i in range(3)])
    assert d.evidence["span_s"] == 3000.0


def test_open_connections_count_from_their_first_live_snapshot() -> None:
    e = engine()
    learn(e, ssh("10.0.0.1", T0))
    flows = [ssh(f"fd00::{i}", AFTER + i * S, complete=False) for i in range(1, 4)]
    (d,) = run(e, *flows, progress=True)
    assert d.evidence["peers"] == ("fd00::1", "fd00::2", "fd00::3")
    assert d.peer is not None and d.peer.cidr == "fd00::/126"
    # The same sessions ending later add nothing new.
    assert run(e, *[replace(f, complete=True) for f in flows]) == []


def test_configured_internal_networks_and_ports() -> None:
    e = engine(internal_cidrs=["100.64.0.0/10"], admin_ports=[2222])
    learn(e, ssh("100.64.0.1", T0, port=2222))
    assert run(e, *[ssh(f"100.64.1.{i}", AFTER + i * S) for i in range(3)]) == []  # port 22
    (d,) = run(e, *[ssh(f"100.64.1.{i}", AFTER + i * S, port=2222) for i in range(3)])
    assert d.evidence["ports"] == (2222,)


def test_fan_out_alerts_again_when_it_doubles() -> None:
    e = engine()
    learn(e, ssh("10.0.0.1", T0))
    got = run(e, *[ssh(f"10.1.0.{i}", AFTER + i * 10 * S) for i in range(1, 13)])
    assert [d.evidence["hosts"] for d in got] == [3]  # 6 and 12: deduplicated by the engine
    assert e.counters()["suppressed"] == 2


def test_a_new_contact_seen_on_two_days_joins_the_baseline() -> None:
    e = engine(promote_days=2)
    learn(e, ssh("10.0.0.1", T0))
    day = 24 * H
    assert run(e, ssh("10.0.5.1", AFTER), ssh("10.0.5.2", AFTER + S)) == []
    assert run(e, ssh("10.0.5.1", AFTER + day), ssh("10.0.5.2", AFTER + day + S)) == []
    assert e.counters()["lateral_movement.promoted"] == 2
    # Both are baseline now: one more new host does not make three.
    assert run(e, ssh("10.0.5.1", AFTER + 2 * day), ssh("10.0.5.2", AFTER + 2 * day),
               ssh("10.0.5.3", AFTER + 2 * day + S)) == []


def test_zeek_rows_act_by_source_address() -> None:
    e = engine()
    learn(e, zeek("10.9.0.1", "10.9.0.2", T0, 445))
    (d,) = run(e, *[zeek("10.9.0.1", f"10.9.1.{i}", AFTER + i * S, 445) for i in range(3)])
    assert d.actor.kind == ActorKind.ADDRESS and d.actor.key == "10.9.0.1"


def test_baseline_survives_a_restart_and_is_not_learned_again(tmp_path: Path) -> None:
    e = engine()
    learn(e, ssh("10.0.0.1", T0), ssh("10.0.0.2", T0 + S))
    store = BaselineStore(tmp_path, e)
    store.save()
    assert (tmp_path / "baselines.json").stat().st_mode & 0o777 == 0o600
    state = e.rules[0][0].save_state()
    assert state["actors"]["ssh"]["ports"] == {"22": ["10.0.0.1", "10.0.0.2"]}

    e2 = engine()
    BaselineStore(tmp_path, e2).load()
    assert e2.ctx.learning_start_ns == T0 and e2.rules[0][0].save_state() == state
    # After the restart the learning period is over: known hosts are quiet, new ones fire.
    assert run(e2, ssh("10.0.0.1", AFTER), ssh("10.0.0.2", AFTER)) == []
    assert len(run(e2, *[ssh(f"10.0.7.{i}", AFTER + i * S) for i in range(3)])) == 1
    # Without the file the new engine would learn these instead.
    e3 = engine()
    assert run(e3, *[ssh(f"10.0.7.{i}", AFTER + i * S) for i in range(3)]) == []


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match="lateral_movement.internal_cidrs"):
        parse_config({"detect": {"rules": {"lateral_movement": {"internal_cidrs": ["x"]}}}})
    with pytest.raises(ConfigError, match="lateral_movement.admin_ports"):
        parse_config({"detect": {"rules": {"lateral_movement": {"admin_ports": [70000]}}}})
    with pytest.raises(ConfigError, match="lateral_movement.min_hosts"):
        parse_config({"detect": {"rules": {"lateral_movement": {"min_hosts": 0}}}})


def test_state_stays_bounded_under_a_million_unique_hosts() -> None:
    cfg = DetectConfig(learning_period_s=LEARN_S)
    e = Engine(replace(cfg, rules=replace(cfg.rules, lateral_movement=replace(
        cfg.rules.lateral_movement, max_actors=64, max_hosts_per_actor=32))), [LateralMovement])
    rule = e.rules[0][0]
    assert isinstance(rule, LateralMovement)
    e.evaluate(Outputs(flows=[ssh("10.0.0.1", T0)]))
    actors = [e.actors.of_owner(owner(i, f"p{i}")) for i in range(500)]
    # The rule directly, one record rewritten in place (it keeps no reference to flows): a
    # million engine rounds and records would take minutes on a shared CI machine.
    f = ssh("10.0.0.1", T0)
    set_ = object.__setattr__
    n = 1_000_000
    for i in range(n):
        set_(f, "peer_addr", f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}")
        set_(f, "start_ns", (T0 if i < n // 2 else AFTER) + i)
        for _ in rule.on_flow(actors[i % 500], f):  # type: ignore[arg-type]
            pass
    assert len(rule.actors) == 64
    for st in rule.actors.values():
        assert st.hosts <= 32 and len(st.recent) <= 32 and len(st.candidates) <= 32
    assert e.counters()["lateral_movement.actors.state_evicted"] > 0
    saved = rule.save_state()
    assert sum(len(h) for a in saved["actors"].values() for h in a["ports"].values()) <= 64 * 32


def test_the_saved_baseline_keeps_the_most_recent_actors_within_its_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from otelpeers.detect.rules import lateral_movement as lm

    monkeypatch.setattr(lm, "MAX_SAVED_ENTRIES", 4)
    e = engine()
    learn(e, *[ssh(f"10.0.0.{i}", T0 + i * S, comm=f"a{i}") for i in range(4)],
          ssh("10.0.1.1", T0 + 9 * S, comm="a3"))
    rule = e.rules[0][0]
    saved = rule.save_state()
    assert list(saved["actors"]) == ["a1", "a2", "a3"]  # 2 + 1 + 1 hosts; a0 is oldest
    assert rule.counters()["saved_truncated"] == 1

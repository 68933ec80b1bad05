"""volume_anomaly through the real engine: windows over chunks and live counters, robust
baselines, regular large transfers, persistence, bounded state."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from otelpeers.config import ConfigError, parse_config
from otelpeers.detect.engine import DetectStage, Engine
from otelpeers.detect.model import ActorKind, EvidenceKind
from otelpeers.detect.rules.volume_anomaly import VolumeAnomaly
from otelpeers.detect.store import BaselineStore
from otelpeers.events import Counters
from otelpeers.flows import DnsAnnotation, FlowRecord
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import T0, Snapshots, flow, owner

S = 10**9
H = 3600 * S
DAY = 24 * H
MB = 1_000_000
AFTER = T0 + DAY + H
_ids = iter(range(0x10000, 1 << 40))


def engine(**rule: object) -> Engine:
    cfg = parse_config({"detect": {"learning_period_s": 86400,
                                   "rules": {"volume_anomaly": rule}}}).detect
    return Engine(cfg, [VolumeAnomaly])


def sent(n: int) -> Counters:
    return Counters(packets_out=n // 1400 + 1, bytes_out=n + 40, payload_out=n,
                    packets_in=3, bytes_in=200, payload_in=100)


def up(peer: str, t: int, n: int, *, comm: str = "rclone", dur_s: float = 1.0,
       fid: str | None = None, complete: bool = True, name: str | None = None) -> FlowRecord:
    f = flow(fid or f"{next(_ids):x}", proc=owner(200, comm), peer=peer, start_ns=t,
             duration_ns=int(dur_s * S), counters=sent(n), complete=complete)
    return replace(f, dns=DnsAnnotation(resolved=True, question_name=name) if name else
                   DnsAnnotation(resolved=False))


def run(e: Engine, *flows: FlowRecord, progress: bool = False) -> list:
    out = []
    for f in flows:
        out += e.evaluate(Outputs(progress=[f]) if progress else Outputs(flows=[f]))
    return out


def learn_small(e: Engine, peer: str = "198.51.100.9", comm: str = "rclone") -> None:
    """A day of a few MB per hour to one storage peer."""
    assert run(e, *[up(peer, T0 + h * H, (2 + h % 3) * MB, comm=comm)
                    for h in range(24)]) == []


def test_an_upload_far_above_the_peers_baseline_fires_with_robust_evidence() -> None:
    e = engine()
    learn_small(e)
    chunks = [up("198.51.100.9", AFTER + i * 60 * S, 25 * MB) for i in range(12)]
    got = run(e, *chunks)
    (d,) = got  # one alert per window, at the chunk that crossed the line
    assert d.rule.name == "volume_anomaly" and d.actor.key == "rclone"
    ev = d.evidence
    assert ev["bytes"] == 100 * MB and ev["flows"] == 4  # 100 MB = min_bytes
    assert ev["baseline_peer_known"] is True and ev["baseline_windows"] == 16  # history_windows
    assert ev["baseline_median"] == 3 * MB and ev["baseline_mad"] == MB
    # reference = max(q95 = 4 MB, median + 3 x 1.4826 x MAD = 7.45 MB)
    assert ev["baseline_reference"] == round(3 * MB + 3 * 1.4826 * MB)
    assert ev["ratio"] == pytest.approx(100 / 7.4478, rel=1e-3)
    assert d.evidence_span is not None and d.evidence_span.kind == EvidenceKind.FLOW
    assert d.evidence_span.ident == chunks[3].flow_id and d.time_ns == chunks[3].end_ns
    assert "rclone sent 100.0 MB to 198.51.100.9" in d.summary


def test_small_numbers_never_alarm() -> None:
    e = engine()
    learn_small(e)
    # 50x the baseline, but below min_bytes (and new peers likewise).
    assert run(e, *[up("198.51.100.9", AFTER + i * S, 10 * MB) for i in range(9)]) == []
    assert run(e, up("192.0.2.7", AFTER, 90 * MB)) == []


def test_regular_large_transfers_are_their_own_baseline() -> None:
    """A nightly 5 GB backup at 02:00 to the same host, a daily 700 MB video call."""
    e = engine()
    run(e, up("10.0.0.30", T0 + 2 * H, 5_000 * MB, comm="borg", dur_s=2400))
    run(e, up("203.0.113.5", T0 + 9 * H, 700 * MB, comm="zoom", dur_s=3000))
    for h in range(24):
        run(e, up("10.0.0.10", T0 + h * H, 20_000, comm="borg"),
            up("10.0.0.10", T0 + h * H, 20_000, comm="zoom"))
    assert run(e, up("10.0.0.30", T0 + DAY + 2 * H, 5_900 * MB, comm="borg", dur_s=2400)) == []
    assert run(e, up("203.0.113.5", T0 + DAY + 9 * H, 1_000 * MB, comm="zoom")) == []
    # The same backup size to an outside host it never sent to: an anomaly.
    (d,) = run(e, up("192.0.2.99", T0 + DAY + 13 * H, 5_000 * MB, comm="borg"))
    assert d.evidence["baseline_peer_known"] is False and d.evidence["ratio"] > 1000


def test_a_regular_job_moved_to_a_new_host_is_quiet_at_its_usual_hour() -> None:
    e = engine(same_hour_factor=2.0)
    run(e, up("10.0.0.30", T0 + 2 * H, 5_000 * MB, comm="borg"))
    for h in range(24):
        run(e, up("10.0.0.10", T0 + h * H, 20_000, comm="borg"))
    # The backup host changed overnight: same size, same hour, a new peer.
    assert run(e, up("10.0.0.31", T0 + DAY + 2 * H + 600 * S, 5_500 * MB, comm="borg")) == []
    # Three times the usual job at that hour to another new internal host is an anomaly.
    (d,) = run(e, up("10.0.0.77", T0 + DAY + 3 * H, 15_000 * MB, comm="borg"))
    assert d.evidence["baseline_same_hour_max"] == 5_000 * MB
    assert "at this hour" in d.summary
    # The usual volume at the usual hour, but outside: the job never went there.
    (d,) = run(e, up("192.0.2.9", T0 + DAY + 2 * H, 5_000 * MB, comm="borg"))
    assert d.evidence["baseline_same_hour_max"] == 0


def test_a_live_upload_fires_while_the_connection_is_open() -> None:
    e = engine()
    learn_small(e)
    fid = "abcdef"
    chain = Snapshots()  # each snapshot carries the previous one's counters
    snaps = [chain.progress(up("198.51.100.9", AFTER, n * 30 * MB, fid=fid, complete=False,
                               dur_s=n)) for n in range(1, 6)]
    got = run(e, *snaps[:3], progress=True)
    assert got == []  # 90 MB so far
    (d,) = run(e, snaps[3], progress=True)  # 120 MB: fires before the end
    assert d.evidence["open"] is True and d.evidence["bytes"] == 120 * MB
    assert "(still open)" in d.summary
    # The end: only the delta counts (no double counting), no second alert in the window.
    assert run(e, snaps[4], progress=True) == []
    assert run(e, chain.final(up("198.51.100.9", AFTER, 160 * MB, fid=fid, dur_s=6))) == []
    rule = e.rules[0][0]
    assert isinstance(rule, VolumeAnomaly)
    pair = rule.actors["rclone"].peers["198.51.100.9"]
    assert pair.total == 160 * MB


def test_the_span_event_waits_for_the_open_flow() -> None:
    stage = DetectStage(engine())
    learn_small(stage.engine)
    snap = up("198.51.100.9", AFTER, 150 * MB, fid="f00d", complete=False)
    out = Outputs(progress=[snap])
    stage.process(out)
    (d,) = out.detections
    end = replace(up("198.51.100.9", AFTER, 151 * MB, fid="f00d"), reported=snap.counters)
    out = Outputs(flows=[end])
    stage.process(out)
    assert d in out.flows[0].detections


def test_an_adopted_flows_first_snapshot_is_not_new_volume() -> None:
    e = engine()
    learn_small(e)
    old = replace(up("198.51.100.9", AFTER, 900 * MB, fid="01d", complete=False), adopted=True)
    assert run(e, old, progress=True) == []
    (d,) = run(e, replace(old, counters=sent(1_050 * MB), reported=old.counters),
               progress=True)
    assert d.evidence["bytes"] == 150 * MB


def test_nothing_fires_during_learning() -> None:
    e = engine()
    assert run(e, *[up("192.0.2.1", T0 + i * H, 2_000 * MB) for i in range(20)]) == []


def test_resolved_peers_sum_over_their_addresses() -> None:
    e = engine()
    learn_small(e)
    got = run(e, *[up(f"192.0.2.{i}", AFTER + i * S, 30 * MB, name=f"s{i}.store.example.com")
                   for i in range(4)])
    (d,) = got
    assert d.evidence["peer"] == "example.com" and d.peer is not None
    assert d.peer.name == "example.com" and d.evidence["flows"] == 4


def test_zeek_rows_count_whole_at_their_start() -> None:
    e = engine()
    src = "10.2.0.5"
    for h in range(24):
        run(e, replace(up("198.51.100.9", T0 + h * H, MB), owner=None, local_addr=src))
    (d,) = run(e, replace(up("203.0.113.8", AFTER, 400 * MB, dur_s=1200), owner=None,
                          local_addr=src))
    assert d.actor.kind == ActorKind.ADDRESS and d.actor.key == src
    assert d.time_ns == AFTER + 1200 * S  # the row's end completed the evidence


def test_baseline_survives_a_restart_and_is_not_learned_again(tmp_path: Path) -> None:
    e = engine()
    learn_small(e)
    run(e, up("198.51.100.9", AFTER, MB))  # closes the last learning window
    BaselineStore(tmp_path, e).save()
    state = e.rules[0][0].save_state()
    assert len(state["actors"]["rclone"]["peers"]["198.51.100.9"]) == 16  # history_windows
    e2 = engine()
    BaselineStore(tmp_path, e2).load()
    assert e2.rules[0][0].save_state() == state
    assert len(run(e2, up("198.51.100.9", AFTER + 2 * H, 300 * MB))) == 1
    e3 = engine()
    assert run(e3, up("198.51.100.9", AFTER + 2 * H, 300 * MB)) == []  # would learn it


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match="volume_anomaly.reference_quantile"):
        parse_config({"detect": {"rules": {"volume_anomaly": {"reference_quantile": 1.5}}}})
    with pytest.raises(ConfigError, match="volume_anomaly.min_ratio"):
        parse_config({"detect": {"rules": {"volume_anomaly": {"min_ratio": 0.5}}}})


def test_state_stays_bounded_under_a_million_unique_peers_and_flows() -> None:
    e = engine(max_actors=32, max_peers_per_actor=16, history_windows=4, max_open_flows=512,
               window_s=1)
    rule = e.rules[0][0]
    assert isinstance(rule, VolumeAnomaly)
    learn_small(e)
    actors = [e.actors.of_owner(owner(i, f"p{i}")) for i in range(20_000)]
    f = up("192.0.2.1", T0, 1000, complete=False)
    set_ = object.__setattr__  # one record rewritten in place: the rule keeps no flows
    n = 1_000_000
    for i in range(n):
        set_(f, "peer_addr", f"{1 + i % 200}.{(i >> 12) & 255}.{(i >> 4) & 255}.{i & 15}")
        set_(f, "flow_id", str(i))
        set_(f, "start_ns", AFTER + i * 10**8)
        set_(f, "end_ns", AFTER + i * 10**8)
        a = actors[i % 20 if i % 50 else i // 50]
        for _ in (rule.on_progress if i % 2 else rule.on_flow)(a, f):  # type: ignore[arg-type]
            pass
    assert len(rule.actors) <= 32
    for st in rule.actors.values():
        assert len(st.peers) <= 16 and len(st.hist) <= 128
        assert all(len(p.hist) <= 4 for p in st.peers.values())
    saved = rule.save_state()
    assert sum(len(a["peers"]) for a in saved["actors"].values()) <= 32 * 16

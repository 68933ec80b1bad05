"""The flow rules' quality bar, in the test suite: every rule at its defaults, through the
pipeline `otelpeers detect` builds, over two generated days of a network (Zeek conn.log and
dns.log with ground truth; bench/detect/generate.py) of a seed nobody tuned on.

The bar (issue 14): recall >= 0.95 per rule and <= 0.25 false alerts per 1,000 benign
(source, peer) pairs. Benign look-alikes are in the data: NTP, monitoring heartbeats, mail
polling, daily video calls, nightly backups, admin SSH/RDP, a crawler. The full evaluation
(more seeds, bigger networks, naive and RITA-style baselines) is bench/detect/eval_*.py."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import pytest

from bench.detect import generate as gen
from bench.detect.truth import Detection, GroundTruth, Report, score
from otelpeers.detect.build import build_detect_stage
from otelpeers.detect.model import Detection as Alert
from otelpeers.detect.offline import ObservedStage, ZeekSource
from otelpeers.detect.settings import DetectConfig
from otelpeers.drive import EventClock, drive
from otelpeers.pipeline import Pipeline
from otelpeers.testing.sinks import CollectSink

# Seeds 1-10 of the small scenario were used or looked at while tuning; 12 never was.
SEED = 12
RULES = ("beacon", "port_scan", "lateral_movement", "novel_peer", "volume_anomaly")


def as_truth(alerts: Iterable[Alert]) -> list[Detection]:
    """In the scorer's terms: actor = source address; peer = the address for per-peer rules,
    the targets' network for rules about many targets."""
    out = []
    for a in alerts:
        p = a.peer
        if p is None:
            peer = None
        elif a.rule.name == "beacon":
            peer = p.address
        elif a.rule.name == "lateral_movement":
            peer = p.cidr
        else:
            peer = p.address or p.cidr or p.name
        out.append(Detection(a.rule.name, a.actor.key, peer, a.time_ns, a.score))
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    data: Path = tmp_path_factory.mktemp("network")
    gen.write(gen.generate(gen.small(SEED)), data)
    truth = GroundTruth.load(data / "truth.json")
    cfg = replace(DetectConfig(),
                  learning_period_s=(truth.learning_end_ns - truth.start_ns) / 1e9)
    sink = CollectSink()
    pipeline = Pipeline([ObservedStage(), build_detect_stage(cfg)], [sink])
    try:
        drive(ZeekSource([data / "conn.log", data / "dns.log"]), pipeline, EventClock())
    finally:
        pipeline.close()
    assert truth.benign_pairs > 1000  # enough for the false-alert bound to mean something
    return score(as_truth(a for a in sink.detections if a.rule.name in RULES), truth, rules=RULES)


@pytest.mark.parametrize("rule", RULES)
def test_recall_on_a_network_nobody_tuned_on(report: Report, rule: str) -> None:
    r = report.rules[rule]
    assert r.positives > 0, f"the generator made no {rule} incident"
    assert r.recall is not None and r.recall >= 0.95, \
        f"{rule}: missed {[m.id + ': ' + m.note for m in r.misses]}"


@pytest.mark.parametrize("rule", RULES)
def test_false_alerts_per_1000_benign_pairs(report: Report, rule: str) -> None:
    r = report.rules[rule]
    assert r.false_per_1000 <= 0.25, \
        f"{rule}: {[f'{f.actor} -> {f.peer} ({f.why})' for f in r.false_list]}"


def test_all_rules_together_stay_under_the_bound(report: Report) -> None:
    assert report.false_per_1000 <= 0.25

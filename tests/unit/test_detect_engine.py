"""The detection engine with a test rule: actors, allow lists, dedup, span events."""

from __future__ import annotations

from dataclasses import replace

from otelpeers.config import Config, parse_config
from otelpeers.detect.engine import DetectStage, Engine, Finding, Rule
from otelpeers.detect.model import ActorKind, EvidenceKind, EvidenceRef, Peer
from otelpeers.detect.rules import meta
from otelpeers.detect.settings import RuleBase
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import T0, flow, owner

S = 10**9


class BigUpload(Rule):
    """Fires on any flow that sent more than 1000 bytes (a rule for engine tests)."""

    meta = meta.VOLUME_ANOMALY
    settings_type = RuleBase
    takes_flows = True
    takes_progress = True

    def on_flow(self, actor, flow):  # noqa: ANN001, ANN201
        return self._check(actor, flow)

    def on_progress(self, actor, flow):  # noqa: ANN001, ANN201
        return self._check(actor, flow)

    def _check(self, actor, f):  # noqa: ANN001, ANN202
        if f.counters.payload_out <= 1000:
            return ()
        return [Finding(actor, f.end_ns, 0.9, f"sent {f.counters.payload_out} bytes",
                        peer=Peer(f.peer_addr, f.peer_port),
                        evidence={"bytes": f.counters.payload_out, "peers": ("a", "b")},
                        evidence_span=EvidenceRef(EvidenceKind.FLOW, f.flow_id))]


def engine(yaml: dict | None = None) -> Engine:
    cfg = parse_config(yaml or {}).detect
    return Engine(cfg, [BigUpload])


def test_actor_is_the_process_or_the_source_address() -> None:
    e = engine()
    (d,) = e.evaluate(Outputs(flows=[flow("1")]))
    assert d.actor.kind == ActorKind.PROCESS and d.actor.key == "curl"
    assert d.actor.pid == 4242 and d.rule.name == "volume_anomaly"
    assert d.rule.uuid == "f73ecc8d-9ccf-4fed-95ce-eff4e621d9b4"
    assert d.time_ns == T0 + 5_000_000 and d.evidence["bytes"] == 1200
    zeek = replace(flow("2", peer="198.51.100.1"), owner=None, local_addr="10.1.2.3")
    (z,) = e.evaluate(Outputs(flows=[zeek]))
    assert z.actor.kind == ActorKind.ADDRESS and z.actor.key == "10.1.2.3"


def test_same_rule_actor_and_target_fire_once_per_window_with_repeats() -> None:
    e = engine({"detect": {"dedup_window_s": 60}})
    first = e.evaluate(Outputs(flows=[flow("1", start_ns=T0)]))
    again = [e.evaluate(Outputs(flows=[flow(f"{i + 2:x}", start_ns=T0 + i * S)]))
             for i in range(5)]
    assert len(first) == 1 and all(not x for x in again)
    other_peer = e.evaluate(Outputs(flows=[flow("9", peer="192.0.2.9")]))
    assert len(other_peer) == 1  # another target is another alert
    (later,) = e.evaluate(Outputs(flows=[flow("a", start_ns=T0 + 61 * S)]))
    assert later.repeats == 5
    assert e.counters()["suppressed"] == 5


def test_allow_lists_global_and_per_rule() -> None:
    e = engine({"detect": {"allow": {"executables": ["curl"]}}})
    assert e.evaluate(Outputs(flows=[flow("1")])) == []
    e = engine({"detect": {"rules": {"volume_anomaly": {"allow": {
        "peer_cidrs": ["93.184.216.0/24"]}}}}})
    assert e.evaluate(Outputs(flows=[flow("1")])) == []
    assert len(e.evaluate(Outputs(flows=[flow("2", peer="198.51.100.7")]))) == 1
    assert e.counters()["allowed"] == 1


def test_disabled_rule_and_severity_override() -> None:
    e = engine({"detect": {"rules": {"volume_anomaly": {"enabled": False}}}})
    assert e.rule_names == [] and e.evaluate(Outputs(flows=[flow("1")])) == []
    e = engine({"detect": {"rules": {"volume_anomaly": {"severity": "critical"}}}})
    (d,) = e.evaluate(Outputs(flows=[flow("1")]))
    assert d.severity.text == "critical"


def test_span_events_on_this_rounds_flow_and_on_an_open_flow_when_it_ends() -> None:
    st = DetectStage(engine())
    out = Outputs(flows=[flow("1")])
    st.process(out)
    (d,) = out.detections
    assert out.flows[0].detections == (d,)
    # An open flow: the detection waits for the flow's end, then rides on its span.
    open_flow = replace(flow("2", proc=owner(5, "scp"), peer="192.0.2.5"), complete=False)
    out = Outputs(progress=[open_flow])
    st.process(out)
    (d2,) = out.detections
    assert st.counters()["detections"] == 2
    out = Outputs(flows=[replace(open_flow, complete=True)])
    st.process(out)
    assert out.detections == [] or all(x.detection_id != d2.detection_id
                                       for x in out.detections)
    assert d2 in out.flows[0].detections


def test_a_rule_that_raises_is_counted_not_fatal() -> None:
    class Broken(BigUpload):
        def on_flow(self, actor, flow):  # noqa: ANN001, ANN201
            raise RuntimeError("bug")

    e = Engine(Config().detect, [Broken])
    assert e.evaluate(Outputs(flows=[flow("1")])) == []
    assert e.counters()["rule_errors"] == 1


def test_learning_clock_starts_at_the_first_event() -> None:
    e = engine({"detect": {"learning_period_s": 10}})
    e.evaluate(Outputs(flows=[flow("1", start_ns=T0)]))
    assert e.ctx.learning(T0 + 9 * S) and not e.ctx.learning(T0 + 10 * S)


def test_bounded_state_counts_evictions() -> None:
    e = engine({"detect": {"max_actors": 3}})
    m = e.ctx.bounded("volume_anomaly.actors")
    for i in range(10):
        m.touch(i, dict)
    assert len(m) == 3 and e.counters()["volume_anomaly.actors.state_evicted"] == 7


def test_dga_settings_mirror_the_scorer_defaults() -> None:
    from dataclasses import fields

    from otelpeers.detect.dga.actor import DgaActorConfig
    from otelpeers.detect.settings import DgaRule

    scorer = {f.name: f.default for f in fields(DgaActorConfig)}
    rule = {f.name: f.default for f in fields(DgaRule) if f.name in scorer}
    assert rule == {k: scorer[k] for k in rule}
    assert len(rule) >= 14  # every decision parameter is configurable


def test_the_kernels_own_replies_are_no_actor() -> None:
    e = engine()
    kernel = replace(flow("7a"), owner=owner(tgid=0, comm="kernel", uid=0))
    assert kernel.owner is not None and kernel.owner.is_kernel
    assert e.evaluate(Outputs(flows=[kernel])) == []
    assert len(e.evaluate(Outputs(flows=[flow("7b")]))) == 1  # from a process it fires

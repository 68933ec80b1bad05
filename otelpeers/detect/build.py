"""Builds the detection stage from the config (used by otelpeers.agent)."""

from __future__ import annotations

from otelpeers.detect.engine import Actors, DetectStage, Engine, ProcessDescriber, RuleContext
from otelpeers.detect.rules import all_rules
from otelpeers.detect.settings import DetectConfig
from otelpeers.detect.store import BaselineStore
from otelpeers.pipeline import Stage


def build_detect_stage(config: DetectConfig, *, describe: ProcessDescriber | None = None,
                       persist: bool = False, separate_process: bool = False) -> Stage:
    """persist: the live agent: keep baselines in config.state_dir across runs, and rules may
    look at this host's /proc. separate_process: run the rules in their own process
    (otelpeers.detect.remote); else in the pipeline thread (recordings, logs, tests)."""
    if separate_process:
        from otelpeers.detect.remote import RemoteDetectStage

        return RemoteDetectStage(config, describe=describe, persist=persist)
    engine = Engine(config, all_rules(), actors=Actors(describe),
                    ctx=RuleContext(config, live=persist))
    store = None
    if persist:
        store = BaselineStore(config.state_dir, engine)
        store.load()
    return DetectStage(engine, store=store)

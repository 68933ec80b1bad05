"""The shipped collector configs and example agent configs stay valid.

No collector binary runs here, so the collector files get a structural check: they parse,
every component a pipeline names is defined, and each connector is used as an exporter in
one pipeline and a receiver in another (else otelcol refuses to start).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from otelpeers.config import Config, load_config

REPO = Path(__file__).resolve().parents[2]
COLLECTOR_CONFIGS = sorted((REPO / "collector-config").glob("*.yaml"))
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
SECTIONS = {"receivers": "receivers", "processors": "processors", "exporters": "exporters"}


def test_files_are_shipped() -> None:
    assert {p.name for p in COLLECTOR_CONFIGS} >= {"agent.yaml", "gateway.yaml"}
    assert {p.name for p in EXAMPLES} >= {"collector-forwarding.yaml", "files-only.yaml",
                                          "http-protocol.yaml"}


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_collector_config_is_consistent(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    pipelines = doc["service"]["pipelines"]
    assert pipelines, "no pipelines"
    connectors = set(doc.get("connectors") or {})
    used_as_exporter: set[str] = set()
    used_as_receiver: set[str] = set()
    for name, pipe in pipelines.items():
        assert name.split("/")[0] in ("traces", "metrics", "logs"), name
        assert pipe.get("receivers") and pipe.get("exporters"), f"{name}: needs both ends"
        for key, section in SECTIONS.items():
            defined = set(doc.get(section) or {})
            if key in ("receivers", "exporters"):
                defined |= connectors
            for comp in pipe.get(key, []):
                assert comp in defined, f"{path.name}: pipeline {name} uses undefined {comp}"
        used_as_exporter |= connectors & set(pipe["exporters"])
        used_as_receiver |= connectors & set(pipe["receivers"])
    assert used_as_exporter == connectors == used_as_receiver, \
        f"{path.name}: each connector must be exported to and received from"
    for pipe in pipelines.values():
        if pipe.get("processors"):
            assert pipe["processors"][0] == "memory_limiter"


def test_gateway_routes_by_trace_and_keeps_errors_and_detections() -> None:
    doc = yaml.safe_load((REPO / "collector-config" / "gateway.yaml").read_text())
    assert doc["exporters"]["loadbalancing"]["routing_key"] == "traceID"
    policies = {p["type"] for p in doc["processors"]["tail_sampling"]["policies"]}
    assert {"status_code", "ottl_condition"} <= policies


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_agent_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert cfg != Config(), f"{path.name} changes nothing"

"""The shipped Grafana dashboard, checked without Grafana: it parses, every panel queries
something, datasources are variables, every metric it uses is a contract metric (and every
contract metric is on it), and docs/dashboards.md documents the same names.

Grafana's own schema: tests/e2e/test_grafana_schema.py. The queries against a real store:
tests/e2e/test_dashboard_queries.py.
"""

from __future__ import annotations

import re

import grafana_dashboard as g  # tests/ is on sys.path (tests/conftest.py)
import pytest

DOCS = g.REPO / "docs" / "dashboards.md"


@pytest.fixture(scope="module")
def dash() -> dict:
    return g.load()


def test_dashboard_parses_and_is_identified(dash: dict) -> None:
    assert dash["uid"] == "otelpeers-network-peers"
    assert dash["title"]
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36  # Grafana 9.4+
    assert "id" not in dash or dash["id"] is None, "an exported id would clash on import"
    assert "__inputs" not in dash, "datasources are chosen by variables, not import inputs"


def test_every_panel_has_a_query(dash: dict) -> None:
    shown = list(g.panels(dash))
    assert len(shown) >= 15
    for p in shown:
        targets = p.get("targets") or []
        assert targets, f"panel {p['title']!r} has no query"
        for t in targets:
            assert (t.get("expr") or t.get("query") or "").strip(), \
                f"panel {p['title']!r} query {t.get('refId')} is empty"
        assert len({t["refId"] for t in targets}) == len(targets), p["title"]


def test_panel_ids_are_unique_and_the_grid_has_no_overlaps(dash: dict) -> None:
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for p in dash["panels"]:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, p["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


def test_datasources_are_variables_of_the_right_type(dash: dict) -> None:
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    for name, plugin in g.DATASOURCE_VARIABLES.items():
        assert variables[name]["type"] == "datasource"
        assert variables[name]["query"] == plugin
    refs = []
    for p in g.panels(dash):
        refs.append((p["title"], p["datasource"]))
        refs += [(p["title"], t["datasource"]) for t in p["targets"]]
    for v in variables.values():
        if v["type"] == "query":
            refs.append((f"variable {v['name']}", v["datasource"]))
    for where, ds in refs:
        m = re.fullmatch(r"\$\{(\w+)\}", ds.get("uid", ""))
        assert m, f"{where}: datasource uid {ds.get('uid')!r} is not a ${{VARIABLE}}"
        assert g.DATASOURCE_VARIABLES.get(m.group(1)) == ds["type"], \
            f"{where}: {ds} does not match the variable's plugin type"


def test_panels_cover_the_issue(dash: dict) -> None:
    titles = " | ".join(p["title"].lower() for p in g.panels(dash))
    for wanted in ("top talkers", "connections opened", "failed connections", "new peers",
                   "dns lookup latency", "nxdomain", "detections by rule", "kernel drops",
                   "export queue", "spans dropped"):
        assert wanted in titles, wanted
    kinds = {q.plugin for q in g.queries(dash)}
    assert kinds == {"prometheus", "loki", "tempo"}
    loki = [q for q in g.queries(dash) if q.plugin == "loki"]
    assert any('event_name = "otelpeers.detection"' in q.text for q in loki)


def test_latency_histograms_link_to_traces(dash: dict) -> None:
    """Histogram panels ask for exemplars, so a spike links to the span (Tempo)."""
    for p in g.panels(dash):
        for t in p["targets"]:
            if "_bucket" in t.get("expr", ""):
                assert t.get("exemplar") is True, f"{p['title']!r}/{t['refId']}"


def test_metric_names_are_the_contract_and_all_of_it(dash: dict) -> None:
    used = g.dashboard_metric_names(dash)
    unknown = used - set(g.PROM_NAMES.values())
    assert not unknown, f"queries use metrics that are not in the contract: {sorted(unknown)}"
    unused = set(g.PROM_NAMES.values()) - used
    assert not unused, f"contract metrics no panel shows: {sorted(unused)}"


def test_every_variable_is_defined_or_builtin(dash: dict) -> None:
    defined = {v["name"] for v in dash["templating"]["list"]}
    texts = [q.text for q in g.queries(dash)] + list(g.variable_queries(dash).values())
    for text in texts:
        for m in re.finditer(r"\$\{?(\w+)", text):
            assert m.group(1) in defined or m.group(1).startswith("__"), (m.group(1), text)
        g.substitute(text)  # the tests know a value for each


def test_docs_map_every_contract_metric_to_its_prometheus_name() -> None:
    text = DOCS.read_text()
    rows = [line for line in text.splitlines() if line.startswith("|")]
    for otel, prom in g.PROM_NAMES.items():
        base = re.sub(r"_bucket$", "", prom)
        assert any(f"`{otel}`" in r and f"`{base}" in r for r in rows), \
            f"docs/dashboards.md has no table row mapping `{otel}` to `{base}`"
    for p in g.panels(g.load()):
        assert p["title"] in text, f"docs/dashboards.md does not describe panel {p['title']!r}"


@pytest.mark.parametrize(("promql", "names"), [
    ('sum by (le, otelpeers_flow_state) (rate(a_total{x="b_total", y=~"$v"}[$__rate_interval]))',
     {"a_total"}),
    ("max(b) / on (host_name) group_left c + d offset 5m", {"b", "c", "d"}),
    ('label_values(m_total{host_name=~"$host"}, process_executable_name)', {"m_total"}),
    ("label_values(host_name)", set()),
])
def test_metric_name_extraction(promql: str, names: set[str]) -> None:
    assert g.metric_names(promql) == names


def test_substitute_rejects_unknown_variables() -> None:
    assert g.substitute("rate(x[$__rate_interval])") == "rate(x[5m])"
    assert g.substitute('x{a=~"${host}"}') == 'x{a=~".*"}'
    with pytest.raises(KeyError, match="nope"):
        g.substitute("x{a=~\"$nope\"}")

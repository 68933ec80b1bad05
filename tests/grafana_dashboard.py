"""The shipped Grafana dashboard (examples/grafana/) as data, for the tests that check it.

Shared by tests/unit/test_grafana_dashboard.py (static checks),
tests/e2e/test_grafana_schema.py (Grafana's own schema) and tests/e2e/test_dashboard_queries.py
(every panel query against a real metrics store). run_panel_queries() is the reusable part:
give it any function that runs an instant PromQL query and it runs every metrics query of the
dashboard, with the template variables substituted, and reports every query that came back
empty or failed, all at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GRAFANA_DIR = REPO / "examples" / "grafana"
DASHBOARD = GRAFANA_DIR / "otelpeers-dashboard.json"

# The instruments of the metrics contract (issue 12; docs/telemetry.md) and the
# names a Prometheus-naming OTLP store gives them: dots -> underscores, the unit as a suffix
# (s -> _seconds, By -> _bytes, {annotations} dropped), _total on counters; the agent's
# self-telemetry has no unit, hence no suffix on its gauges.
# Measured with VictoriaMetrics -opentelemetry.usePrometheusNaming
# (tests/e2e/test_dashboard_queries.py checks the store still agrees); the same rules as
# Prometheus' own OTLP receiver and Mimir. Histograms are listed by their _bucket series.
PROM_NAMES: dict[str, str] = {
    "otelpeers.flow.bytes": "otelpeers_flow_bytes_total",
    "otelpeers.flow.packets": "otelpeers_flow_packets_total",
    "otelpeers.flow.connections": "otelpeers_flow_connections_total",
    "otelpeers.flow.duration": "otelpeers_flow_duration_seconds_bucket",
    "otelpeers.flow.size": "otelpeers_flow_size_bytes_bucket",
    "otelpeers.tcp.srtt": "otelpeers_tcp_srtt_seconds_bucket",
    "otelpeers.peers.new": "otelpeers_peers_new_total",
    "dns.lookup.duration": "dns_lookup_duration_seconds_bucket",
    "otelpeers.dns.queries": "otelpeers_dns_queries_total",
    "otelpeers.detections": "otelpeers_detections_total",
    "otelpeers.agent.source.kernel_drops": "otelpeers_agent_source_kernel_drops_total",
    "otelpeers.agent.source.kernel_drops.ringbuf_tcp_close":
        "otelpeers_agent_source_kernel_drops_ringbuf_tcp_close_total",
    "otelpeers.agent.export.spans_dropped_queue_full":
        "otelpeers_agent_export_spans_dropped_queue_full_total",
    "otelpeers.agent.export.queue_size": "otelpeers_agent_export_queue_size",
    "otelpeers.agent.dns.parse_errors": "otelpeers_agent_dns_parse_errors_total",
    "otelpeers.agent.metrics.pairs_overflowed": "otelpeers_agent_metrics_pairs_overflowed_total",
    "otelpeers.agent.detect.state_evicted": "otelpeers_agent_detect_state_evicted_total",
}

# Datasource variables: name -> the plugin type its panels and queries must name.
DATASOURCE_VARIABLES = {"DS_PROMETHEUS": "prometheus", "DS_TEMPO": "tempo", "DS_LOKI": "loki"}
METRICS_PLUGIN = "prometheus"

# What the tests substitute for Grafana's variables: every host and process ("All"), a
# 5 minute rate window and a 1 hour range (the data a test pushes is seconds old).
TEST_VARIABLES: dict[str, str] = {
    "__rate_interval": "5m", "__interval": "1m", "__range": "1h",
    "host": ".*", "process": ".*",
}


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Query:
    panel: str  # panel title
    ref_id: str
    plugin: str  # datasource plugin type: prometheus, loki, tempo
    datasource_uid: str
    text: str  # expr (PromQL, LogQL) or query (TraceQL)
    instant: bool

    @property
    def name(self) -> str:
        return f"{self.panel!r}/{self.ref_id}"


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows, and panels nested in collapsed rows, flattened)."""
    for p in dashboard.get("panels", []):
        if p.get("type") == "row":
            yield from p.get("panels", [])
        else:
            yield p


def queries(dashboard: Mapping[str, Any]) -> Iterator[Query]:
    for p in panels(dashboard):
        panel_ds = p.get("datasource") or {}
        for t in p.get("targets", []):
            ds = t.get("datasource") or panel_ds
            yield Query(panel=p.get("title", "?"), ref_id=t.get("refId", "?"),
                        plugin=ds.get("type", ""), datasource_uid=ds.get("uid", ""),
                        text=t.get("expr") or t.get("query") or "",
                        instant=bool(t.get("instant")) and not t.get("range", False))


def metric_queries(dashboard: Mapping[str, Any]) -> list[Query]:
    return [q for q in queries(dashboard) if q.plugin == METRICS_PLUGIN]


def variable_queries(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Query variables (name -> query) of the metrics datasource."""
    return {v["name"]: v["query"] if isinstance(v["query"], str) else v["query"]["query"]
            for v in dashboard.get("templating", {}).get("list", [])
            if v.get("type") == "query"}


_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(text: str, values: Mapping[str, str] = TEST_VARIABLES) -> str:
    """Grafana's $var, ${var} and [[var]] replaced; an unknown variable is an error."""
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(f"query uses ${name}, which the test gives no value: {text}")
        return values[name]
    return _VAR.sub(repl, text)


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)\s*$")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
             "or", "unless", "offset", "inf", "nan"}


def label_values_query(query: str) -> tuple[str | None, str]:
    """label_values(metric{...}, label) -> (selector or None, label)."""
    m = _LABEL_VALUES.match(query)
    if m is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    return m.group(1), m.group(2)


def metric_names(promql: str) -> set[str]:
    """Metric names a PromQL expression (or a label_values() variable query) selects.

    Strings, label matchers, range/subquery brackets and by/without/on/ignoring lists go
    first; what is left that is an identifier and not a function call or keyword is a
    metric name. Enough for the dashboard's own queries, not a full PromQL parser.
    """
    if _LABEL_VALUES.match(promql):
        selector, _ = label_values_query(promql)
        promql = selector or ""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', promql)
    s = re.sub(r"\{[^}]*\}", "{}", s)
    s = re.sub(r"\[[^\]]*\]", "[]", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def dashboard_metric_names(dashboard: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for q in metric_queries(dashboard):
        names |= metric_names(q.text)
    for v in variable_queries(dashboard).values():
        names |= metric_names(v)
    return names


# ---- running the dashboard against a store ------------------------------------------------
QueryFn = Callable[[str], list[dict[str, Any]]]


@dataclass
class PanelResults:
    results: dict[tuple[str, str], list[dict[str, Any]]]  # (panel title, refId) -> series
    not_run: list[Query]  # Tempo/Loki queries: no such store here

    def series(self, panel: str, ref_id: str = "A") -> list[dict[str, Any]]:
        return self.results[(panel, ref_id)]


def run_panel_queries(query: QueryFn, dashboard: Mapping[str, Any] | None = None, *,
                      values: Mapping[str, str] = TEST_VARIABLES,
                      require_series: bool = True) -> PanelResults:
    """Run every metrics query of the dashboard through `query` (an instant PromQL query
    returning the result vector) with the variables substituted.

    With require_series, an AssertionError lists every query that returned no series or
    raised, not just the first. Series whose value is NaN (a quantile of no traffic) do not
    count as data.
    """
    dashboard = dashboard if dashboard is not None else load()
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    problems: list[str] = []
    not_run: list[Query] = []
    for q in queries(dashboard):
        if q.plugin != METRICS_PLUGIN:
            not_run.append(q)
            continue
        promql = substitute(q.text, values)
        try:
            got = query(promql)
        except Exception as exc:  # report them all, then fail
            problems.append(f"{q.name}: {promql}\n    error: {exc}")
            continue
        results[(q.panel, q.ref_id)] = got
        with_data = [r for r in got if r.get("value") and r["value"][1] not in ("NaN", "nan")]
        if require_series and not with_data:
            problems.append(f"{q.name}: {promql}\n    returned no series with a value: "
                            f"{got!r:.300}")
    if problems:
        raise AssertionError(f"{len(problems)} dashboard queries failed:\n" + "\n".join(problems))
    return PanelResults(results, not_run)

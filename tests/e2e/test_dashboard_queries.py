"""Every panel query of the shipped dashboard, run against a real metrics store.

VictoriaMetrics (OTLP in, PromQL out, with -opentelemetry.usePrometheusNaming) receives
the metrics of the contract over OTLP/HTTP from the OpenTelemetry SDK, exactly as the agent
sends them (tests/e2e/contract_metrics.py: same instruments, units, attributes and
resource), then every metrics query of examples/grafana/otelpeers-dashboard.json, with its
template variables substituted, must return series, and the top-talker panels must show
the 1 MB download under the name the client resolved.

To run the same checks on the real agent with real traffic, replace `pushed_store` by a
fixture that runs the agent (export to vm.otlp_metrics_endpoint, protocol http/protobuf)
and a 1 MB download from a name the test's DNS server resolves, waits with
vm.wait_for(...) until the download's bytes are there, and keep the test bodies: they only
use run_panel_queries() and the store.

Every query is also parsed by a real Prometheus (Debian's 2.42), so nothing here passes
only because VictoriaMetrics' MetricsQL is more lenient than PromQL.
"""

from __future__ import annotations

from collections.abc import Iterator

import grafana_dashboard as g
import pytest
from backends import Prometheus, VictoriaMetrics
from contract_metrics import DOWNLOAD, DOWNLOAD_SENT, MB, PAIRS, ContractMetrics, push_interval

pytestmark = pytest.mark.e2e

TOP_TALKERS_RANGE = "Top talkers in the time range"
TOP_TALKERS_RATE = "Top talkers: bytes/s by process → peer"


@pytest.fixture
def pushed_store(victoria_metrics: VictoriaMetrics) -> Iterator[VictoriaMetrics]:
    """The store after two metrics intervals of the contract scenario, all of it visible."""
    metrics = ContractMetrics(victoria_metrics.otlp_metrics_endpoint)
    try:
        push_interval(metrics, 0)
        push_interval(metrics, 1)
        victoria_metrics.wait_for_samples(metrics.samples_sent)
        yield victoria_metrics
    finally:
        metrics.shutdown()


def _pair(series: dict) -> tuple[str, str]:
    m = series["metric"]
    return m.get("process_executable_name", ""), m.get("server_address", "")


def test_store_names_match_the_dashboard(pushed_store: VictoriaMetrics) -> None:
    """The store gives the contract's instruments exactly the names the dashboard uses."""
    names = set(pushed_store.metric_names())
    expected = set(g.PROM_NAMES.values())
    assert expected <= names, f"the store has no {sorted(expected - names)}; it has {names}"
    # Histograms also get _sum and _count; nothing else appears.
    bases = {n.removesuffix("_bucket") for n in expected if n.endswith("_bucket")}
    assert names == expected | {b + s for b in bases for s in ("_sum", "_count")}


def test_every_panel_query_returns_series(pushed_store: VictoriaMetrics) -> None:
    dash = g.load()
    results = g.run_panel_queries(pushed_store.query, dash)
    assert len(results.results) == len(g.metric_queries(dash)) >= 20
    # Loki and Tempo do not run here: exactly the logs and traces panels are left out.
    assert sorted(q.plugin for q in results.not_run) == ["loki", "tempo"]

    by_range = {_pair(s): float(s["value"][1]) for s in results.series(TOP_TALKERS_RANGE)}
    download = (DOWNLOAD.process, DOWNLOAD.server_address)
    assert download in by_range, f"no {download} among the top talkers: {sorted(by_range)}"
    # The download's bytes in the range: the 1 MB body, plus at most the request.
    assert MB <= by_range[download] <= MB + DOWNLOAD_SENT, by_range[download]
    assert max(by_range, key=by_range.__getitem__) == download
    # The peer is the name the client resolved, never the address it connected to.
    assert all(server != DOWNLOAD.peer_address for _, server in by_range)

    by_rate = {_pair(s): float(s["value"][1]) for s in results.series(TOP_TALKERS_RATE)}
    assert max(by_rate, key=by_rate.__getitem__) == download
    assert set(by_rate) == {(p.process, p.server_address) for p in PAIRS}

    failed = {_pair(s) for s in results.series("Failed connections/s by pair")}
    assert failed == {("python3", "refused.otelpeers.test")}
    nxdomain = {s["metric"]["process_executable_name"]
                for s in results.series("NXDOMAIN/s by process")}
    assert nxdomain == {"python3"}
    rules = {s["metric"]["security_rule_name"] for s in results.series("Detections by rule")}
    assert rules == {"dns_tunnel", "beaconing"}


def test_variable_queries_list_hosts_and_processes(pushed_store: VictoriaMetrics) -> None:
    values = {}
    for name, query in g.variable_queries(g.load()).items():
        selector, label = g.label_values_query(g.substitute(query))
        values[name] = pushed_store.label_values(label, selector)
    assert values["host"] == ["otelpeers-e2e-host"]
    assert set(values["process"]) == {p.process for p in PAIRS}


def test_an_empty_panel_is_reported(victoria_metrics: VictoriaMetrics) -> None:
    """run_panel_queries() fails, naming each query, when the store has nothing."""
    with pytest.raises(AssertionError) as exc:
        g.run_panel_queries(victoria_metrics.query)
    assert f"{len(g.metric_queries(g.load()))} dashboard queries failed" in str(exc.value)
    assert repr(TOP_TALKERS_RANGE) in str(exc.value)


def test_every_query_is_valid_promql(prometheus: Prometheus) -> None:
    """Prometheus itself parses every query (it has no data: only errors matter)."""
    dash = g.load()
    g.run_panel_queries(prometheus.query, dash, require_series=False)
    for query in g.variable_queries(dash).values():
        selector, _ = g.label_values_query(g.substitute(query))
        if selector:
            prometheus.query(selector)

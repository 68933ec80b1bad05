"""The dashboard against the real agent: real traffic in a test namespace, the agent's own
metrics into a real store, every panel query run against it.

curl resolves www.otp.test through dnsmasq in a test namespace and downloads 1 MB from an
http.server there; dig asks for a name that does not exist; a client connects to closed
ports of the namespace host (failed connections, and a port scan detection). The agent
exports metrics over OTLP/HTTP every second to VictoriaMetrics; then every metrics query of
examples/grafana/otelpeers-dashboard.json must return series, the top talker must be curl ->
www.otp.test with the 1 MB (within header overhead), and the Prometheus endpoint, scraped by
a real Prometheus, must give the same pair's bytes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grafana_dashboard as g
import pytest
from agent_proc import AgentProcess
from backends import Prometheus, VictoriaMetrics, free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernel"))
from harness import dns_environment, with_resolver  # noqa: E402

pytestmark = [pytest.mark.kernel, pytest.mark.e2e]

MB = 1_000_000
HTTP_OVERHEAD = 2_000  # response headers and the request, generously
TOP_TALKERS_RANGE = "Top talkers in the time range"


def traffic(tmp: Path, host) -> None:  # noqa: ANN001
    ns = host.ns
    (tmp / "blob").write_bytes(b"b" * MB)
    server = subprocess.Popen(
        ns.cmd(sys.executable, "-u", "-m", "http.server", "--bind", ns.ns_ip,
               "--directory", str(tmp), "8080"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "Serving HTTP" in server.stdout.readline()
        out = subprocess.run(with_resolver(host, "curl", "-4", "-s", "-o", "/dev/null", "-w",
                                           "%{size_download}", "http://www.otp.test:8080/blob"),
                             capture_output=True, text=True, timeout=60)
        assert out.stdout == str(MB), out
        nx = subprocess.run(["dig", f"@{ns.ns_ip}", "+tries=1", "+time=2", "nope.otp.test"],
                            capture_output=True, text=True, timeout=30)
        assert "NXDOMAIN" in nx.stdout
        # Closed ports of the namespace host: refused connections, a vertical port scan.
        scan = ("import socket, sys\n"
                "for port in range(20000, 20040):\n"
                "    s = socket.socket(); s.settimeout(2)\n"
                "    try: s.connect((sys.argv[1], port))\n"
                "    except OSError: pass\n"
                "    s.close()\n")
        subprocess.run([sys.executable, "-c", scan, ns.ns_ip], check=True, timeout=120)
    finally:
        server.kill()
        server.wait()


def test_every_panel_query_on_the_agents_metrics(tmp_path: Path,
                                                 victoria_metrics: VictoriaMetrics) -> None:
    prom_port = free_port()
    cfg = (f"export:\n  files:\n    directory: {tmp_path / 'out'}\n"
           f"  prometheus:\n    enabled: true\n    port: {prom_port}\n"
           f"detect:\n  state_dir: {tmp_path / 'state'}\n")
    env = {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": victoria_metrics.otlp_metrics_endpoint,
           "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
           "OTEL_METRIC_EXPORT_INTERVAL": "1000"}
    prom = Prometheus(tmp_path / "prom", [{
        "job_name": "otelpeers", "static_configs": [{"targets": [f"127.0.0.1:{prom_port}"]}]}])
    agent = AgentProcess(tmp_path, cfg, env)
    try:
        with dns_environment(tmp_path) as host:
            traffic(tmp_path, host)
        curl_bytes = ('sum(otelpeers_flow_bytes_total{process_executable_name="curl",'
                      'server_address="www.otp.test",network_io_direction="receive"})')
        got = victoria_metrics.wait_for(curl_bytes, lambda r: bool(r) and float(
            r[0]["value"][1]) >= MB, timeout_s=60)
        detections = 'sum(otelpeers_detections_total{security_rule_name="port_scan"})'
        victoria_metrics.wait_for(detections, lambda r: bool(r) and float(
            r[0]["value"][1]) >= 1, timeout_s=60)
        # Rates need consecutive samples: wait until every series of the traffic has three
        # (new series are given at zero first, then their values, every second).
        for metric in ("otelpeers_flow_connections_total", "otelpeers_flow_duration_seconds_count",
                       "dns_lookup_duration_seconds_count", "otelpeers_detections_total"):
            victoria_metrics.wait_for(f"min(count_over_time({metric}[5m]))", lambda r: bool(r)
                                      and float(r[0]["value"][1]) >= 3, timeout_s=60)
        results = g.run_panel_queries(victoria_metrics.query, g.load())
        scraped = prom_wait(prom, curl_bytes)
    finally:
        rc, _, err = agent.stop()
        prom.stop()
    assert rc == 0, err
    assert MB <= float(got[0]["value"][1]) <= MB + HTTP_OVERHEAD
    assert sorted(q.plugin for q in results.not_run) == ["loki", "tempo"]
    by_range = {(s["metric"].get("process_executable_name"), s["metric"].get("server_address")):
                float(s["value"][1]) for s in results.series(TOP_TALKERS_RANGE)}
    assert ("curl", "www.otp.test") in by_range, sorted(by_range)
    assert MB <= by_range[("curl", "www.otp.test")] <= MB + HTTP_OVERHEAD
    assert MB <= float(scraped[0]["value"][1]) <= MB + HTTP_OVERHEAD


def prom_wait(prom: Prometheus, promql: str, timeout_s: float = 60.0) -> list:
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        result = prom.query(promql)
        if result and float(result[0]["value"][1]) >= MB:
            return result
        assert time.monotonic() < deadline, f"Prometheus never scraped {promql}: {result}"
        time.sleep(0.2)  # the next scrape (every second) is the event; nothing to block on

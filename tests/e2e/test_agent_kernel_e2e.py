"""The whole product, end to end: real sensors, real traffic, a real collector.

curl resolves a name through dnsmasq in a test namespace and downloads 1 MB from a Python
http.server there; the agent exports over OTLP/gRPC to rotel, which forwards to a receiver
in this test. Asserted on what arrives: a CLIENT span from curl and a SERVER span from the
server in one trace, byte counts, the DNS span, and the connection's link to it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from otlp_sink import OtlpSink, span_attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernel"))
from harness import CHAIN, dns_environment, with_resolver  # noqa: E402

pytestmark = [pytest.mark.kernel, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
CLIENT, SERVER = 3, 2  # OTLP SpanKind values


def wait_spans(sink: OtlpSink, pred, timeout_s: float = 30.0) -> list:
    deadline = time.monotonic() + timeout_s
    while True:
        spans = sink.spans()
        if pred(spans):
            return spans
        left = deadline - time.monotonic()
        seen = [(r.get("service.name"), s.name) for r, s in spans]
        assert left > 0, f"spans never matched; got {seen}"
        with sink.cond:
            sink.cond.wait(min(left, 1.0))


def test_curl_download_traced_end_to_end(tmp_path: Path, rotel, sink: OtlpSink) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("export:\n  schedule_delay_s: 0.2\n  otlp:\n"
                   f"    endpoint: {rotel.grpc_endpoint}\n")
    ready = tmp_path / "ready"
    agent = subprocess.Popen(
        [sys.executable, "-m", "otelpeers", "run", "--no-live-view", "--config", str(cfg),
         "--ready-file", str(ready)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    server = None
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert agent.poll() is None, agent.communicate()
            assert time.monotonic() < deadline, "agent did not attach"
            time.sleep(0.05)  # the agent writes this file once; nothing else to wait on
        with dns_environment(tmp_path) as host:
            ns = host.ns
            (tmp_path / "blob").write_bytes(b"b" * 1_000_000)
            server = subprocess.Popen(
                ns.cmd(sys.executable, "-u", "-m", "http.server", "--bind", ns.ns_ip,
                       "--directory", str(tmp_path), "8080"),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # http.server prints "Serving HTTP on ..." once its socket listens.
            assert "Serving HTTP" in server.stdout.readline()
            curl = subprocess.Popen(with_resolver(host, "curl", "-4", "-s", "-o", "/dev/null",
                                                  "-w", "%{size_download}",
                                                  "http://www.otp.test:8080/blob"),
                                    stdout=subprocess.PIPE, text=True)
            out, _ = curl.communicate(timeout=60)
            assert curl.returncode == 0 and out == "1000000"

            def client_span(spans):
                return [(r, s) for r, s in spans if s.kind == CLIENT
                        and r.get("process.pid") == curl.pid
                        and span_attrs(s).get("network.peer.port") == 8080]

            def server_span(spans):
                return [(r, s) for r, s in spans if s.kind == SERVER
                        and r.get("process.pid") == server.pid]

            spans = wait_spans(sink, lambda sp: client_span(sp) and server_span(sp))
    finally:
        if server is not None:
            server.kill()
            server.wait()
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=60)
    assert agent.returncode == 0, err

    (cres, cspan), = client_span(spans)[:1]
    (sres, sspan), = server_span(spans)[:1]
    ca, sa = span_attrs(cspan), span_attrs(sspan)
    assert cres["service.name"] == "curl" and cres["process.executable.name"] == "curl"
    assert sres["service.name"].startswith("python")
    assert cspan.name == "tcp connect" and sspan.name == "tcp accept"
    # One trace: the server end is the client end's child.
    assert sspan.trace_id == cspan.trace_id and sspan.parent_span_id == cspan.span_id
    assert ca["server.address"] == "www.otp.test" and ca["network.peer.address"] == ns.ns_ip
    assert [v.string_value for v in ca["otelpeers.dns.cname_chain"].values] == CHAIN
    assert ca["otelpeers.dns.match"] == "same_process"
    assert ca["otelpeers.flow.bytes_received"] > 1_000_000  # body + HTTP headers
    assert sa["otelpeers.flow.bytes_sent"] == ca["otelpeers.flow.bytes_received"]
    assert sa["client.address"] == ca["network.local.address"]
    # The connection links to the DNS span whose answer named its peer.
    (link,) = cspan.links
    dns = [s for _, s in spans if s.span_id == link.span_id and s.trace_id == link.trace_id]
    assert len(dns) == 1 and dns[0].name == "dns query"
    da = span_attrs(dns[0])
    assert da["dns.question.name"] == "www.otp.test" and da["dns.question.type"] == "A"
    assert ns.ns_ip in [v.string_value for v in da["dns.answers"].values]
    names = [v.string_value for v in da["otelpeers.dns.cname_chain"].values]
    assert names == CHAIN

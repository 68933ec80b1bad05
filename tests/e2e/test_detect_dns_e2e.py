"""dns_tunnel end to end: the agent as a subprocess, a tunnel client and ordinary lookups
through dnsmasq in a test namespace, OTLP through a real collector (rotel) to a receiver in
this test.

Asserted on what arrives: the tunnel's OTLP log record (event_name otelpeers.detection,
severity ERROR for high, body = the summary, security_rule.* and otelpeers.detection.*
attributes, trace and span id of the DNS span of the lookup that completed the evidence,
resource = the querying process), the same detection as a span event on that DNS span, and
nothing for the lookups of dig and curl.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from agent_proc import AgentProcess
from otlp_sink import OtlpSink, span_attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernel"))
from harness import DnsHost, with_resolver  # noqa: E402
from test_detect_dns import PEERS, threat_dns  # noqa: E402

pytestmark = [pytest.mark.kernel, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
EVENT = "otelpeers.detection"
EVIDENCE = "otelpeers.detection.evidence."


def _records(sink: OtlpSink, rule: str) -> list:
    return [(res, lr) for res, lr in sink.logs()
            if span_attrs(lr).get("security_rule.name") == rule]


def _start_agent(tmp_path: Path, endpoint: str) -> AgentProcess:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"detect:\n  state_dir: {tmp_path / 'state'}\n"
                   f"export:\n  schedule_delay_s: 0.2\n  otlp:\n    endpoint: {endpoint}\n")
    return AgentProcess(tmp_path, cfg.read_text())


def test_dns_tunnel_log_record_and_span_event_reach_the_collector(tmp_path: Path, rotel,
                                                                  sink: OtlpSink) -> None:
    agent = _start_agent(tmp_path, rotel.grpc_endpoint)
    try:
        with threat_dns(tmp_path) as ns:
            conf = tmp_path / "resolv.conf"
            conf.write_text(f"nameserver {ns.ns_ip}\noptions timeout:2 attempts:1\n")
            controls = []
            for name, qtype in (("www.otp.test", "A"), ("nope.otp.test", "A"),
                                ("www.otp.test", "TXT")):
                p = subprocess.Popen(["dig", "+tries=1", "+time=5", f"@{ns.ns_ip}", name,
                                      qtype], stdout=subprocess.PIPE)
                p.communicate(timeout=30)
                controls.append(p.pid)
            curl = subprocess.Popen(with_resolver(DnsHost(ns, conf), "curl", "-s",
                                                  "--max-time", "5", "http://www.otp.test:9/"),
                                    stdout=subprocess.PIPE)
            curl.communicate(timeout=60)
            controls.append(curl.pid)
            tun = subprocess.Popen([PYTHON, PEERS, "tunnel", ns.ns_ip, "80"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            out, err = tun.communicate(timeout=120)
            assert tun.returncode == 0 and out.split() == ["DONE", "80"], err
            got = sink.wait_for(lambda: _records(sink, "dns_tunnel"), bool)
            assert got, f"no dns_tunnel log record; {len(sink.logs())} records arrived"
            span_id = got[0][1].span_id

            def dns_span(spans: list) -> list:
                return [(r, s) for r, s in spans
                        if s.span_id == span_id and any(e.name == EVENT for e in s.events)]

            spans = sink.wait_for(sink.spans, lambda sp: bool(dns_span(sp)))
    finally:
        rc, _, agent_err = agent.stop()
    assert rc == 0, agent_err

    ((res, lr),) = got
    a = span_attrs(lr)
    # the record: event name, severity, body, rule metadata, detection attributes
    assert lr.event_name == EVENT and lr.severity_number == 17 and lr.severity_text == "HIGH"
    body = lr.body.string_value
    assert "tunnel-test.net" in body and "DNS tunnel" in body
    assert a["security_rule.name"] == "dns_tunnel"
    assert a["security_rule.uuid"] == "68739608-c86e-469f-8f03-91802c1ffe98"
    assert a["security_rule.category"] == "command_and_control"
    assert a["security_rule.ruleset"] == "otelpeers" and a["security_rule.version"]
    assert a["security_rule.reference"] == "https://attack.mitre.org/techniques/T1071/004/"
    assert a["security_rule.description"].startswith("DNS used as a data channel")
    assert len(a["otelpeers.detection.id"]) == 24
    assert 0.5 <= a["otelpeers.detection.score"] <= 1.0
    assert a["otelpeers.detection.severity"] == "high"
    assert a["otelpeers.detection.summary"] == body
    assert a["server.address"] == "tunnel-test.net"
    assert a[EVIDENCE + "domain"] == "tunnel-test.net" and a[EVIDENCE + "alphabet"] == "base32"
    assert a[EVIDENCE + "evidence_bits"] >= 16000 and a[EVIDENCE + "answer_bits"] > 0
    samples = [v.string_value for v in a[EVIDENCE + "label_samples"].values]
    assert len(samples) == 3 and all(len(x) == 50 for x in samples)
    # resource = the querying process
    assert res["process.pid"] == tun.pid
    assert res["process.executable.name"].startswith("python")
    # trace/span id = the DNS span of the client's lookup, which carries the span event
    assert len(lr.trace_id) == 16 and any(lr.trace_id) and len(lr.span_id) == 8
    ((sres, span),) = dns_span(spans)
    assert (span.trace_id, span.span_id) == (lr.trace_id, lr.span_id)
    sa = span_attrs(span)
    assert span.name == "dns query" and sa["dns.question.type"] == "TXT"
    assert sa["dns.question.name"].endswith(".tunnel-test.net")
    assert sres["process.pid"] == tun.pid
    (event,) = [e for e in span.events if e.name == EVENT]
    ea = span_attrs(event)
    assert ea["security_rule.name"] == "dns_tunnel"
    assert ea["otelpeers.detection.id"] == a["otelpeers.detection.id"]
    assert ea[EVIDENCE + "domain"] == "tunnel-test.net"
    # dig's and curl's ordinary lookups: no detection of any rule
    assert not [r for r, _ in sink.logs() if r.get("process.pid") in controls]


def test_dga_log_record_and_span_event_reach_the_collector(tmp_path: Path, rotel,
                                                         sink: OtlpSink) -> None:
    agent = _start_agent(tmp_path, rotel.grpc_endpoint)
    try:
        with threat_dns(tmp_path) as ns:
            dig = subprocess.Popen(["dig", "+tries=1", "+time=5", f"@{ns.ns_ip}",
                                    "www.otp.test", "A"], stdout=subprocess.PIPE)
            dig.communicate(timeout=30)
            hunter = subprocess.Popen([PYTHON, PEERS, "dga", ns.ns_ip, "25"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            out, err = hunter.communicate(timeout=120)
            assert hunter.returncode == 0 and out.split() == ["DONE", "25"], err
            got = sink.wait_for(lambda: _records(sink, "dga"), bool)
            assert got, f"no dga log record; {len(sink.logs())} records arrived"
            span_id = got[0][1].span_id
            spans = sink.wait_for(sink.spans, lambda sp: any(
                s.span_id == span_id and any(e.name == EVENT for e in s.events)
                for _, s in sp))
    finally:
        rc, _, agent_err = agent.stop()
    assert rc == 0, agent_err
    ((res, lr),) = got
    a = span_attrs(lr)
    assert lr.event_name == EVENT and lr.severity_number == 17 and lr.severity_text == "HIGH"
    assert a["security_rule.name"] == "dga" and a["security_rule.category"] == "command_and_control"
    assert a["security_rule.uuid"] == "462de7d2-329a-4ba4-b79b-8856ff35713f"
    assert a["security_rule.reference"] == "https://attack.mitre.org/techniques/T1568/002/"
    assert a[EVIDENCE + "nxdomain_registered_domains"] >= 8
    names = [v.string_value for v in a[EVIDENCE + "names"].values]
    assert names and all(n.endswith((".biz", ".xyz", ".top")) for n in names)
    assert res["process.pid"] == hunter.pid
    assert res["process.executable.name"].startswith("python")
    (span,) = [s for _, s in spans if s.span_id == span_id]
    assert span.trace_id == lr.trace_id and span.name == "dns query"
    assert span_attrs(span)["dns.response_code"] == "NXDOMAIN"
    (event,) = [e for e in span.events if e.name == EVENT]
    assert span_attrs(event)["otelpeers.detection.id"] == a["otelpeers.detection.id"]
    assert not [r for r, _ in sink.logs() if r.get("process.pid") == dig.pid]

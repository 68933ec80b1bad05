"""port_scan end to end: the agent as a subprocess, nmap -sT against a namespace host, OTLP
through a real collector (rotel) to a receiver in this test.

Asserted on what arrives: the log record (event otelpeers.detection, severity WARN for
medium, body = the summary, security_rule.* attributes, the evidence, resource = the nmap
process, trace and span id of the probe's connection span) and the span event on that
span; a benign control (curl fetching from a namespace http.server a few times) yields no
record at all.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_proc import AgentProcess
from otlp_sink import OtlpSink, span_attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernel"))
from harness import netns  # noqa: E402

pytestmark = [pytest.mark.kernel, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
EVENT = "otelpeers.detection"
EVIDENCE = "otelpeers.detection.evidence."
PORT_SCAN_UUID = "eff92ce7-c408-45a9-9835-b8d5639bcb75"


def _start_agent(tmp_path: Path, endpoint: str) -> AgentProcess:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"detect:\n  state_dir: {tmp_path / 'state'}\n"
                   f"export:\n  schedule_delay_s: 0.2\n  otlp:\n    endpoint: {endpoint}\n")
    return AgentProcess(tmp_path, cfg.read_text())


def _stop_agent(agent: AgentProcess) -> None:
    rc, _, err = agent.stop()
    assert rc == 0, err


def _records(sink: OtlpSink, pid: int, rule: str | None = None) -> list:
    return [(res, lr) for res, lr in sink.logs() if res.get("process.pid") == pid
            and (rule is None or span_attrs(lr).get("security_rule.name") == rule)]


def test_nmap_connect_scan_reaches_the_collector(tmp_path: Path, rotel, sink: OtlpSink) -> None:
    agent = _start_agent(tmp_path, rotel.grpc_endpoint)
    try:
        with netns() as ns:
            web = subprocess.Popen(ns.cmd(PYTHON, "-u", "-m", "http.server", "--bind",
                                          ns.ns_ip, "0"), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
            try:
                assert web.stdout is not None
                m = re.search(r" port (\d+)", web.stdout.readline())
                assert m, "http.server did not start"
                url = f"http://{ns.ns_ip}:{m.group(1)}/"
                curls = []
                for pause in (0.4, 1.3, 0.2):  # the benign control
                    c = subprocess.Popen(["curl", "-s", "-o", "/dev/null", url])
                    assert c.wait(30) == 0
                    curls.append(c.pid)
                    time.sleep(pause)
                nmap = subprocess.Popen(["nmap", "-sT", "-Pn", "-n", "--max-retries", "0",
                                         "-p", "1-200", ns.ns_ip], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
                assert nmap.wait(120) == 0
                got = sink.wait_for(lambda: _records(sink, nmap.pid, "port_scan"), bool)
                assert got, f"no port_scan log record; logs: {len(sink.logs())}"

                def with_event(spans: list) -> list:
                    return [(r, s) for r, s in spans if r.get("process.pid") == nmap.pid
                            and any(e.name == EVENT for e in s.events)]

                spans = sink.wait_for(sink.spans, lambda sp: bool(with_event(sp)))
            finally:
                web.kill()
                web.wait()
    finally:
        _stop_agent(agent)

    res, lr = got[0]
    a = span_attrs(lr)
    assert lr.event_name == EVENT and lr.severity_number == 13 and lr.severity_text == "MEDIUM"
    assert res["process.pid"] == nmap.pid and res["service.name"] == "nmap", res
    assert a["security_rule.uuid"] == PORT_SCAN_UUID and a["security_rule.category"] == "discovery"
    assert a[EVIDENCE + "kind"] == "vertical" and a[EVIDENCE + "refused"] >= 8
    assert a["network.peer.address"] == ns.ns_ip
    assert "nmap" in lr.body.string_value and "vertical" in lr.body.string_value
    assert len(lr.trace_id) == 16 and any(lr.trace_id) and any(lr.span_id)
    # the record points at a probe's connection span, which carries the span event
    ((_, span),) = [(r, s) for r, s in with_event(spans) if s.span_id == lr.span_id]
    (event,) = [e for e in span.events if e.name == EVENT]
    assert span_attrs(event)["security_rule.name"] == "port_scan"
    assert lr.trace_id == span.trace_id and span_attrs(span)["network.peer.address"] == ns.ns_ip
    # the benign control: no record of any rule
    assert not [x for pid in curls for x in _records(sink, pid)]

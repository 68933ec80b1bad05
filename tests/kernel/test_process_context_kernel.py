"""Process context joined to flows: sensitive files before a connection, redaction, trees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from harness import Agent, NetNs, peer

from otelpeers.events import Kind, ProcessEvent
from otelpeers.otel.resources import table_process_attributes

pytestmark = pytest.mark.kernel

CLIENT = """
import socket, sys
open(sys.argv[1], "rb").read()
c = socket.create_connection((sys.argv[2], int(sys.argv[3])))
c.sendall(b"k" * 10)
c.recv(100)
c.close()
"""


def test_sensitive_read_then_connection(agent: Agent, ns: NetNs, tmp_path: Path) -> None:
    key = tmp_path / "id_rsa"
    key.write_text("not really a key\n")
    server = peer("tcp-server", ns.ns_ip, "10", "10", ns=ns)
    port = server.ready()
    secret = "hunter2-SuperSecret"
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(key), ns.ns_ip, str(port),
                               f"--password={secret}"], stderr=subprocess.PIPE)
    assert client.wait(30) == 0, client.stderr.read()
    server.finish()
    f = agent.wait_flow(lambda r: r.owner is not None and r.owner.tgid == client.pid
                        and r.peer_port == port)
    assert [x.path for x in f.files] == [str(key)]
    assert f.files[0].time_ns <= f.start_ns
    # The process's resource: the command line is redacted, the secret appears nowhere.
    attrs = table_process_attributes(agent.process_table)(f.owner)
    assert secret not in repr(attrs)
    assert "--password=" in str(attrs["process.command_line"])
    assert attrs["process.pid"] == client.pid


def test_exec_fork_exit_events_and_tree(agent: Agent) -> None:
    p = subprocess.run(["sh", "-c", "true; /bin/echo hi"], capture_output=True, text=True)
    assert p.stdout == "hi\n"
    execs = agent.wait_event(lambda e: isinstance(e, ProcessEvent) and e.kind == Kind.EXEC
                             and e.path == "/bin/echo")
    fork = agent.wait_event(lambda e: isinstance(e, ProcessEvent) and e.kind == Kind.FORK
                            and e.child_pid == execs.tgid)
    assert fork.comm == "sh" and fork.ppid != execs.tgid
    agent.wait_event(lambda e: isinstance(e, ProcessEvent) and e.kind == Kind.EXIT
                     and e.tgid == execs.tgid)


def test_ordinary_files_do_not_cross(agent: Agent, tmp_path: Path) -> None:
    plain = tmp_path / "notes.txt"
    plain.write_text("x")
    key = tmp_path / "credentials"
    key.write_text("y")
    subprocess.run(["cat", str(plain), str(key)], capture_output=True, check=True)
    agent.wait_event(lambda e: isinstance(e, ProcessEvent) and e.kind == Kind.FILE_OPEN
                     and e.path == str(key))
    opened = [e.path for e in agent.events
              if isinstance(e, ProcessEvent) and e.kind == Kind.FILE_OPEN]
    assert str(plain) not in opened


def test_process_in_a_docker_style_cgroup(agent: Agent, ns: NetNs) -> None:
    """A container as the kernel sees it: a cgroup named like docker's, under the v2 root."""
    import os
    import secrets

    from otelpeers.kernel.cgroup import find_cgroup2_mount

    root = find_cgroup2_mount()
    assert root
    cid = secrets.token_hex(32)
    parent = Path(root) / f"otp-test-{os.getpid()}"
    scope = parent / f"docker-{cid}.scope"
    scope.mkdir(parents=True)
    server = peer("tcp-server", ns.ns_ip, "5", "5", ns=ns)
    port = server.ready()
    try:
        # Join the cgroup first, then exec the client: the process lives in the "container".
        script = f'echo $$ > {scope}/cgroup.procs && exec "$@"'
        client = subprocess.Popen(
            ["sh", "-c", script, "sh", sys.executable, str(Path(__file__).with_name("peers.py")),
             "tcp-client", ns.ns_ip, str(port), "5", "5"], stdout=subprocess.PIPE)
        f = agent.wait_flow(lambda r: r.owner is not None and r.owner.tgid == client.pid
                            and r.peer_port == port)
        assert f.owner.cgroup_id == os.stat(scope).st_ino  # cgroup id is the directory inode
        attrs = table_process_attributes(agent.process_table)(f.owner)
        assert attrs["container.id"] == cid
        client.wait(30)
        server.finish()
    finally:
        server.kill()
        scope.rmdir()
        parent.rmdir()


def test_opens_of_networked_processes_mode(tmp_path: Path) -> None:
    from dataclasses import replace

    from otelpeers.config import Config

    cfg = Config()
    cfg = replace(cfg, process=replace(cfg.process, file_opens_of_networked_processes=True))
    plain = tmp_path / "notes.txt"
    plain.write_text("x")
    a = Agent(cfg)
    try:
        # Opens the file, then uses the network, then opens it again: only the second counts.
        code = ("import socket, sys; open(sys.argv[1]).read(); "
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                "s.sendto(b'x', ('127.0.0.1', 9)); open(sys.argv[1]).read()")
        p = subprocess.Popen([sys.executable, "-c", code, str(plain)])
        assert p.wait(30) == 0
        ev = a.wait_event(lambda e: isinstance(e, ProcessEvent) and e.kind == Kind.FILE_OPEN
                          and e.path == str(plain) and e.tgid == p.pid)
        assert not ev.sensitive
        a.wait_event(lambda e: isinstance(e, ProcessEvent) and e.kind == Kind.EXIT
                     and e.tgid == p.pid)
        opens = [e for e in a.events if isinstance(e, ProcessEvent)
                 and e.kind == Kind.FILE_OPEN and e.path == str(plain)]
        assert len(opens) == 1
    finally:
        a.stop()

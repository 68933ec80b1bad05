"""reverse_shell through the real Engine, over fake /proc trees (no root, no real processes).

The trees are laid out as the kernel does: PID/stat, exe, fd/N links (socket:[inode],
pipe:[inode], /dev/pts/N, /dev/ptmx), fdinfo/N (tty-index), net/tcp{,6},
task/PID/children; shellprobe reads them through the same code as /proc.
"""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from otelpeers.config import parse_config
from otelpeers.detect.engine import Engine, RuleContext
from otelpeers.detect.model import EvidenceKind, Severity
from otelpeers.detect.rules.reverse_shell import ReverseShell
from otelpeers.detect.shellprobe import classify, parse_addr, parse_table_line
from otelpeers.events import Counters, Direction, Kind, ProcessEvent
from otelpeers.pipeline import Outputs
from otelpeers.testing.fakeproc import FakeProc
from otelpeers.testing.flows import T0, flow, owner

S = 10**9
C2 = "203.0.113.9"


def _hex4(addr: str) -> str:
    return socket.inet_aton(addr)[::-1].hex().upper()


class Tree:
    """A fake procfs with descriptors and per-process socket tables."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fake = FakeProc(root)

    def proc(self, pid: int, comm: str, ppid: int, fds: dict[int, str] | None = None,
             tcp: list[tuple[int, str, int, str, int, int]] = (),
             ptys: dict[int, int] | None = None, children: list[int] = ()) -> None:
        d = self.fake.add(pid, comm=comm, ppid=ppid, argv=(comm,), exe=f"/usr/bin/{comm}")
        (d / "fd").mkdir()
        (d / "fdinfo").mkdir()
        for fd, target in (fds or {}).items():
            os.symlink(target, d / "fd" / str(fd))
        for fd, index in (ptys or {}).items():
            (d / "fdinfo" / str(fd)).write_text(f"pos:\t0\nflags:\t02\ntty-index:\t{index}\n")
        (d / "net").mkdir()
        lines = ["  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
                 "   uid  timeout inode"]
        for i, (inode, laddr, lport, raddr, rport, state) in enumerate(tcp):
            lines.append(f"   {i}: {_hex4(laddr)}:{lport:04X} {_hex4(raddr)}:{rport:04X} "
                         f"{state:02X} 00000000:00000000 00:00000000 00000000     0        0 "
                         f"{inode} 1 0000000000000000 20 4 30 10 -1")
        (d / "net" / "tcp").write_text("\n".join(lines) + "\n")
        (d / "net" / "tcp6").write_text(lines[0] + "\n")
        (d / "task" / str(pid)).mkdir(parents=True)
        (d / "task" / str(pid) / "children").write_text(" ".join(map(str, children)) + " ")


def rule_class(root: Path, now: int = T0) -> type[ReverseShell]:
    class FakeHost(ReverseShell):
        proc_root = str(root)

        def host_now_ns(self) -> int:
            return now

    return FakeHost


def engine(root: Path, yaml: dict | None = None, now: int = T0) -> Engine:
    cfg = parse_config({"detect": {"rules": {"reverse_shell": yaml or {}}}}).detect
    return Engine(cfg, [rule_class(root, now)], ctx=RuleContext(cfg, live=True))


def exec_ev(pid: int, comm: str = "bash", path: str | None = None, t: int = T0
            ) -> ProcessEvent:
    return ProcessEvent(Kind.EXEC, t, pid, pid, 1000, 1000, 1, comm,
                        path=path or f"/usr/bin/{comm}")


def open_flow(fid: str, pid: int, comm: str, peer: str = C2, port: int = 4444,
              local_port: int = 40000, t: int = T0 + S,
              direction: Direction = Direction.OUTBOUND):
    return flow(fid, proc=owner(pid, comm), peer=peer, peer_port=port, local="10.0.0.2",
                local_port=local_port, start_ns=t - S // 2, duration_ns=S // 2, complete=False,
                direction=direction, counters=Counters(payload_out=10, payload_in=10))


ESTABLISHED, LISTEN = 0x01, 0x0A


def test_bash_dev_tcp_socket_on_stdio(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.proc(100, "python3", 1)
    t.proc(200, "bash", 100, fds={0: "socket:[5001]", 1: "socket:[5001]", 2: "socket:[5001]"},
           tcp=[(5001, "10.0.0.2", 40000, C2, 4444, ESTABLISHED)])
    e = engine(tmp_path)
    (d,) = e.evaluate(Outputs(process=[exec_ev(200)]))
    assert d.rule.name == "reverse_shell" and d.severity == Severity.CRITICAL
    assert d.actor.pid == 200 and d.actor.key == "bash" and d.actor.owner.tgid == 200
    assert (d.peer.address, d.peer.port) == (C2, 4444)
    ev = d.evidence
    assert ev["mode"] == "socket_stdio" and ev["holder_pid"] == 200
    assert ev["holder_relation"] == "self" and ev["direction"] == "outbound"
    assert ev["stdio"] == ("socket", "socket", "socket") and d.score >= 0.9
    assert "stdin and stdout" in d.summary and C2 in d.summary
    assert d.evidence_span is None  # no cookie in a fake tree and no flow known yet
    assert e.counters()["reverse_shell.socket_stdio"] == 1


def test_nc_e_names_the_parent_holding_the_socket_and_the_known_flow(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.proc(150, "ncat", 1, fds={0: "/dev/pts/1", 3: "socket:[5002]"},
           tcp=[(5002, "10.0.0.2", 41000, C2, 4444, ESTABLISHED)])
    t.proc(151, "sh", 150, fds={0: "socket:[5002]", 1: "socket:[5002]", 2: "/dev/pts/1"},
           tcp=[(5002, "10.0.0.2", 41000, C2, 4444, ESTABLISHED)])
    e = engine(tmp_path)
    # The agent already knows ncat's connection (announced in an earlier round).
    assert e.evaluate(Outputs(progress=[open_flow("7a", 150, "ncat", local_port=41000)])) == []
    (d,) = e.evaluate(Outputs(process=[exec_ev(151, "sh", "/bin/sh", T0 + 2 * S)]))
    ev = d.evidence
    assert d.actor.pid == 151 and ev["holder_pid"] == 150 and ev["holder"] == "ncat"
    assert ev["holder_relation"] == "parent" and ev["connection_owner_pid"] == 150
    assert d.evidence_span.kind == EvidenceKind.FLOW and d.evidence_span.ident == "7a"
    assert "ncat (pid 150)" in d.summary


def socat_tree(t: Tree) -> None:
    t.proc(299, "bash", 1, fds={0: "/dev/pts/0", 1: "/dev/pts/0"})
    # socat's own socketpairs (Unix: in no TCP/UDP table) come before its connection.
    t.proc(300, "socat", 299, fds={0: "/dev/pts/0", 1: "/dev/pts/0", 3: "socket:[6100]",
                                   4: "socket:[6101]", 5: "socket:[6001]", 6: "/dev/ptmx"},
           ptys={6: 7},
           tcp=[(6001, "10.0.0.2", 42000, C2, 443, ESTABLISHED)])
    t.proc(301, "sh", 300, fds={0: "/dev/pts/7", 1: "/dev/pts/7", 2: "/dev/pts/7"})


def test_socat_pty_relay_found_when_the_connection_shows_up_after_the_exec(
        tmp_path: Path) -> None:
    t = Tree(tmp_path)
    socat_tree(t)
    e = engine(tmp_path)
    # socat forks the shell first and connects afterwards: nothing to see at the exec ...
    assert e.evaluate(Outputs(process=[exec_ev(301, "sh", "/bin/sh")])) == []
    # ... the connection is announced a moment later: examined in that round.
    f = open_flow("8b", 300, "socat", port=443, local_port=42000, t=T0 + 3 * S)
    (d,) = e.evaluate(Outputs(progress=[f]))
    ev = d.evidence
    assert d.actor.pid == 301 and d.actor.key == "sh" and d.time_ns == f.end_ns
    assert ev["mode"] == "terminal_relay" and ev["holder"] == "socat"
    assert ev["holder_pid"] == 300 and ev["holder_relation"] == "parent"
    assert ev["direction"] == "outbound" and ev["ancestry"] == ("socat(300)", "bash(299)")
    assert d.evidence_span.ident == "8b" and (d.peer.address, d.peer.port) == (C2, 443)
    assert "/dev/pts/7" in d.summary and d.score == pytest.approx(0.9)


def test_socat_pty_relay_found_at_the_exec_when_the_connection_is_known(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    socat_tree(t)
    e = engine(tmp_path)
    f = open_flow("8b", 300, "socat", port=443, local_port=42000)
    assert e.evaluate(Outputs(progress=[f])) == []
    (d,) = e.evaluate(Outputs(process=[exec_ev(301, "sh", "/bin/sh", T0 + 2 * S)]))
    assert d.evidence["mode"] == "terminal_relay" and d.evidence_span.ident == "8b"
    assert d.time_ns == T0 + 2 * S


def test_python_pty_spawn_after_connect(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.proc(400, "python3", 1, fds={0: "socket:[7001]", 1: "socket:[7001]",
                                   2: "socket:[7001]", 3: "socket:[7001]", 4: "/dev/ptmx"},
           ptys={4: 9}, tcp=[(7001, "10.0.0.2", 43000, C2, 8443, ESTABLISHED)])
    t.proc(401, "sh", 400, fds={0: "/dev/pts/9", 1: "/dev/pts/9", 2: "/dev/pts/9"})
    e = engine(tmp_path)
    e.evaluate(Outputs(process=[exec_ev(401, "sh", "/bin/sh")]))
    (d,) = e.evaluate(Outputs(progress=[open_flow("9c", 400, "python3", port=8443,
                                                  local_port=43000)]))
    assert d.evidence["holder"] == "python3" and d.evidence["mode"] == "terminal_relay"


def test_mkfifo_pipe_to_a_sibling_nc(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.proc(500, "sh", 1, fds={0: "/dev/pts/3", 1: "/dev/pts/3"}, children=[501, 502, 503])
    t.proc(501, "cat", 500, fds={0: "/tmp/f", 1: "pipe:[800]"})
    t.proc(502, "sh", 500, fds={0: "pipe:[800]", 1: "pipe:[801]", 2: "pipe:[801]"})
    t.proc(503, "nc", 500, fds={0: "pipe:[801]", 1: "/tmp/f", 3: "socket:[9001]"},
           tcp=[(9001, "10.0.0.2", 44000, C2, 4444, ESTABLISHED)])
    e = engine(tmp_path)
    e.evaluate(Outputs(process=[exec_ev(502, "sh", "/bin/sh")]))
    (d,) = e.evaluate(Outputs(progress=[open_flow("a1", 503, "nc", local_port=44000)]))
    ev = d.evidence
    assert ev["mode"] == "pipe_relay" and ev["holder"] == "nc"
    assert ev["holder_relation"] == "sibling" and d.actor.pid == 502


def test_busybox_sh_is_a_shell(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.proc(210, "busybox", 1, fds={0: "socket:[5101]", 1: "socket:[5101]"},
           tcp=[(5101, "10.0.0.2", 40100, C2, 4444, ESTABLISHED)])
    (t.root / "210" / "cmdline").write_bytes(b"busybox\0sh\0-i\0")
    (d,) = engine(tmp_path).evaluate(Outputs(process=[exec_ev(210, "busybox",
                                                               "/bin/busybox")]))
    assert d.evidence["shell"] == "busybox sh"


# ---- what is not a reverse shell ------------------------------------------------------------
def test_terminal_under_sshd_is_not_examined_past_sshd(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    sshd_tcp = [(300, "10.0.0.2", 22, "0.0.0.0", 0, LISTEN),
                (301, "10.0.0.2", 22, "198.51.100.4", 50000, ESTABLISHED)]
    t.proc(600, "sshd", 1, fds={3: "socket:[301]", 4: "socket:[300]", 7: "/dev/ptmx"},
           ptys={7: 2}, tcp=sshd_tcp)
    t.proc(601, "bash", 600, fds={0: "/dev/pts/2", 1: "/dev/pts/2", 2: "/dev/pts/2"})
    e = engine(tmp_path)
    known = open_flow("b1", 600, "sshd", peer="198.51.100.4", port=50000, local_port=22,
                      direction=Direction.INBOUND)
    e.evaluate(Outputs(progress=[known]))
    assert e.evaluate(Outputs(process=[exec_ev(601, "bash", "/bin/bash", T0 + 2 * S)])) == []
    assert e.counters()["reverse_shell.bridge_checks"] == 0  # the walk stopped at sshd
    # Without sshd in the list, the accepted (inbound) connection still clears it.
    e = engine(tmp_path, {"terminal_servers": []})
    e.evaluate(Outputs(progress=[replace(known, direction=Direction.OUTBOUND)]))
    assert e.evaluate(Outputs(process=[exec_ev(601, "bash", "/bin/bash", T0 + 2 * S)])) == []


def test_service_running_shell_commands_is_not_a_relay(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    # A web app: a listener, a client connection, a database connection, pipes to its shell.
    t.proc(700, "python3", 1, fds={3: "socket:[71]", 4: "socket:[72]", 5: "socket:[73]",
                                   6: "pipe:[90]", 7: "pipe:[91]"},
           tcp=[(71, "0.0.0.0", 8000, "0.0.0.0", 0, LISTEN),
                (72, "10.0.0.2", 8000, "198.51.100.7", 50001, ESTABLISHED),
                (73, "10.0.0.2", 45000, "10.0.0.9", 5432, ESTABLISHED)])
    t.proc(701, "sh", 700, fds={0: "pipe:[90]", 1: "pipe:[91]", 2: "pipe:[91]"})
    # A worker: no listener but two outbound connections (broker, an API).
    t.proc(710, "celery", 1, fds={3: "socket:[81]", 4: "socket:[82]", 6: "pipe:[92]"},
           tcp=[(81, "10.0.0.2", 45001, "10.0.0.8", 6379, ESTABLISHED),
                (82, "10.0.0.2", 45002, C2, 443, ESTABLISHED)])
    t.proc(711, "sh", 710, fds={0: "/dev/null", 1: "pipe:[92]"})
    e = engine(tmp_path)
    e.evaluate(Outputs(progress=[open_flow("c1", 700, "python3", "10.0.0.9", 5432, 45000),
                                 open_flow("c2", 710, "celery", "10.0.0.8", 6379, 45001)]))
    assert e.evaluate(Outputs(process=[exec_ev(701, "sh", "/bin/sh", T0 + 2 * S),
                                       exec_ev(711, "sh", "/bin/sh", T0 + 2 * S)])) == []
    c = e.counters()
    assert c["reverse_shell.bridge_checks"] == 2 and c["reverse_shell.not_relay"] == 2


def test_unix_socket_stdio_and_plain_files_are_not_network(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.proc(800, "systemd", 1)
    # stdout to journald (a Unix socket: not in the TCP/UDP tables), stdin /dev/null.
    t.proc(801, "sh", 800, fds={0: "/dev/null", 1: "socket:[4242]", 2: "socket:[4242]"})
    assert engine(tmp_path).evaluate(Outputs(process=[exec_ev(801, "sh", "/bin/sh")])) == []


def test_allowed_peer_and_actor(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.proc(200, "bash", 1, fds={0: "socket:[5001]", 1: "socket:[5001]"},
           tcp=[(5001, "10.0.0.2", 40000, C2, 4444, ESTABLISHED)])
    e = engine(tmp_path, {"allow": {"peer_cidrs": ["203.0.113.0/24"]}})
    assert e.evaluate(Outputs(process=[exec_ev(200)])) == []
    assert e.counters()["reverse_shell.allowed"] == 1
    e = engine(tmp_path, {"allow": {"executables": ["bash"]}})
    assert e.evaluate(Outputs(process=[exec_ev(200)])) == []


def test_bind_shell_is_high_or_off(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.proc(200, "bash", 1, fds={0: "socket:[5001]", 1: "socket:[5001]"},
           tcp=[(5000, "0.0.0.0", 4444, "0.0.0.0", 0, LISTEN),
                (5001, "10.0.0.2", 4444, C2, 50000, ESTABLISHED)])
    (d,) = engine(tmp_path).evaluate(Outputs(process=[exec_ev(200)]))
    assert d.evidence["direction"] == "inbound" and d.severity == Severity.HIGH
    assert engine(tmp_path, {"bind_shells": False}).evaluate(
        Outputs(process=[exec_ev(200)])) == []


def test_other_programs_cost_no_proc_reads(tmp_path: Path) -> None:
    e = engine(tmp_path)
    evs = [exec_ev(900 + i, c, f"/usr/bin/{c}") for i, c in enumerate(["curl", "python3",
                                                                     "bashful", "ssh"])]
    assert e.evaluate(Outputs(process=evs)) == []
    c = e.counters()
    assert c["reverse_shell.proc_reads"] == 0 and c["reverse_shell.proc_readlinks"] == 0


def test_recorded_exec_is_not_examined_and_a_vanished_shell_is_counted(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.proc(200, "bash", 1, fds={0: "socket:[5001]"},
           tcp=[(5001, "10.0.0.2", 40000, C2, 4444, ESTABLISHED)])
    e = engine(tmp_path, now=T0 + 3600 * S)  # replaying an hour-old recording
    assert e.evaluate(Outputs(process=[exec_ev(200)])) == []
    assert e.counters()["reverse_shell.not_live"] == 1
    assert e.counters()["reverse_shell.proc_reads"] == 0
    e = engine(tmp_path)
    assert e.evaluate(Outputs(process=[exec_ev(200, "dash", "/bin/dash")])) == []  # not 200's comm
    assert e.evaluate(Outputs(process=[exec_ev(12345)])) == []  # no such process
    assert e.counters()["reverse_shell.vanished"] == 2


def test_late_connect_inside_a_running_shell(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.proc(220, "bash", 1, fds={0: "/dev/pts/4", 1: "/dev/pts/4"})
    e = engine(tmp_path)
    assert e.evaluate(Outputs(process=[exec_ev(220)])) == []
    # exec 0<>/dev/tcp/... 1>&0 inside the shell: its own connection shows up later.
    t.proc(220, "bash", 1, fds={0: "socket:[5301]", 1: "socket:[5301]"},
           tcp=[(5301, "10.0.0.2", 46000, C2, 4444, ESTABLISHED)])
    (d,) = e.evaluate(Outputs(progress=[open_flow("d1", 220, "bash", local_port=46000,
                                                  t=T0 + 60 * S)]))
    assert d.evidence["mode"] == "socket_stdio" and d.evidence_span.ident == "d1"


def test_rate_limit_counts_what_it_skips(tmp_path: Path) -> None:
    e = engine(tmp_path, {"max_inspections_per_s": 5})
    e.evaluate(Outputs(process=[exec_ev(20000 + i) for i in range(50)]))
    c = e.counters()
    assert c["reverse_shell.shell_execs"] == 50
    assert c["reverse_shell.rate_limited"] == 45 and c["reverse_shell.vanished"] == 5


def test_state_stays_bounded_under_adversarial_input(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    for i in range(60):
        t.proc(1000 + i, "sh", 1, fds={0: "pipe:[1]", 1: "pipe:[2]"})
    e = engine(tmp_path, {"max_shells": 10, "max_inspections_per_s": 1e9})
    rule = e.rules[0][0]
    evs = [exec_ev(1000 + i, "sh", "/bin/sh", T0 + i) for i in range(60)]
    e.evaluate(Outputs(process=evs))
    # 50 000 open connections of distinct processes (the index of open flows).
    for b in range(5):
        e.evaluate(Outputs(progress=[open_flow(f"{b:x}{i:05x}", 100_000 + b * 10_000 + i, "x",
                                               local_port=1 + i % 60000)
                                     for i in range(10_000)]))
    assert len(rule._shells) <= 10 and len(rule._watch) <= 40
    assert len(rule._open) <= rule._open.maxsize
    c = e.counters()
    assert c["reverse_shell.shells.state_evicted"] == 50
    assert c["reverse_shell.open_flows.state_evicted"] > 0


# ---- the probe's parsers -----------------------------------------------------------------------
def test_probe_parsers() -> None:
    assert classify(0, "socket:[123]").ident == 123 and classify(1, "pipe:[9]").kind == "pipe"
    assert classify(2, "/dev/pts/12").ident == 12 and classify(3, "/dev/ptmx").kind == "ptmx"
    assert classify(4, "anon_inode:[eventfd]").kind == "other"
    assert classify(5, "/dev/tty1").kind == "tty" and classify(6, "/dev/null").kind == "null"
    assert parse_addr("0100007F", socket.AF_INET) == "127.0.0.1"
    v6 = "0000000000000000FFFF00000100007F"  # ::ffff:127.0.0.1
    assert parse_addr(v6, socket.AF_INET6) == "127.0.0.1"
    assert parse_addr("00000000000000000000000001000000", socket.AF_INET6) == "::1"
    line = ("   0: 0200000A:9C40 097100CB:115C 01 00000000:00000000 00:00000000 00000000"
            "     0        0 5001 1 0000000000000000 20 4 30 10 -1")
    assert parse_table_line(line, socket.AF_INET) == (5001, "10.0.0.2", 40000, C2, 4444, 1)
    assert parse_table_line("  sl  local_address rem_address", socket.AF_INET) is None
    assert parse_table_line("0: zz:zz yy:yy 01 a b c d e f", socket.AF_INET) is None


def test_replays_never_look_at_this_hosts_proc(tmp_path: Path) -> None:
    """A recording or a log replayed elsewhere: /proc is not the recorded host's."""
    cfg = parse_config({}).detect
    e = Engine(cfg, [rule_class(tmp_path)])  # not live
    out = Outputs(process=[exec_ev(4321)])
    assert e.evaluate(out) == []
    assert e.counters()["reverse_shell.not_live"] == 1

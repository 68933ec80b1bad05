"""Quality of the exfiltration rule on generated host-days, next to two naive rules.

    python -m bench.detect.eval_exfiltration [--host-days 120] [--seed 7] [--split heldout]
        [--debug] [--out bench/results/detect_exfiltration.json]

Zeek logs carry no file access, so this rule is judged on generated otelpeers *recordings*
(process and socket events, the format `otelpeers record` writes): one recording per host-day,
replayed through `otelpeers detect`'s own path for recordings (build_agent without the
host's /proc, the recording source, the event clock), a fresh agent per host-day. Scored
with bench.detect.truth: recall per incident, false alerts per 1,000 benign (actor, peer)
pairs, where an actor is "host/executable".

A host-day: background processes (services and user shells' children) uploading and
downloading to a few hundred peers, plus benign look-alikes (programs reading their own
credentials, then sending), plus at most one exfiltration. Families are split:

- dev (looked at while choosing the defaults): ssh/scp sessions, git over ssh, aws s3 cp,
  sudo then an upload, a browser call, a script's small API calls after reading
  credentials; incidents: curl posting a browser cookie DB, tar | nc of keys and history,
  python posting a wallet, a chunked upload;
- heldout (never looked at while tuning): kubectl, docker push, git over https, python with
  .netrc, a user who read credentials and uploads ten minutes later, a Kubernetes
  controller with its token, a nightly restic backup of /etc and /root; incidents: scp of
  /etc/shadow (read by scp, sent by its ssh child), a slow upload on one long connection
  (fires from live counters before it ends), rclone-like upload of kube PKI keys, a
  delayed (4 min) upload of browser logins, and single small keys (below min_bytes: missed
  by design, reported apart).

Baselines on the same events: "read then upload" (any sensitive open by the sending process,
any program, then >= 64 KiB to one peer within 5 min) and "volume" (>= 1 MB from one
executable to one peer within a clock hour: what a flow-only monitor can do).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.detect.truth import Detection, GroundTruth, Incident, score
from otelpeers.agent import build_agent
from otelpeers.config import Config
from otelpeers.detect.model import Detection as Alert
from otelpeers.detect.settings import AllowConfig
from otelpeers.drive import EventClock, drive
from otelpeers.events import (
    Counters,
    Direction,
    Event,
    Kind,
    Owner,
    ProcessEvent,
    SocketEvent,
    TcpInfo,
)
from otelpeers.recording import RecordingWriter
from otelpeers.sources import RecordingSource
from otelpeers.testing.sinks import CollectSink

NS = 1_000_000_000
DAY = 86_400 * NS
T0 = 1_760_000_000 * NS
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "bench" / "results" / "detect_exfiltration.json"
RULE = "exfiltration"
MIN_BYTES = 65_536

DEV_LOOKALIKES = ("ssh_session", "git_ssh", "aws_s3", "sudo_then_upload", "browser_call",
                  "small_api")
HELDOUT_LOOKALIKES = ("kubectl", "docker_push", "git_https", "python_netrc", "late_user",
                      "k8s_token", "restic_backup")
DEV_INCIDENTS = ("curl_cookies", "tar_nc", "python_wallet", "chunked")
HELDOUT_INCIDENTS = ("scp_shadow", "slow_open", "rclone_pki", "delayed_logins", "small_key")
SMALL = frozenset({"small_key"})  # below min_bytes on purpose


@dataclass
class HostDay:
    """The events of one generated host-day and what they mean."""

    index: int
    rng: random.Random
    start: int
    events: list[Event] = field(default_factory=list)
    next_pid: int = 2000
    next_cookie: int = 1
    incidents: list[Incident] = field(default_factory=list)
    pairs: set[tuple[str, str]] = field(default_factory=set)  # (actor, peer), all traffic
    bad_pairs: set[tuple[str, str]] = field(default_factory=set)
    lookalikes: list[str] = field(default_factory=list)
    # For the baselines: sensitive opens (pid, exe, time) and uploads (pid, exe, peer, t, n)
    reads: list[tuple[int, str, int]] = field(default_factory=list)
    sends: list[tuple[int, str, str, int, int, int]] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"h{self.index}"

    def actor(self, exe: str) -> str:
        return f"{self.host}/{exe[:15]}"

    # ---- processes ---------------------------------------------------------------------
    def spawn(self, parent: int, parent_comm: str, exe: str, t: int) -> int:
        pid = self.next_pid
        self.next_pid += self.rng.randint(1, 7)
        self.events.append(ProcessEvent(Kind.FORK, t, parent, parent, 0, 0, 1,
                                        parent_comm[:15], ppid=parent, child_pid=pid))
        self.events.append(ProcessEvent(Kind.EXEC, t + 1000, pid, pid, 0, 0, 1, exe[:15],
                                        path=f"/usr/bin/{exe}"))
        return pid

    def read(self, pid: int, exe: str, path: str, t: int) -> None:
        self.events.append(ProcessEvent(Kind.FILE_OPEN, t, pid, pid, 0, 0, 1, exe[:15],
                                        path=path, open_flags=0, sensitive=True))
        self.reads.append((pid, exe, t))

    def exit(self, pid: int, exe: str, t: int) -> None:
        self.events.append(ProcessEvent(Kind.EXIT, t, pid, pid, 0, 0, 1, exe[:15]))

    # ---- connections -------------------------------------------------------------------
    def _sock(self, kind: Kind, t: int, cookie: int, pid: int, exe: str, peer: str,
              port: int, lport: int, sent: int, got: int, start: int,
              tcp: TcpInfo | None = None) -> SocketEvent:
        c = Counters(packets_out=sent // 1400 + 3, bytes_out=sent + 200, payload_out=sent,
                     packets_in=got // 1400 + 3, bytes_in=got + 200, payload_in=got)
        return SocketEvent(kind, t, cookie, 1, Owner(pid, pid, 0, 0, 1, exe[:15]),
                           socket.AF_INET, socket.IPPROTO_TCP, socket.SOCK_STREAM,
                           Direction.OUTBOUND, False, 4 if kind == Kind.TCP_CLOSE else 0,
                           7 if kind == Kind.TCP_CLOSE else 1, "10.0.0.5", lport, peer,
                           port, c, tcp, start)

    def connect(self, pid: int, exe: str, peer: str, t: int, sent: int, got: int = 2000,
                dur_s: float = 1.0, port: int = 443, bad: bool = False) -> int:
        """One connection; long ones (> 2 s) are announced and report volume every 5 s, as
        the kernel source does, so the flow table emits progress snapshots."""
        cookie = self.next_cookie
        self.next_cookie += 1
        lport = 30000 + cookie % 30000
        end = t + int(dur_s * NS)
        if dur_s > 2:
            self.events.append(self._sock(Kind.TCP_OPEN, t + NS, cookie, pid, exe, peer, port,
                                          lport, 0, 0, t))
            k = t + 5 * NS
            while k < end:
                frac = (k - t) / (end - t)
                self.events.append(self._sock(Kind.SOCK_STATS, k, cookie, pid, exe, peer,
                                              port, lport, int(sent * frac), int(got * frac),
                                              t))
                k += 5 * NS
        self.events.append(self._sock(Kind.TCP_CLOSE, end, cookie, pid, exe, peer, port,
                                      lport, sent, got, t, TcpInfo(sent, got, 0, 900)))
        self.pairs.add((self.actor(exe), peer))
        if bad:
            self.bad_pairs.add((self.actor(exe), peer))
        self.sends.append((pid, exe, peer, t, end, sent))
        return end


BACKGROUND = ("curl", "wget", "python3", "node", "apt-get", "firefox", "chrome", "rsync",
              "java", "dockerd", "prometheus", "telegraf", "git", "ssh", "pip")


def background(h: HostDay, peers: list[str]) -> None:
    rng = h.rng
    shells = [h.spawn(1, "systemd", "bash", h.start + rng.randrange(DAY // 4)) for _ in range(3)]
    for _ in range(rng.randint(50, 80)):
        exe = rng.choice(BACKGROUND)
        t = h.start + rng.randrange(DAY - 3600 * NS)
        parent = rng.choice([1, *shells])
        pid = h.spawn(parent, "bash" if parent != 1 else "systemd", exe, t)
        for _ in range(rng.randint(1, 8)):
            t += rng.randrange(1, 120) * NS
            sent = int(rng.lognormvariate(7.5, 2.0))  # median ~1.8 KB, tail to many MB
            h.connect(pid, exe, rng.choice(peers), t, sent, int(rng.lognormvariate(9, 2)),
                      dur_s=rng.choice((0.2, 1.0, 3.0, 30.0)))
        h.exit(pid, exe, t + 2 * NS)


# ---- look-alikes: programs reading their own credentials, then sending --------------------
def lookalike(h: HostDay, family: str, shell: int, peers: list[str]) -> None:
    rng = h.rng
    t = h.start + rng.randrange(DAY - 2 * 3600 * NS)
    h.lookalikes.append(family)
    peer = rng.choice(peers)
    if family in ("ssh_session", "git_ssh"):
        top = "scp" if family == "ssh_session" else "git"
        p = h.spawn(shell, "bash", top, t)
        s = h.spawn(p, top, "ssh", t + NS)
        h.read(s, "ssh", "/etc/ssh/ssh_config", t + 2 * NS)
        h.read(s, "ssh", rng.choice(["/root/.ssh/id_ed25519", "/home/u/.ssh/id_rsa"]),
               t + 2 * NS + 5)
        h.connect(s, "ssh", peer, t + 3 * NS, rng.randint(2, 50) * 10**6, dur_s=40, port=22)
    elif family == "aws_s3":
        p = h.spawn(shell, "bash", "aws", t)
        h.read(p, "aws", "/root/.aws/credentials", t + NS)
        h.read(p, "aws", "/root/.aws/config", t + NS + 5)
        for i in range(4):
            h.connect(p, "aws", peer, t + (2 + i) * NS, 75 * 10**6, dur_s=20)
    elif family == "sudo_then_upload":
        p = h.spawn(shell, "bash", "sudo", t)
        h.read(p, "sudo", "/etc/sudoers", t + NS)
        c = h.spawn(p, "sudo", "unix_chkpwd", t + 2 * NS)
        h.read(c, "unix_chkpwd", "/etc/shadow", t + 3 * NS)
        u = h.spawn(shell, "bash", "curl", t + 60 * NS)
        h.connect(u, "curl", peer, t + 61 * NS, 2 * 10**6)
    elif family == "browser_call":
        p = h.spawn(shell, "bash", "firefox", t)
        h.read(p, "firefox", "/home/u/.mozilla/firefox/x.default/cookies.sqlite", t + NS)
        h.read(p, "firefox", "/home/u/.mozilla/firefox/x.default/logins.json", t + NS + 9)
        h.connect(p, "firefox", peer, t + 30 * NS, 80 * 10**6, dur_s=1800)
    elif family == "small_api":
        p = h.spawn(shell, "bash", "python3", t)
        h.read(p, "python3", "/root/.config/gcloud/credentials", t + NS)
        for i in range(5):
            h.connect(p, "python3", peer, t + (2 + i) * NS, 4000)
    elif family == "kubectl":
        p = h.spawn(shell, "bash", "kubectl", t)
        h.read(p, "kubectl", "/root/.kube/config", t + NS)
        h.connect(p, "kubectl", peer, t + 2 * NS, 150_000, port=6443)
    elif family == "docker_push":
        p = h.spawn(shell, "bash", "docker", t)
        h.read(p, "docker", "/root/.docker/config.json", t + NS)
        h.connect(p, "docker", peer, t + 2 * NS, 400 * 10**6, dur_s=120)
    elif family == "git_https":
        p = h.spawn(shell, "bash", "git", t)
        r = h.spawn(p, "git", "git-remote-https", t + NS)
        h.read(r, "git-remote-https", "/root/.git-credentials", t + 2 * NS)
        h.connect(r, "git-remote-https", peer, t + 3 * NS, 5 * 10**6, dur_s=10)
    elif family == "python_netrc":
        p = h.spawn(shell, "bash", "python3", t)
        h.read(p, "python3", "/root/.netrc", t + NS)
        h.connect(p, "python3", peer, t + 2 * NS, 10**6)
    elif family == "late_user":
        c = h.spawn(shell, "bash", "cat", t)
        h.read(c, "cat", "/root/.aws/credentials", t + NS)
        h.exit(c, "cat", t + 2 * NS)
        u = h.spawn(shell, "bash", "curl", t + 600 * NS)
        h.connect(u, "curl", peer, t + 601 * NS, 10 * 10**6, dur_s=10)
    elif family == "k8s_token":
        p = h.spawn(1, "systemd", "manager", t)
        h.read(p, "manager", "/var/run/secrets/kubernetes.io/serviceaccount/token", t + NS)
        h.connect(p, "manager", peer, t + 2 * NS, 200_000, dur_s=600, port=6443)
    elif family == "restic_backup":
        p = h.spawn(1, "systemd", "restic", t)
        h.read(p, "restic", "/etc/shadow", t + NS)
        h.read(p, "restic", "/root/.ssh/authorized_keys", t + 2 * NS)
        h.connect(p, "restic", peer, t + 3 * NS, 10**9, dur_s=900)
    else:
        raise ValueError(family)


# ---- incidents ---------------------------------------------------------------------------------
def incident(h: HostDay, kind: str, shell: int) -> None:
    rng = h.rng
    t = h.start + rng.randrange(DAY - 2 * 3600 * NS)
    evil = f"203.0.{rng.randrange(113, 114)}.{rng.randrange(2, 250)}"
    sender = reader = ""
    start = t
    if kind == "curl_cookies":
        p = h.spawn(shell, "bash", "curl", t)
        h.read(p, "curl", "/home/u/.config/google-chrome/Default/Cookies", t + NS)
        end = h.connect(p, "curl", evil, t + NS + 10**8, rng.randint(1, 20) * 10**6,
                        dur_s=3, bad=True)
        sender = "curl"
    elif kind == "tar_nc":
        tar = h.spawn(shell, "bash", "tar", t)
        nc = h.spawn(shell, "bash", "nc", t + 10**6)
        for i, path in enumerate(("/root/.ssh/id_rsa", "/root/.aws/credentials",
                                  "/root/.bash_history")):
            h.read(tar, "tar", path, t + NS + i * 10**7)
        end = h.connect(nc, "nc", evil, t + NS // 2, rng.randint(100, 900) * 1000, dur_s=4,
                        port=4444, bad=True)
        sender = "nc"
    elif kind == "python_wallet":
        p = h.spawn(shell, "bash", "python3", t)
        h.read(p, "python3", "/home/u/.bitcoin/wallet.dat", t + NS)
        end = h.connect(p, "python3", evil, t + 5 * NS, rng.randint(100, 5000) * 1000,
                        bad=True)
        sender = "python3"
    elif kind == "chunked":
        p = h.spawn(shell, "bash", "curl", t)
        h.read(p, "curl", "/root/.ssh/id_ed25519", t + NS)
        h.read(p, "curl", "/root/.bash_history", t + NS + 5)
        end = t
        for i in range(10):
            end = h.connect(p, "curl", evil, t + (2 + 3 * i) * NS, 12_000, bad=True)
        sender = "curl"
    elif kind == "scp_shadow":
        scp = h.spawn(shell, "bash", "scp", t)
        ssh = h.spawn(scp, "scp", "ssh", t + NS // 2)
        h.read(ssh, "ssh", "/root/.ssh/id_rsa", t + NS)  # its own key: trusted
        h.read(scp, "scp", "/etc/shadow", t + 2 * NS)
        h.read(scp, "scp", "/etc/ssh/ssh_host_ed25519_key", t + 2 * NS + 5)
        end = h.connect(ssh, "ssh", evil, t + 3 * NS, rng.randint(80, 400) * 1000, dur_s=3,
                        port=22, bad=True)
        sender = "ssh"
    elif kind == "slow_open":
        p = h.spawn(shell, "bash", "python3", t)
        h.read(p, "python3", "/root/.bash_history", t + NS)
        end = h.connect(p, "python3", evil, t + 2 * NS, rng.randint(1, 5) * 10**6, dur_s=60,
                        bad=True)
        sender = "python3"
    elif kind == "rclone_pki":
        p = h.spawn(shell, "bash", "rclone", t)
        h.read(p, "rclone", "/root/.kube/config", t + NS)
        h.read(p, "rclone", "/etc/kubernetes/pki/ca.key", t + NS + 5)
        end = h.connect(p, "rclone", evil, t + rng.randint(2, 200) * NS, 150_000, bad=True)
        sender = "rclone"
    elif kind == "delayed_logins":
        p = h.spawn(shell, "bash", "perl", t)
        h.read(p, "perl", "/home/u/.mozilla/firefox/x.default/logins.json", t + NS)
        h.read(p, "perl", "/home/u/.mozilla/firefox/x.default/key4.db", t + NS + 5)
        end = h.connect(p, "perl", evil, t + 240 * NS, 2 * 10**6, dur_s=2, bad=True)
        sender = "perl"
    elif kind == "small_key":
        p = h.spawn(shell, "bash", "curl", t)
        h.read(p, "curl", "/root/.ssh/id_rsa", t + NS)
        end = h.connect(p, "curl", evil, t + 2 * NS, 3300, bad=True)
        sender = "curl"
    else:
        raise ValueError(kind)
    reader = reader or sender
    h.incidents.append(Incident(
        id=f"{h.host}-{kind}", rule=RULE, actor=h.actor(sender), peers=(evil,), per_peer=True,
        start_ns=start, end_ns=end, note=kind, params={"kind": kind}))


def host_day(index: int, seed: int, split: str, p_incident: float) -> HostDay:
    rng = random.Random(seed * 1_000_003 + index)
    h = HostDay(index, rng, T0 + index * DAY)
    peers = [f"{rng.choice((34, 52, 104, 142, 151, 185))}.{rng.randrange(256)}."
             f"{rng.randrange(256)}.{rng.randrange(1, 255)}" for _ in range(rng.randint(150, 300))]
    background(h, peers)
    shell = h.spawn(1, "systemd", "bash", h.start + 1000)
    families = DEV_LOOKALIKES if split == "dev" else HELDOUT_LOOKALIKES
    for fam in rng.sample(families, rng.randint(2, min(5, len(families)))):
        # Each look-alike in its own login shell: sessions do not share parents.
        lookalike(h, fam, h.spawn(1, "sshd", "bash", h.start + 2000), peers)
    if rng.random() < p_incident:
        kinds = DEV_INCIDENTS if split == "dev" else HELDOUT_INCIDENTS
        incident(h, rng.choice(kinds), shell)
    h.events.sort(key=lambda e: e.time_ns)
    return h


# ---- running the rule through `otelpeers detect`'s path for recordings -------------------------


def config(allow_executables: tuple[str, ...] = ()) -> Config:
    base = Config()
    rules = base.detect.rules
    # Only this rule: the others are judged elsewhere; graph and export off.
    off = {f: replace(getattr(rules, f), enabled=False) for f in vars(rules) if f != RULE}
    ex = replace(rules.exfiltration, allow=AllowConfig(executables=allow_executables))
    return replace(base, graph=replace(base.graph, enabled=False),
                   detect=replace(base.detect, rules=replace(rules, **off, exfiltration=ex)))


def run_rule(h: HostDay, cfg: Config, workdir: Path) -> list[Alert]:
    path = workdir / f"{h.host}.jsonl"
    w = RecordingWriter(path)
    for ev in h.events:
        w.write(ev)
    w.close()
    sink = CollectSink()
    agent = build_agent(cfg, live_host=False, export=False, extra_sinks=[sink])
    try:
        drive(RecordingSource(path), agent.pipeline, EventClock())
    finally:
        agent.close()
    path.unlink()
    return [a for a in sink.detections if a.rule.name == RULE]


def as_truth(h: HostDay, alerts: Iterable[Alert]) -> list[Detection]:
    return [Detection(RULE, h.actor(a.actor.key), a.peer.address if a.peer else None,
                      a.time_ns, a.score) for a in alerts]


# ---- naive baselines ------------------------------------------------------------------------
def naive_read_upload(h: HostDay) -> list[Detection]:
    out = []
    reads: dict[int, list[int]] = defaultdict(list)
    for pid, _, t in h.reads:
        reads[pid].append(t)
    sent: dict[tuple[int, str], int] = defaultdict(int)
    for pid, exe, peer, t, end, n in sorted(h.sends, key=lambda s: s[4]):
        if any(r <= t and end - r <= 300 * NS for r in reads.get(pid, ())):
            sent[(pid, peer)] += n
            if sent[(pid, peer)] >= MIN_BYTES and sent[(pid, peer)] - n < MIN_BYTES:
                out.append(Detection(RULE, h.actor(exe), peer, end))
    return out


def naive_volume(h: HostDay) -> list[Detection]:
    out = []
    per_hour: dict[tuple[str, str, int], int] = defaultdict(int)
    for _, exe, peer, _t, end, n in sorted(h.sends, key=lambda s: s[4]):
        key = (exe, peer, end // (3600 * NS))
        before = per_hour[key]
        per_hour[key] += n
        if before < 10**6 <= per_hour[key]:
            out.append(Detection(RULE, h.actor(exe), peer, end))
    return out


# ---- evaluation -----------------------------------------------------------------------------
def evaluate(split: str, host_days: int, seed: int, p_incident: float, debug: bool
             ) -> dict[str, Any]:
    days = [host_day(i, seed, split, p_incident) for i in range(host_days)]
    incidents = [i for h in days for i in h.incidents]
    benign = {p for h in days for p in h.pairs - h.bad_pairs}
    truth = GroundTruth(seed=seed, start_ns=T0, end_ns=T0 + host_days * DAY,
                        learning_end_ns=T0, benign_pairs=len(benign),
                        incidents=tuple(incidents))
    big = replace(truth, incidents=tuple(i for i in incidents if i.note not in SMALL))
    small = replace(truth, incidents=tuple(i for i in incidents if i.note in SMALL))
    alerts: list[Detection] = []
    allowed: list[Detection] = []
    families_fired: dict[str, int] = defaultdict(int)
    elapsed = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for h in days:
            t = time.perf_counter()
            got = as_truth(h, run_rule(h, config(), Path(tmp)))
            elapsed += time.perf_counter() - t
            alerts.extend(got)
            if "restic_backup" in h.lookalikes:
                allowed.extend(as_truth(h, run_rule(h, config(("restic",)), Path(tmp))))
            else:
                allowed.extend(got)
            bad = {(i.actor, i.peers[0]) for i in h.incidents}
            for d in got:
                if (d.actor, d.peer) not in bad:
                    exe = d.actor.split("/", 1)[1]
                    families_fired[exe] += 1
    events = sum(len(h.events) for h in days)

    def report(dets: list[Detection], tr: GroundTruth) -> dict[str, Any]:
        r = score(dets, tr, rules=[RULE]).rules[RULE]
        return {"caught": r.caught, "positives": r.positives,
                "recall": None if r.recall is None else round(r.recall, 4),
                "false_alerts": r.false_alerts,
                "false_per_1000_pairs": round(r.false_per_1000, 4)}

    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    rep = score(alerts, truth, rules=[RULE]).rules[RULE]
    missed = {i.id for i in rep.misses}
    for i in incidents:
        kinds[i.note][1] += 1
        kinds[i.note][0] += i.id not in missed
    if debug:
        print(score(alerts, truth, rules=[RULE]).debug(20))
    nr = [d for h in days for d in naive_read_upload(h)]
    nv = [d for h in days for d in naive_volume(h)]
    return {
        "split": split, "host_days": host_days, "seed": seed, "events": events,
        "benign_pairs": len(benign), "incidents": len(incidents),
        "lookalikes": dict(sorted(_count(f for h in days for f in h.lookalikes).items())),
        "exfiltration": report(alerts, big),
        "exfiltration_small_secrets": {k: v for k, v in report(alerts, small).items()
                                       if k in ("caught", "positives", "recall")},
        "exfiltration_all_incidents": report(alerts, truth),
        "exfiltration_with_restic_allowed": report(allowed, big),
        "false_alerts_by_executable": dict(sorted(families_fired.items())),
        "recall_by_incident": {k: f"{c}/{n}" for k, (c, n) in sorted(kinds.items())},
        "naive_read_then_upload": report(nr, big),
        "naive_volume_1mb_per_hour": report(nv, big),
        "replay_events_per_s": round(events / elapsed) if elapsed else None,
    }


def _count(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for x in items:
        out[x] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host-days", type=int, default=120)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--split", choices=("dev", "heldout", "both"), default="both")
    ap.add_argument("--incident-rate", type=float, default=0.5,
                    help="share of host-days with one exfiltration")
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="results JSON ('-': none)")
    args = ap.parse_args(argv)
    splits = ("dev", "heldout") if args.split == "both" else (args.split,)
    results = {s: evaluate(s, args.host_days, args.seed + (0 if s == "dev" else 1000),
                           args.incident_rate, args.debug) for s in splits}
    text = json.dumps(results, indent=1)
    print(text)
    if args.out != "-":
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Seeded Zeek conn.log / dns.log for two days of a small network, with ground truth.

`python -m bench.detect.generate --out DIR --seed N [--format tsv|json] [--gzip]` writes
DIR/conn.log, DIR/dns.log (real Zeek TSV with its headers, or Zeek JSON lines) and
DIR/truth.json (bench.detect.truth). The same seed gives the same bytes.

The network (default Scenario): 200 internal hosts in 10.10.0.0/16: 150 workstations, 40
servers, 4 admin hosts, a crawler and infrastructure (resolver, monitoring collector, backup,
database, file server); external peers are public /24 networks made up from the seed. Day 1
is the learning day of baseline rules; the attacks that need a baseline happen on day 2.

Benign look-alikes (each chosen because a naive rule fires on it):
- NTP: every host polls one of three public servers every 64-1024 s (UDP 123);
- monitoring heartbeats: every host to one collector every 10/30/60 s (TCP 10051);
- mail polling: every workstation to one external IMAP service every 5 minutes;
- daily video calls: a stand-up every morning and other calls, large, long, UDP;
- nightly backups: every server uploads GBs to one backup host at about 02:00;
- admin SSH/RDP/WinRM: admin hosts reach many servers every day, a different set each day;
  one of them runs a configuration push to every Linux server each morning;
- a web crawler: batches of 50 sites in 10 minutes on 443, a few failures, new sites daily;
- browsing: Poisson sessions to Zipf-popular sites (new sites appear on day 2 too), DNS
  lookups first, CDN CNAME chains, occasional uploads of a few MB to cloud storage;
- long-lived connections (chat websockets, database pools, Kubernetes API watches);
- steady random (Poisson) calls of three servers to an external API;
- Kubernetes: the control plane polls every kubelet (TCP 10250) every 2 minutes;
- a package mirror that moves to a new /24 on day 2 for some servers (same DNS name).

Malicious incidents (truth.json lists each with actor, peers, window, parameters):
beacon (periods 1 s - 1 h, jitter 0-50 %, missed beats 0-30 %, TCP and UDP, constant or
varied sizes, failed attempts to dead C2s, one C2 shared by three hosts), port_scan
(vertical, horizontal, SYN-style, slow), lateral_movement (day 2, some slow),
volume_anomaly (day 2, single and chunked, TCP and UDP, never the backup) and novel_peer
(day 2, servers whose peers were stable on day 1 reach a new /24).

Zeek writes a conn.log row when the connection ends: rows here are ordered by end time, so
readers must sort (otelpeers.detect.zeek.iter_events_sorted).
"""

from __future__ import annotations

import argparse
import binascii
import bisect
import datetime as dt
import gzip
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.detect.truth import GroundTruth, Incident

T0 = 1709510400  # 2024-03-04 00:00:00 UTC, a Monday
DAY = 86400
HOUR = 3600
LEARNING_S = DAY

RESOLVER = "10.10.0.53"
COLLECTOR = "10.10.0.10"
BACKUP = "10.10.0.30"
DATABASE = "10.10.0.40"
FILESERVER = "10.10.0.45"
CRAWLER = "10.10.30.5"
INTERNAL = ("10.10.0.0/16",)
ADMIN_PORTS = (22, 135, 445, 3389, 5985, 5986, 2375, 2376, 6443, 10250)

SERVICES = {443: "ssl", 80: "http", 53: "dns", 123: "ntp", 22: "ssh", 993: "ssl",
            3389: "rdp", 445: "smb", 5985: "http", 5986: "ssl", 6443: "ssl",
            10250: "ssl", 2375: "http", 8443: "ssl", 5432: "postgresql"}

# First octets of public unicast space (no RFC 1918, CGN, loopback, link-local,
# documentation or multicast ranges live under these).
_PUBLIC_FIRST = (13, 18, 23, 31, 34, 35, 37, 44, 45, 46, 51, 52, 54, 62, 63, 64, 66, 69, 74,
                 77, 78, 80, 81, 82, 85, 87, 88, 91, 93, 95, 99, 104, 107, 109, 130, 134,
                 136, 139, 141, 142, 145, 146, 151, 152, 157, 162, 167, 176, 178, 185, 188,
                 193, 194, 195, 199, 204, 205, 206, 207, 208, 209, 212, 213, 216, 217)
_SYLLABLES = ("ka", "lo", "mi", "ne", "ra", "to", "vi", "su", "de", "po", "ban", "cor", "fen",
              "gal", "hut", "jin", "kel", "mar", "nor", "pil", "qua", "ros", "sen", "tar",
              "ul", "ven", "wil", "xo", "yam", "zed", "bel", "dor", "esk", "fal", "gri")
_TLDS = ("com", "com", "com", "net", "org", "io", "de", "co.uk", "fr", "info")
_B62 = bytes.maketrans(b"+/", b"xy")  # Zeek uids are base62: no '+' or '/'


@dataclass(frozen=True)
class Scenario:
    seed: int = 1
    workstations: int = 150
    servers: int = 40
    admins: int = 4
    sites: int = 3000
    crawl_sites: int = 1500
    start: int = T0

    def __post_init__(self) -> None:
        if self.workstations < 40 or self.servers < 30 or self.admins < 2:
            raise ValueError("Scenario needs at least 40 workstations, 30 servers and 2 "
                             "admin hosts (the incidents use distinct hosts)")
        if self.workstations > 2000 or self.servers > 240 or self.admins > 200:
            raise ValueError("Scenario: at most 2000 workstations, 240 servers, 200 admins")


@dataclass(frozen=True)
class Site:
    name: str
    addrs: tuple[str, ...]
    cnames: tuple[str, ...]
    net: str  # the /24 (CIDR)


# A conn.log row: (ts, duration, uid, orig_h, orig_p, resp_h, resp_p, proto, service,
# orig_bytes, resp_bytes, conn_state, history, orig_pkts, orig_ip_bytes, resp_pkts,
# resp_ip_bytes, malicious). None is unset.
ConnRow = tuple[Any, ...]
# A dns.log row: (ts, uid, orig_h, orig_p, resp_h, resp_p, proto, trans_id, rtt, query,
# qtype, qtype_name, rcode, rcode_name, RD, RA, answers, TTLs).
DnsRow = tuple[Any, ...]


@dataclass
class Dataset:
    conn: list[ConnRow]
    dns: list[DnsRow]
    truth: GroundTruth


def _rfc_date(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d-%H-%M-%S")


def _net24(addr: str) -> str:
    return addr.rsplit(".", 1)[0] + ".0/24"


def periodic(rng: random.Random, start: float, end: float, period: float, jitter: float = 0.0,
             miss: float = 0.0, wobble: float = 0.0) -> list[float]:
    """Beat times: each gap is period * (1 + U(-jitter, jitter)) + U(-wobble, wobble)
    seconds; each beat is dropped with probability miss. The first beat is at a random
    phase."""
    rand = rng.random
    t = start + rand() * period
    out: list[float] = []
    if not jitter and not miss:  # the common, scheduler-driven case, kept fast
        w2 = 2 * wobble
        while t < end:
            out.append(t)
            t += period + (rand() - 0.5) * w2
        return out
    while t < end:
        if not miss or rand() >= miss:
            out.append(t)
        gap = period * (1 + jitter * (2 * rand() - 1)) + wobble * (2 * rand() - 1)
        t += max(gap, 0.001)
    return out


def poisson(rng: random.Random, start: float, end: float, rate_per_s: float) -> list[float]:
    out: list[float] = []
    t = start + rng.expovariate(rate_per_s)
    while t < end:
        out.append(t)
        t += rng.expovariate(rate_per_s)
    return out


class _Gen:
    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.t0 = float(sc.start)
        self.conn: list[ConnRow] = []
        self.dns: list[DnsRow] = []
        self.incidents: list[Incident] = []
        self._uid_rng = random.Random(f"{sc.seed}:uid")
        self._port_state = random.Random(f"{sc.seed}:ports").getrandbits(31) | 1
        self._txid = random.Random(f"{sc.seed}:txid").getrandbits(16)
        self._dns_rng = random.Random(f"{sc.seed}:dns")
        self._nets_used: set[str] = set()
        self._names_used: set[str] = set()
        self._net_rng = self.rng("nets")
        self.lookalikes: dict[str, Any] = {}
        self._build_hosts()
        self._build_sites()

    # ---- plumbing --------------------------------------------------------------------
    def rng(self, name: str) -> random.Random:
        """An independent stream per component: adding one never shifts the others."""
        return random.Random(f"{self.sc.seed}:{name}")

    def uid(self) -> str:
        raw = self._uid_rng.getrandbits(96).to_bytes(12, "big")
        return "C" + binascii.b2a_base64(raw, newline=False).translate(_B62).decode()

    def port(self) -> int:
        self._port_state = (self._port_state * 1103515245 + 12345) & 0x7FFFFFFF
        return 32768 + (self._port_state >> 8) % 28000

    def at(self, day: int, hour: float) -> float:
        return self.t0 + day * DAY + hour * HOUR

    def fresh_net(self) -> str:
        """An unused public /24 (as 'a.b.c')."""
        r = self._net_rng
        while True:
            prefix = f"{r.choice(_PUBLIC_FIRST)}.{r.randrange(0, 256)}.{r.randrange(0, 256)}"
            if prefix not in self._nets_used:
                self._nets_used.add(prefix)
                return prefix

    def fresh_addrs(self, n: int, rng: random.Random) -> tuple[str, ...]:
        prefix = self.fresh_net()
        hosts = rng.sample(range(1, 255), n)
        return tuple(f"{prefix}.{h}" for h in hosts)

    def word(self, rng: random.Random) -> str:
        return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))

    # ---- rows ------------------------------------------------------------------------
    def tcp(self, ts: float, src: str, dst: str, dport: int, ob: int, rb: int, dur: float,
            state: str = "SF", mal: bool = False, uid: str | None = None) -> str:
        uid = uid or self.uid()
        sport = self.port()
        if state == "SF":
            dout, din = -(-ob // 1448), -(-rb // 1448)
            opk, rpk = 3 + dout + din // 2, 2 + din + dout // 2
            hist = "ShADadFf" if ob and rb else ("ShADFf" if ob else "ShAdFf" if rb else "ShAFf")
            self.conn.append((ts, dur, uid, src, sport, dst, dport, "tcp",
                              SERVICES.get(dport), ob, rb, "SF", hist, opk, ob + 52 * opk,
                              rpk, rb + 52 * rpk, mal))
        elif state == "S0":  # no answer; ob is the number of SYNs sent (1-3)
            syns = max(1, min(ob, 3))
            self.conn.append((ts, (0.0, 1.0, 3.0)[syns - 1] if syns > 1 else None, uid, src,
                              sport, dst, dport, "tcp", None, 0 if syns > 1 else None,
                              0 if syns > 1 else None, "S0", "S", syns, 60 * syns, 0, 0, mal))
        elif state == "REJ":
            self.conn.append((ts, dur, uid, src, sport, dst, dport, "tcp", None, 0, 0, "REJ",
                              "Sr", 1, 60, 1, 40, mal))
        elif state == "RSTO":  # SYN, SYN-ACK, RST from the originator (SYN scan, open port)
            self.conn.append((ts, dur, uid, src, sport, dst, dport, "tcp", None, 0, 0, "RSTO",
                              "ShR", 2, 100, 1, 44, mal))
        else:
            raise ValueError(state)
        return uid

    def udp(self, ts: float, src: str, dst: str, dport: int, ob: int, rb: int, dur: float | None,
            mal: bool = False, sport: int | None = None, uid: str | None = None,
            service: str | None = None) -> str:
        uid = uid or self.uid()
        opk = max(1, -(-ob // 1200))
        rpk = max(1, -(-rb // 1200)) if rb else 0
        state, hist = ("SF", "Dd") if rb else ("S0", "D")
        self.conn.append((ts, dur, uid, src, sport or self.port(), dst, dport, "udp",
                          service or (SERVICES.get(dport) if rb else None), ob, rb, state, hist,
                          opk, ob + 28 * opk, rpk, rb + 28 * rpk, mal))
        return uid

    def lookup(self, ts: float, src: str, name: str, addrs: Iterable[str] = (),
               cnames: Iterable[str] = (), rcode: str = "NOERROR", ttl: int = 300,
               resolver: str = RESOLVER, mal: bool = False) -> None:
        """A DNS query over UDP: its conn.log row and its dns.log row (same uid)."""
        addrs, cnames = tuple(addrs), tuple(cnames)
        answers = cnames + addrs
        rtt = (0.0004 + self._dns_rng.random() * 0.002 if self._dns_rng.random() < 0.7
               else 0.01 + self._dns_rng.random() * 0.08)  # cached, or asked upstream
        qlen = len(name) + 18
        rlen = qlen + sum(len(c) + 14 for c in cnames) + 16 * len(addrs)
        uid = self.uid()
        sport = self.port()
        if rcode == "TIMEOUT":
            self.udp(ts, src, resolver, 53, qlen, 0, None, mal=mal, sport=sport, uid=uid)
        else:
            self.udp(ts, src, resolver, 53, qlen, rlen, rtt, mal=mal, sport=sport, uid=uid,
                     service="dns")
        self._txid = (self._txid * 75 + 74) % 65537 % 65536
        rnum = {"NOERROR": 0, "SERVFAIL": 2, "NXDOMAIN": 3, "REFUSED": 5}.get(rcode)
        self.dns.append((ts, uid, src, sport, resolver, 53, "udp", self._txid,
                         None if rcode == "TIMEOUT" else rtt, name, 1, "A", rnum,
                         None if rcode == "TIMEOUT" else rcode, True,
                         rcode != "TIMEOUT", answers, tuple(float(ttl) for _ in answers)))

    # ---- hosts and peers -------------------------------------------------------------
    def _build_hosts(self) -> None:
        sc, r = self.sc, self.rng("hosts")
        self.ws = [f"10.10.{1 + i // 240}.{10 + i % 240}" for i in range(sc.workstations)]
        self.srv = [f"10.10.10.{10 + i}" for i in range(sc.servers)]
        self.admins = [f"10.10.20.{10 + i}" for i in range(sc.admins)]
        self.infra = [COLLECTOR, RESOLVER, BACKUP, DATABASE, FILESERVER]
        self.windows = [s for i, s in enumerate(self.srv) if i % 4 == 3]
        self.linux = [s for i, s in enumerate(self.srv) if i % 4 != 3]
        self.k8s_control = self.srv[20]
        self.k8s_workers = self.srv[21:26]
        self.app_servers = self.srv[0:8]
        self.api_clients = self.srv[10:13]
        # Who is switched on when: 20 % of workstations stay on overnight.
        self.always_on = set(r.sample(self.ws, len(self.ws) // 5))
        self.on: dict[str, list[tuple[float, float]]] = {}
        self.present: dict[str, list[tuple[float, float]]] = {}  # a user at the keyboard
        for h in self.ws + self.admins:
            days = []
            for d in range(2):
                days.append((self.at(d, r.uniform(7.0, 9.5)), self.at(d, r.uniform(16.5, 19.0))))
            self.present[h] = days
            self.on[h] = [(self.t0, self.t0 + 2 * DAY)] if h in self.always_on else days
        for h in self.srv + self.infra + [CRAWLER]:
            self.on[h] = [(self.t0, self.t0 + 2 * DAY)]
        self.internal_hosts = self.ws + self.srv + self.admins + self.infra + [CRAWLER]

    def is_on(self, host: str, t: float) -> bool:
        return any(s <= t < e for s, e in self.on[host])

    def _site(self, r: random.Random, cdn_nets: list[str], cdn_names: list[str]) -> Site:
        name = f"www.{self.word(r)}.{r.choice(_TLDS)}"
        while name in self._names_used:  # one name, one site
            name = f"www.{self.word(r)}{r.randrange(10, 100)}.{r.choice(_TLDS)}"
        self._names_used.add(name)
        if r.random() < 0.3:
            k = r.randrange(len(cdn_nets))
            prefix = cdn_nets[k]
            cn = (f"{name.split('.', 1)[1].replace('.', '-')}.{cdn_names[k]}",)
        else:
            prefix, cn = self.fresh_net(), ()
        addrs = tuple(f"{prefix}.{h}" for h in r.sample(range(1, 255), r.randint(1, 3)))
        return Site(name, addrs, cn, prefix + ".0/24")

    def _build_sites(self) -> None:
        r = self.rng("sites")
        cdn_nets = [self.fresh_net() for _ in range(15)]
        cdn_names = [f"edge{i}.{self.word(r)}cdn.net" for i in range(15)]
        self.sites = [self._site(r, cdn_nets, cdn_names) for _ in range(self.sc.sites)]
        weights = [1.0 / (rank + 1) ** 1.0 for rank in range(len(self.sites))]
        self.site_cum = list(itertools.accumulate(weights))
        self.crawl = [self._site(r, cdn_nets, cdn_names) for _ in range(self.sc.crawl_sites)]
        self.cloud = self.sites[3:6]  # storage services people upload to
        mk = self.fresh_addrs
        self.ntp = [mk(1, r)[0] for _ in range(3)]
        self.mail = mk(2, r)
        self.sfu = mk(3, r)
        self.chat = mk(2, r)
        self.api = mk(2, r)
        self.mirror_a = mk(4, r)
        self.mirror_b_old = mk(2, r)
        self.mirror_b_new = mk(2, r)

    def pick_site(self, r: random.Random) -> Site:
        x = r.random() * self.site_cum[-1]
        return self.sites[bisect.bisect_right(self.site_cum, x)]

    # ---- benign ----------------------------------------------------------------------
    def benign(self) -> None:
        self.ntp_polls()
        self.heartbeats()
        self.mail_polling()
        self.video_calls()
        self.backups()
        self.admin_sessions()
        self.crawler()
        self.browsing()
        self.long_lived()
        self.api_calls()
        self.kubernetes()
        self.updates()
        self.file_shares()

    def ntp_polls(self) -> None:
        r = self.rng("ntp")
        hosts = self.internal_hosts
        for h in hosts:
            server = r.choice(self.ntp)
            period = r.choices((64, 128, 256, 512, 1024), (5, 5, 10, 20, 60))[0]
            daemon = h in self.srv or h in self.infra  # ntpd sends from port 123
            for s, e in self.on[h]:
                for t in periodic(r, s, e, period, wobble=0.5):
                    self.udp(t, h, server, 123, 48, 48, 0.01 + r.random() * 0.03,
                             sport=123 if daemon else None)
        self.lookalikes["ntp"] = {"servers": list(self.ntp), "port": 123,
                                  "hosts": len(hosts), "periods_s": [64, 1024]}

    def heartbeats(self) -> None:
        r = self.rng("heartbeat")
        fast = set(self.srv[-3:])  # a few critical servers report every 10 or 30 s
        medium = set(self.srv[-9:-3])
        periods: dict[str, int] = {}
        for h in self.internal_hosts:
            if h == COLLECTOR:
                continue
            period = 10 if h in fast else 30 if h in medium else 60
            periods[h] = period
            size = r.randint(180, 420)
            rand, rows, uid, port = r.random, self.conn, self.uid, self.port
            for s, e in self.on[h]:  # rows built inline: this is most of the data
                for t in periodic(r, s, e, period, wobble=0.25):
                    ob, rb = size + int(rand() * 16) - 8, 40 + int(rand() * 50)
                    rows.append((t, 0.002 + rand() * 0.01, uid(), h, port(), COLLECTOR, 10051,
                                 "tcp", None, ob, rb, "SF", "ShADadFf", 4, ob + 208, 3,
                                 rb + 156, False))
        self.lookalikes["heartbeat"] = {"collector": COLLECTOR, "port": 10051,
                                        "hosts": len(periods), "periods_s": [10, 30, 60]}

    def mail_polling(self) -> None:
        r = self.rng("mail")
        for h in self.ws + self.admins:
            server = r.choice(self.mail)
            for s, e in self.on[h]:
                for t in periodic(r, s, e, 300, wobble=2.5):
                    rb = r.randint(400, 1800) if r.random() > 0.1 else r.randint(20_000, 400_000)
                    self.tcp(t, h, server, 993, r.randint(350, 700), rb,
                             0.2 + r.random() * 0.8)
        self.lookalikes["mail"] = {"servers": list(self.mail), "port": 993, "period_s": 300,
                                   "hosts": len(self.ws) + len(self.admins)}

    def video_calls(self) -> None:
        r = self.rng("video")
        callers = r.sample(self.ws, len(self.ws) // 4)
        calls = 0
        for h in callers:
            sfu = r.choice(self.sfu)
            rate = r.uniform(0.9e6, 1.6e6) / 8  # bytes per second up
            for d in range(2):
                meetings = [(self.at(d, 9.5) + r.uniform(-120, 120), r.uniform(12, 20) * 60)]
                if r.random() < 0.5:
                    meetings.append((self.at(d, r.uniform(11, 16)), r.uniform(25, 60) * 60))
                for start, length in meetings:
                    ob = int(length * rate * r.uniform(0.85, 1.15))
                    rb = int(ob * r.uniform(1.2, 2.5))
                    self.udp(start, h, sfu, 8801, ob, rb, length)
                    self.tcp(start - 2, h, sfu, 443, 30_000, 60_000, length + 3)
                    calls += 1
        self.lookalikes["video"] = {"sfu": list(self.sfu), "port": 8801, "callers": len(callers),
                                    "calls": calls}

    def backups(self) -> None:
        r = self.rng("backup")
        sizes = {}
        for h in self.srv:
            base = int(r.lognormvariate(22.3, 0.9))  # median about 5 GB
            sizes[h] = base
            for d in range(2):
                size = int(base * r.uniform(0.85, 1.2))
                dur = size / r.uniform(80e6, 120e6)
                self.tcp(self.at(d, 2.0) + r.uniform(0, 2400), h, BACKUP, 22, size,
                         size // 900, dur)
        self.lookalikes["backup"] = {"host": BACKUP, "port": 22, "hour": 2,
                                     "servers": len(self.srv),
                                     "min_bytes": min(sizes.values())}
        self.backup_size = sizes

    def admin_sessions(self) -> None:
        r = self.rng("admin")
        for i, a in enumerate(self.admins):
            for d in range(2):
                s, e = self.present[a][d]
                targets = r.sample(self.srv, r.randint(len(self.srv) // 3, len(self.srv) * 2 // 3))
                for t in targets:
                    port = 3389 if t in self.windows else 22
                    for _ in range(r.randint(1, 3)):
                        start = r.uniform(s, e - 600)
                        length = r.uniform(60, 3600)
                        self.tcp(start, a, t, port, int(length * r.uniform(30, 300)),
                                 int(length * r.uniform(200, 3000)), length)
                if i == 0:  # configuration push to every Linux server each morning
                    base = self.at(d, 6.0)
                    for t in self.linux:
                        self.tcp(base + r.uniform(0, 120), a, t, 22, r.randint(20_000, 90_000),
                                 r.randint(10_000, 60_000), r.uniform(3, 30))
                if i == 1:  # WinRM health check of every Windows server each morning
                    base = self.at(d, 7.0)
                    for t in self.windows:
                        self.tcp(base + r.uniform(0, 60), a, t, 5985, r.randint(3000, 9000),
                                 r.randint(3000, 20000), r.uniform(1, 5))
        self.lookalikes["admin"] = {"hosts": list(self.admins), "ports": [22, 3389, 5985],
                                    "servers": len(self.srv)}

    def crawler(self) -> None:
        r = self.rng("crawler")
        day_sets = [r.sample(self.crawl, 600)]
        keep = r.sample(day_sets[0], 300)
        first = set(day_sets[0])
        rest = [s for s in self.crawl if s not in first]
        day_sets.append(keep + r.sample(rest, 300))
        failures = 0
        for d, sites in enumerate(day_sets):
            order = list(sites)
            r.shuffle(order)
            for b in range(12):  # a batch of 50 sites every 2 hours, within 10 minutes
                start = self.at(d, b * 2 + r.uniform(0, 0.5))
                for site in order[b * 50:(b + 1) * 50]:
                    t = start + r.uniform(0, 600)
                    if r.random() < 0.02:
                        self.lookup(t, CRAWLER, site.name, rcode="NXDOMAIN")
                        continue
                    self.lookup(t, CRAWLER, site.name, site.addrs, site.cnames)
                    for k in range(r.randint(1, 3)):
                        x = r.random()
                        addr = r.choice(site.addrs)
                        if x < 0.02:
                            self.tcp(t + 0.05 + k, CRAWLER, addr, 443, r.randint(1, 3), 0, 0,
                                     state="S0")
                            failures += 1
                        elif x < 0.03:
                            self.tcp(t + 0.05 + k, CRAWLER, addr, 443, 0, 0, 0.03, state="REJ")
                            failures += 1
                        else:
                            rb = int(r.lognormvariate(11, 1.0))
                            self.tcp(t + 0.05 + k, CRAWLER, addr, 443, r.randint(500, 2000), rb,
                                     0.1 + rb / 5e6)
        self.lookalikes["crawler"] = {"host": CRAWLER, "port": 443, "sites_per_day": 600,
                                      "batch": 50, "batch_s": 600, "failures": failures}

    def browsing(self) -> None:
        r = self.rng("browsing")
        uploads = 0
        for h in self.ws + self.admins:
            rate = r.uniform(4, 16) / HOUR
            favourites = [self.pick_site(r) for _ in range(15)]
            for s, e in self.present[h]:
                for t in poisson(r, s, e, rate):
                    site = r.choice(favourites) if r.random() < 0.5 else self.pick_site(r)
                    if r.random() < 0.6:
                        self.lookup(t - 0.05, h, site.name, site.addrs, site.cnames)
                    for _ in range(1 + min(int(r.expovariate(0.5)), 11)):
                        start = t + r.uniform(0, 15)
                        port = 443 if r.random() < 0.92 else 80
                        rb = int(r.lognormvariate(10, 1.6))
                        self.tcp(start, h, r.choice(site.addrs), port,
                                 int(r.lognormvariate(7, 0.8)), rb,
                                 0.05 + rb / r.uniform(2e6, 20e6) + r.expovariate(0.2))
                    if r.random() < 0.015:
                        cloud = r.choice(self.cloud)
                        ob = int(r.lognormvariate(15.5, 0.7))
                        self.tcp(t + 20, h, r.choice(cloud.addrs), 443, ob,
                                 r.randint(2000, 9000), ob / r.uniform(2e6, 8e6))
                        uploads += 1
        self.lookalikes["browsing"] = {"sites": len(self.sites), "uploads": uploads,
                                       "cloud": [c.name for c in self.cloud]}

    def long_lived(self) -> None:
        r = self.rng("long")
        n = 0
        for h in self.ws + self.admins:
            chat = r.choice(self.chat)
            for s, e in self.present[h]:
                self.tcp(s + r.uniform(30, 300), h, chat, 443, r.randint(500_000, 3_000_000),
                         r.randint(5_000_000, 40_000_000), e - s - 400)
                n += 1
        for h in self.app_servers:
            for d in range(2):
                for _ in range(4):  # a connection pool, recycled daily
                    self.tcp(self.at(d, r.uniform(0, 0.2)), h, DATABASE, 5432,
                             r.randint(10_000_000, 80_000_000), r.randint(50_000_000, 400_000_000),
                             DAY - 600)
                    n += 1
        for h in self.k8s_workers:
            for d in range(2):
                self.tcp(self.at(d, r.uniform(0, 0.1)), h, self.k8s_control, 6443,
                         r.randint(1_000_000, 5_000_000), r.randint(5_000_000, 30_000_000),
                         DAY - 300)
                n += 1
        self.lookalikes["long_lived"] = {"connections": n, "chat": list(self.chat)}

    def api_calls(self) -> None:
        r = self.rng("api")
        for h in self.api_clients:
            for t in poisson(r, self.t0, self.t0 + 2 * DAY, 1 / 90):
                self.tcp(t, h, r.choice(self.api), 443, r.randint(600, 4000),
                         r.randint(300, 8000), r.uniform(0.05, 0.6))
        self.lookalikes["poisson_api"] = {"clients": list(self.api_clients),
                                          "peers": list(self.api), "mean_gap_s": 90}

    def kubernetes(self) -> None:
        r = self.rng("k8s")
        for w in self.k8s_workers:
            for t in periodic(r, self.t0, self.t0 + 2 * DAY, 120, wobble=0.8):
                self.tcp(t, self.k8s_control, w, 10250, r.randint(300, 600),
                         r.randint(20_000, 60_000), r.uniform(0.02, 0.2))
        self.lookalikes["kubernetes"] = {"control": self.k8s_control,
                                         "workers": list(self.k8s_workers), "port": 10250}

    def updates(self) -> None:
        r = self.rng("updates")
        moved = self.srv[26:36]
        moved_at = self.at(1, 12.0)
        for h in self.srv:
            for d in range(2):
                for hour in (r.uniform(0, 12), r.uniform(12, 24)):  # apt's two daily runs
                    t = self.at(d, hour)
                    if h in moved:
                        name = "mirror.pkgs-b.org"
                        addrs = self.mirror_b_new if t >= moved_at else self.mirror_b_old
                    else:
                        name, addrs = "deb.pkgs-a.net", self.mirror_a
                    self.lookup(t, h, name, addrs, ttl=3600)
                    for _ in range(r.randint(1, 4)):
                        self.tcp(t + r.uniform(0.1, 20), h, r.choice(addrs), 80,
                                 r.randint(400, 3000), int(r.lognormvariate(12, 1.8)),
                                 r.uniform(0.3, 20))
        self.lookalikes["mirror_moved"] = {
            "hosts": list(moved), "name": "mirror.pkgs-b.org", "at_ns": int(moved_at * 1e9),
            "old": _net24(self.mirror_b_old[0]), "new": _net24(self.mirror_b_new[0])}

    def file_shares(self) -> None:
        r = self.rng("files")
        for h in self.ws + self.admins:
            for s, e in self.present[h]:
                for t in [s + r.uniform(20, 120)] + [r.uniform(s, e) for _ in range(3)]:
                    self.tcp(t, h, FILESERVER, 445, r.randint(2000, 300_000),
                             r.randint(5000, 2_000_000), r.uniform(1, 600))
        self.lookalikes["file_server"] = {"host": FILESERVER, "port": 445}

    # ---- malicious -------------------------------------------------------------------
    def incident(self, rule: str, actor: str, rows_from: int, *, peers: Iterable[str] | None = None,
                 names: Iterable[str] = (), networks: Iterable[str] = (),
                 accept: Iterable[str] = (), note: str = "", **params: Any) -> None:
        rows = [row for row in self.conn[rows_from:] if row[17] and row[3] == actor]
        if not rows:
            raise RuntimeError(f"incident {rule} for {actor} produced no rows")
        start = min(row[0] for row in rows)
        end = max(row[0] + (row[1] or 0.0) for row in rows)
        peer_list = list(dict.fromkeys(peers if peers is not None else (row[5] for row in rows)))
        n = sum(1 for i in self.incidents if i.rule == rule) + 1
        self.incidents.append(Incident(
            id=f"{rule}-{n:02d}", rule=rule, actor=actor, peers=tuple(peer_list),
            per_peer=rule in ("beacon", "volume_anomaly", "novel_peer"),
            # logs hold microseconds: widen by one so rounding never leaves a row outside
            start_ns=(int(start * 1e6) - 1) * 1000, end_ns=(int(end * 1e6) + 2) * 1000,
            names=tuple(names), networks=tuple(networks), accept=tuple(accept), note=note,
            params=params))

    def malicious(self) -> None:
        r = self.rng("actors")
        used: set[str] = set(self.admins) | {CRAWLER, self.k8s_control}
        ws_norm = [h for h in self.ws if h not in self.always_on]
        ws_on = [h for h in self.ws if h in self.always_on]
        servers = [s for s in self.srv if s not in self.k8s_workers]

        def take(pool: list[str]) -> str:
            h = r.choice([p for p in pool if p not in used])
            used.add(h)
            return h

        self.beacons(take, ws_norm, ws_on, servers)
        self.scans(take, ws_norm, ws_on, servers)
        self.lateral(take, ws_norm, servers)
        self.volumes(take, ws_norm, servers)
        self.novel(take, servers, used)

    def beacons(self, take: Callable[[list[str]], str], ws: list[str], ws_on: list[str],
                servers: list[str]) -> None:
        r = self.rng("beacon")
        # (period s, jitter, miss, proto, port, sizes, day, start hour, hours, pool, named)
        specs = [
            (1, 0.0, 0.0, "tcp", 443, "const", 0, 10.0, 0.33, ws, False),
            (5, 0.5, 0.1, "udp", 1194, "varied", 0, 14.0, 0.5, ws, False),
            (15, 0.2, 0.3, "tcp", 80, "varied", 1, 3.0, 2.0, servers, False),
            (60, 0.1, 0.0, "tcp", 443, "const", 0, 9.6, 7.0, ws, False),
            (120, 0.5, 0.2, "udp", 443, "varied", 0, 20.0, 12.0, ws_on, False),
            (300, 0.0, 0.0, "tcp", 8443, "const", 0, 0.0, 48.0, servers, True),
            (600, 0.3, 0.1, "tcp", 443, "varied", 0, 12.0, 24.0, ws_on, True),
            (1800, 0.2, 0.05, "tcp", 443, "const", 0, 0.0, 48.0, servers, False),
            (3600, 0.1, 0.1, "tcp", 443, "varied", 0, 0.0, 48.0, ws_on, True),
        ]
        for period, jitter, miss, proto, port, sizes, day, hour, hours, pool, named in specs:
            actor = take(pool)
            c2 = self.fresh_addrs(1, r)[0]
            name = f"{self.word(r)}-{self.word(r)}.{r.choice(('com', 'net', 'top', 'xyz'))}"
            start = mark = self.at(day, hour)
            if pool is ws:  # a workstation's malware runs while it is on
                start = max(start, self.on[actor][day][0] + 60)
            mark = len(self.conn)
            beats = self._beacon(r, actor, c2, port, proto, period, jitter, miss, sizes,
                                 start, start + hours * HOUR, name if named else None)
            self.incident("beacon", actor, mark, peers=[c2], names=[name] if named else (),
                          period_s=period, jitter=jitter, miss=miss, proto=proto, port=port,
                          sizes=sizes, beats=beats,
                          note=f"period {period}s jitter {jitter:.0%} miss {miss:.0%} {proto}")
        # Dead C2s: the loop reconnects every few seconds and never gets an answer.
        for period, jitter, state, pool, day, hour, minutes in (
                (5, 0.1, "S0", ws, 1, 10.0, 60), (3, 0.2, "REJ", servers, 0, 22.0, 30)):
            actor = take(pool)
            c2 = self.fresh_addrs(1, r)[0]
            start = self.at(day, hour)
            if pool is ws:
                start = max(start, self.on[actor][day][0] + 60)
            mark = len(self.conn)
            times = periodic(r, start, start + minutes * 60, period, jitter)
            for t in times:
                if state == "S0":
                    self.tcp(t, actor, c2, 443, r.randint(1, 3), 0, 0, state="S0", mal=True)
                else:
                    self.tcp(t, actor, c2, 443, 0, 0, r.uniform(0.02, 0.09), state="REJ",
                             mal=True)
            self.incident("beacon", actor, mark, peers=[c2], period_s=period, jitter=jitter,
                          miss=0.0, proto="tcp", port=443, sizes="none", beats=len(times),
                          note=f"dead C2 ({state}) every {period}s")
        # One C2 shared by three infected hosts (prevalence must not hide it).
        c2 = self.fresh_addrs(1, r)[0]
        name = f"cdn-{self.word(r)}.{r.choice(('com', 'net'))}"
        for day, hour in ((0, 8.0), (0, 13.0), (1, 9.0)):
            actor = take(ws)
            start = max(self.at(day, hour), self.on[actor][day][0] + 60)
            mark = len(self.conn)
            beats = self._beacon(r, actor, c2, 443, "tcp", 180, 0.3, 0.15, "varied", start,
                                 start + 10 * HOUR, name)
            self.incident("beacon", actor, mark, peers=[c2], names=[name], period_s=180,
                          jitter=0.3, miss=0.15, proto="tcp", port=443, sizes="varied",
                          beats=beats, note="C2 shared by 3 hosts")

    def _beacon(self, r: random.Random, actor: str, c2: str, port: int, proto: str,
                period: float, jitter: float, miss: float, sizes: str, start: float,
                end: float, name: str | None) -> int:
        ob0, rb0 = r.randint(150, 900), r.randint(100, 2000)
        last_lookup = -1e18
        beats = 0
        for t in periodic(r, start, end, period, jitter, miss):
            if not self.is_on(actor, t):
                continue
            if name is not None and t - last_lookup > 1800:
                self.lookup(t - 0.03, actor, name, [c2], ttl=1800, mal=False)
                last_lookup = t
            if sizes == "const":
                ob, rb = ob0 + r.randint(-4, 4), rb0 + r.randint(-4, 4)
            else:
                ob = int(ob0 * r.lognormvariate(0, 0.6))
                rb = int(rb0 * r.lognormvariate(0, 1.2)) if r.random() < 0.3 else rb0
            if proto == "tcp":
                self.tcp(t, actor, c2, port, ob, rb, r.uniform(0.05, 0.4), mal=True)
            else:
                self.udp(t, actor, c2, port, ob, rb, r.uniform(0.02, 0.2), mal=True)
            beats += 1
        return beats

    def scans(self, take: Callable[[list[str]], str], ws: list[str], ws_on: list[str],
              servers: list[str]) -> None:
        r = self.rng("scan")

        def probe(t: float, actor: str, dst: str, port: int, outcome: str) -> None:
            if outcome == "open":
                self.tcp(t, actor, dst, port, 0, 0, r.uniform(0.001, 0.01), mal=True)
            elif outcome == "syn_open":
                self.tcp(t, actor, dst, port, 0, 0, r.uniform(0.001, 0.01), state="RSTO",
                         mal=True)
            elif outcome == "closed":
                self.tcp(t, actor, dst, port, 0, 0, r.uniform(0.0002, 0.005), state="REJ",
                         mal=True)
            else:
                self.tcp(t, actor, dst, port, r.choice((1, 1, 2)), 0, 0, state="S0", mal=True)

        def outcome(p_closed: float, p_silent: float, open_: str = "open") -> str:
            x = r.random()
            return "closed" if x < p_closed else "silent" if x < p_closed + p_silent else open_

        def times(start: float, span: float, n: int) -> list[float]:
            if span < HOUR:  # as fast as it goes: random order within the span
                return sorted(r.uniform(start, start + span) for _ in range(n))
            # slow scans pace their probes (nmap -T0/-T1 style), with some jitter
            out = periodic(r, start, start + 2 * span, span / n, 0.2)[:n]
            if len(out) < n:
                raise RuntimeError("slow scan: not enough probe times")
            return out

        def vertical(actor: str, dst: str, ports: list[int], start: float, span: float,
                     p_closed: float, p_silent: float, open_: str, note: str) -> None:
            mark = len(self.conn)
            for t, port in zip(times(start, span, len(ports)), ports,
                               strict=True):
                probe(t, actor, dst, port, outcome(p_closed, p_silent, open_))
            self.incident("port_scan", actor, mark, kind="vertical", ports=len(ports),
                          span_s=span, note=note)

        def horizontal(actor: str, targets: list[str], port: int, start: float, span: float,
                       answer: Callable[[str], str], note: str,
                       accept: Iterable[str] = ()) -> None:
            mark = len(self.conn)
            order = list(targets)
            r.shuffle(order)
            for t, dst in zip(times(start, span, len(order)), order,
                              strict=True):
                probe(t, actor, dst, port, answer(dst))
            self.incident("port_scan", actor, mark, kind="horizontal", hosts=len(targets),
                          port=port, span_s=span, accept=accept, note=note)

        live_servers = set(self.srv)
        # s1: fast connect scan of a server's first 1024 ports.
        a = take(ws)
        target = r.choice(servers)
        ports = list(range(1, 1025))
        r.shuffle(ports)
        vertical(a, target, ports, max(self.at(0, 11.0), self.on[a][0][0] + 60), 60, 0.96,
                 0.03, "open", "vertical connect scan, 1024 ports in 60 s")
        # s2: SYN-style scan from a server of 1000 random ports of a workstation.
        a = take(servers)
        vertical(a, r.choice(ws), r.sample(range(1, 65536), 1000), self.at(1, 2.5), 20, 0.70,
                 0.28, "syn_open", "vertical SYN scan, 1000 ports in 20 s")
        # s3: sweep of the server subnet on 445 (most addresses are unused).
        a = take(ws)
        sweep = [f"10.10.10.{i}" for i in range(1, 255)]
        horizontal(a, sweep, 445, max(self.at(1, 10.5), self.on[a][1][0] + 60), 120,
                   lambda d: ("open" if d in self.windows else "closed")
                   if d in live_servers else "silent",
                   "horizontal sweep of 10.10.10.0/24 on 445", accept=["lateral_movement"])
        # s4: external sweep on 22 from a server.
        a = take(servers)
        ext = [self.fresh_addrs(1, r)[0] for _ in range(300)]
        horizontal(a, ext, 22, self.at(0, 3.0), 600,
                   lambda d: "silent" if r.random() < 0.6 else (
                       "closed" if r.random() < 0.75 else "open"),
                   "horizontal external sweep on 22")
        # s5: slow vertical scan, one probe every 5 minutes for 12.5 hours.
        a = take(ws_on)
        ports = r.sample(range(1, 10000), 150)
        vertical(a, r.choice(servers), ports, self.at(0, 18.0), 12.5 * HOUR, 0.85, 0.12, "open",
                 "slow vertical scan, 150 ports, one every 5 min")
        # s6: slow sweep for RDP over 4 hours, half the addresses silent.
        a = take(ws)
        subnet = [f"10.10.1.{i}" for i in range(130, 190) if f"10.10.1.{i}" != a]
        live_ws = set(self.ws)
        horizontal(a, subnet, 3389, max(self.at(1, 11.0), self.on[a][1][0] + 60), 4 * HOUR,
                   lambda d: ("closed" if d in live_ws and r.random() < 0.8 else "silent"),
                   "slow horizontal sweep on 3389, 60 hosts over 4 h",
                   accept=["lateral_movement"])
        # s7: a third of the hosts silent: still a scan.
        a = take(ws)
        ext = [self.fresh_addrs(1, r)[0] for _ in range(90)]
        silent = set(r.sample(ext, 31))
        horizontal(a, ext, 80, max(self.at(0, 15.0), self.on[a][0][0] + 60), 300,
                   lambda d: "silent" if d in silent else "open",
                   "horizontal sweep on 80, 34 % of 90 hosts silent")

    def lateral(self, take: Callable[[list[str]], str], ws: list[str],
                servers: list[str]) -> None:
        r = self.rng("lateral")
        win = [s for s in self.windows if s in servers]
        lin = [s for s in self.linux if s in servers]

        def move(actor: str, targets: list[tuple[str, int]], start: float, spacing: float,
                 note: str) -> None:
            mark = len(self.conn)
            for i, (dst, port) in enumerate(targets):
                t0 = start + i * spacing + r.uniform(0, min(spacing, 120) * 0.5)
                for k in range(r.randint(1, 3)):
                    length = r.uniform(2, 300)
                    self.tcp(t0 + k * r.uniform(1, 30), actor, dst, port,
                             r.randint(5000, 60000), r.randint(5000, 120000), length, mal=True)
            self.incident("lateral_movement", actor, mark, hosts=len({d for d, _ in targets}),
                          ports=sorted({p for _, p in targets}), spacing_s=spacing, note=note)

        def ws_start(actor: str, hour: float) -> float:
            return max(self.at(1, hour), self.present[actor][1][0] + 300)

        a = take(ws)
        move(a, [(t, 445) for t in r.sample(win, 5)], ws_start(a, 10.0), 120,
             "SMB to 5 servers in 10 min")
        a = take(ws)
        move(a, [(t, 5985) for t in r.sample(win, 4)], ws_start(a, 11.0), 300,
             "WinRM to 4 servers in 20 min")
        a = take(servers)
        move(a, [(t, 22) for t in r.sample([x for x in lin if x != a], 6)], self.at(1, 4.0), 150,
             "SSH from a server to 6 servers")
        a = take(ws)
        peers = r.sample([w for w in self.ws if w != a and w in self.always_on], 3)
        move(a, [(t, 3389) for t in peers], ws_start(a, 13.0), 100, "RDP to 3 workstations")
        a = take(servers)
        w = self.k8s_workers
        move(a, [(w[0], 10250), (w[1], 10250), (w[2], 10250), (self.k8s_control, 6443),
                 (w[3], 2375)], self.at(1, 5.0), 360, "kubelet, API server and Docker API")
        a = take(ws)
        move(a, [(t, p) for t, p in zip(r.sample(win, 4), (5986, 445, 5986, 445), strict=True)],
             ws_start(a, 14.0), 450, "WinRM over TLS and SMB to 4 servers")
        a = take(ws)
        move(a, [(t, 445) for t in r.sample(win, 5)], ws_start(a, 9.0), 90 * 60,
             "slow: SMB to 5 servers, one every 90 min")
        a = take(servers)
        move(a, [(t, 22) for t in r.sample([x for x in lin if x != a], 4)], self.at(1, 1.0),
             2 * HOUR, "slow: SSH to 4 servers, one every 2 h")

    def volumes(self, take: Callable[[list[str]], str], ws: list[str],
                servers: list[str]) -> None:
        r = self.rng("volume")

        def upload(actor: str, peer: str, port: int, total: int, chunks: int, start: float,
                   span: float, proto: str, note: str) -> None:
            mark = len(self.conn)
            each = total // chunks
            for i in range(chunks):
                t = start + i * span / chunks
                dur = span / chunks * 0.8
                if proto == "tcp":
                    self.tcp(t, actor, peer, port, each, each // 200, dur, mal=True)
                else:
                    self.udp(t, actor, peer, port, each, each // 100, dur, mal=True)
            self.incident("volume_anomaly", actor, mark, bytes=total, chunks=chunks,
                          span_s=span, proto=proto, note=note)

        def ws_start(actor: str, hour: float) -> float:
            return max(self.at(1, hour), self.present[actor][1][0] + 300)

        a = take(ws)
        upload(a, self.fresh_addrs(1, r)[0], 443, 2_000_000_000, 1, ws_start(a, 11.0), 1500,
               "tcp", "2 GB in one connection")
        a = take(servers)
        upload(a, self.fresh_addrs(1, r)[0], 443, 800_000_000, 40, self.at(1, 3.0), 2400, "tcp",
               "800 MB in 40 chunks over 40 min")
        a = take(ws)
        cloud = self.cloud[0]
        peer = cloud.addrs[0]
        for hour in (10.0, 14.0, 16.0):  # the usual: a few MB to the same service on day 1
            t = max(self.at(0, hour), self.present[a][0][0] + 60)
            self.tcp(t, a, peer, 443, r.randint(1_000_000, 8_000_000), 5000, 4.0)
        upload(a, peer, 443, 600_000_000, 12, ws_start(a, 14.0), 1800, "tcp",
               "600 MB in 12 chunks to a storage service it uses daily for a few MB")
        a = take(ws)
        upload(a, self.fresh_addrs(1, r)[0], 443, 400_000_000, 1, ws_start(a, 15.0), 1200, "udp",
               "400 MB over UDP")
        big = sorted((s for s in servers), key=lambda s: -self.backup_size[s])
        a = take(big[:10])
        upload(a, self.fresh_addrs(1, r)[0], 443, 5_000_000_000, 1, self.at(1, 13.0), 2400,
               "tcp", f"5 GB to an outside host (nightly backup: "
                      f"{self.backup_size[a] / 1e9:.1f} GB to {BACKUP})")

    def novel(self, take: Callable[[list[str]], str], servers: list[str],
              used: set[str]) -> None:
        r = self.rng("novel")
        stable = [s for s in servers if s not in self.srv[26:36] and s not in self.api_clients]

        def reach(actor: str, n: int, start: float, span: float, port: int, proto: str,
                  note: str, big: int = 0) -> None:
            addrs = self.fresh_addrs(min(n, 3), r)
            mark = len(self.conn)
            for i in range(n):
                t = start + (span * i / n if n > 1 else 0) + r.uniform(0, 5)
                peer = addrs[i % len(addrs)]
                if proto == "udp":
                    self.udp(t, actor, peer, port, r.randint(30, 60), r.randint(60, 200), 0.03,
                             mal=True)
                else:
                    self.tcp(t, actor, peer, port, r.randint(300, 2000),
                             big if i == 0 and big else r.randint(500, 20000),
                             r.uniform(0.1, 3), mal=True)
            self.incident("novel_peer", actor, mark, networks=[_net24(addrs[0])], conns=n,
                          note=note)

        reach(take(stable), 3, self.at(1, 9.0), 600, 443, "tcp",
              "database server downloads a tool from a new network", big=2_000_000)
        reach(take(stable), 10, self.at(1, 16.0), 3600, 443, "tcp", "10 connections in an hour")
        reach(take(stable), 20, self.at(1, 20.0), 1800, 53, "udp",
              "direct DNS to an outside resolver")
        reach(take(stable), 1, self.at(1, 6.0), 0, 8080, "tcp", "one connection")
        worker = next(w for w in self.k8s_workers if w not in used)
        used.add(worker)
        reach(worker, 5, self.at(1, 12.0), 900, 443, "tcp", "Kubernetes worker, new network")

    # ---- truth -----------------------------------------------------------------------
    def _accept_novel(self) -> None:
        """An incident that reaches, after the learning day, an outside /24 its actor never
        reached during it may rightly also raise novel_peer."""
        learned = self.t0 + LEARNING_S
        seen = {(row[3], row[5].rsplit(".", 1)[0]) for row in self.conn if row[0] < learned}
        for k, inc in enumerate(self.incidents):
            if inc.rule == "novel_peer" or "novel_peer" in inc.accept:
                continue
            if inc.end_ns < learned * 1e9:
                continue
            if any(not p.startswith("10.") and (inc.actor, p.rsplit(".", 1)[0]) not in seen
                   for p in inc.peers):
                self.incidents[k] = replace(inc, accept=(*inc.accept, "novel_peer"))

    def truth(self) -> GroundTruth:
        self._accept_novel()
        mal: set[tuple[str, str]] = set()
        for inc in self.incidents:
            for p in inc.peers:
                mal.add((inc.actor, p))
        for row in self.conn:
            if row[17]:
                mal.add((row[3], row[5]))
        pairs = {(row[3], row[5]) for row in self.conn}
        benign = len(pairs - mal)
        return GroundTruth(
            seed=self.sc.seed, start_ns=int(self.t0 * 1e9),
            end_ns=int((self.t0 + 2 * DAY) * 1e9),
            learning_end_ns=int((self.t0 + LEARNING_S) * 1e9), benign_pairs=benign,
            incidents=tuple(self.incidents), internal=INTERNAL, lookalikes=self.lookalikes,
            counts={"conn_rows": len(self.conn), "dns_rows": len(self.dns),
                    "internal_hosts": len(self.internal_hosts), "pairs": len(pairs),
                    "malicious_pairs": len(mal)})


def generate(sc: Scenario | None = None) -> Dataset:
    """Generate the two days: benign traffic, then the incidents (each its own stream)."""
    g = _Gen(sc or Scenario())
    g.benign()
    g.malicious()
    end = g.t0 + 2 * DAY
    # Nothing outside the two days (a few browsing connections start just after a session).
    g.conn = [row for row in g.conn if g.t0 <= row[0] < end]
    g.dns = [row for row in g.dns if g.t0 <= row[0] < end]
    return Dataset(g.conn, g.dns, g.truth())


# ---- writers ---------------------------------------------------------------------------

CONN_FIELDS = ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto",
               "service", "duration", "orig_bytes", "resp_bytes", "conn_state", "local_orig",
               "local_resp", "missed_bytes", "history", "orig_pkts", "orig_ip_bytes",
               "resp_pkts", "resp_ip_bytes", "tunnel_parents")
CONN_TYPES = ("time", "string", "addr", "port", "addr", "port", "enum", "string", "interval",
              "count", "count", "string", "bool", "bool", "count", "string", "count", "count",
              "count", "count", "set[string]")
DNS_FIELDS = ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto",
              "trans_id", "rtt", "query", "qclass", "qclass_name", "qtype", "qtype_name",
              "rcode", "rcode_name", "AA", "TC", "RD", "RA", "Z", "answers", "TTLs", "rejected")
DNS_TYPES = ("time", "string", "addr", "port", "addr", "port", "enum", "count", "interval",
             "string", "count", "string", "count", "string", "count", "string", "bool", "bool",
             "bool", "bool", "count", "vector[string]", "vector[interval]", "bool")


def _header(path: str, fields: tuple[str, ...], types: tuple[str, ...], opened: float) -> str:
    return ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
            f"#path\t{path}\n#open\t{_rfc_date(opened)}\n#fields\t" + "\t".join(fields)
            + "\n#types\t" + "\t".join(types) + "\n")


def _tsv_conn(row: ConnRow) -> str:
    (ts, dur, uid, oh, op, rh, rp, proto, svc, ob, rb, state, hist, opk, oip, rpk, rip,
     _) = row
    return (f"{ts:.6f}\t{uid}\t{oh}\t{op}\t{rh}\t{rp}\t{proto}\t{svc or '-'}\t"
            f"{'-' if dur is None else f'{dur:.6f}'}\t{'-' if ob is None else ob}\t"
            f"{'-' if rb is None else rb}\t{state}\t{'T' if oh.startswith('10.') else 'F'}\t"
            f"{'T' if rh.startswith('10.') else 'F'}\t0\t{hist}\t{opk}\t{oip}\t{rpk}\t{rip}\t-\n")


def _tsv_dns(row: DnsRow) -> str:
    (ts, uid, oh, op, rh, rp, proto, txid, rtt, query, qtype, qtname, rcode, rcname, rd, ra,
     answers, ttls) = row
    return (f"{ts:.6f}\t{uid}\t{oh}\t{op}\t{rh}\t{rp}\t{proto}\t{txid}\t"
            f"{'-' if rtt is None else f'{rtt:.6f}'}\t{query}\t1\tC_INTERNET\t{qtype}\t{qtname}\t"
            f"{'-' if rcode is None else rcode}\t{rcname or '-'}\tF\tF\t{'T' if rd else 'F'}\t"
            f"{'T' if ra else 'F'}\t0\t{','.join(answers) if answers else '-'}\t"
            f"{','.join(f'{x:.6f}' for x in ttls) if ttls else '-'}\tF\n")


def _json_ts(ts: float, iso: bool) -> str:
    if not iso:
        return f"{ts:.6f}"
    stamp = dt.datetime.fromtimestamp(round(ts, 6), tz=dt.UTC)
    return '"' + stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ") + '"'


def _json_conn(row: ConnRow, iso: bool) -> str:
    (ts, dur, uid, oh, op, rh, rp, proto, svc, ob, rb, state, hist, opk, oip, rpk, rip,
     _) = row
    parts = [f'"ts":{_json_ts(ts, iso)}', f'"uid":"{uid}"', f'"id.orig_h":"{oh}"',
             f'"id.orig_p":{op}', f'"id.resp_h":"{rh}"', f'"id.resp_p":{rp}',
             f'"proto":"{proto}"']
    if svc:
        parts.append(f'"service":"{svc}"')
    if dur is not None:
        parts.append(f'"duration":{dur:.6f}')
    if ob is not None:
        parts.append(f'"orig_bytes":{ob}')
    if rb is not None:
        parts.append(f'"resp_bytes":{rb}')
    parts += [f'"conn_state":"{state}"',
              f'"local_orig":{"true" if oh.startswith("10.") else "false"}',
              f'"local_resp":{"true" if rh.startswith("10.") else "false"}',
              '"missed_bytes":0', f'"history":"{hist}"', f'"orig_pkts":{opk}',
              f'"orig_ip_bytes":{oip}', f'"resp_pkts":{rpk}', f'"resp_ip_bytes":{rip}']
    return "{" + ",".join(parts) + "}\n"


def _json_dns(row: DnsRow, iso: bool) -> str:
    (ts, uid, oh, op, rh, rp, proto, txid, rtt, query, qtype, qtname, rcode, rcname, rd, ra,
     answers, ttls) = row
    obj: dict[str, Any] = {"uid": uid, "id.orig_h": oh, "id.orig_p": op, "id.resp_h": rh,
                           "id.resp_p": rp, "proto": proto, "trans_id": txid}
    if rtt is not None:
        obj["rtt"] = round(rtt, 6)
    obj.update({"query": query, "qclass": 1, "qclass_name": "C_INTERNET", "qtype": qtype,
                "qtype_name": qtname})
    if rcode is not None:
        obj.update({"rcode": rcode, "rcode_name": rcname})
    obj.update({"AA": False, "TC": False, "RD": rd, "RA": ra, "Z": 0})
    if answers:
        obj.update({"answers": list(answers), "TTLs": list(ttls)})
    obj["rejected"] = False
    body = json.dumps(obj, separators=(",", ":"))
    return '{"ts":' + _json_ts(ts, iso) + "," + body[1:] + "\n"


def write(data: Dataset, out: str | os.PathLike[str], *, fmt: str = "tsv",
          compress: bool = False, iso_ts: bool = False) -> list[Path]:
    """Write conn.log, dns.log (ordered by end time, as Zeek writes them) and truth.json."""
    if fmt not in ("tsv", "json"):
        raise ValueError(f"format must be tsv or json, not {fmt!r}")
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    suffix = ".log.gz" if compress else ".log"
    opened = data.truth.start_ns / 1e9
    closed = data.truth.end_ns / 1e9
    paths = []
    conn_rows = sorted(data.conn, key=lambda row: (row[0] + (row[1] or 0.0), row[2]))
    dns_rows = sorted(data.dns, key=lambda row: (row[0] + (row[8] or 0.0), row[1]))
    for name, rows, fields, types, tsv_line, json_line in (
            ("conn", conn_rows, CONN_FIELDS, CONN_TYPES, _tsv_conn, _json_conn),
            ("dns", dns_rows, DNS_FIELDS, DNS_TYPES, _tsv_dns, _json_dns)):
        path = outdir / f"{name}{suffix}"
        if fmt == "tsv":
            text = _header(name, fields, types, opened) + "".join(
                map(tsv_line, rows)) + f"#close\t{_rfc_date(closed)}\n"
        else:
            text = "".join(json_line(row, iso_ts) for row in rows)
        blob = text.encode("utf-8")
        if compress:  # mtime=0: the same input gives the same bytes
            blob = gzip.compress(blob, compresslevel=6, mtime=0)
        path.write_bytes(blob)
        paths.append(path)
    truth_path = outdir / "truth.json"
    data.truth.save(truth_path)
    paths.append(truth_path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.detect.generate",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, metavar="DIR", help="output directory")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--format", choices=("tsv", "json"), default="tsv",
                    help="Zeek TSV (default) or Zeek JSON lines")
    ap.add_argument("--iso-ts", action="store_true", help="JSON: ts as ISO 8601 strings")
    ap.add_argument("--gzip", action="store_true", help="write .log.gz")
    ap.add_argument("--small", action="store_true",
                    help="40 workstations and 30 servers instead of 150 and 40 (for tests)")
    args = ap.parse_args(argv)
    sc = small(args.seed) if args.small else Scenario(seed=args.seed)
    t = time.perf_counter()
    data = generate(sc)
    paths = write(data, args.out, fmt=args.format, compress=args.gzip, iso_ts=args.iso_ts)
    tr = data.truth
    by_rule: dict[str, int] = {}
    for inc in tr.incidents:
        by_rule[inc.rule] = by_rule.get(inc.rule, 0) + 1
    print(f"{len(data.conn)} conn rows, {len(data.dns)} dns rows, {tr.benign_pairs} benign "
          f"pairs, incidents {by_rule}, {time.perf_counter() - t:.1f} s", file=sys.stderr)
    for p in paths:
        print(p)
    return 0


def small(seed: int = 1) -> Scenario:
    """The smallest scenario that still holds every look-alike and incident (for tests)."""
    return Scenario(seed=seed, workstations=40, servers=30, admins=2, sites=600,
                    crawl_sites=1200)


if __name__ == "__main__":
    raise SystemExit(main())

"""Seeded DNS threats and their look-alikes as Zeek dns.log rows, with ground truth.

    python -m bench.detect.dns_threats --out DIR --seed N [--hosts 40] [--days 2]

writes DIR/dns.log (Zeek TSV) and DIR/truth.json (bench.detect.truth) for the DNS rules
``dns_tunnel``, ``fast_flux`` and ``dns_redirection_chain``. The same seed gives the same
bytes.

Benign (every host, every day): the processes of bench.detect.dns_benign (browsers with
Chrome's random probes, CDN hash names and trackers, anti-virus hash lookups in hex and
base32 with TXT verdicts, a mail server's DNSBL, SPF and MX lookups, search-domain
NXDOMAINs, package managers, NTP pool names, updaters), answered the way the Internet
answers them: sites are direct A records, CNAMEs into listed CDNs (one to three hops,
Microsoft-style four-hop chains), CNAMEs into CDNs no list knows (one hop, or two like a
managed-WordPress host), multi-CDN switching, cloud load balancers whose few addresses span
several /16s with 60 s TTLs; pool.ntp.org names get four new addresses from all over the
world every time. Extra look-alikes: a coin wallet asking an unlisted peer-seed name (many
worldwide addresses, TTL 60) and global load balancers that switch a name between three
unlisted providers (``lookalike`` styles below; expected to be hard).

Malicious (``STYLES``): DNS tunnel sessions in the manner of iodine (base32 or base128
labels of 57 characters, NULL queries), dnscat2 (hex, TXT/CNAME/MX, 1 s polls; also a slow
variant with 5-10 s polls), dns2tcp (base64 TXT both ways), DNSExfiltrator (numbered
base64url chunks, TXT "OK"), a Cobalt-Strike-like DNS beacon (short A beacons, TXT task
downloads, hex "post" uploads) and dnsteal-style single 60-hex-character labels; fast-flux
domains answered from a shared bot pool (classic, double flux with TTL 0-60 and many
records, few records per answer, slow flux with TTLs of 10-15 minutes, bots concentrated in
a few regional ISPs); CNAME redirection chains across three or more throwaway domains, long
chains inside one or two domains, and chains that move to a new domain on every resolution
(fast, or hourly).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import random
import string
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.detect import dns_benign as B
from bench.detect.generate import DNS_FIELDS, DNS_TYPES, _header, _rfc_date
from bench.detect.truth import GroundTruth, Incident
from otelpeers.detect.rules.dns_names import split

T0 = 1709510400  # 2024-03-04 00:00:00 UTC
DAY = 86400
RESOLVER = "10.20.0.53"
B32 = string.ascii_lowercase + "234567"
HEX = "0123456789abcdef"
B64URL = string.ascii_letters + string.digits + "-_"
QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "NULL": 10, "PTR": 12, "MX": 15, "TXT": 16,
          "AAAA": 28, "SRV": 33, "KEY": 25, "ANY": 255}
_SYLL = ("ka", "lo", "mi", "ne", "ra", "to", "vi", "su", "de", "po", "ban", "cor", "fen",
         "gal", "hut", "jin", "kel", "mar", "nor", "pil", "qua", "ros", "sen", "tar", "ul",
         "ven", "wil", "xo", "yam", "zed", "bel", "dor", "esk", "fal", "gri", "secure",
         "cloud", "update", "cdn", "static", "api", "sync", "data", "net", "web")
_TLDS = ("com", "net", "org", "info", "xyz", "top", "io", "ru", "biz", "online", "site")
# Residential-looking first octets for bots and worldwide pool servers.
_WORLD_FIRST = (2, 5, 24, 31, 37, 41, 46, 49, 58, 59, 60, 61, 62, 67, 68, 70, 71, 72, 73,
                75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93,
                94, 95, 96, 97, 98, 99, 101, 103, 106, 109, 110, 112, 113, 114, 115, 116,
                117, 118, 119, 120, 121, 122, 123, 124, 125, 128, 129, 130, 131, 141, 145,
                151, 153, 161, 171, 175, 176, 177, 178, 179, 180, 181, 182, 183, 186, 187,
                188, 189, 190, 191, 193, 194, 195, 200, 201, 202, 203, 210, 211, 212, 213,
                217, 218, 219, 220, 221, 222)

# Every style, whether the rules were tuned on it, and what it is.
TUNNEL_STYLES = ("iodine", "dnscat2", "dnsexfiltrator",  # tuned on
                 "iodine_base128", "dnscat2_slow", "dns2tcp", "cobaltstrike", "dnsteal")
FLUX_STYLES = ("classic", "double",  # tuned on
               "few_answers", "slow", "regional")
CHAIN_STYLES = ("multi_domain", "long", "churn",  # tuned on
                "churn_hourly", "mixed_cdn")
TUNED = {"dns_tunnel": ("iodine", "dnscat2", "dnsexfiltrator"),
         "fast_flux": ("classic", "double"),
         "dns_redirection_chain": ("multi_domain", "long", "churn")}
STYLES = {"dns_tunnel": TUNNEL_STYLES, "fast_flux": FLUX_STYLES,
          "dns_redirection_chain": CHAIN_STYLES}

# Listed CDN/cloud parents (otelpeers.detect.dga.lists knows them) and templates of chains.
KNOWN_CHAINS = (
    ("{site}.cdn.cloudflare.net",),
    ("{w}.{site}.edgekey.net", "e{d4}.dscx.akamaiedge.net"),
    ("d{h13}.cloudfront.net",),
    ("{site}.azureedge.net", "{site}.afd.azureedge.net", "star-azureedge-prod.trafficmanager.net"),
    ("{site}.global.ssl.fastly.net",),
    ("{w}.{site}.edgesuite.net", "a{d4}.dscg.akamai.net"),
)
MS_CHAIN = ("{w}.{site}-c-3.edgekey.net", "{w}.{site}-c-3.edgekey.net.globalredir.akadns.net",
            "e{d5}.dscb.akamaiedge.net")
MULTI_CDN = (("{site}.cdn.cloudflare.net",), ("d{h13}.cloudfront.net",),
             ("{site}.global.ssl.fastly.net",))


@dataclass(frozen=True)
class DnsScenario:
    seed: int = 1
    hosts: int = 40
    days: int = 2
    per_style: int = 2  # incidents of each malicious style
    styles: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(STYLES))
    popular: tuple[str, ...] = B.DEFAULT_POPULAR
    rare: tuple[str, ...] = ()
    start: int = T0

    def __post_init__(self) -> None:
        n = sum(len(v) for v in self.styles.values()) * self.per_style
        if self.hosts < 4 or self.days < 1:
            raise ValueError("DnsScenario needs at least 4 hosts and 1 day")
        if n > self.hosts * self.days * 8:
            raise ValueError(f"{n} incidents are too many for {self.hosts} hosts")


Row = tuple[Any, ...]  # bench.detect.generate's dns.log row


def _word(r: random.Random, n: tuple[int, int] = (2, 3)) -> str:
    return "".join(r.choice(_SYLL) for _ in range(r.randint(*n)))


def _rand(r: random.Random, alphabet: str, n: int) -> str:
    return "".join(r.choice(alphabet) for _ in range(n))


def _labels(data: str, size: int) -> str:
    return ".".join(data[i:i + size] for i in range(0, len(data), size))


def _h(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _world_addr(r: random.Random, firsts: Sequence[int] = _WORLD_FIRST) -> str:
    return f"{r.choice(firsts)}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"


def _txt(text: str) -> str:
    return f"TXT {len(text)} {text}"


class _Gen:
    def __init__(self, sc: DnsScenario) -> None:
        self.sc = sc
        self.rows: list[Row] = []
        self.incidents: list[Incident] = []
        self.hosts = [f"10.20.{1 + i // 200}.{10 + i % 200}" for i in range(sc.hosts)]
        self._uid = random.Random(f"{sc.seed}:uid")
        self._txid = random.Random(f"{sc.seed}:txid")
        self._mal_pairs: set[tuple[str, str]] = set()
        self.lookalikes: dict[str, set[str]] = {}
        self._rr: dict[str, int] = {}  # rotation counters of pools

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.sc.seed}:{name}")

    # ---- rows ------------------------------------------------------------------------
    def row(self, ts: float, host: str, name: str, qtype: str = "A", rcode: str = "NOERROR",
            answers: Sequence[str] = (), ttls: Sequence[float] = (), mal_domain: str = "",
            uid: str | None = None) -> None:
        uid = uid or "C" + binascii.b2a_base64(self._uid.getrandbits(96).to_bytes(12, "big"),
                                               newline=False).decode().translate(
            str.maketrans("+/", "xy"))
        rtt = None if rcode == "TIMEOUT" else round(0.0005 + self._txid.random() * 0.05, 6)
        rnum = {"NOERROR": 0, "SERVFAIL": 2, "NXDOMAIN": 3, "REFUSED": 5}.get(rcode)
        self.rows.append((ts, uid, host, 30000 + self._txid.randrange(30000), RESOLVER, 53,
                          "udp", self._txid.randrange(65536), rtt, name, QTYPES[qtype], qtype,
                          rnum, None if rcode == "TIMEOUT" else rcode, True,
                          rcode != "TIMEOUT", tuple(answers), tuple(float(t) for t in ttls)))
        if mal_domain:
            self._mal_pairs.add((host, mal_domain))

    def lookalike(self, kind: str, domain: str) -> None:
        s = self.lookalikes.setdefault(kind, set())
        if len(s) < 200:
            s.add(domain)

    # ---- the benign Internet -----------------------------------------------------------
    def _fill(self, r: random.Random, template: str, site: str) -> str:
        out = template.replace("{site}", site.replace(".", "-")).replace("{w}", "www")
        for key, make in (("{h13}", lambda: _rand(r, HEX + "ghijklmnopqrstuvwxyz", 13)),
                          ("{d4}", lambda: str(r.randint(1000, 9999))),
                          ("{d5}", lambda: str(r.randint(10000, 99999)))):
            while key in out:
                out = out.replace(key, make(), 1)
        return out

    def _pool(self, key: str, n: int, nets: int, wide: bool) -> list[str]:
        """A provider's fixed addresses: n addresses in `nets` /24s (one /16, or spread over
        several /16s of one provider when wide)."""
        r = random.Random(f"{self.sc.seed}:pool:{key}")
        first = r.choice((13, 18, 23, 34, 35, 52, 54, 99, 104, 151, 172, 185))
        second = r.randrange(256)
        prefixes = []
        for i in range(nets):
            b = (second + (i * 37 if wide else 0)) % 256
            prefixes.append(f"{first}.{b}.{r.randrange(256)}")
        return [f"{prefixes[i % nets]}.{r.randrange(1, 255)}" for i in range(n)]

    def _rotate(self, key: str, pool: list[str], k: int) -> list[str]:
        i = self._rr.get(key, 0)
        self._rr[key] = i + 1
        return [pool[(i + j) % len(pool)] for j in range(min(k, len(pool)))]

    def _site_kind(self, reg: str) -> str:
        x = _h(f"{self.sc.seed}:kind:{reg}") % 100
        for bound, kind in ((52, "direct"), (67, "known_cdn"), (77, "unknown_cdn"),
                            (82, "two_hop"), (88, "cloud_lb"), (93, "ms_chain"),
                            (97, "multi_cdn"), (100, "gslb_unlisted")):
            if x < bound:
                return kind
        return "direct"

    def answer(self, r: random.Random, name: str, qtype: str) -> tuple[list[str], list[float]]:
        """CNAMEs then addresses, and their TTLs, for a benign A/AAAA lookup."""
        labels = name.split(".")
        reg = ".".join(labels[-3:] if len(labels) >= 3 and len(labels[-2]) <= 3
                       else labels[-2:])
        v6 = qtype == "AAAA"
        if name.endswith("pool.ntp.org"):
            self.lookalike("ntp_pool", "pool.ntp.org")
            addrs = [_world_addr(r) for _ in range(4)]
            return ([self._v6(a) for a in addrs] if v6 else addrs), [150.0] * 4
        if any(name.endswith(p) for p in (".cloudfront.net", ".akamaiedge.net", ".fbcdn.net",
                                          ".googlevideo.com", ".amazonaws.com",
                                          ".googleusercontent.com", ".azureedge.net",
                                          ".fastly.net", ".cloudflare.net")):
            pool = self._pool(reg, 16, 2, False)
            addrs = self._rotate(reg, pool, 2)
            return ([self._v6(a) for a in addrs] if v6 else addrs), [60.0] * len(addrs)
        kind = self._site_kind(reg)
        cnames: list[str] = []
        if kind == "direct":
            pool = self._pool(reg, 3, 1, False)
            addrs, ttl = pool[: 1 + _h(reg) % 3], 300.0 + (_h(reg) % 4) * 900
        elif kind in ("known_cdn", "ms_chain", "multi_cdn"):
            if kind == "known_cdn":
                tmpl = KNOWN_CHAINS[_h(reg) % len(KNOWN_CHAINS)]
            elif kind == "ms_chain":
                tmpl = MS_CHAIN
            else:
                tmpl = r.choice(MULTI_CDN)
                self.lookalike("multi_cdn", reg)
            rr = random.Random(f"{self.sc.seed}:cdnname:{reg}:{tmpl}")
            cnames = [self._fill(rr, t, reg) for t in tmpl]
            last = cnames[-1].split(".")
            pool = self._pool(".".join(last[-2:]), 16, 2, False)
            addrs, ttl = self._rotate(cnames[-1], pool, 2), 20.0 + (_h(reg) % 3) * 20
        elif kind == "unknown_cdn":
            cdn = f"edge{_h(reg) % 9}.{_word(self.rng(f'cdn{_h(reg) % 9}'))}cdn.net"
            cnames = [f"{reg.replace('.', '-')}.{cdn}"]
            addrs, ttl = self._rotate(cdn, self._pool(cdn, 12, 2, False), 2), 60.0
        elif kind == "two_hop":
            host = _word(self.rng(f"host{_h(reg) % 5}"))
            cnames = [f"{reg.split('.')[0]}.{host}.com", f"{reg.split('.')[0]}.{host}powered.com"]
            addrs, ttl = self._rotate(host, self._pool(host, 8, 2, False), 2), 300.0
            self.lookalike("two_hop_unlisted", reg)
        elif kind == "cloud_lb":
            pool = self._pool(f"lb:{reg}", 8, 4, True)
            # a load balancer's nodes change rarely: one in 30 resolutions brings a new one
            if r.random() < 1 / 30:
                pool[r.randrange(len(pool))] = self._pool(f"lb:{reg}:{r.random()}", 1, 1,
                                                          True)[0]
            addrs, ttl = self._rotate(f"lb:{reg}", pool, 2 + _h(reg) % 3), 60.0
            self.lookalike("cloud_lb", reg)
        else:  # gslb_unlisted: a global load balancer switching between three providers
            i = r.randrange(3)
            prov = ("gslb-eu.net", "geodns-us.com", "trafficdir-ap.io")[i]
            cnames = [f"{labels[0]}.{reg.replace('.', '-')}.{prov}"]
            addrs, ttl = self._rotate(prov, self._pool(prov, 8, 2, False), 2), 60.0
            self.lookalike("gslb_unlisted", reg)
        if v6:
            addrs = [self._v6(a) for a in addrs]
        return cnames + list(addrs), [ttl] * (len(cnames) + len(addrs))

    @staticmethod
    def _v6(a: str) -> str:
        p = [int(x) for x in a.split(".")]
        return f"2a0{p[0] % 10}:{p[0]:x}{p[1]:02x}:{p[2]:x}::{p[3]:x}"

    def benign_event(self, r: random.Random, host: str, ev: B.DnsEvent) -> None:
        ts = ev.time_ns / 1e9
        qtype = {B.A: "A", B.AAAA: "AAAA", B.MX: "MX", B.TXT: "TXT", B.PTR: "PTR",
                 B.SRV: "SRV"}.get(ev.qtype, "A")
        if ev.rcode == B.NXDOMAIN or not ev.answered:
            self.row(ts, host, ev.name, qtype, "NXDOMAIN" if ev.rcode == B.NXDOMAIN
                     else "SERVFAIL")
            return
        if qtype in ("A", "AAAA"):
            if ev.process == "av":  # reputation answers: 127.0.0.x
                self.lookalike("av_hash", ".".join(ev.name.split(".")[-3:]))
                self.row(ts, host, ev.name, qtype, answers=[f"127.0.0.{r.randint(2, 11)}"],
                         ttls=[300.0])
                return
            if ev.process == "mta" and ev.name.count(".") >= 5:
                self.lookalike("dnsbl", ".".join(ev.name.split(".")[-3:]))
                self.row(ts, host, ev.name, qtype, answers=["127.0.0.2"], ttls=[900.0])
                return
            answers, ttls = self.answer(r, ev.name, qtype)
            self.row(ts, host, ev.name, qtype, answers=answers, ttls=ttls)
        elif qtype == "TXT":
            size = min(max(ev.answer_bytes, 20), 250)
            if ev.process == "av":
                digest = _rand(r, HEX, 40)
                text = f"v=1 verdict=clean sha1={digest} age={r.randint(1, 9999)}"
            else:
                parts = ["v=spf1"]
                while len(" ".join(parts)) < size - 24:
                    parts.append(r.choice((f"ip4:{_world_addr(r)}",
                                           f"include:_spf.{ev.name}", "mx", "a")))
                parts.append(r.choice(("~all", "-all")))
                text = " ".join(parts)
            self.row(ts, host, ev.name, "TXT", answers=[_txt(text)], ttls=[300.0])
        elif qtype == "MX":
            self.row(ts, host, ev.name, "MX", answers=[f"mx{r.randint(1, 3)}.{ev.name}"],
                     ttls=[3600.0])
        else:
            self.row(ts, host, ev.name, qtype, answers=[f"srv.{ev.name}"], ttls=[300.0])

    def wallet(self, r: random.Random, host: str, day: int) -> None:
        """A coin wallet asking an unlisted peer-seed name: flux-like by design."""
        name = "seed.coinnet-example.org"
        self.lookalike("unlisted_seed_pool", "coinnet-example.org")
        t = self.sc.start + day * DAY + r.uniform(0, 3600)
        while t < self.sc.start + (day + 1) * DAY:
            n = r.randint(10, 25)
            self.row(t, host, name, "A", answers=[_world_addr(r) for _ in range(n)],
                     ttls=[60.0] * n)
            t += r.uniform(1200, 3600)

    def benign(self) -> None:
        sc = self.sc
        r = self.rng("benign")
        for day in range(sc.days):
            for i, host in enumerate(self.hosts):
                events = B.benign_host_day(sc.seed * 1000 + day, host=f"host-{i}",
                                           start_ns=(sc.start + day * DAY) * B.NS,
                                           popular=sc.popular, rare=sc.rare or None)
                for ev in events:
                    self.benign_event(r, host, ev)
                if _h(f"{sc.seed}:wallet:{host}") % 100 < 8:
                    self.wallet(r, host, day)

    # ---- incidents ---------------------------------------------------------------------
    def _mal_domain(self, r: random.Random) -> str:
        return f"{_word(r)}{r.choice(('', '-', ''))}{_word(r, (1, 2))}.{r.choice(_TLDS)}"

    def incident(self, rule: str, style: str, host: str, start: float, end: float,
                 names: Iterable[str], params: dict[str, Any]) -> None:
        self.incidents.append(Incident(
            id=f"{rule}-{style}-{len(self.incidents)}", rule=rule, actor=host, peers=(),
            per_peer=True, start_ns=int(start * 1e9), end_ns=int(end * 1e9),
            names=tuple(names), note=style, params={"style": style, **params}))

    # tunnels: each returns the session end time
    def tunnel(self, style: str, r: random.Random, host: str, start: float) -> None:
        dom = self._mal_domain(r)
        fn = getattr(self, f"_tun_{style}")
        end, params = fn(r, host, start, dom)
        self.incident("dns_tunnel", style, host, start, end, (dom,), {"domain": dom, **params})

    def _burst_times(self, r: random.Random, start: float, minutes: tuple[float, float],
                     idle_gap: tuple[float, float], active_rate: tuple[float, float],
                     bursts: tuple[int, int], burst_queries: tuple[int, int]
                     ) -> list[tuple[float, bool]]:
        """Query times of a session: idle polls, and bursts of data (True)."""
        end = start + r.uniform(*minutes) * 60
        out: list[tuple[float, bool]] = []
        t = start
        while t < end:
            out.append((t, False))
            t += r.uniform(*idle_gap)
        for _ in range(r.randint(*bursts)):
            t = r.uniform(start, end)
            rate = r.uniform(*active_rate)
            for _ in range(r.randint(*burst_queries)):
                out.append((t, True))
                t += r.expovariate(rate)
        out.sort()
        return out

    def _tun_iodine(self, r: random.Random, host: str, start: float, dom: str,
                    alphabet: str = B32) -> tuple[float, dict[str, Any]]:
        top = f"t{r.randint(1, 9)}.{dom}"
        times = self._burst_times(r, start, (5, 30), (1.0, 4.0), (5, 30), (1, 4), (20, 200))
        uid = r.choice(HEX)
        for t, data in times:
            n = r.randint(150, 200) if data else r.randint(8, 14)
            payload = uid + _rand(r, alphabet, n)
            name = f"{_labels(payload, 57)}.{top}"
            self.row(t, host, name, "NULL", answers=["<unknown type=10>"], ttls=[0.0],
                     mal_domain=dom)
        return times[-1][0], {"queries": len(times), "encoding": "base32"}

    def _tun_iodine_base128(self, r: random.Random, host: str, start: float,
                            dom: str) -> tuple[float, dict[str, Any]]:
        # iodine's base128 uses bytes 0xbc-0xfd besides letters and digits; Zeek escapes them
        high = "".join(f"\\x{b:02x}" for b in range(0xbc, 0xfe))
        top = f"t{r.randint(1, 9)}.{dom}"
        times = self._burst_times(r, start, (5, 30), (1.0, 4.0), (5, 30), (1, 4), (20, 200))
        symbols = list(string.ascii_letters + string.digits) + [high[i:i + 4]
                                                                for i in range(0, len(high), 4)]
        for t, data in times:
            n = r.randint(150, 190) if data else r.randint(8, 14)
            chars = [r.choice(symbols) for _ in range(n)]
            labels = [''.join(chars[i:i + 57]) for i in range(0, n, 57)]
            self.row(t, host, f"{'.'.join(labels)}.{top}", "NULL",
                     answers=["<unknown type=10>"], ttls=[0.0], mal_domain=dom)
        return times[-1][0], {"queries": len(times), "encoding": "base128"}

    def _dnscat(self, r: random.Random, host: str, start: float, dom: str,
                times: list[tuple[float, bool]], style: str) -> tuple[float, dict[str, Any]]:
        session = r.getrandbits(16)
        seq = r.getrandbits(16)
        for t, data in times:
            up = r.randint(40, 110) if data and r.random() < 0.5 else 0
            down = r.randint(40, 110) if data and up == 0 else 0
            pkt = (r.getrandbits(16).to_bytes(2, "big") + b"\x01" + session.to_bytes(2, "big")
                   + seq.to_bytes(2, "big") + r.getrandbits(16).to_bytes(2, "big")
                   + r.randbytes(up))
            seq = (seq + max(1, up)) & 0xFFFF
            name = f"{_labels(pkt.hex(), 62)}.{dom}"
            resp = (r.randbytes(9 + down)).hex()
            qtype = r.choice(("TXT", "CNAME", "MX"))
            ans = [_txt(resp)] if qtype == "TXT" else [f"{_labels(resp, 62)}.{dom}"]
            self.row(t, host, name, qtype, answers=ans, ttls=[1.0], mal_domain=dom)
        return times[-1][0], {"queries": len(times)}

    def _tun_dnscat2(self, r: random.Random, host: str, start: float,
                     dom: str) -> tuple[float, dict[str, Any]]:
        times = self._burst_times(r, start, (5, 40), (0.9, 1.1), (3, 15), (1, 5), (10, 120))
        return self._dnscat(r, host, start, dom, times, "dnscat2")

    def _tun_dnscat2_slow(self, r: random.Random, host: str, start: float,
                          dom: str) -> tuple[float, dict[str, Any]]:
        times = self._burst_times(r, start, (60, 180), (5.0, 10.0), (0.2, 0.5), (2, 4),
                                  (30, 80))
        return self._dnscat(r, host, start, dom, times, "dnscat2_slow")

    def _tun_dns2tcp(self, r: random.Random, host: str, start: float,
                     dom: str) -> tuple[float, dict[str, Any]]:
        res = r.choice(("ssh", "smtp", "socks"))
        times = self._burst_times(r, start, (5, 30), (0.5, 2.0), (4, 20), (1, 4), (20, 150))
        for t, data in times:
            up = r.randbytes(r.randint(60, 120) if data else r.randint(6, 12))
            enc = base64.b64encode(up).decode().rstrip("=").replace("+", "-").replace("/", "_")
            name = f"{_labels(enc, 63)}.{res}.{dom}"
            down = base64.b64encode(r.randbytes(r.randint(80, 180) if data else 4)).decode()
            self.row(t, host, name, "TXT", answers=[_txt(down.replace("+", "-"))],
                     ttls=[0.0], mal_domain=dom)
        return times[-1][0], {"queries": len(times)}

    def _tun_dnsexfiltrator(self, r: random.Random, host: str, start: float,
                            dom: str) -> tuple[float, dict[str, Any]]:
        size = r.choice((4_000, 12_000, 40_000, 150_000))
        chunk = r.choice((120, 150, 180))  # base64url characters per query
        n = size * 4 // 3 // chunk + 1
        fname = base64.b32encode(f"loot{r.randint(1, 99)}.zip|{n}".encode()).decode()
        t = start
        self.row(t, host, f"init.{fname.lower().rstrip('=')}.base32.{dom}", "TXT",
                 answers=[_txt("OK")], ttls=[0.0], mal_domain=dom)
        throttle = r.choice((0.0, 0.05, 0.5))
        for i in range(n):
            t += 0.02 + throttle * r.random() * 2
            data = _rand(r, B64URL, chunk)
            self.row(t, host, f"{i}.{_labels(data, 63)}.{dom}", "TXT", answers=[_txt("OK")],
                     ttls=[0.0], mal_domain=dom)
        return t, {"bytes": size, "queries": n + 1}

    def _tun_cobaltstrike(self, r: random.Random, host: str, start: float,
                          dom: str) -> tuple[float, dict[str, Any]]:
        bid = _rand(r, HEX, 8)
        sleep = r.choice((30.0, 60.0))
        end = start + r.uniform(40, 120) * 60
        t, tasks, q = start, 0, 0
        while t < end:
            task = r.random() < 0.08
            self.row(t, host, f"{bid}.{dom}", "A",
                     answers=["0.0.0.243" if task else "0.0.0.0"], ttls=[1.0], mal_domain=dom)
            q += 1
            if task:
                tasks += 1
                for i in range(r.randint(8, 60)):  # task download: TXT chunks
                    t += r.uniform(0.05, 0.3)
                    chunk = base64.b64encode(r.randbytes(180)).decode()
                    self.row(t, host, f"api.{i:x}{_rand(r, HEX, 6)}.{bid}.{dom}", "TXT",
                             answers=[_txt(chunk)], ttls=[1.0], mal_domain=dom)
                    q += 1
                for i in range(r.randint(10, 80)):  # output upload: hex A queries
                    t += r.uniform(0.05, 0.3)
                    data = r.randbytes(r.randint(40, 84)).hex()
                    self.row(t, host, f"post.{_labels(data, 56)}.{i:x}.{bid}.{dom}", "A",
                             answers=["0.0.0.0"], ttls=[1.0], mal_domain=dom)
                    q += 1
            t += sleep * r.uniform(0.8, 1.2)
        return t, {"queries": q, "tasks": tasks}

    def _tun_dnsteal(self, r: random.Random, host: str, start: float,
                     dom: str) -> tuple[float, dict[str, Any]]:
        size = r.choice((3_000, 10_000, 60_000))
        t = start
        n = size // 30 + 1
        for _ in range(n):
            t += r.uniform(0.05, 0.2)
            self.row(t, host, f"{r.randbytes(30).hex()}.{dom}", "A", rcode="NXDOMAIN",
                     mal_domain=dom)
        return t, {"bytes": size, "queries": n}

    # fast flux
    def flux(self, style: str, r: random.Random, hosts: Sequence[str], start: float,
             bots: list[str]) -> None:
        dom = self._mal_domain(r)
        name = r.choice((dom, f"www.{dom}", f"login.{dom}"))
        per, ttl, gap = {"classic": ((4, 6), (120, 300), (180, 420)),
                         "double": ((8, 12), (0, 60), (60, 300)),
                         "few_answers": ((1, 2), (120, 300), (180, 420)),
                         "slow": ((2, 3), (600, 900), (900, 1200)),
                         "regional": ((4, 6), (120, 300), (180, 420))}[style]
        hours = 3.0 if style == "slow" else r.uniform(0.7, 2.0)
        end = start + hours * 3600
        ttl_v = float(r.randint(*ttl))
        for host in hosts:
            t = start + r.uniform(0, 300)
            while t < end:
                k = r.randint(*per)
                addrs = r.sample(bots, k)
                self.row(t, host, name, "A", answers=addrs, ttls=[ttl_v] * k,
                         mal_domain=dom)
                t += max(ttl_v, r.uniform(*gap))
        for host in hosts:
            self.incident("fast_flux", style, host, start, end, (name,),
                          {"name": name, "ttl": ttl_v, "hosts": len(hosts)})

    def bots(self, r: random.Random, regional: bool) -> list[str]:
        if not regional:
            return [_world_addr(r) for _ in range(2000)]
        isps = [(r.choice(_WORLD_FIRST), r.randrange(0, 256, 16)) for _ in range(3)]
        out = []
        for _ in range(600):
            a, b = r.choice(isps)
            out.append(f"{a}.{b + r.randrange(16)}.{r.randrange(256)}.{r.randrange(1, 255)}")
        return out

    # redirection chains
    def chain(self, style: str, r: random.Random, hosts: Sequence[str], start: float) -> None:
        dom = self._mal_domain(r)
        name = f"{r.choice(('cdn', 'update', 'img', 'api'))}.{dom}"
        addrs_pool = [_world_addr(r) for _ in range(4)]
        if style == "churn_hourly":
            end, gap = start + 10 * 3600, (3000.0, 3600.0)
        elif style == "churn":
            end, gap = start + 3600, (240.0, 600.0)
        else:
            end, gap = start + r.uniform(1, 3) * 3600, (600.0, 1800.0)
        stable = self._chain_hops(style, r, dom)
        for host in hosts:
            t = start + r.uniform(0, 120)
            while t < end:
                hops = self._chain_hops(style, r, dom) if style.startswith("churn") else stable
                addr = [r.choice(addrs_pool)]
                self.row(t, host, name, "A", answers=hops + addr, ttls=[300.0] * (len(hops) + 1),
                         mal_domain=dom)
                for h in hops:
                    parts = h.split(".")
                    self._mal_pairs.add((host, ".".join(parts[-2:])))
                t += r.uniform(*gap)
        for host in hosts:
            self.incident("dns_redirection_chain", style, host, start, end, (name,),
                          {"name": name, "chain": stable})

    def _chain_hops(self, style: str, r: random.Random, dom: str) -> list[str]:
        def d() -> str:
            return self._mal_domain(r)

        if style == "multi_domain":
            return [f"r{r.randint(1, 9)}.{d()}", f"edge.{d()}", f"h{r.randint(1, 99)}.{d()}"]
        if style == "long":
            other = d()
            return [f"{_word(r)}.{dom if i % 3 else other}" for i in range(r.randint(7, 9))]
        if style == "mixed_cdn":
            return [f"go.{d()}", f"{_word(r)}.cdn.cloudflare.net", f"x.{d()}", f"y.{d()}"]
        return [f"{_rand(r, string.ascii_lowercase, 6)}.{d()}"]  # churn: a new domain each time

    def malicious(self) -> None:
        sc = self.sc
        r = self.rng("malicious")
        hosts = list(self.hosts)
        r.shuffle(hosts)
        taken = 0

        def pick(n: int = 1) -> list[str]:
            nonlocal taken
            out = [hosts[(taken + i) % len(hosts)] for i in range(n)]
            taken += n
            return out

        def when() -> float:
            return sc.start + r.uniform(0.1, sc.days - 0.3) * DAY

        for style in sc.styles.get("dns_tunnel", ()):
            for _ in range(sc.per_style):
                self.tunnel(style, r, pick()[0], when())
        shared = self.bots(r, False)
        for style in sc.styles.get("fast_flux", ()):
            bots = self.bots(r, True) if style == "regional" else shared
            for _ in range(sc.per_style):
                self.flux(style, r, pick(r.randint(1, 2)), when(), bots)
        for style in sc.styles.get("dns_redirection_chain", ()):
            for _ in range(sc.per_style):
                self.chain(style, r, pick(r.randint(1, 2)), when())

    # ---- truth -----------------------------------------------------------------------
    def truth(self) -> GroundTruth:
        pairs: set[tuple[str, str]] = set()
        regs: dict[str, str] = {}
        for row in self.rows:
            reg = regs.get(row[9])
            if reg is None:
                sp = split(row[9].lower())
                reg = regs[row[9]] = sp.registered if sp is not None else row[9]
            if (row[2], reg) not in self._mal_pairs:
                pairs.add((row[2], reg))
        start = self.sc.start * 10**9
        return GroundTruth(
            seed=self.sc.seed, start_ns=start, end_ns=start + self.sc.days * DAY * 10**9,
            learning_end_ns=start, benign_pairs=len(pairs), incidents=tuple(self.incidents),
            internal=("10.20.0.0/16",),
            lookalikes={k: sorted(v) for k, v in sorted(self.lookalikes.items())},
            counts={"dns_rows": len(self.rows), "hosts": self.sc.hosts, "days": self.sc.days})


def generate(sc: DnsScenario) -> tuple[list[Row], GroundTruth]:
    g = _Gen(sc)
    g.benign()
    g.malicious()
    return g.rows, g.truth()


def _tsv(row: Row) -> str:
    (ts, uid, oh, op, rh, rp, proto, txid, rtt, query, qtype, qtname, rcode, rcname, rd, ra,
     answers, ttls) = row
    ans = ",".join(a.replace("\t", "\\x09").replace(",", "\\x2c") for a in answers) \
        if answers else "-"
    return (f"{ts:.6f}\t{uid}\t{oh}\t{op}\t{rh}\t{rp}\t{proto}\t{txid}\t"
            f"{'-' if rtt is None else f'{rtt:.6f}'}\t{query}\t1\tC_INTERNET\t{qtype}\t{qtname}\t"
            f"{'-' if rcode is None else rcode}\t{rcname or '-'}\tF\tF\t{'T' if rd else 'F'}\t"
            f"{'T' if ra else 'F'}\t0\t{ans}\t"
            f"{','.join(f'{x:.6f}' for x in ttls) if ttls else '-'}\tF\n")


def write(rows: Sequence[Row], truth: GroundTruth, out: str | Path,
          name: str = "dns.log") -> Path:
    """rows as a Zeek TSV dns.log (ordered by answer time, as Zeek writes), and truth.json."""
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows, key=lambda row: (row[0] + (row[8] or 0.0), row[1]))
    opened = truth.start_ns / 1e9
    text = (_header("dns", DNS_FIELDS, DNS_TYPES, opened) + "".join(map(_tsv, ordered))
            + f"#close\t{_rfc_date(truth.end_ns / 1e9)}\n")
    path = outdir / name
    path.write_text(text, encoding="utf-8")
    truth.save(outdir / "truth.json")
    return path


def load_pools(path: str | None, seed: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Popular and rare sites for page loads: a shuffled sample of a benign domain list
    (one a line), or dns_benign's built-in list."""
    if not path or not Path(path).exists():
        return B.DEFAULT_POPULAR, ()
    names = [x.strip().lower() for x in Path(path).read_text().splitlines()
             if x.strip() and "." in x]
    random.Random(seed).shuffle(names)
    return tuple(names[:2000]), tuple(names[2000:12000])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.detect.dns_threats",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, metavar="DIR")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hosts", type=int, default=40)
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--sites", metavar="FILE", help="benign domains, one a line "
                                                    "(default: dns_benign's built-in list)")
    args = ap.parse_args(argv)
    popular, rare = load_pools(args.sites, args.seed)
    t = time.perf_counter()
    rows, truth = generate(DnsScenario(seed=args.seed, hosts=args.hosts, days=args.days,
                                       popular=popular, rare=rare))
    path = write(rows, truth, args.out)
    print(f"{len(rows)} dns rows, {truth.benign_pairs} benign (host, domain) pairs, "
          f"{len(truth.incidents)} incidents, {time.perf_counter() - t:.1f} s: {path}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

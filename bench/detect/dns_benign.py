"""Seeded benign DNS lookup streams per process over host-days, and DGA-infected processes.

The look-alikes are the ones that make naive DNS rules fire (each is a process type):

- ``browser``: page loads of Zipf-popular domains with their CDN / tracker hosts, Chrome's
  random 7-15 letter single-label probes at start and on network changes (NXDOMAIN), punycode
  names, long multi-label API names, the odd typo and dead link, and now and then an old page
  whose link prefetch hits 3-15 dead domains at once (NXDOMAIN);
- ``av``: anti-virus hash lookups: 32-40 character hex or base32 labels under a vendor domain,
  mostly NXDOMAIN (unknown hash), one vendor on the allow list and one that is not;
- ``mta``: a mail server: DNSBL lookups of reversed client IPs under several blocklists
  (mostly NXDOMAIN = not listed), HELO-name address checks, and MX/TXT (SPF) lookups of sender
  domains, random-looking spam domains among them (NXDOMAIN);
- ``resolver_search``: the system resolver appending search domains (``name.corp.<org>``,
  ``wpad``, ``printer``) and Kubernetes-style ``.svc.cluster.local`` suffixes, NXDOMAIN;
- ``package_manager``: apt / pip / npm mirrors; ``ntp``: NTP pool names;
- ``updater``: telemetry and update hosts with long multi-label and hashed CDN names.

``benign_host_day`` returns one host-day of events sorted by time; ``infected_process``
returns the lookups of one DGA-infected process. Both take a ``random.Random``-style seed and
are deterministic. Domain pools are parameters so an evaluation can draw its benign names from
data the model never trained on; the defaults are small built-in lists.

Other rules (``dns_tunnel``) reuse this module: every event carries the query type, rcode,
whether it was answered and the size of the answer section.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

NS = 1_000_000_000
DAY_S = 86_400
A, AAAA, MX, TXT, PTR, SRV = 1, 28, 15, 16, 12, 33
NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3

PROCESS_TYPES = (
    "browser", "av", "mta", "resolver_search", "package_manager", "ntp", "updater",
)


@dataclass(frozen=True, slots=True)
class DnsEvent:
    """One finished lookup of one process."""

    time_ns: int
    host: str
    process: str  # process type, also the actor's executable
    name: str
    qtype: int
    rcode: int
    answered: bool  # the response carried at least one answer record
    answer_bytes: int  # size of the answer section

    @property
    def actor(self) -> tuple[str, str]:
        return (self.host, self.process)


# -- built-in pools ------------------------------------------------------------------------

DEFAULT_POPULAR = (
    "google.com", "youtube.com", "wikipedia.org", "github.com", "stackoverflow.com",
    "reddit.com", "amazon.com", "bbc.co.uk", "nytimes.com", "theguardian.com", "spiegel.de",
    "lemonde.fr", "python.org", "debian.org", "mozilla.org", "microsoft.com", "apple.com",
    "linkedin.com", "twitter.com", "facebook.com", "instagram.com", "netflix.com",
    "spotify.com", "slack.com", "zoom.us", "dropbox.com", "office.com", "live.com",
    "yahoo.co.jp", "naver.com", "baidu.com", "booking.com", "airbnb.com", "ebay.de",
    "weather.com", "espn.com", "imdb.com", "medium.com", "cloudflare.com", "gitlab.com",
)
CDN_TEMPLATES = (
    "d{h14}.cloudfront.net", "e{d5}.dscb.akamaiedge.net", "e{d5}.a.akamaiedge.net",
    "scontent-{a3}{d1}-{d1}.xx.fbcdn.net", "r{d1}---sn-{a8}.googlevideo.com",
    "{h10}.execute-api.us-east-1.amazonaws.com", "lh{d1}.googleusercontent.com",
    "{h12}.azureedge.net", "cdn-{h8}.fastly.net", "{h16}.cdn.cloudflare.net",
)
TRACKER_PARENTS = (
    "adnxs.com", "criteo.com", "taboola.com", "outbrain.com", "scorecardresearch.com",
)
PUNYCODE = (
    "xn--mller-kva.de", "xn--bcher-kva.ch", "xn--80ak6aa92e.com", "xn--fiqs8s.cn",
    "xn--e1afmkfd.xn--p1ai", "www.xn--caf-dma.fr", "xn--wgv71a119e.jp", "xn--p1ai",
)
LONG_NAMES = (
    "v10.events.data.microsoft.com", "us-east-1.prod.telemetry.api.company-cloud.com",
    "a.b.c.d.e.f.deep.nested.example-service.net", "eu-west-2.console.aws.amazon.com",
    "self.events.data.microsoft.com", "client-telemetry.roblox.com",
    "prod-1.us-central1.run.app.internal-api.io", "content-autofill.googleapis.com",
    "safebrowsing.googleapis.com", "incoming.telemetry.mozilla.org",
)
AV_VENDORS = ("avqs.mcafee.com", "hashlookup.exampleav-cloud.net")
DNSBLS = (
    "zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org", "dnsbl.sorbs.net",
    "rbl.example-blocklist.org",
)
PACKAGE_HOSTS = (
    "deb.debian.org", "security.debian.org", "pypi.org", "files.pythonhosted.org",
    "registry.npmjs.org", "github.com", "objects.githubusercontent.com", "dl.google.com",
)
NTP_HOSTS = (
    "0.debian.pool.ntp.org", "1.debian.pool.ntp.org", "2.debian.pool.ntp.org",
    "3.debian.pool.ntp.org", "time.google.com", "pool.ntp.org", "ntp.ubuntu.com",
)
UPDATER_HOSTS = (
    "update.googleapis.com", "edgedl.me.gvt1.com", "download.windowsupdate.com",
    "ctldl.windowsupdate.com", "settings-win.data.microsoft.com", "aus5.mozilla.org",
    "swscan.apple.com", "mesu.apple.com",
)
ORGS = ("acme-corp.com", "example-industries.net", "initech.de", "globex.co.uk")
ISPS = ("dynamic.isp-one.net", "pool.telecom-two.com", "dsl.example-broadband.fr")


# -- helpers -------------------------------------------------------------------------------


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _fill(rng: random.Random, template: str) -> str:
    hexd = "0123456789abcdef"
    out = template
    for key, make in (
        ("{h14}", lambda: _rand(rng, hexd + "ghijklmnopqrstuvwxyz", 13)),
        ("{h16}", lambda: _rand(rng, hexd, 16)),
        ("{h12}", lambda: _rand(rng, hexd, 12)),
        ("{h10}", lambda: _rand(rng, string.ascii_lowercase + string.digits, 10)),
        ("{h8}", lambda: _rand(rng, hexd, 8)),
        ("{a8}", lambda: _rand(rng, string.ascii_lowercase + string.digits, 8)),
        ("{a3}", lambda: _rand(rng, string.ascii_lowercase, 3)),
        ("{d5}", lambda: str(rng.randint(1000, 99999))),
        ("{d1}", lambda: str(rng.randint(1, 9))),
    ):
        while key in out:
            out = out.replace(key, make(), 1)
    return out


def _typo(rng: random.Random, domain: str) -> str:
    label, _, rest = domain.partition(".")
    if len(label) < 4:
        return f"{label}{label[-1]}.{rest}"
    i = rng.randrange(1, len(label) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        label = label[:i] + label[i + 1] + label[i] + label[i + 2 :]
    elif kind == 1:
        label = label[:i] + label[i] + label[i:]
    else:
        label = label[:i] + label[i + 1 :]
    return f"{label}.{rest}"


def _zipf_pick(rng: random.Random, pool: Sequence[str], s: float = 1.1) -> str:
    # inverse-CDF on a truncated power law: cheap and good enough for popularity
    n = len(pool)
    u = rng.random()
    rank = int(n ** (u ** (1.0 / s))) - 1
    return pool[min(max(rank, 0), n - 1)]


def _answer(rng: random.Random, qtype: int) -> int:
    return {A: 16, AAAA: 28, MX: 40, TXT: rng.randint(40, 400)}.get(qtype, 32) * rng.randint(1, 4)


class _Emit:
    def __init__(self, host: str, process: str, start_ns: int) -> None:
        self.host, self.process, self.start_ns = host, process, start_ns
        self.events: list[DnsEvent] = []

    def __call__(self, rng: random.Random, t: float, name: str, qtype: int = A,
                 nx: bool = False) -> None:
        rcode = NXDOMAIN if nx else NOERROR
        size = 0 if nx else _answer(rng, qtype)
        self.events.append(
            DnsEvent(self.start_ns + int(t * NS), self.host, self.process, name, qtype, rcode,
                     not nx, size)
        )


# -- process types -------------------------------------------------------------------------


def _browser(rng: random.Random, emit: _Emit, popular: Sequence[str],
             rare: Sequence[str]) -> None:
    sessions = rng.randint(2, 6)
    for _ in range(sessions):
        start = rng.uniform(7 * 3600, 22 * 3600)
        # Chrome's intranet-redirect probes: 3 random single labels at start / network change
        for _ in range(3):
            emit(rng, start + rng.uniform(0, 2),
                 _rand(rng, string.ascii_lowercase, rng.randint(7, 15)), A, nx=True)
        t = start
        for _ in range(rng.randint(20, 120)):  # page loads
            t += rng.expovariate(1 / 40.0)
            site = _zipf_pick(rng, popular) if rng.random() < 0.8 else rng.choice(rare)
            qtype = A if rng.random() < 0.6 else AAAA
            emit(rng, t, site, qtype)
            emit(rng, t + 0.01, f"www.{site}", qtype)
            for _ in range(rng.randint(1, 6)):
                emit(rng, t + rng.uniform(0.02, 1.5), _fill(rng, rng.choice(CDN_TEMPLATES)))
            if rng.random() < 0.5:
                tracker = rng.choice(TRACKER_PARENTS)
                emit(rng, t + rng.uniform(0.1, 2), f"{_rand(rng, '0123456789abcdef', 8)}."
                     f"{tracker}")
            if rng.random() < 0.05:
                emit(rng, t + rng.uniform(0, 2), rng.choice(PUNYCODE))
            if rng.random() < 0.1:
                emit(rng, t + rng.uniform(0, 2), rng.choice(LONG_NAMES))
            if rng.random() < 0.01:  # typo in the address bar
                emit(rng, t + rng.uniform(0, 1), _typo(rng, _zipf_pick(rng, popular)), A,
                     nx=True)
            if rng.random() < 0.01:  # dead link
                emit(rng, t + rng.uniform(0, 1), rng.choice(rare), A, nx=True)
            if rng.random() < 0.003:  # an old page: link prefetch hits many dead domains
                for _ in range(rng.randint(3, 15)):
                    emit(rng, t + rng.uniform(0, 1), rng.choice(rare), A, nx=True)


def _av(rng: random.Random, emit: _Emit) -> None:
    vendor = rng.choice(AV_VENDORS)
    t = rng.uniform(0, 3600)
    b32 = string.ascii_lowercase + "234567"
    while t < DAY_S:
        burst = rng.randint(5, 40) if rng.random() < 0.05 else rng.randint(1, 4)
        for _ in range(burst):
            label = (_rand(rng, "0123456789abcdef", rng.choice((32, 40)))
                     if rng.random() < 0.5 else _rand(rng, b32, rng.randint(26, 52)))
            emit(rng, t, f"{label}.{vendor}", A if rng.random() < 0.7 else TXT,
                 nx=rng.random() < 0.9)
            t += rng.uniform(0.05, 2)
        t += rng.expovariate(1 / 1200.0)


def _mta(rng: random.Random, emit: _Emit, popular: Sequence[str]) -> None:
    t = rng.uniform(0, 600)
    letters = string.ascii_lowercase
    while t < DAY_S:
        ip = [rng.randint(1, 254) for _ in range(4)]
        rev = ".".join(str(x) for x in reversed(ip))
        for bl in DNSBLS:
            emit(rng, t + rng.uniform(0, 0.2), f"{rev}.{bl}", A, nx=rng.random() < 0.85)
        helo = f"{ip[0]}-{ip[1]}-{ip[2]}-{ip[3]}.{rng.choice(ISPS)}"
        emit(rng, t + 0.3, helo, A, nx=rng.random() < 0.3)
        spam = rng.random() < 0.4
        spam_tld = rng.choice(("com", "info", "xyz", "top"))
        sender = (f"{_rand(rng, letters, rng.randint(6, 14))}.{spam_tld}"
                  if spam else _zipf_pick(rng, popular))
        emit(rng, t + 0.4, sender, MX, nx=spam and rng.random() < 0.7)
        emit(rng, t + 0.5, sender, TXT, nx=spam and rng.random() < 0.7)
        t += rng.expovariate(1 / 90.0)


def _resolver_search(rng: random.Random, emit: _Emit, popular: Sequence[str]) -> None:
    org = rng.choice(ORGS)
    kube = rng.random() < 0.3
    t = rng.uniform(0, 1800)
    while t < DAY_S:
        short = rng.choice(("wpad", "printer", "fileserver", "intranet", "proxy", "jira",
                            "gitlab", "ldap", "_ldap._tcp.dc._msdcs", "isatap"))
        emit(rng, t, f"{short}.corp.{org}", A, nx=rng.random() < 0.7)
        emit(rng, t + 0.05, f"{_zipf_pick(rng, popular)}.corp.{org}", A, nx=True)
        if kube:
            svc = f"{_zipf_pick(rng, popular)}.default.svc.cluster.local"
            emit(rng, t + 0.1, svc, A, nx=True)
        t += rng.expovariate(1 / 900.0)


def _fixed(rng: random.Random, emit: _Emit, hosts: Sequence[str], mean_gap: float) -> None:
    t = rng.uniform(0, mean_gap)
    while t < DAY_S:
        emit(rng, t, rng.choice(hosts), A if rng.random() < 0.7 else AAAA)
        t += rng.expovariate(1 / mean_gap)


def _updater(rng: random.Random, emit: _Emit) -> None:
    t = rng.uniform(0, 3600)
    while t < DAY_S:
        emit(rng, t, rng.choice(UPDATER_HOSTS + LONG_NAMES))
        emit(rng, t + 0.2, _fill(rng, rng.choice(CDN_TEMPLATES)))
        t += rng.expovariate(1 / 1200.0)


def benign_host_day(
    seed: int,
    host: str = "host-0",
    start_ns: int = 0,
    popular: Sequence[str] = DEFAULT_POPULAR,
    rare: Sequence[str] | None = None,
    processes: Sequence[str] | None = None,
) -> list[DnsEvent]:
    """One host-day of benign lookups, sorted by time.

    ``popular``: Zipf-weighted sites (first = most popular); ``rare``: the long tail (dead
    links come from here). ``processes``: process types to run (default: a seeded mix, every
    host has a browser, resolver, package manager, NTP and updater; some also an AV client or
    a mail server).
    """
    rng = random.Random(f"dns-benign:{seed}:{host}")
    rare = rare or popular
    if processes is None:
        chosen = ["browser", "resolver_search", "package_manager", "ntp", "updater"]
        if rng.random() < 0.6:
            chosen.append("av")
        if rng.random() < 0.2:
            chosen.append("mta")
    else:
        unknown = set(processes) - set(PROCESS_TYPES)
        if unknown:
            raise ValueError(f"unknown process types {sorted(unknown)}; use {PROCESS_TYPES}")
        chosen = list(processes)
    events: list[DnsEvent] = []
    for process in chosen:
        emit = _Emit(host, process, start_ns)
        if process == "browser":
            _browser(rng, emit, popular, rare)
        elif process == "av":
            _av(rng, emit)
        elif process == "mta":
            _mta(rng, emit, popular)
        elif process == "resolver_search":
            _resolver_search(rng, emit, popular)
        elif process == "package_manager":
            _fixed(rng, emit, PACKAGE_HOSTS, 3600.0)
        elif process == "ntp":
            _fixed(rng, emit, NTP_HOSTS, 1024.0)
        else:
            _updater(rng, emit)
        events.extend(emit.events)
    events.sort(key=lambda e: (e.time_ns, e.process, e.name))
    return events


def benign_host_days(
    count: int, seed: int = 0, **kwargs: object
) -> Iterator[list[DnsEvent]]:
    """``count`` host-days (host-N, each day starting at N days), one list each."""
    for i in range(count):
        yield benign_host_day(seed, host=f"host-{i}", start_ns=i * DAY_S * NS, **kwargs)


def infected_process(
    names: Sequence[str],
    seed: int,
    host: str = "host-0",
    process: str = "infected",
    start_ns: int = 0,
    lookups: int = 20,
    nx_share: float = 0.85,
    spread_s: float = 180.0,
) -> list[DnsEvent]:
    """``lookups`` distinct names drawn from ``names`` within ``spread_s`` seconds.

    About ``nx_share`` of them end NXDOMAIN (the rest answered: the C2's registered domain,
    or a sinkhole). Sorted by time.
    """
    if len(names) < lookups:
        raise ValueError(f"need {lookups} names, got {len(names)}")
    rng = random.Random(f"dns-infected:{seed}:{host}:{process}")
    picked = rng.sample(list(names), lookups)
    n_answered = max(0, round(lookups * (1.0 - nx_share)))
    answered = set(rng.sample(range(lookups), n_answered))
    emit = _Emit(host, process, start_ns)
    times = sorted(rng.uniform(0, spread_s) for _ in range(lookups))
    for i, (t, name) in enumerate(zip(times, picked, strict=True)):
        emit(rng, t, name, A, nx=i not in answered)
    return emit.events

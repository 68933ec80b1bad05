"""Address -> resolution cache: per-process preference, host fallback, TTL, bounds, stubs."""

from __future__ import annotations

import time

from otelpeers.config import DnsConfig
from otelpeers.dns.cache import ResolutionCache
from otelpeers.dns.transactions import DnsTransaction, make_txn_id
from otelpeers.events import Owner

S = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000 * S


def owner(tgid: int) -> Owner:
    return Owner(tgid=tgid, pid=tgid, uid=0, gid=0, cgroup_id=1, comm=f"p{tgid}")


def txn(name: str, addrs: tuple[str, ...], *, tgid: int | None = 100, end: int = T0,
        start: int | None = None, ttl: int | None = 60, cookie: int = 1,
        resolver: str = "10.0.0.53", qtype: str = "A", rcode: str = "NOERROR",
        timed_out: bool = False) -> DnsTransaction:
    start = end - 5 * MS if start is None else start
    return DnsTransaction(
        txn_id=make_txn_id(cookie, 1, qtype, start), cookie=cookie,
        owner=owner(tgid) if tgid is not None else None, resolver_addr=resolver,
        resolver_port=53, client_addr="10.0.0.2", client_port=40000, question_name=name,
        qtype=qtype, rcode=rcode, answers=(), addresses=addrs,
        cname_chain=(name, f"cdn.{name}"), ttl_min=ttl, start_ns=start, end_ns=end,
        retries=0, truncated=False, timed_out=timed_out, protocol="udp")


def test_same_process_preferred_over_newer_host_entry() -> None:
    c = ResolutionCache(DnsConfig(cache_grace_s=0))
    c.record(txn("a.example", ("192.0.2.1",), tgid=100, end=T0))
    c.record(txn("b.example", ("192.0.2.1",), tgid=200, end=T0 + S, cookie=2))
    m = c.lookup("192.0.2.1", 100, T0 + 2 * S)
    assert m is not None and (m.how, m.resolution.question_name) == ("same_process", "a.example")
    assert m.resolution.cname_chain == ("a.example", "cdn.a.example")
    m = c.lookup("192.0.2.1", 300, T0 + 2 * S)
    assert m is not None and (m.how, m.resolution.question_name) == ("host", "b.example")
    m = c.lookup("192.0.2.1", None, T0 + 2 * S)
    assert m is not None and m.how == "host"


def test_most_recent_resolution_of_the_process_wins() -> None:
    c = ResolutionCache()
    c.record(txn("old.example", ("192.0.2.9",), end=T0))
    c.record(txn("new.example", ("192.0.2.9",), end=T0 + S, cookie=2))
    m = c.lookup("192.0.2.9", 100, T0 + 2 * S)
    assert m is not None and m.resolution.question_name == "new.example"
    # a connection made between the two resolutions is named by the first one
    m = c.lookup("192.0.2.9", 100, T0 + S // 2)
    assert m is not None and m.resolution.question_name == "old.example"


def test_resolution_after_the_connection_does_not_name_it() -> None:
    c = ResolutionCache()
    c.record(txn("late.example", ("192.0.2.3",), end=T0))
    assert c.lookup("192.0.2.3", 100, T0 - 1) is None


def test_ttl_plus_grace_expiry() -> None:
    c = ResolutionCache(DnsConfig(cache_grace_s=30))
    c.record(txn("ttl.example", ("192.0.2.4",), end=T0, ttl=60))
    assert c.lookup("192.0.2.4", 100, T0 + 89 * S) is not None
    assert c.lookup("192.0.2.4", 100, T0 + 90 * S) is None
    assert c.unresolved("192.0.2.4", T0 + 91 * S)
    c.lookup("192.0.2.200", None, T0 + 200 * S)  # the clock moves on: entries leave the table
    assert c.stats["host_entries"] == 0 and c.stats["process_entries"] == 0
    assert len(c.history) == 1  # history keeps what was


def test_failures_record_no_addresses_and_ipv6_mapped_lookups() -> None:
    c = ResolutionCache()
    assert c.record(txn("nx.example", (), rcode="NXDOMAIN")) == 0
    assert c.record(txn("to.example", (), rcode="TIMEOUT", timed_out=True)) == 0
    assert c.record(txn("v4.example", ("192.0.2.5",))) == 1
    assert c.lookup("::ffff:192.0.2.5", 100, T0 + S) is not None
    assert c.record(txn("v6.example", ("2001:DB8:0:0::5",), qtype="AAAA")) == 1
    assert c.lookup("2001:db8::5", 100, T0 + S) is not None
    assert c.unresolved("203.0.113.77", T0 + S)
    assert c.lookup("not-an-address", 100, T0) is None


def test_txn_id_kept_for_links() -> None:
    c = ResolutionCache()
    t = txn("t.example", ("192.0.2.6",))
    c.record(t)
    m = c.lookup("192.0.2.6", 100, T0 + S)
    assert m is not None and m.resolution.txn_id == t.txn_id  # the span id derives from it


def test_flood_of_unique_names_stays_bounded() -> None:
    cfg = DnsConfig(cache_max_entries=1000, history_max_entries=5000)
    c = ResolutionCache(cfg)
    t_start = time.monotonic()
    n = 200_000
    for i in range(n):
        addr = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        c.record(txn(f"h{i}.flood.example", (addr,), tgid=100 + i % 7, end=T0 + i * MS,
                     cookie=i))
    elapsed = time.monotonic() - t_start
    st = c.stats
    assert st["recorded"] == n
    assert st["host_entries"] <= 1000 and st["process_entries"] <= 1000
    assert st["history_entries"] == 5000
    assert len(c._by_question) <= 1000
    last = f"10.{((n - 1) >> 16) & 255}.{((n - 1) >> 8) & 255}.{(n - 1) & 255}"
    assert c.lookup(last, None, T0 + n * MS) is not None  # the newest survive
    assert c.lookup("10.0.0.1", None, T0 + n * MS) is None  # the oldest were evicted
    assert elapsed < 30, f"{n} records took {elapsed:.1f}s"


def test_stub_upstream_linked_to_the_application_query() -> None:
    c = ResolutionCache()
    upstream = txn("app.example", ("192.0.2.8",), tgid=50, cookie=2, resolver="9.9.9.9",
                   start=T0 + 2 * MS, end=T0 + 20 * MS)
    app = txn("app.example", ("192.0.2.8",), tgid=100, cookie=1, resolver="127.0.0.53",
              start=T0, end=T0 + 25 * MS)
    c.record(upstream)
    c.record(app)
    assert c.stub_upstream_of(app) == upstream.txn_id
    # the application's own connection is named by its own query to the stub
    m = c.lookup("192.0.2.8", 100, T0 + 30 * MS)
    assert m is not None and m.how == "same_process" and m.resolution.txn_id == app.txn_id
    # not through a stub: nothing to link
    assert c.stub_upstream_of(upstream) is None


def test_stub_answer_from_its_cache_has_no_upstream() -> None:
    c = ResolutionCache(local_resolvers=["10.0.0.1"])
    earlier = txn("c.example", ("192.0.2.2",), tgid=50, cookie=2, resolver="9.9.9.9",
                  start=T0 - 10 * S, end=T0 - 10 * S + 5 * MS)
    app = txn("c.example", ("192.0.2.2",), cookie=1, resolver="10.0.0.1",
              start=T0, end=T0 + MS)
    c.record(earlier)
    c.record(app)
    assert c.stub_upstream_of(app) is None

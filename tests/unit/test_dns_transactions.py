"""Queries matched to responses: latency, timeouts, retries, parallel A+AAAA."""

from __future__ import annotations

import socket

from otelpeers.config import DnsConfig
from otelpeers.dns.tracker import DnsTracker
from otelpeers.events import Owner
from otelpeers.testing.dns_wire import packet, query_wire, response_wire

MS = 1_000_000
S = 1_000_000_000
T0 = 1_700_000_000 * S
OWNER = Owner(tgid=4242, pid=4242, uid=1000, gid=1000, cgroup_id=7, comm="curl")


def tracker(**kw: float) -> DnsTracker:
    return DnsTracker(DnsConfig(query_timeout_s=kw.get("timeout", 5.0)),
                      max_pending=int(kw.get("max_pending", 65536)))


def test_query_response_latency_and_fields() -> None:
    t = tracker()
    assert t.handle(packet(query_wire("www.example.com", "A", 7), time_ns=T0, owner=OWNER)) == []
    resp = response_wire("www.example.com", "A", 7, cnames=["cdn.example.net"],
                         addresses=["192.0.2.7"], ttl=42)
    (txn,) = t.handle(packet(resp, time_ns=T0 + 12 * MS, outbound=False))
    assert txn.duration_s == 0.012
    assert (txn.question_name, txn.qtype, txn.rcode) == ("www.example.com", "A", "NOERROR")
    assert txn.addresses == ("192.0.2.7",)
    assert txn.cname_chain == ("www.example.com", "cdn.example.net")
    assert txn.ttl_min == 42 and txn.retries == 0 and not txn.timed_out
    assert (txn.resolver_addr, txn.resolver_port) == ("10.0.0.53", 53)
    assert (txn.client_addr, txn.client_port) == ("10.0.0.2", 40000)
    assert txn.owner == OWNER and txn.protocol == "udp" and txn.family == socket.AF_INET
    assert t.stats["txn.answered"] == 1 and t.stats["txn.pending"] == 0
    assert t.stats["transactions"] == 1 and t.stats["packets"] == 2


def test_timeout_after_query_timeout() -> None:
    t = tracker(timeout=5.0)
    t.handle(packet(query_wire("slow.example", "A", 9), time_ns=T0, owner=OWNER))
    assert t.expire(T0 + 5 * S - 1) == []
    (txn,) = t.expire(T0 + 5 * S)
    assert txn.timed_out and txn.rcode == "TIMEOUT" and txn.end_ns == T0 + 5 * S
    assert txn.addresses == () and txn.owner == OWNER
    # a late response after the timeout matches nothing, and is counted
    late = response_wire("slow.example", "A", 9, addresses=["192.0.2.1"])
    assert t.handle(packet(late, time_ns=T0 + 6 * S, outbound=False)) == []
    assert t.stats["txn.unmatched_responses"] == 1 and t.stats["txn.timed_out"] == 1


def test_retry_keeps_first_send_and_rearms_timeout() -> None:
    t = tracker(timeout=5.0)
    q = query_wire("retry.example", "A", 11)
    t.handle(packet(q, time_ns=T0))
    t.handle(packet(q, time_ns=T0 + 1 * S))
    assert t.expire(T0 + 5 * S + 500 * MS) == []  # the retry re-armed the wait
    resp = response_wire("retry.example", "A", 11, addresses=["192.0.2.11"])
    (txn,) = t.handle(packet(resp, time_ns=T0 + 1200 * MS, outbound=False))
    assert txn.retries == 1 and txn.start_ns == T0 and txn.duration_s == 1.2
    assert t.stats["txn.queries"] == 1 and t.stats["txn.retries"] == 1


def test_parallel_a_and_aaaa_same_id_are_two_transactions() -> None:
    t = tracker()
    t.handle(packet(query_wire("dual.example", "A", 21), time_ns=T0))
    t.handle(packet(query_wire("dual.example", "AAAA", 21), time_ns=T0 + 10_000))
    r6 = response_wire("dual.example", "AAAA", 21, addresses=["2001:db8::21"])
    r4 = response_wire("dual.example", "A", 21, addresses=["192.0.2.21"])
    (t6,) = t.handle(packet(r6, time_ns=T0 + 5 * MS, outbound=False))
    (t4,) = t.handle(packet(r4, time_ns=T0 + 8 * MS, outbound=False))
    assert (t6.qtype, t6.addresses) == ("AAAA", ("2001:db8::21",))
    assert (t4.qtype, t4.addresses) == ("A", ("192.0.2.21",))
    assert t4.txn_id != t6.txn_id and t4.retries == t6.retries == 0


def test_parallel_different_ids() -> None:
    t = tracker()
    t.handle(packet(query_wire("dual.example", "A", 1), time_ns=T0))
    t.handle(packet(query_wire("dual.example", "AAAA", 2), time_ns=T0 + 1))
    (a,) = t.handle(packet(response_wire("dual.example", "A", 1, addresses=["192.0.2.1"]),
                           time_ns=T0 + 3 * MS, outbound=False))
    (b,) = t.handle(packet(response_wire("dual.example", "AAAA", 2, addresses=["2001:db8::2"]),
                           time_ns=T0 + 4 * MS, outbound=False))
    assert (a.msg_id, a.qtype, b.msg_id, b.qtype) == (1, "A", 2, "AAAA")


def test_unknown_and_wrong_socket_responses_are_counted() -> None:
    t = tracker()
    t.handle(packet(query_wire("a.example", "A", 5), time_ns=T0, cookie=1))
    resp = response_wire("a.example", "A", 5, addresses=["192.0.2.5"])
    assert t.handle(packet(resp, time_ns=T0 + 1, cookie=2, outbound=False)) == []
    other = response_wire("a.example", "A", 6, addresses=["192.0.2.5"])
    assert t.handle(packet(other, time_ns=T0 + 2, cookie=1, outbound=False)) == []
    assert t.stats["txn.unmatched_responses"] == 2 and t.stats["txn.pending"] == 1


def test_served_queries_are_not_transactions() -> None:
    t = tracker()
    # this host answers: it receives the query and sends the response
    t.handle(packet(query_wire("svc.example", "A", 3), time_ns=T0, outbound=False))
    t.handle(packet(response_wire("svc.example", "A", 3, addresses=["192.0.2.3"]),
                    time_ns=T0 + 1, outbound=True))
    assert t.stats["txn.queries_served"] == 1 and t.stats["txn.responses_served"] == 1
    assert t.stats["txn.pending"] == 0


def test_pending_table_bounded() -> None:
    t = tracker(max_pending=10)
    for i in range(25):
        t.handle(packet(query_wire(f"n{i}.example", "A", i), time_ns=T0 + i))
    assert t.stats["txn.pending"] == 10 and t.stats["txn.pending_evicted"] == 15
    # the newest ten are still matched
    (txn,) = t.handle(packet(response_wire("n24.example", "A", 24, addresses=["192.0.2.4"]),
                             time_ns=T0 + S, outbound=False))
    assert txn.question_name == "n24.example"


def test_cut_udp_response_still_matches() -> None:
    t = tracker()
    t.handle(packet(query_wire("many.example", "A", 77), time_ns=T0))
    addrs = [f"198.51.100.{i}" for i in range(50)]
    resp = response_wire("many.example", "A", 77, addresses=addrs)
    assert len(resp) > 512
    (txn,) = t.handle(packet(resp, time_ns=T0 + MS, outbound=False, max_payload=512))
    assert txn.truncated and 0 < len(txn.addresses) < 50
    assert t.stats["parse.salvaged"] == 1


def test_socket_close_ends_pending_queries() -> None:
    t = tracker()
    t.handle(packet(query_wire("x.example", "A", 1), time_ns=T0, cookie=5))
    t.handle(packet(query_wire("x.example", "AAAA", 1), time_ns=T0 + 1, cookie=5))
    t.handle(packet(query_wire("y.example", "A", 1), time_ns=T0 + 2, cookie=6))
    done = t.close_socket(5, T0 + 2 * S)
    assert [x.qtype for x in done] == ["A", "AAAA"] and all(x.timed_out for x in done)
    assert t.stats["txn.pending"] == 1


def test_txn_ids_are_deterministic() -> None:
    def run() -> list[str]:
        t = tracker()
        t.handle(packet(query_wire("d.example", "A", 99), time_ns=T0))
        out = t.handle(packet(response_wire("d.example", "A", 99, addresses=["192.0.2.9"]),
                              time_ns=T0 + MS, outbound=False))
        return [x.txn_id for x in out]
    first = run()
    assert first == run() and len(first) == 1


def test_garbage_packets_are_counted_not_raised() -> None:
    t = tracker()
    assert t.handle(packet(b"\x00\x01garbage", time_ns=T0)) == []
    assert t.stats["parse.error.truncated"] == 1 and t.stats["packets"] == 1

"""Zeek rows to the project's types: conn_state semantics, DNS chains, event-time order."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelpeers.detect.zeek import (
    ConnOutcome,
    ZeekConn,
    ZeekFormatError,
    conn_from_row,
    dns_from_row,
    event_time_ns,
    iter_events_sorted,
)
from otelpeers.dns.parse import MAX_ANSWERS
from otelpeers.dns.transactions import DnsTransaction
from otelpeers.flows import CloseReason

BASE = {"ts": "1709546400.000000", "uid": "CabcDEF123", "id.orig_h": "10.0.0.5",
        "id.orig_p": "41000", "id.resp_h": "198.51.100.7", "id.resp_p": "443", "proto": "tcp"}

FAILED, RESET, CLOSED = CloseReason.CONNECT_FAILED, CloseReason.RESET, CloseReason.CLOSED


@pytest.mark.parametrize("state,data,reason,outcome", [
    ("S0", False, FAILED, ConnOutcome.TIMED_OUT),  # SYN, never an answer
    ("REJ", False, FAILED, ConnOutcome.REFUSED),  # SYN answered by RST
    ("RSTOS0", False, FAILED, ConnOutcome.TIMED_OUT),
    ("SH", False, FAILED, ConnOutcome.TIMED_OUT),
    ("RSTRH", False, FAILED, ConnOutcome.RESPONDER_ONLY),
    ("SHR", False, FAILED, ConnOutcome.RESPONDER_ONLY),
    ("OTH", False, FAILED, ConnOutcome.TIMED_OUT),
    ("OTH", True, CLOSED, ConnOutcome.ANSWERED),  # midstream traffic that carried data
    ("RSTO", True, RESET, ConnOutcome.RESET),
    ("RSTR", True, RESET, ConnOutcome.RESET),
    ("SF", True, CLOSED, ConnOutcome.ANSWERED),
    ("S1", True, CLOSED, ConnOutcome.ANSWERED),
    ("S2", False, CLOSED, ConnOutcome.ANSWERED),
    ("S3", True, CLOSED, ConnOutcome.ANSWERED),
])
def test_conn_state_to_close_reason(state: str, data: bool, reason: CloseReason,
                                    outcome: ConnOutcome) -> None:
    row = dict(BASE, conn_state=state, orig_bytes="10" if data else "0", resp_bytes="0")
    c = conn_from_row(row)
    assert c.record.close_reason == reason and c.outcome == outcome
    assert c.record.failed == (reason == FAILED)
    assert c.conn_state == state


def test_refused_and_timed_out_are_told_apart() -> None:
    refused = conn_from_row(dict(BASE, conn_state="REJ"))
    silent = conn_from_row(dict(BASE, conn_state="S0"))
    assert refused.record.close_reason == silent.record.close_reason == FAILED
    assert refused.refused and not refused.timed_out
    assert silent.timed_out and not silent.refused


def test_udp_without_reply_failed_and_with_reply_closed() -> None:
    no_reply = conn_from_row(dict(BASE, proto="udp", conn_state="S0", orig_bytes="48"))
    reply = conn_from_row(dict(BASE, proto="udp", conn_state="SF", orig_bytes="48",
                               resp_bytes="48"))
    assert no_reply.record.failed and no_reply.timed_out
    assert reply.record.close_reason == CLOSED and reply.record.transport == "udp"


def test_missing_required_fields_name_the_field() -> None:
    for field, message in (("ts", "ts is unset"), ("id.orig_h", "id.orig_h"),
                           ("id.resp_p", "id.resp_p"), ("proto", "proto")):
        row = {k: v for k, v in BASE.items() if k != field}
        with pytest.raises(ValueError, match=message):
            conn_from_row(row)
    with pytest.raises(ValueError, match="port 70000"):
        conn_from_row(dict(BASE, **{"id.resp_p": "70000"}))
    with pytest.raises(ValueError, match="orig_bytes"):
        conn_from_row(dict(BASE, orig_bytes="12.5"))
    # a row without uid still gets a stable flow id
    c = conn_from_row({k: v for k, v in BASE.items() if k != "uid"})
    assert c.record.flow_id.startswith("zeek:10.0.0.5:41000-198.51.100.7:443-")


DNS_BASE = {"ts": "1709546400.000000", "uid": "Cdns1", "id.orig_h": "10.0.0.5",
            "id.orig_p": "53000", "id.resp_h": "10.0.0.53", "id.resp_p": "53", "proto": "udp",
            "trans_id": "4660", "query": "app.example.com", "qtype_name": "A"}


def test_cname_chain_is_rebuilt_from_mixed_answers() -> None:
    txn = dns_from_row(dict(DNS_BASE, rcode_name="NOERROR", rtt="0.010000",
                            answers=("app.example.com.edgekey.net", "e1.a.akamaiedge.net",
                                     "23.1.2.3", "23.1.2.4"),
                            TTLs=("300.0", "20.0", "20.0", "20.0")))
    assert txn.cname_chain == ("app.example.com", "app.example.com.edgekey.net",
                               "e1.a.akamaiedge.net")
    assert txn.addresses == ("23.1.2.3", "23.1.2.4")
    assert [(a.name, a.rtype) for a in txn.answers] == [
        ("app.example.com", "CNAME"), ("app.example.com.edgekey.net", "CNAME"),
        ("e1.a.akamaiedge.net", "A"), ("e1.a.akamaiedge.net", "A")]
    assert txn.txn_id == "zeek:Cdns1-1234-A" and txn.owner is None and txn.cookie == 0
    assert txn.end_ns - txn.start_ns == 10_000_000


def test_cname_loop_and_answer_bound() -> None:
    loop = dns_from_row(dict(DNS_BASE, rcode_name="NOERROR",
                             answers=("b.example.com", "app.example.com", "b.example.com")))
    assert loop.cname_chain == ("app.example.com", "b.example.com")
    many = dns_from_row(dict(DNS_BASE, rcode_name="NOERROR",
                             answers=tuple(f"192.0.2.{i}" for i in range(100))))
    assert len(many.answers) == MAX_ANSWERS and len(many.addresses) == MAX_ANSWERS


@pytest.mark.parametrize("extra,rcode,timed_out", [
    ({}, "TIMEOUT", True),  # no rcode, no answers: nobody answered
    ({"answers": ("192.0.2.1",)}, "NOERROR", False),  # answers but no rcode logged
    ({"rcode": "3"}, "NXDOMAIN", False),  # only the number
    ({"rcode_name": "SERVFAIL", "rcode": "2"}, "SERVFAIL", False),
])
def test_rcode(extra: dict[str, object], rcode: str, timed_out: bool) -> None:
    txn = dns_from_row(dict(DNS_BASE, **extra))
    assert txn.rcode == rcode and txn.timed_out == timed_out


def test_dns_type_number_and_bad_trans_id() -> None:
    txn = dns_from_row({**{k: v for k, v in DNS_BASE.items() if k != "qtype_name"},
                        "qtype": "65"})
    assert txn.qtype == "TYPE65"
    with pytest.raises(ValueError, match="trans_id"):
        dns_from_row(dict(DNS_BASE, trans_id="70000"))


HEADER = ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
          "#path\tconn\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\t"
          "duration\tconn_state\n#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tinterval\t"
          "string\n")


def conn_line(ts: float, uid: str, dur: float) -> str:
    return f"{ts:.6f}\t{uid}\t10.0.0.5\t40000\t198.51.100.7\t443\ttcp\t{dur:.6f}\tSF\n"


def test_rows_are_replayed_by_start_time(tmp_path: Path) -> None:
    # Zeek writes rows as connections end: a 2-hour connection that began first is last.
    a = tmp_path / "conn-a.log"
    a.write_text(HEADER + conn_line(100.0, "Cshort1", 1.0) + conn_line(150.0, "Cshort2", 1.0)
                 + conn_line(50.0, "Clong", 7200.0))
    b = tmp_path / "conn-b.log"
    b.write_text(HEADER + conn_line(100.0, "Ctie", 0.5) + conn_line(120.0, "Cb", 1.0))
    dns = tmp_path / "dns.json"
    dns.write_text('{"ts":99.5,"uid":"Cq","id.orig_h":"10.0.0.5","id.orig_p":5,'
                   '"id.resp_h":"10.0.0.53","id.resp_p":53,"proto":"udp","query":"x.example",'
                   '"qtype_name":"A","rcode_name":"NOERROR","answers":["198.51.100.7"]}\n')
    stats: list = []
    items = list(iter_events_sorted([a, b, dns], stats=stats))
    order = [i.uid if isinstance(i, ZeekConn) else i.question_name for i in items]
    assert order == ["Clong", "x.example", "Cshort1", "Ctie", "Cb", "Cshort2"]
    times = [event_time_ns(i) for i in items]
    assert times == sorted(times)
    assert isinstance(items[1], DnsTransaction)
    assert [s.rows for s in stats] == [3, 2, 1]


def test_sort_refuses_more_rows_than_its_bound(tmp_path: Path) -> None:
    a = tmp_path / "conn.log"
    a.write_text(HEADER + "".join(conn_line(float(i), f"C{i}", 1.0) for i in range(10)))
    with pytest.raises(ZeekFormatError, match="more than 5 rows"):
        iter_events_sorted([a], max_rows=5)
    assert len(list(iter_events_sorted([a], max_rows=10))) == 10


def test_a_wrong_file_fails_before_anything_is_read(tmp_path: Path) -> None:
    good = tmp_path / "conn.log"
    good.write_text(HEADER + conn_line(1.0, "C1", 1.0))
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    with pytest.raises(ZeekFormatError, match="notes.txt"):
        iter_events_sorted([good, bad])

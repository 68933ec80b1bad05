"""Reading Zeek conn.log / dns.log: TSV and JSON, escapes, gzip, bad lines, wrong files."""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path

import pytest

from otelpeers.detect.zeek import (
    MAX_BAD_LINES,
    MAX_LINE_BYTES,
    ZeekConn,
    ZeekFormatError,
    read_zeek,
    to_ns,
    unescape,
)
from otelpeers.dns.transactions import DnsTransaction
from otelpeers.events import Direction
from otelpeers.flows import CloseReason

CONN_HEADER = (
    "#separator \\x09\n"
    "#set_separator\t,\n"
    "#empty_field\t(empty)\n"
    "#unset_field\t-\n"
    "#path\tconn\n"
    "#open\t2024-03-04-10-00-00\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\t"
    "orig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\t"
    "orig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\t"
    "string\tbool\tbool\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]\n"
)
CONN_ROWS = [
    # an HTTPS connection, orderly close
    "1709546400.101234\tCHhAvVGS1DHFjwGM9\t192.168.1.10\t52133\t93.184.216.34\t443\ttcp\tssl\t"
    "1.250000\t517\t4322\tSF\tT\tF\t0\tShADadFf\t9\t997\t8\t4746\t-",
    # a SYN nobody answered: one packet, so duration and byte counts are unset
    "1709546401.000001\tCx7Gk21nN6ZtQUh8d\t192.168.1.10\t40000\t203.0.113.9\t8443\ttcp\t-\t-\t"
    "-\t-\tS0\tT\tF\t0\tS\t1\t60\t0\t0\t-",
    # refused, over IPv6, with an empty set for tunnel_parents
    "1709546402.5\tC3wqQ52cBqkb1XhHda\t2001:db8::10\t51000\t2001:db8::1\t22\ttcp\t-\t0.000412\t"
    "0\t0\tREJ\tT\tT\t0\tSr\t1\t80\t1\t60\t(empty)",
    # UDP DNS, answered
    "1709546403.250000\tCpQh6a1R9sXUxqVGj4\t192.168.1.10\t58380\t192.168.1.1\t53\tudp\tdns\t"
    "0.016437\t35\t51\tSF\tT\tT\t0\tDd\t1\t63\t1\t79\t-",
]

DNS_HEADER = (
    "#separator \\x09\n"
    "#set_separator\t,\n"
    "#empty_field\t(empty)\n"
    "#unset_field\t-\n"
    "#path\tdns\n"
    "#open\t2024-03-04-10-00-00\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\ttrans_id\trtt\tquery\t"
    "qclass\tqclass_name\tqtype\tqtype_name\trcode\trcode_name\tAA\tTC\tRD\tRA\tZ\tanswers\t"
    "TTLs\trejected\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tcount\tinterval\tstring\tcount\t"
    "string\tcount\tstring\tcount\tstring\tbool\tbool\tbool\tbool\tcount\tvector[string]\t"
    "vector[interval]\tbool\n"
)
DNS_ROWS = [
    # a CDN name: CNAME target and two addresses mixed in answers, as Zeek writes them
    "1709546400.050000\tCpQh6a1R9sXUxqVGj4\t192.168.1.10\t58380\t192.168.1.1\t53\tudp\t8732\t"
    "0.021387\tWWW.Example.COM\t1\tC_INTERNET\t1\tA\t0\tNOERROR\tF\tF\tT\tT\t0\t"
    "www.example.com.cdn.cloudflare.net,104.16.1.2,104.16.2.2\t"
    "300.000000,60.000000,60.000000\tF",
    # no response at all
    "1709546401.000000\tCz1V2kD6b6xqPmt3Ye\t192.168.1.10\t40001\t192.168.1.1\t53\tudp\t4711\t-\t"
    "printer\\x20setup.local\t1\tC_INTERNET\t28\tAAAA\t-\t-\tF\tF\tT\tF\t0\t-\t-\tF",
    # TXT data with an escaped set separator inside one element
    "1709546402.000000\tCk2b7p5tJ8uRKr2Qga\t192.168.1.10\t40002\t192.168.1.1\t53\tudp\t99\t"
    "0.030000\texample.org\t1\tC_INTERNET\t16\tTXT\t0\tNOERROR\tF\tT\tT\tT\t0\t"
    "TXT 14 v=spf1 a\\x2c-all\t3600.000000\tF",
]


def write(tmp_path: Path, name: str, text: str, *, compress: bool = False) -> Path:
    path = tmp_path / name
    data = text.encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def conn_tsv(rows: list[str]) -> str:
    return CONN_HEADER + "".join(r + "\n" for r in rows) + "#close\t2024-03-04-11-00-00\n"


def test_tsv_conn_log(tmp_path: Path) -> None:
    log = read_zeek(write(tmp_path, "x.txt", conn_tsv(CONN_ROWS)))
    assert (log.format, log.log_type) == ("tsv", "conn")
    rows = list(log)
    assert all(isinstance(r, ZeekConn) for r in rows) and len(rows) == 4
    https, syn, refused, dns = rows
    r = https.record
    assert r.flow_id == "zeek:CHhAvVGS1DHFjwGM9" and https.uid == "CHhAvVGS1DHFjwGM9"
    assert (r.local_addr, r.local_port, r.peer_addr, r.peer_port) == (
        "192.168.1.10", 52133, "93.184.216.34", 443)
    assert r.start_ns == 1709546400_101234000 and r.end_ns == 1709546401_351234000
    assert r.owner is None and r.direction == Direction.OUTBOUND and r.cookie == 0
    assert r.transport == "tcp" and r.family == socket.AF_INET
    c = r.counters
    assert (c.payload_out, c.payload_in, c.packets_out, c.packets_in, c.bytes_out,
            c.bytes_in) == (517, 4322, 9, 8, 997, 4746)
    assert r.close_reason == CloseReason.CLOSED and https.service == "ssl"
    assert https.history == "ShADadFf" and https.conn_state == "SF"
    # unset duration: the flow ends where it starts; unset counts are 0
    assert syn.record.end_ns == syn.record.start_ns and syn.record.counters.payload_out == 0
    assert syn.service is None and syn.timed_out and not syn.refused
    assert syn.record.close_reason == CloseReason.CONNECT_FAILED
    assert refused.refused and refused.record.family == socket.AF_INET6
    assert refused.record.start_ns == 1709546402_500000000
    assert dns.record.transport == "udp" and dns.service == "dns"
    assert log.stats.rows == 4 and log.stats.bad_lines == 0


def test_tsv_dns_log_and_escapes(tmp_path: Path) -> None:
    text = DNS_HEADER + "".join(r + "\n" for r in DNS_ROWS)
    log = read_zeek(write(tmp_path, "dns.log", text))
    assert (log.format, log.log_type) == ("tsv", "dns")
    cdn, timeout, txt = list(log)
    assert isinstance(cdn, DnsTransaction)
    assert cdn.question_name == "www.example.com"  # lower case, like the live parser
    assert cdn.cname_chain == ("www.example.com", "www.example.com.cdn.cloudflare.net")
    assert cdn.addresses == ("104.16.1.2", "104.16.2.2")
    assert [(a.name, a.rtype, a.ttl, a.value) for a in cdn.answers] == [
        ("www.example.com", "CNAME", 300, "www.example.com.cdn.cloudflare.net"),
        ("www.example.com.cdn.cloudflare.net", "A", 60, "104.16.1.2"),
        ("www.example.com.cdn.cloudflare.net", "A", 60, "104.16.2.2")]
    assert cdn.ttl_min == 60 and cdn.rcode == "NOERROR" and not cdn.timed_out
    assert cdn.txn_id == "zeek:CpQh6a1R9sXUxqVGj4-221c-A" and cdn.msg_id == 8732
    assert cdn.end_ns - cdn.start_ns == 21_387_000
    assert (cdn.client_addr, cdn.client_port, cdn.resolver_addr, cdn.resolver_port) == (
        "192.168.1.10", 58380, "192.168.1.1", 53)
    assert timeout.question_name == "printer setup.local"  # \x20 undone
    assert timeout.rcode == "TIMEOUT" and timeout.timed_out and timeout.answers == ()
    assert timeout.qtype == "AAAA" and timeout.end_ns == timeout.start_ns
    # the escaped comma stays inside its element; TXT data is not a CNAME chain
    assert [a.value for a in txt.answers] == ["TXT 14 v=spf1 a,-all"]
    assert txt.cname_chain == ("example.org",) and txt.truncated


def test_unescape_and_times() -> None:
    assert unescape("a\\x09b\\x2c\\x2d") == "a\tb,-"
    assert unescape("back\\\\slash") == "back\\slash"
    assert unescape("caf\\xc3\\xa9") == "café"  # escaped bytes are UTF-8
    assert unescape("\\xff") == "\\xff"  # not UTF-8: kept visible, never dropped
    assert to_ns("1709546400.123456") == 1709546400_123456000
    assert to_ns("0.000001") == 1000 and to_ns("12") == 12 * 10**9
    assert to_ns("1.5e-05") == 15_000
    assert to_ns("2024-03-04T10:00:00.101234Z") == 1709546400_101234000
    assert to_ns(1709546400) == 1709546400 * 10**9
    for bad in ("", "x", "nan", "1.2.3", None, True):
        with pytest.raises(ValueError):
            to_ns(bad)


def test_a_value_that_reads_like_unset_is_escaped(tmp_path: Path) -> None:
    row = CONN_ROWS[0].replace("\tssl\t", "\t\\x2d\t")  # service is literally "-"
    (conn,) = read_zeek(write(tmp_path, "c.log", conn_tsv([row])))
    assert conn.service == "-"


def test_bad_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    rows = [
        CONN_ROWS[0],
        "this is not a row",
        CONN_ROWS[1].replace("192.168.1.10", "999.1.1.1"),
        CONN_ROWS[1].replace("\t40000\t", "\thttp\t"),
        CONN_ROWS[1].replace("1709546401.000001", "-"),  # no ts
        CONN_ROWS[2].replace("\t0.000412\t", "\t-1.0\t"),
        CONN_ROWS[3],
    ]
    log = read_zeek(write(tmp_path, "c.log", conn_tsv(rows)))
    good = list(log)
    assert [c.uid for c in good] == ["CHhAvVGS1DHFjwGM9", "CpQh6a1R9sXUxqVGj4"]
    assert log.stats.bad_lines == 5 and log.stats.rows == 2
    first_row_line = CONN_HEADER.count("\n") + 1
    by_line = {b.line_no - first_row_line: b.reason for b in log.stats.bad}
    assert "1 fields, the #fields header has 21" in by_line[1]
    assert "id.orig_h" in by_line[2] and "999.1.1.1" in by_line[2]
    assert "id.orig_p" in by_line[3]
    assert "ts is unset" in by_line[4]
    assert "negative duration" in by_line[5]
    assert "5 bad lines" in log.stats.summary()


def test_bad_line_list_is_bounded(tmp_path: Path) -> None:
    log = read_zeek(write(tmp_path, "c.log", conn_tsv(["junk"] * (MAX_BAD_LINES + 30))))
    assert list(log) == []
    assert log.stats.bad_lines == MAX_BAD_LINES + 30 and len(log.stats.bad) == MAX_BAD_LINES


def test_overlong_line_is_skipped_without_losing_the_next(tmp_path: Path) -> None:
    text = conn_tsv([CONN_ROWS[0], "x" * (MAX_LINE_BYTES + 100), CONN_ROWS[1]])
    log = read_zeek(write(tmp_path, "c.log", text))
    assert [c.uid for c in log] == ["CHhAvVGS1DHFjwGM9", "Cx7Gk21nN6ZtQUh8d"]
    assert log.stats.bad_lines == 1 and "longer than" in log.stats.bad[0].reason


def test_gzip_is_detected_by_content(tmp_path: Path) -> None:
    path = write(tmp_path, "conn.2024-03-04.log", conn_tsv(CONN_ROWS), compress=True)
    log = read_zeek(path)
    assert [c.uid for c in log] == [r.split("\t")[1] for r in CONN_ROWS]


def test_cut_gzip_keeps_what_was_read(tmp_path: Path) -> None:
    blob = gzip.compress(conn_tsv(CONN_ROWS * 200).encode())
    path = tmp_path / "cut.log.gz"
    path.write_bytes(blob[: len(blob) // 2])
    log = read_zeek(path)
    rows = list(log)
    assert 0 < len(rows) < 800
    assert log.stats.bad_lines >= 1 and "read error" in log.stats.bad[-1].reason


def test_several_header_blocks_in_one_file(tmp_path: Path) -> None:
    # concatenated logs: the second block has another column order and a dns block between
    second = CONN_HEADER.replace("\tservice\tduration", "\tduration\tservice").replace(
        "\tstring\tinterval\tcount", "\tinterval\tstring\tcount")
    row = CONN_ROWS[0].replace("\tssl\t1.250000\t", "\t1.250000\tssl\t")
    dns_block = DNS_HEADER + DNS_ROWS[0] + "\n"
    text = conn_tsv(CONN_ROWS[:1]) + dns_block + second + row + "\n"
    log = read_zeek(write(tmp_path, "c.log", text))
    rows = list(log)
    assert len(rows) == 2 and rows[1].service == "ssl"
    assert rows[1].record.end_ns - rows[1].record.start_ns == 1_250_000_000
    assert log.stats.bad_lines == 1 and "dns.log" in log.stats.bad[0].reason


def json_conn(**over: object) -> str:
    obj: dict[str, object] = {
        "ts": 1709546400.101234, "uid": "CHhAvVGS1DHFjwGM9", "id.orig_h": "192.168.1.10",
        "id.orig_p": 52133, "id.resp_h": "93.184.216.34", "id.resp_p": 443, "proto": "tcp",
        "service": "ssl", "duration": 1.25, "orig_bytes": 517, "resp_bytes": 4322,
        "conn_state": "SF", "local_orig": True, "local_resp": False, "missed_bytes": 0,
        "history": "ShADadFf", "orig_pkts": 9, "orig_ip_bytes": 997, "resp_pkts": 8,
        "resp_ip_bytes": 4746}
    obj.update(over)
    return json.dumps({k: v for k, v in obj.items() if v is not None})


def test_json_conn_log(tmp_path: Path) -> None:
    lines = [
        json_conn(),
        json_conn(ts="2024-03-04T10:00:01.000001Z", uid="C2", duration=None, orig_bytes=None,
                  resp_bytes=None, conn_state="S0", history="S", service=None),
        "{not json",
        '["a", "list"]',
        json.dumps({"_path": "http", "ts": 1.0, "id.orig_h": "1.2.3.4"}),
        json_conn(uid="C3", **{"id.orig_h": None, "id.orig_p": None, "id.resp_h": None,
                               "id.resp_p": None},
                  id={"orig_h": "10.0.0.1", "orig_p": 1, "resp_h": "10.0.0.2", "resp_p": 2}),
    ]
    log = read_zeek(write(tmp_path, "conn.json", "\n".join(lines) + "\n"))
    assert (log.format, log.log_type) == ("json", "conn")
    a, b, c = list(log)
    assert a.record.start_ns == 1709546400_101234000  # exact, not float-rounded
    assert a.record.end_ns == 1709546401_351234000 and a.record.counters.payload_in == 4322
    assert b.record.start_ns == 1709546401_000001000 and b.timed_out
    assert b.record.end_ns == b.record.start_ns and b.service is None
    assert (c.record.local_addr, c.record.peer_port) == ("10.0.0.1", 2)  # nested id object
    assert log.stats.bad_lines == 3
    reasons = " | ".join(x.reason for x in log.stats.bad)
    assert "invalid JSON" in reasons and "not a JSON object" in reasons
    assert "http.log" in reasons


def test_json_dns_log(tmp_path: Path) -> None:
    row = {"ts": 1709546400.05, "uid": "CpQh6a1R9sXUxqVGj4", "id.orig_h": "192.168.1.10",
           "id.orig_p": 58380, "id.resp_h": "192.168.1.1", "id.resp_p": 53, "proto": "udp",
           "trans_id": 8732, "rtt": 0.021387, "query": "www.example.com.", "qclass": 1,
           "qclass_name": "C_INTERNET", "qtype": 1, "qtype_name": "A", "rcode": 0,
           "rcode_name": "NOERROR", "AA": False, "TC": False, "RD": True, "RA": True, "Z": 0,
           "answers": ["edge.example.net", "a.example-cdn.net", "104.16.1.2", "2606:4700::1"],
           "TTLs": [300.0, 60.0, 20.0, 20.0], "rejected": False}
    nx = {k: v for k, v in row.items() if k not in ("answers", "TTLs")}
    nx.update(uid="Cnx", query="nope.example", rcode=3, rcode_name="NXDOMAIN")
    log = read_zeek(write(tmp_path, "d.json", json.dumps(row) + "\n" + json.dumps(nx) + "\n"))
    assert (log.format, log.log_type) == ("json", "dns")
    t, n = list(log)
    assert t.cname_chain == ("www.example.com", "edge.example.net", "a.example-cdn.net")
    assert t.addresses == ("104.16.1.2", "2606:4700::1")
    assert [a.rtype for a in t.answers] == ["CNAME", "CNAME", "A", "AAAA"]
    assert t.answers[2].name == "a.example-cdn.net"  # addresses belong to the chain's end
    assert n.rcode == "NXDOMAIN" and not n.timed_out and n.cname_chain == ("nope.example",)


@pytest.mark.parametrize("text,expect", [
    ("", "empty file"),
    ("ts,src,dst\n1,2,3\n", "not a Zeek log"),
    ('{"kind": "CONNECT", "time_ns": 1}\n', "no Zeek records"),
    ("#separator \\x09\n#path\thttp\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\t"
     "id.resp_p\tmethod\n", "http.log"),
    ("#separator \\x09\n#path\tconn\n1\t2\n", "without a '#fields' line"),
    ("#separator \\x09\n#fields\tts\tuid\tfoo\n", "not a conn.log or dns.log"),
    (json.dumps({"_path": "ssl", "ts": 1.0, "id.orig_h": "1.2.3.4"}) + "\n", "ssl.log"),
])
def test_not_a_zeek_log_is_a_clear_error(tmp_path: Path, text: str, expect: str) -> None:
    path = write(tmp_path, "input.log", text)
    with pytest.raises(ZeekFormatError) as err:
        read_zeek(path)
    assert str(path) in str(err.value) and expect in str(err.value)


def test_binary_garbage_and_bad_gzip(tmp_path: Path) -> None:
    p = tmp_path / "bin.log"
    p.write_bytes(b"\x00\x01\x02garbage\xff" * 10)
    with pytest.raises(ZeekFormatError, match="not a Zeek log"):
        read_zeek(p)
    g = tmp_path / "bad.gz"
    g.write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    with pytest.raises(ZeekFormatError, match="bad.gz"):
        read_zeek(g)

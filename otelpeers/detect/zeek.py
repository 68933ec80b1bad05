"""Zeek conn.log and dns.log as the project's own types, so rules run on them unchanged.

Both of Zeek's log formats are read, detected from the content (never the file name), plain
or gzip-compressed:

- Zeek TSV: the ``#separator`` line, then ``#set_separator``, ``#empty_field``,
  ``#unset_field``, ``#path``, ``#fields`` and ``#types`` headers, then one row per line.
  ``-`` is unset, ``(empty)`` an empty string or container, ``,`` separates container
  elements, and ``\\xHH`` escapes (separators inside values, non-printable bytes, a value
  that would read as ``-``) are undone. A file may hold several header blocks.
- Zeek JSON logs: one object per line, ``id.orig_h``-style keys (a nested ``id`` object is
  accepted too), unset fields left out, ``ts`` as epoch seconds or an ISO 8601 string.

conn.log rows become ``ZeekConn`` (a ``FlowRecord`` plus the Zeek fields it has no place
for: ``conn_state``, ``history``, ``service``); dns.log rows become ``DnsTransaction``.
Zeek knows no process, so ``owner`` is None and detectors key this input by source address.

Bad lines are counted, the first ``MAX_BAD_LINES`` kept with line numbers and reasons, and
skipped; they never stop the read. A file that is not a Zeek conn.log or dns.log at all
raises ``ZeekFormatError`` naming the file and what was expected.

Zeek writes a conn.log row when the connection ends, so files are ordered by end time;
``iter_events_sorted`` returns the rows of several files in event-time (start) order.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import gzip
import json
import os
import re
import socket
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import dns.rcode

from otelpeers.dns.parse import MAX_ANSWERS, MAX_CHAIN, MAX_NAME, MAX_VALUE, Answer
from otelpeers.dns.transactions import RCODE_TIMEOUT, DnsTransaction
from otelpeers.events import Counters, Direction
from otelpeers.flows import CloseReason, FlowRecord

MAX_BAD_LINES = 20  # bad lines kept with their reason, per file; all are counted
MAX_LINE_BYTES = 1 << 20  # a longer line is a bad line (and is never held whole in memory)
SNIFF_LINES = 64  # JSON: lines looked at to tell conn from dns
# iter_events_sorted holds every row in memory to sort it (about 1 KB per row): beyond
# this many rows it stops with an error instead of exhausting memory.
MAX_SORTED_ROWS = 5_000_000

TSV = "tsv"
JSON = "json"
CONN = "conn"
DNS = "dns"

_GZIP_MAGIC = b"\x1f\x8b"
_NS = 1_000_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# Fields whose presence tells the log type when #path is missing (and for JSON, where an
# unset field is simply absent, any one of them is enough).
_CONN_MARKERS = frozenset({"conn_state", "history", "orig_pkts", "resp_pkts", "missed_bytes",
                           "orig_ip_bytes"})
_DNS_MARKERS = frozenset({"query", "qtype_name", "rcode_name", "trans_id", "answers", "rejected",
                          "qclass_name"})
_ID_FIELDS = ("id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p")
_CONTAINER_FIELDS = frozenset({"tunnel_parents", "answers", "TTLs"})  # without #types

_CONN_FIELDS = ("ts", "uid", *_ID_FIELDS, "proto", "service", "duration", "orig_bytes",
                "resp_bytes", "conn_state", "history", "orig_pkts", "orig_ip_bytes",
                "resp_pkts", "resp_ip_bytes")
_DNS_FIELDS = ("ts", "uid", *_ID_FIELDS, "proto", "trans_id", "rtt", "query", "qtype",
               "qtype_name", "rcode", "rcode_name", "TC", "answers", "TTLs")


class ZeekFormatError(ValueError):
    """The input is not a Zeek conn.log or dns.log (or is one we cannot read at all)."""


class ConnOutcome(enum.StrEnum):
    """What the responder did, from Zeek's conn_state (finer than CloseReason)."""

    ANSWERED = "answered"  # established (SF, S1, S2, S3), or midstream traffic with data
    REFUSED = "refused"  # REJ: the responder answered the SYN with a RST
    TIMED_OUT = "timed_out"  # S0, SH, RSTOS0, OTH without data: no answer at all
    RESET = "reset"  # RSTO, RSTR: established, then aborted
    RESPONDER_ONLY = "responder_only"  # RSTRH, SHR: only the responder's side was seen


_OUTCOMES = {
    "SF": ConnOutcome.ANSWERED, "S1": ConnOutcome.ANSWERED, "S2": ConnOutcome.ANSWERED,
    "S3": ConnOutcome.ANSWERED, "REJ": ConnOutcome.REFUSED, "S0": ConnOutcome.TIMED_OUT,
    "SH": ConnOutcome.TIMED_OUT, "RSTOS0": ConnOutcome.TIMED_OUT, "RSTO": ConnOutcome.RESET,
    "RSTR": ConnOutcome.RESET, "RSTRH": ConnOutcome.RESPONDER_ONLY,
    "SHR": ConnOutcome.RESPONDER_ONLY,
}


def conn_outcome(conn_state: str, has_data: bool) -> ConnOutcome:
    """conn_state to outcome; OTH (no SYN seen, midstream) depends on whether data flowed."""
    outcome = _OUTCOMES.get(conn_state)
    if outcome is not None:
        return outcome
    return ConnOutcome.ANSWERED if has_data else ConnOutcome.TIMED_OUT


def close_reason(conn_state: str, has_data: bool) -> CloseReason:
    """Zeek's conn_state as the agent's CloseReason (refused and timed out both fail)."""
    outcome = conn_outcome(conn_state, has_data)
    if outcome == ConnOutcome.ANSWERED:
        return CloseReason.CLOSED
    if outcome == ConnOutcome.RESET:
        return CloseReason.RESET
    return CloseReason.CONNECT_FAILED


@dataclass(frozen=True, slots=True)
class ZeekConn:
    """One conn.log row: the flow as the agent would record it, plus what only Zeek has."""

    record: FlowRecord
    conn_state: str  # "" when unset
    history: str  # "" when unset
    service: str | None

    @property
    def uid(self) -> str:
        return self.record.flow_id.removeprefix("zeek:")

    @property
    def outcome(self) -> ConnOutcome:
        c = self.record.counters
        return conn_outcome(self.conn_state, c.payload_out + c.payload_in > 0)

    @property
    def refused(self) -> bool:
        return self.outcome == ConnOutcome.REFUSED

    @property
    def timed_out(self) -> bool:
        return self.outcome == ConnOutcome.TIMED_OUT


ZeekItem = ZeekConn | DnsTransaction


@dataclass(frozen=True, slots=True)
class BadLine:
    line_no: int
    reason: str


@dataclass
class ReadStats:
    """What one pass over one file saw; every line is either a header, a row, or bad."""

    path: str
    format: str  # tsv | json
    log_type: str  # conn | dns
    lines: int = 0
    rows: int = 0
    bad_lines: int = 0
    bad: list[BadLine] = field(default_factory=list)  # the first MAX_BAD_LINES

    def add_bad(self, line_no: int, reason: str) -> None:
        self.bad_lines += 1
        if len(self.bad) < MAX_BAD_LINES:
            self.bad.append(BadLine(line_no, reason[:200]))

    def summary(self) -> str:
        text = (f"{self.path}: Zeek {self.log_type}.log ({self.format}), {self.rows} rows, "
                f"{self.bad_lines} bad lines")
        if self.bad:
            shown = "; ".join(f"line {b.line_no}: {b.reason}" for b in self.bad[:5])
            more = "" if self.bad_lines <= 5 else f"; and {self.bad_lines - 5} more"
            text += f" ({shown}{more})"
        return text


# ---- values ------------------------------------------------------------------------------

_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})|\\\\")


def unescape(text: str) -> str:
    """Undo Zeek's ASCII escapes: \\xHH is one byte, \\\\ one backslash; bytes are UTF-8."""
    if "\\" not in text:
        return text
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        out += text[pos:m.start()].encode("utf-8", "surrogateescape")
        out.append(int(m.group(1), 16) if m.group(1) else 0x5C)
        pos = m.end()
    out += text[pos:].encode("utf-8", "surrogateescape")
    return out.decode("utf-8", "backslashreplace")


def to_ns(value: object) -> int:
    """A Zeek time or interval (decimal seconds, exact to the nanosecond, or ISO 8601)."""
    if type(value) is str:  # the usual case, kept fast: "1709510400.123456"
        sec, dot, frac = value.partition(".")
        if sec.isdigit() and (frac.isdigit() if dot else True) and len(frac) <= 9:
            return int(sec) * _NS + (int(frac.ljust(9, "0")) if frac else 0)
    return _to_ns_slow(value)


def _to_ns_slow(value: object) -> int:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value * _NS
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"not a time: {value!r}")
        return round(value * _NS)
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    text = value.strip()
    if "T" in text or text.count("-") >= 2:
        return _iso_ns(text)
    try:
        d = decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise ValueError(f"not a time: {value!r}") from None
    if not d.is_finite():
        raise ValueError(f"not a time: {value!r}")
    return int(d * _NS)


def _iso_ns(text: str) -> int:
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)  # Zeek writes UTC
    return (stamp - _EPOCH) // dt.timedelta(microseconds=1) * 1000


def _count(value: object, name: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise ValueError(f"{name}: not a count: {value!r}")
    try:
        n = int(value)  # type: ignore[call-overload]  # digits, or a JSON integer
    except (TypeError, ValueError):
        raise ValueError(f"{name}: not a count: {value!r}") from None
    if n < 0:
        raise ValueError(f"{name}: negative count {n}")
    return n


def _port(value: object, name: str) -> int:
    if value is None:
        raise ValueError(f"{name} is unset")
    n = _count(value, name)
    if n > 65535:
        raise ValueError(f"{name}: port {n} out of range")
    return n


def _addr(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: not an address: {value!r}")
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in value else socket.AF_INET, value)
    except OSError:
        raise ValueError(f"{name}: not an address: {value[:60]!r}") from None
    return value


def _is_addr(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    except (OSError, ValueError):
        return False
    return True


def _bool(value: object) -> bool:
    return value is True or value == "T"


def _str(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return str(value)


def _seq(value: object) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,)  # one element written without a container


def _dns_name(text: str) -> str:
    """Cut on the left when too long, as the agent's parser does: the registered domain
    stays."""
    name = text.strip().rstrip(".").lower() or "."
    return name if len(name) <= MAX_NAME else "…" + name[-(MAX_NAME - 1):]


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


# ---- rows to records ---------------------------------------------------------------------


_SOCK_TYPES = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
_REASONS = {state: close_reason(state, True) for state in _OUTCOMES}  # data does not matter


_COUNTER_FIELDS = ("orig_pkts", "orig_ip_bytes", "orig_bytes", "resp_pkts", "resp_ip_bytes",
                   "resp_bytes")  # in Counters' field order


def conn_from_row(row: Mapping[str, Any]) -> ZeekConn:
    """One conn.log row (field name -> value; None or absent when unset) as a ZeekConn.

    Values are Zeek's text (TSV) or JSON values. Raises ValueError naming the bad field.
    """
    get = row.get
    ts = get("ts")
    if ts is None:
        raise ValueError("ts is unset")
    start = to_ns(ts)
    duration = get("duration")
    dur_ns = to_ns(duration) if duration is not None else 0
    if dur_ns < 0:
        raise ValueError(f"negative duration {duration!r}")
    orig_h = _addr(get("id.orig_h"), "id.orig_h")
    resp_h = _addr(get("id.resp_h"), "id.resp_h")
    orig_p = _port(get("id.orig_p"), "id.orig_p")
    resp_p = _port(get("id.resp_p"), "id.resp_p")
    proto = get("proto")
    if not proto or not isinstance(proto, str):
        raise ValueError(f"proto: {proto!r}")
    proto = proto.lower()
    raw = [get(n) for n in _COUNTER_FIELDS]
    try:  # fast path: digits (TSV) or integers (JSON), unset as None
        nums = [int(v) if v is not None and v != "" else 0 for v in raw]  # type: ignore[call-overload]
        # (a JSON true/false is no count; "in" also matches 1/0, which then just take
        # the careful path below)
        ok = min(nums) >= 0 and True not in raw and False not in raw
    except (TypeError, ValueError):
        ok = False
    if not ok:  # find the culprit for the message
        nums = [_count(v, n) for v, n in zip(raw, _COUNTER_FIELDS, strict=True)]
    counters = Counters(*nums)
    state = _str(get("conn_state")) or ""
    uid = _str(get("uid")) or f"{orig_h}:{orig_p}-{resp_h}:{resp_p}-{start}"
    record = FlowRecord(
        flow_id=f"zeek:{uid}",
        cookie=0,
        transport=proto,
        family=socket.AF_INET6 if ":" in orig_h else socket.AF_INET,
        sock_type=_SOCK_TYPES.get(proto, socket.SOCK_RAW),
        direction=Direction.OUTBOUND,
        local_addr=orig_h,
        local_port=orig_p,
        peer_addr=resp_h,
        peer_port=resp_p,
        start_ns=start,
        end_ns=start + dur_ns,
        owner=None,
        netns_cookie=0,
        counters=counters,
        tcp=None,
        close_reason=_REASONS.get(state) or close_reason(
            state, counters.payload_out + counters.payload_in > 0),
    )
    return ZeekConn(record, state, _str(get("history")) or "", _str(get("service")) or None)


_ADDRESS_QTYPES = frozenset({"A", "AAAA", "CNAME"})


def dns_from_row(row: Mapping[str, Any]) -> DnsTransaction:
    """One dns.log row as a DnsTransaction.

    Zeek lists CNAME targets and addresses mixed in ``answers`` (with ``TTLs`` alongside),
    without owner names or types. For A/AAAA/CNAME questions the chain is rebuilt as the
    question name followed by the non-address answers in order; for other types (TXT, MX,
    PTR, ...) non-address answers are the records' data and the chain is the name alone.
    """
    if row.get("ts") is None:
        raise ValueError("ts is unset")
    start = to_ns(row["ts"])
    rtt = row.get("rtt")
    rtt_ns = to_ns(rtt) if rtt is not None else 0
    if rtt_ns < 0:
        raise ValueError(f"negative rtt {rtt!r}")
    client = _addr(row.get("id.orig_h"), "id.orig_h")
    resolver = _addr(row.get("id.resp_h"), "id.resp_h")
    client_port = _port(row.get("id.orig_p"), "id.orig_p")
    resolver_port = _port(row.get("id.resp_p"), "id.resp_p")
    query = _str(row.get("query"))
    name = _dns_name(unescape(query)) if query else ""
    qtype = _str(row.get("qtype_name"))
    if not qtype:
        qnum = row.get("qtype")
        qtype = f"TYPE{_count(qnum, 'qtype')}" if qnum is not None else ""
    trans_id = _count(row.get("trans_id"), "trans_id")
    if trans_id > 0xFFFF:
        raise ValueError(f"trans_id {trans_id} out of range")
    raw_answers = _seq(row.get("answers"))
    raw_ttls = _seq(row.get("TTLs"))
    chain = [name] if name else []
    addresses: list[str] = []
    answers: list[Answer] = []
    names_chain = qtype in _ADDRESS_QTYPES
    for i, raw in enumerate(raw_answers[:MAX_ANSWERS]):
        text = str(raw)
        ttl_raw = raw_ttls[i] if i < len(raw_ttls) else None
        ttl = to_ns(ttl_raw) // _NS if ttl_raw is not None else 0
        owner = chain[-1] if chain else name
        if _is_addr(text):
            addresses.append(text)
            answers.append(Answer(owner, "AAAA" if ":" in text else "A", ttl, text))
        elif names_chain:
            target = _dns_name(text)
            answers.append(Answer(owner, "CNAME", ttl, target))
            if len(chain) <= MAX_CHAIN and target not in chain:
                chain.append(target)
        else:
            answers.append(Answer(name, qtype or "?", ttl, _bounded(text)))
    rcode = _str(row.get("rcode_name"))
    if not rcode:
        rnum = row.get("rcode")
        if rnum is not None:
            rcode = dns.rcode.to_text(dns.rcode.Rcode.make(_count(rnum, "rcode")))
        else:
            rcode = "NOERROR" if answers else RCODE_TIMEOUT
    uid = _str(row.get("uid")) or f"{client}:{client_port}-{resolver}:{resolver_port}-{start}"
    proto = (_str(row.get("proto")) or "udp").lower()
    return DnsTransaction(
        txn_id=f"zeek:{uid}-{trans_id:04x}-{qtype}",
        cookie=0,
        owner=None,
        resolver_addr=resolver,
        resolver_port=resolver_port,
        client_addr=client,
        client_port=client_port,
        question_name=name,
        qtype=qtype,
        rcode=rcode,
        answers=tuple(answers),
        addresses=tuple(addresses),
        cname_chain=tuple(chain),
        ttl_min=min((a.ttl for a in answers), default=None),
        start_ns=start,
        end_ns=start + rtt_ns,
        retries=0,
        truncated=_bool(row.get("TC")),
        timed_out=rcode == RCODE_TIMEOUT,
        protocol=proto,
        family=socket.AF_INET6 if ":" in client else socket.AF_INET,
        netns_cookie=0,
        msg_id=trans_id,
    )


_MAPPERS: dict[str, Callable[[Mapping[str, Any]], ZeekItem]] = {
    CONN: conn_from_row, DNS: dns_from_row}
_NEEDED = {CONN: _CONN_FIELDS, DNS: _DNS_FIELDS}


# ---- files -------------------------------------------------------------------------------


def _open(path: str) -> IO[bytes]:
    f: IO[bytes] = open(path, "rb")  # noqa: SIM115 - returned to the caller's with-block
    try:
        magic = f.read(2)
        f.seek(0)
    except BaseException:
        f.close()
        raise
    if magic == _GZIP_MAGIC:
        f.close()
        return gzip.open(path, "rb")
    return f


_READ_ERRORS = (OSError, EOFError, zlib.error)


def _lines(f: IO[bytes], stats: ReadStats | None) -> Iterator[tuple[int, str]]:
    """(line number, text without the line end); over-long lines are counted bad, skipped.

    A corrupt or cut gzip stream ends the file as a bad line (what was read is kept).
    """
    n = 0
    while True:
        try:
            raw = f.readline(MAX_LINE_BYTES + 1)
        except _READ_ERRORS as exc:
            if stats is not None:
                stats.add_bad(n + 1, f"read error, rest of file skipped: {exc}")
            return
        if not raw:
            return
        n += 1
        if stats is not None:
            stats.lines += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            try:
                while True:  # skip the rest of the line without holding it
                    more = f.readline(MAX_LINE_BYTES)
                    if not more or more.endswith(b"\n"):
                        break
            except _READ_ERRORS:
                pass
            if stats is not None:
                stats.add_bad(n, f"line longer than {MAX_LINE_BYTES} bytes")
            continue
        yield n, raw.decode("utf-8", "replace").rstrip("\r\n")


def _decode_separator(text: str) -> str:
    sep = unescape(text.strip()) if text.strip() else "\t"
    if len(sep) != 1:
        raise ZeekFormatError(f"unsupported #separator {text!r}")
    return sep


def _type_of_fields(names: Iterable[str]) -> str | None:
    keys = set(names)
    conn, dns_ = bool(keys & _CONN_MARKERS), bool(keys & _DNS_MARKERS)
    if conn != dns_:
        return CONN if conn else DNS
    return None


def _flatten(obj: dict[str, Any]) -> dict[str, Any]:
    nested = obj.get("id")
    if isinstance(nested, dict):
        obj = {k: v for k, v in obj.items() if k != "id"}
        for k, v in nested.items():
            obj.setdefault(f"id.{k}", v)
    return obj


def _looks_like_zeek_json(obj: dict[str, Any]) -> bool:
    return "ts" in obj and ("id.orig_h" in obj or isinstance(obj.get("id"), dict))


def sniff(path: str) -> tuple[str, str]:
    """(format, log type) of a file, from its content; ZeekFormatError if it is neither."""
    expected = ("expected a Zeek conn.log or dns.log: Zeek TSV (starting with a "
                "'#separator' line) or Zeek JSON (one object per line with 'ts' and "
                "'id.orig_h'), optionally gzip-compressed")
    try:
        with _open(path) as f:
            first: str | None = None
            seen: list[dict[str, Any]] = []
            for _, line in _lines(f, None):
                if not line.strip():
                    continue
                if first is None:
                    first = line.lstrip("\ufeff")
                    if first.startswith("#separator"):
                        return TSV, _sniff_tsv(path, f, first)
                    if not first.lstrip().startswith("{"):
                        raise ZeekFormatError(
                            f"{path}: not a Zeek log: {expected}; first line starts with "
                            f"{first[:40]!r}")
                try:
                    obj = json.loads(line, parse_float=str)
                except ValueError:
                    obj = None
                if isinstance(obj, dict) and _looks_like_zeek_json(obj):
                    seen.append(_flatten(obj))
                if len(seen) >= SNIFF_LINES:
                    break
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ZeekFormatError(f"{path}: unreadable gzip data ({exc}): {expected}") from None
    if first is None:
        raise ZeekFormatError(f"{path}: empty file: {expected}")
    if not seen:
        raise ZeekFormatError(
            f"{path}: JSON lines, but no Zeek records among the first {SNIFF_LINES} "
            f"(no 'ts' and 'id.orig_h'): {expected}")
    # Each record votes with its _path, or else with its fields (JSON leaves unset ones out).
    votes = {CONN: 0, DNS: 0}
    others: set[str] = set()
    for o in seen:
        kind = str(o["_path"]) if "_path" in o else _type_of_fields(o)
        if kind in votes:
            votes[kind] += 1
        elif kind is not None:
            others.add(kind)
    if votes[CONN] != votes[DNS]:
        return JSON, CONN if votes[CONN] > votes[DNS] else DNS
    if others and not votes[CONN]:
        raise ZeekFormatError(f"{path}: a Zeek {'/'.join(sorted(others))}.log; only conn.log "
                              "and dns.log can be read")
    keys = sorted({k for o in seen for k in o})
    raise ZeekFormatError(
        f"{path}: Zeek JSON, but neither a conn.log (conn_state, history, ...) nor a "
        f"dns.log (query, qtype_name, ...): fields {keys[:12]}")


def _sniff_tsv(path: str, f: IO[bytes], first: str) -> str:
    sep = _decode_separator(first[len("#separator"):])
    log_path: str | None = None
    for _, line in _lines(f, None):
        if not line.startswith("#"):
            break
        key, _, rest = line.partition(sep)
        if key == "#path":
            log_path = rest.strip()
        elif key == "#fields":
            names = rest.split(sep)
            log_type = _type_of_fields(names)
            if log_path is not None and log_path not in (CONN, DNS):
                raise ZeekFormatError(
                    f"{path}: a Zeek {log_path}.log; only conn.log and dns.log can be read")
            if log_path in (CONN, DNS) and (log_type in (None, log_path)):
                log_type = log_path
            missing = [n for n in ("ts", *_ID_FIELDS) if n not in names]
            if log_type is None or missing:
                raise ZeekFormatError(
                    f"{path}: Zeek TSV, but not a conn.log or dns.log"
                    + (f" (missing fields {missing})" if missing else "")
                    + f": #fields {' '.join(names[:12])}")
            return log_type
    raise ZeekFormatError(f"{path}: Zeek TSV header without a '#fields' line")


class ZeekLog:
    """One Zeek conn.log or dns.log file; iterate it for ZeekConn or DnsTransaction rows.

    Opening sniffs the format (ZeekFormatError if it is not such a log); each iteration
    reads the file again, in file order, and replaces ``stats``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.format, self.log_type = sniff(self.path)
        self.stats = ReadStats(self.path, self.format, self.log_type)

    def __iter__(self) -> Iterator[ZeekItem]:
        self.stats = stats = ReadStats(self.path, self.format, self.log_type)
        with _open(self.path) as f:
            lines = _lines(f, stats)
            rows = self._tsv_rows(lines, stats) if self.format == TSV else self._json_rows(
                lines, stats)
            mapper = _MAPPERS[self.log_type]
            for line_no, row in rows:
                try:
                    item = mapper(row)
                except (ValueError, TypeError, KeyError, OverflowError) as exc:
                    stats.add_bad(line_no, str(exc) or type(exc).__name__)
                    continue
                stats.rows += 1
                yield item

    def _tsv_rows(self, lines: Iterator[tuple[int, str]],
                  stats: ReadStats) -> Iterator[tuple[int, dict[str, Any]]]:
        sep, set_sep, unset, empty = "\t", ",", "-", "(empty)"
        names: list[str] | None = None
        types: list[str] | None = None
        plan: list[tuple[str, int, bool]] | None = None  # (name, column, is container)
        simple = False  # no container among the fields read: rows need no splitting
        other_log: str | None = None  # a header block of another log type: skip its rows
        needed = _NEEDED[self.log_type]
        for line_no, line in lines:
            if line.startswith("#"):
                if line.startswith("#separator"):
                    try:
                        sep = _decode_separator(line[len("#separator"):])
                    except ZeekFormatError as exc:
                        stats.add_bad(line_no, str(exc))
                    continue
                key, _, rest = line.partition(sep)
                if key == "#set_separator":
                    set_sep = unescape(rest)
                elif key == "#unset_field":
                    unset = rest
                elif key == "#empty_field":
                    empty = rest
                elif key == "#path":
                    p = rest.strip()
                    other_log = p if p != self.log_type else None
                elif key == "#fields":
                    names, types, plan = rest.split(sep), None, None
                elif key == "#types":
                    types, plan = rest.split(sep), None
                continue
            if not line:
                continue
            if other_log is not None:
                stats.add_bad(line_no, f"row of a Zeek {other_log}.log")
                continue
            if names is None:
                stats.add_bad(line_no, "data before the #fields header")
                continue
            if plan is None:
                index = {n: i for i, n in enumerate(names)}
                plan = []
                for n in needed:
                    if n in index:
                        i = index[n]
                        t = types[i] if types is not None and i < len(types) else ""
                        container = (t.startswith(("set[", "vector[", "table["))
                                     or (not t and n in _CONTAINER_FIELDS))
                        plan.append((n, i, container))
                simple = not any(c for _, _, c in plan)
            parts = line.split(sep)
            if len(parts) != len(names):
                stats.add_bad(line_no, f"{len(parts)} fields, the #fields header has "
                                       f"{len(names)}")
                continue
            if simple and "\\" not in line and empty not in line:  # the common case
                yield line_no, {n: parts[i] for n, i, _ in plan if parts[i] != unset}
                continue
            row: dict[str, Any] = {}
            for n, i, container in plan:
                v = parts[i]
                if v == unset:
                    continue
                if container:
                    row[n] = () if v == empty else tuple(
                        unescape(x) for x in v.split(set_sep))
                else:
                    row[n] = "" if v == empty else (unescape(v) if "\\" in v else v)
            yield line_no, row

    def _json_rows(self, lines: Iterator[tuple[int, str]],
                   stats: ReadStats) -> Iterator[tuple[int, dict[str, Any]]]:
        for line_no, line in lines:
            if not line.strip():
                continue
            try:
                obj = json.loads(line, parse_float=str)
            except ValueError as exc:
                stats.add_bad(line_no, f"invalid JSON: {exc}")
                continue
            if not isinstance(obj, dict):
                stats.add_bad(line_no, "not a JSON object")
                continue
            path = obj.get("_path")
            if path is not None and path != self.log_type:
                stats.add_bad(line_no, f"record of a Zeek {path}.log")
                continue
            yield line_no, _flatten(obj)


def read_zeek(path: str | os.PathLike[str]) -> ZeekLog:
    """Open a Zeek conn.log or dns.log (TSV or JSON, plain or gzip)."""
    return ZeekLog(path)


def event_time_ns(item: ZeekItem) -> int:
    """When it began: a connection's ts (its first packet), a DNS query's ts."""
    return item.record.start_ns if isinstance(item, ZeekConn) else item.start_ns


def iter_events_sorted(paths: Iterable[str | os.PathLike[str]], *,
                       stats: list[ReadStats] | None = None,
                       max_rows: int = MAX_SORTED_ROWS) -> Iterator[ZeekItem]:
    """The rows of several Zeek files merged in event-time order (ts, i.e. start).

    Zeek writes a conn.log row when the connection ends (a long connection appears hours
    after shorter ones that began later), so rows are re-ordered by ts before replay. This
    is a plain in-memory sort: every row is held (about 1 KB each); past ``max_rows`` it
    stops with ZeekFormatError rather than exhaust memory; split such input by time first.
    Ties keep the order of ``paths``, then file order. Every file is opened (and sniffed)
    before anything is returned, so a wrong file fails early. Per-file counts go to
    ``stats`` when given.
    """
    logs = [ZeekLog(p) for p in paths]
    items: list[ZeekItem] = []
    for log in logs:
        for item in log:
            items.append(item)
            if len(items) > max_rows:
                raise ZeekFormatError(
                    f"more than {max_rows} rows in {[lg.path for lg in logs]}: too many to "
                    "sort in memory; split the input by time and replay the parts in order")
        if stats is not None:
            stats.append(log.stats)
    items.sort(key=event_time_ns)
    return iter(items)

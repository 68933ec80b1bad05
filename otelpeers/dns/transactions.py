"""Match DNS responses to queries, per socket, into transactions.

Only the client side of a socket is tracked: a query it sends (OUTBOUND) opens a
transaction, a response it receives (INBOUND) closes it. Queries a socket receives (this host
serving DNS, e.g. the local stub's listening socket) are counted and ignored, so a lookup
through 127.0.0.53 is one transaction for the application plus, when the stub asks upstream,
one for the stub's own socket, never two for the same socket pair.

Key: (cookie, message id, question name, question type). The A and AAAA queries glibc sends
in parallel on one socket differ in type, so they are two transactions even with one id.
A query re-sent with the same key is a retry: the first send time is kept, the retry
counted, and the timeout counted again from the latest send. The clock is the caller's
(event time); expire(now_ns) ends what has waited too long. No threads, no wall clock.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from otelpeers.dns.records import Answer
from otelpeers.events import PROTO_NAMES, Direction, DnsPacketEvent, Owner

if TYPE_CHECKING:
    from otelpeers.dns.parse import DnsMessage

RCODE_TIMEOUT = "TIMEOUT"

TxnKey = tuple[int, int, str, str]  # (cookie, id, question name, question type)


@dataclass(frozen=True, slots=True)
class DnsTransaction:
    txn_id: str  # deterministic: same packets in, same id out
    cookie: int
    owner: Owner | None
    resolver_addr: str
    resolver_port: int
    client_addr: str
    client_port: int
    question_name: str
    qtype: str
    rcode: str  # response code name, or TIMEOUT
    answers: tuple[Answer, ...]
    addresses: tuple[str, ...]
    cname_chain: tuple[str, ...]
    ttl_min: int | None
    start_ns: int  # first send of the query
    end_ns: int  # response received, or the time the wait ran out
    retries: int
    truncated: bool
    timed_out: bool
    protocol: str  # "udp" | "tcp"
    family: int = 0
    netns_cookie: int = 0
    msg_id: int = 0

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9


@dataclass(slots=True)
class _Pending:
    event: DnsPacketEvent
    msg: DnsMessage
    start_ns: int
    last_sent_ns: int
    owner: Owner | None
    retries: int = 0
    truncated: bool = False


def make_txn_id(cookie: int, msg_id: int, qtype: str, start_ns: int) -> str:
    return f"{cookie:x}-{msg_id:04x}-{qtype}-{start_ns:x}"


class TransactionTable:
    def __init__(self, query_timeout_s: float = 5.0, max_pending: int = 65536) -> None:
        if query_timeout_s <= 0 or max_pending < 1:
            raise ValueError("TransactionTable: query_timeout_s must be > 0 and max_pending >= 1")
        self.timeout_ns = int(query_timeout_s * 1e9)
        self.max_pending = max_pending
        # Ordered by latest send, so the front is the first to time out.
        self._pending: OrderedDict[TxnKey, _Pending] = OrderedDict()
        self._by_cookie: dict[int, set[TxnKey]] = {}  # for id-only matches and close()
        self._counts: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._counts)

    def observe(self, ev: DnsPacketEvent, msg: DnsMessage) -> list[DnsTransaction]:
        """Feed one parsed message; returns transactions it completed (zero or one)."""
        if msg.opcode != "QUERY":
            self._counts["ignored_opcode"] += 1
            return []
        if not msg.is_response:
            if ev.direction != Direction.OUTBOUND:
                self._counts["queries_served"] += 1  # a query to a server on this host
                return []
            self._query(ev, msg)
            return []
        if ev.direction != Direction.INBOUND:
            self._counts["responses_served"] += 1
            return []
        return self._response(ev, msg)

    def _query(self, ev: DnsPacketEvent, msg: DnsMessage) -> None:
        q = msg.question
        if q is None:
            self._counts["query_without_question"] += 1
            return
        key = (ev.cookie, msg.id, q.name, q.qtype)
        p = self._pending.get(key)
        if p is not None:
            p.retries += 1
            p.last_sent_ns = max(p.last_sent_ns, ev.time_ns)
            p.owner = p.owner or ev.owner
            self._pending.move_to_end(key)
            self._counts["retries"] += 1
            return
        self._pending[key] = _Pending(ev, msg, ev.time_ns, ev.time_ns, ev.owner)
        self._by_cookie.setdefault(ev.cookie, set()).add(key)
        self._counts["queries"] += 1
        if len(self._pending) > self.max_pending:
            old_key, _ = self._pending.popitem(last=False)
            self._unindex(old_key)
            self._counts["pending_evicted"] += 1

    def _unindex(self, key: TxnKey) -> None:
        keys = self._by_cookie.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_cookie[key[0]]

    def _response(self, ev: DnsPacketEvent, msg: DnsMessage) -> list[DnsTransaction]:
        q = msg.question
        if q is not None:
            key: TxnKey | None = (ev.cookie, msg.id, q.name, q.qtype)
            if key not in self._pending:
                key = None
        else:
            # FORMERR and some broken servers echo no question: match on the id alone when
            # only one query with that id is waiting on this socket.
            keys = [k for k in self._by_cookie.get(ev.cookie, ()) if k[1] == msg.id]
            key = keys[0] if len(keys) == 1 else None
        if key is None:
            self._counts["unmatched_responses"] += 1
            return []
        p = self._pending.pop(key)
        self._unindex(key)
        if (ev.peer_addr, ev.peer_port) != (p.event.peer_addr, p.event.peer_port):
            # Connected sockets never see this; an unconnected one may (spoofing, anycast).
            self._counts["response_from_other_peer"] += 1
        self._counts["answered"] += 1
        return [self._finish(p, ev.time_ns, msg, ev.owner)]

    def _finish(self, p: _Pending, end_ns: int, resp: DnsMessage | None,
                owner: Owner | None) -> DnsTransaction:
        q = p.msg.question
        assert q is not None
        ev = p.event
        return DnsTransaction(
            txn_id=make_txn_id(ev.cookie, p.msg.id, q.qtype, p.start_ns),
            cookie=ev.cookie,
            owner=p.owner or owner,
            resolver_addr=ev.peer_addr,
            resolver_port=ev.peer_port,
            client_addr=ev.local_addr,
            client_port=ev.local_port,
            question_name=q.name,
            qtype=q.qtype,
            rcode=resp.rcode if resp is not None else RCODE_TIMEOUT,
            answers=resp.answers if resp is not None else (),
            addresses=resp.addresses if resp is not None else (),
            cname_chain=resp.cname_chain if resp is not None else (q.name,),
            ttl_min=resp.ttl_min if resp is not None else None,
            start_ns=p.start_ns,
            end_ns=end_ns,
            retries=p.retries,
            truncated=resp.truncated if resp is not None else False,
            timed_out=resp is None,
            protocol=PROTO_NAMES.get(ev.protocol, str(ev.protocol)),
            family=ev.family,
            netns_cookie=ev.netns_cookie,
            msg_id=p.msg.id,
        )

    def expire(self, now_ns: int) -> list[DnsTransaction]:
        """End queries whose latest send is at least query_timeout_s before now_ns."""
        out: list[DnsTransaction] = []
        while self._pending:
            key, p = next(iter(self._pending.items()))
            deadline = p.last_sent_ns + self.timeout_ns
            if deadline > now_ns:
                break
            self._pending.popitem(last=False)
            self._unindex(key)
            self._counts["timed_out"] += 1
            out.append(self._finish(p, deadline, None, None))
        return out

    def close(self, cookie: int, now_ns: int) -> list[DnsTransaction]:
        """A socket was released: its unanswered queries end now as timeouts."""
        keys = sorted(self._by_cookie.get(cookie, ()), key=lambda k: self._pending[k].start_ns)
        out = []
        for key in keys:
            p = self._pending.pop(key)
            self._unindex(key)
            self._counts["timed_out"] += 1
            out.append(self._finish(p, max(now_ns, p.start_ns), None, None))
        return out

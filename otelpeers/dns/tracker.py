"""One entry point for DNS packets: TCP reassembly, parsing, transaction matching.

    tracker = DnsTracker(config.dns)
    for txn in tracker.handle(event):      # DnsPacketEvent from the kernel or a recording
        ...                                # the DNS stage records and emits it
    for txn in tracker.expire(now_ns):     # periodically, with event-time now
        ...
"""

from __future__ import annotations

import socket
from collections import Counter

from otelpeers.config import DnsConfig
from otelpeers.dns.parse import DnsParser, ParseError
from otelpeers.dns.tcp import TcpReassembler
from otelpeers.dns.transactions import DnsTransaction, TransactionTable
from otelpeers.events import DnsPacketEvent


class DnsTracker:
    def __init__(self, config: DnsConfig | None = None, max_pending: int = 65536,
                 max_tcp_streams: int = 4096) -> None:
        cfg = config or DnsConfig()
        self.parser = DnsParser()
        self.tcp = TcpReassembler(max_streams=max_tcp_streams)
        self.transactions = TransactionTable(cfg.query_timeout_s, max_pending)
        self._counts: Counter[str] = Counter()

    def handle(self, ev: DnsPacketEvent) -> list[DnsTransaction]:
        """Feed one packet; returns the transactions it completed."""
        self._counts["packets"] += 1
        if ev.protocol == socket.IPPROTO_TCP:
            pieces = [(m.payload, m.wire_len)
                      for m in self.tcp.feed(ev.cookie, int(ev.direction), ev.payload,
                                             ev.wire_len, seq=ev.tcp_seq)]
        elif ev.protocol == socket.IPPROTO_UDP:
            pieces = [(ev.payload, ev.wire_len)]
        else:
            self._counts["unknown_protocol"] += 1
            return []
        out: list[DnsTransaction] = []
        for payload, wire_len in pieces:
            try:
                msg = self.parser.parse(payload, wire_len)
            except ParseError:
                continue  # counted by the parser
            out.extend(self.transactions.observe(ev, msg))
        self._counts["transactions"] += len(out)
        return out

    def expire(self, now_ns: int) -> list[DnsTransaction]:
        out = self.transactions.expire(now_ns)
        self._counts["transactions"] += len(out)
        return out

    def close_socket(self, cookie: int, now_ns: int) -> list[DnsTransaction]:
        """The socket was released: drop its TCP streams, end its unanswered queries."""
        self.tcp.close(cookie)
        out = self.transactions.close(cookie, now_ns)
        self._counts["transactions"] += len(out)
        return out

    @property
    def stats(self) -> dict[str, int]:
        """Flat counters, prefixed by step: packets, parse.*, tcp.*, txn.*."""
        out = {"packets": 0, "transactions": 0, **self._counts}
        for prefix, stats in (("parse", self.parser.stats), ("tcp", self.tcp.stats),
                              ("txn", self.transactions.stats)):
            out.update({f"{prefix}.{k}": v for k, v in stats.items()})
        out["txn.pending"] = len(self.transactions)
        out["tcp.streams"] = len(self.tcp)
        return out

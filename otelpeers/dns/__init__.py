"""DNS in user space: parse packets the kernel copied, pair queries with responses, remember
which name produced which address, and map transactions to spans and metrics."""

from __future__ import annotations

from otelpeers.dns.cache import Match, Resolution, ResolutionCache
from otelpeers.dns.parse import DnsMessage, DnsParser, ParseError, parse_message
from otelpeers.dns.spans import DnsSpanMapper, link_for_match
from otelpeers.dns.tracker import DnsTracker
from otelpeers.dns.transactions import DnsTransaction, TransactionTable

__all__ = [
    "DnsMessage", "DnsParser", "DnsSpanMapper", "DnsTracker", "DnsTransaction", "Match",
    "ParseError", "Resolution", "ResolutionCache", "TransactionTable", "link_for_match",
    "parse_message",
]

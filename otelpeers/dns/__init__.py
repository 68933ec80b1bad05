"""DNS in user space: parse packets the kernel copied, pair queries with responses, and
remember which name produced which address. Mapping to OpenTelemetry lives in otelpeers.otel."""

from __future__ import annotations

from otelpeers.dns.cache import Match, Resolution, ResolutionCache
from otelpeers.dns.lookups import DnsLookup
from otelpeers.dns.parse import DnsMessage, DnsParser, ParseError, parse_message
from otelpeers.dns.tracker import DnsTracker
from otelpeers.dns.transactions import DnsTransaction, TransactionTable

__all__ = [
    "DnsLookup", "DnsMessage", "DnsParser", "DnsTracker", "DnsTransaction", "Match",
    "ParseError", "Resolution", "ResolutionCache", "TransactionTable", "parse_message",
]

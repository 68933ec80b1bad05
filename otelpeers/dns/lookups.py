"""The DNS stage's output: one completed transaction, with what later stages add to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from otelpeers.dns.transactions import DnsTransaction

if TYPE_CHECKING:
    from otelpeers.detect.model import Detection
    from otelpeers.events import Owner


@dataclass(frozen=True, slots=True)
class DnsLookup:
    """A completed transaction on its way to the sinks (the DNS span, metrics, the graph).

    upstream_txn_id: for an application's query to a local stub, the stub's own upstream
    query (linked from the span). detections: rules that fired on this lookup, exported as
    span events on its span."""

    txn: DnsTransaction
    upstream_txn_id: str | None = None
    detections: tuple[Detection, ...] = ()

    @property
    def owner(self) -> Owner | None:
        """The querying process, as FlowRecord.owner: sinks take either without a test."""
        return self.txn.owner

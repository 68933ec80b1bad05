"""DNS counters and latency samples, pure Python; the OTel layer turns them into instruments.

dns.lookup.duration (histogram, seconds) is fed from drain_latencies(): each sample carries
the attributes it should be recorded with (dns.question.type, dns.response_code,
error.type for failures). Samples wait in a bounded queue; overflow is counted, not lost
silently.
"""

from __future__ import annotations

from collections import Counter, deque

from otelpeers import attributes as A
from otelpeers.dns.spans import is_error
from otelpeers.dns.transactions import DnsTransaction

LatencySample = tuple[float, dict[str, str]]
MAX_LABELS = 64  # distinct qtype / rcode labels, "other" (which takes the rest) included


class DnsMetrics:
    def __init__(self, max_samples: int = 65536) -> None:
        self.by_rcode: Counter[str] = Counter()
        self.by_qtype: Counter[str] = Counter()
        self.by_rcode_qtype: Counter[tuple[str, str]] = Counter()
        self.retries = 0
        self.truncated = 0
        self._samples: deque[LatencySample] = deque(maxlen=max_samples)
        self.samples_dropped = 0

    @staticmethod
    def _label(counter: Counter[str], value: str) -> str:
        # Query types are chosen by whoever sends the query: bound the label set.
        return value if value in counter or len(counter) < MAX_LABELS - 1 else "other"

    def observe(self, txn: DnsTransaction) -> None:
        rcode = self._label(self.by_rcode, txn.rcode)
        qtype = self._label(self.by_qtype, txn.qtype)
        self.by_rcode[rcode] += 1
        self.by_qtype[qtype] += 1
        self.by_rcode_qtype[(rcode, qtype)] += 1
        self.retries += txn.retries
        self.truncated += txn.truncated
        attrs = {A.DNS_QUESTION_TYPE: qtype, A.DNS_RESPONSE_CODE: rcode}
        if is_error(txn.rcode):
            attrs[A.ERROR_TYPE] = txn.rcode.lower()
        if len(self._samples) == self._samples.maxlen:
            self.samples_dropped += 1
        self._samples.append((txn.duration_s, attrs))

    def drain_latencies(self) -> list[LatencySample]:
        """Latency samples (seconds, attributes) since the last drain, oldest first."""
        out = list(self._samples)
        self._samples.clear()
        return out

    @property
    def stats(self) -> dict[str, int]:
        out = {f"queries.rcode.{k}": v for k, v in self.by_rcode.items()}
        out.update({f"queries.qtype.{k}": v for k, v in self.by_qtype.items()})
        out["queries"] = sum(self.by_rcode.values())
        out["retries"] = self.retries
        out["truncated"] = self.truncated
        out["latency_samples_pending"] = len(self._samples)
        out["latency_samples_dropped"] = self.samples_dropped
        return out

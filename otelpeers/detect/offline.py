"""`otelpeers detect` over inputs that are not kernel events: Zeek logs.

Zeek rows are already flows and lookups; they enter the pipeline as Observed* events, in
event-time order, and a tiny stage hands them over as outputs, so the detection stage (and
every sink) sees them exactly as it sees the agent's own flows and lookups.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import ClassVar, TextIO

from otelpeers.config import DnsConfig
from otelpeers.detect.model import ActorKind, Detection
from otelpeers.dns.cache import ResolutionCache
from otelpeers.dns.lookups import DnsLookup
from otelpeers.dns.stage import annotation_for
from otelpeers.events import Event
from otelpeers.flows import FlowRecord
from otelpeers.pipeline import BaseStage, Outputs


@dataclass(frozen=True, slots=True)
class ObservedFlow:
    """A completed connection seen by something else (a Zeek conn.log row)."""

    time_ns: int  # when it began (Zeek's ts): inputs are replayed in this order
    record: FlowRecord


@dataclass(frozen=True, slots=True)
class ObservedLookup:
    time_ns: int
    lookup: DnsLookup


class ObservedStage(BaseStage):
    """Hands Zeek rows over as outputs. Connections are named from the lookups of dns.log
    the way the live DNS stage names the agent's own (the same cache, keyed by address:
    Zeek has no process), so every rule sees `flow.dns` alike, live or offline."""

    name: ClassVar[str] = "observed"
    accepts: ClassVar[tuple[type, ...]] = (ObservedFlow, ObservedLookup)

    def __init__(self, config: DnsConfig | None = None) -> None:
        cfg = config if config is not None else DnsConfig()
        self.cache = ResolutionCache(cfg)
        self.dns_ports = frozenset(cfg.ports)
        self.flows = 0
        self.lookups = 0
        self.flows_named = 0

    def on_event(self, ev: Event, out: Outputs) -> None:
        if isinstance(ev, ObservedFlow):
            r = ev.record
            dns = annotation_for(self.cache, self.dns_ports, r)
            if dns is not None:
                self.flows_named += dns.resolved
                r = replace(r, dns=dns)
            out.flows.append(r)
            self.flows += 1
        elif isinstance(ev, ObservedLookup):
            self.cache.record(ev.lookup.txn)
            out.dns.append(ev.lookup)
            self.lookups += 1

    def counters(self) -> Mapping[str, int]:
        return {"flows": self.flows, "lookups": self.lookups, "flows_named": self.flows_named}


class ZeekSource:
    """Zeek conn.log / dns.log files, merged and sorted by ts, in batches."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]], batch_size: int = 512) -> None:
        from otelpeers.detect.zeek import ReadStats

        self.paths = list(paths)
        self.batch_size = batch_size
        self.stats: list[ReadStats] = []
        self._stopped = False

    def batches(self) -> Iterator[list[Event]]:
        from otelpeers.detect.zeek import ZeekConn, iter_events_sorted

        batch: list[Event] = []
        for item in iter_events_sorted(self.paths, stats=self.stats):
            if self._stopped:
                break
            if isinstance(item, ZeekConn):
                batch.append(ObservedFlow(item.record.start_ns, item.record))  # type: ignore[arg-type]
            else:
                batch.append(ObservedLookup(item.start_ns, DnsLookup(item)))  # type: ignore[arg-type]
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def stop(self) -> None:
        self._stopped = True

    def counters(self) -> Mapping[str, int]:
        return {"rows": sum(s.rows for s in self.stats),
                "bad_lines": sum(s.bad_lines for s in self.stats)}


def rfc3339(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / 1e9, UTC).isoformat(timespec="microseconds") \
        .replace("+00:00", "Z")


def detection_json(d: Detection) -> dict[str, object]:
    """The line `otelpeers detect` prints for one detection (docs/detections.md)."""
    a = d.actor
    source: dict[str, object] = {}
    if a.address:
        source["address"] = a.address
    if a.port:
        source["port"] = a.port
    if a.pid:
        source["pid"] = a.pid
    if a.executable:
        source["executable"] = a.executable
    if a.container_id:
        source["container_id"] = a.container_id
    if a.kind == ActorKind.PROCESS and a.owner is not None and a.owner.comm:
        source.setdefault("executable", a.owner.comm)
    out: dict[str, object] = {
        "time": rfc3339(d.time_ns), "rule": d.rule.name, "score": round(d.score, 4),
        "severity": d.severity.text, "summary": d.summary, "source": source}
    p = d.peer
    if p is not None:
        peer = {k: v for k, v in (("address", p.address), ("port", p.port), ("name", p.name),
                                  ("cidr", p.cidr)) if v}
        if peer:
            out["peer"] = peer
    out["evidence"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d.evidence.items()}
    if d.repeats:
        out["repeats"] = d.repeats
    out["id"] = d.detection_id
    return out


class DetectionPrinter:
    """A sink printing one JSON object per detection per line."""

    name: ClassVar[str] = "print_detections"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.printed = 0

    def consume(self, out: Outputs) -> None:
        for d in out.detections:
            self.stream.write(json.dumps(detection_json(d)) + "\n")
            self.printed += 1
        if out.detections:
            self.stream.flush()

    def counters(self) -> Mapping[str, int]:
        return {"printed": self.printed}

    def close(self) -> None:
        self.stream.flush()

"""What a detection is: rule metadata, the actor and target, the score, the evidence.

Pure data (no OpenTelemetry): otelpeers.otel maps detections to log records, span events
and a counter; `otelpeers detect` prints them as JSON lines.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from otelpeers.events import Owner
from otelpeers.ids import blake2b

EvidenceValue = str | int | float | bool | tuple[str, ...] | tuple[int, ...] | tuple[float, ...]


class Severity(enum.IntEnum):
    """Detection severity; the value is the OTel log SeverityNumber it is exported with."""

    LOW = 9  # INFO
    MEDIUM = 13  # WARN
    HIGH = 17  # ERROR
    CRITICAL = 21  # FATAL

    @property
    def text(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r}: use one of "
                             f"{', '.join(s.text for s in cls)}") from None


@dataclass(frozen=True, slots=True)
class RuleMeta:
    """Fixed per rule: the same across runs and versions (uuid), exported with every alert."""

    name: str  # security_rule.name, e.g. "dga"
    category: str  # security_rule.category, e.g. "command_and_control"
    uuid: str  # security_rule.uuid
    version: str  # security_rule.version
    description: str
    reference: str  # the MITRE ATT&CK technique URL
    severity: Severity  # default severity (configurable per rule)
    ruleset: str = "otelpeers"


class ActorKind(enum.StrEnum):
    PROCESS = "process"  # live agent and recordings: executable + container
    ADDRESS = "address"  # Zeek logs: the source address


@dataclass(frozen=True, slots=True)
class Actor:
    """Who the detection is about. key is what detectors keep state by: a process actor is
    its executable and container, so a restarted process keeps its history."""

    kind: ActorKind
    key: str
    executable: str | None = None
    container_id: str | None = None
    pid: int | None = None
    address: str | None = None
    port: int | None = None
    owner: Owner | None = None  # the process that owned the socket (the export resource)


@dataclass(frozen=True, slots=True)
class Peer:
    """The target: one peer, or (for rules about many targets) a network as cidr."""

    address: str | None = None
    port: int | None = None
    name: str | None = None
    cidr: str | None = None

    @property
    def key(self) -> str:
        return self.name or self.cidr or f"{self.address or ''}:{self.port or ''}"


class EvidenceKind(enum.StrEnum):
    FLOW = "flow"  # a connection span (FlowRecord.flow_id)
    DNS = "dns"  # a DNS span (DnsTransaction.txn_id)


@dataclass(frozen=True, slots=True)
class EvidenceRef:
    """The span the detection points at (log record trace/span ids, span event)."""

    kind: EvidenceKind
    ident: str


@dataclass(frozen=True, slots=True)
class Detection:
    rule: RuleMeta
    time_ns: int  # event time of the input that completed the evidence
    score: float  # 0..1
    severity: Severity
    summary: str  # one line, for people
    actor: Actor
    peer: Peer | None
    evidence: Mapping[str, EvidenceValue] = field(default_factory=dict)
    evidence_span: EvidenceRef | None = None
    repeats: int = 0  # detections of the same rule/actor/target suppressed since the last one
    detection_id: str = ""

    def __post_init__(self) -> None:
        if not self.detection_id:
            target = self.peer.key if self.peer is not None else ""
            h = blake2b(f"{self.rule.uuid}|{self.actor.key}|{target}|{self.time_ns}"
                                .encode(), digest_size=12).hexdigest()
            object.__setattr__(self, "detection_id", h)

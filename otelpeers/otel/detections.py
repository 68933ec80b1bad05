"""Detection -> OpenTelemetry attributes (shared by log records and span events)."""

from __future__ import annotations

from otelpeers import attributes as A
from otelpeers.detect.model import ActorKind, Detection

MAX_EVIDENCE_ITEMS = 64  # list-valued evidence (peers, names) is cut to this many


def detection_attributes(d: Detection) -> dict[str, object]:
    r = d.rule
    attrs: dict[str, object] = {
        A.SECURITY_RULE_NAME: r.name,
        A.SECURITY_RULE_CATEGORY: r.category,
        A.SECURITY_RULE_UUID: r.uuid,
        A.SECURITY_RULE_RULESET: r.ruleset,
        A.SECURITY_RULE_VERSION: r.version,
        A.SECURITY_RULE_DESCRIPTION: r.description,
        A.SECURITY_RULE_REFERENCE: r.reference,
        A.DETECTION_ID: d.detection_id,
        A.DETECTION_SCORE: round(float(d.score), 4),
        A.DETECTION_SEVERITY: d.severity.text,
        A.DETECTION_SUMMARY: d.summary,
        A.DETECTION_REPEATS: d.repeats,
        A.DETECTION_ACTOR: d.actor.key,
        A.DETECTION_ACTOR_KIND: d.actor.kind.value,
    }
    a = d.actor
    if a.kind == ActorKind.ADDRESS and a.address:
        attrs[A.SOURCE_ADDRESS] = a.address
        if a.port:
            attrs[A.SOURCE_PORT] = a.port
    if a.executable:
        attrs[A.PROCESS_EXECUTABLE_NAME] = a.executable
    if a.pid:
        attrs[A.PROCESS_PID] = a.pid
    if a.container_id:
        attrs[A.CONTAINER_ID] = a.container_id
    p = d.peer
    if p is not None:
        if p.address:
            attrs[A.NETWORK_PEER_ADDRESS] = p.address
        if p.port:
            attrs[A.NETWORK_PEER_PORT] = p.port
        if p.name:
            attrs[A.SERVER_ADDRESS] = p.name
        if p.cidr:
            attrs[A.DETECTION_PEER_CIDR] = p.cidr
    for key, value in d.evidence.items():
        attrs[A.DETECTION_EVIDENCE_PREFIX + key] = (
            list(value[:MAX_EVIDENCE_ITEMS]) if isinstance(value, tuple) else value)
    return attrs

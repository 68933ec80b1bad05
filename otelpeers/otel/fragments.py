"""Spans encoded one by one (fragments), and grouped as an OTLP export request nests them.

otlpjson and wire encode each span to a fragment and frame grouped fragments as a request;
the span export process hands exporters whole batches of fragments (EncodedSpans) that it
encoded itself (otelpeers.otel.encoded), in the encoding the exporter names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

F = TypeVar("F")
Fragment = str | bytes  # OTLP/JSON text or protobuf bytes of one span
ENCODINGS = ("json", "protobuf")


@dataclass
class EncodedSpans:
    """One export's spans, encoded: (resource, scope, fragment) each; len() is the span
    count (what the SDK's exporters count)."""

    encoding: str
    entries: list[tuple[Any, Any, Fragment]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)


def group_by_resource(entries: Iterable[tuple[Any, Any, F]]) -> dict[Any, dict[Any, list[F]]]:
    """(resource, scope, encoded span) -> {resource: {scope: [encoded span, ...]}}, in order
    of first appearance; resources are compared by equality, as the SDK's encoder does."""
    groups: dict[Any, dict[Any, list[F]]] = {}
    for resource, scope, fragment in entries:
        scopes = groups.get(resource)
        if scopes is None:
            scopes = groups[resource] = {}
        scopes.setdefault(scope, []).append(fragment)
    return groups

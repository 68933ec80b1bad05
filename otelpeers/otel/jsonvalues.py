"""OTLP/JSON AnyValues, attribute lists, scopes and resources the way the SDK's protobuf
encoder writes them.

For the rare signals written to files (metrics once per interval, detection log records):
every value type the SDK's encoder accepts (None as an empty value, sequences, mappings as
key-value lists), and a value it cannot write loses only its own attribute, logged. Spans
keep otlpjson's faster encoder, whose values are the span mapping's own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from otelpeers.otel.otlpjson import _q, _value

_log = logging.getLogger(__name__)


def any_value(v: Any) -> str:
    """An AnyValue, with the SDK encoder's types and order (None: an empty value)."""
    if v is None:
        return "{}"
    if isinstance(v, (bool, str, int, float, bytes)):
        return _value(v)
    if isinstance(v, Sequence):
        values = ",".join(map(any_value, v))
        return '{"arrayValue":{' + ('"values":[' + values + "]" if values else "") + "}}"
    if isinstance(v, Mapping):
        values = ",".join(_key_value(str(k), x) for k, x in v.items())
        return '{"kvlistValue":{' + ('"values":[' + values + "]" if values else "") + "}}"
    raise TypeError(f"Invalid type {type(v)} of value {v!r:.80}")


def _key_value(k: str, v: Any) -> str:
    return "{" + ('"key":' + _q(k) + "," if k else "") + '"value":' + any_value(v) + "}"


def attributes_json(attributes: Any, name: str = "attributes") -> str:
    """'"attributes":[...]', or '' when there are none. A value the encoder cannot write
    loses its own attribute only, logged, as in the SDK's encoder: the rest of the export
    goes out."""
    parts = []
    for k, v in (attributes or {}).items():
        try:
            parts.append(_key_value(k, v))
        except (TypeError, ValueError) as exc:
            _log.error("attribute %r not exported: %s", k, exc)
    return f'"{name}":[' + ",".join(parts) + "]" if parts else ""


def scope_json(scope: Any, member: str, items: list[str]) -> str:
    """A Scope{Metrics,Logs} entry: the scope (written even when empty, and for None, as the
    SDK's encoder sets it), the items under `member`, the scope's schema URL."""
    head = []
    if scope is not None:
        head = [f'"{k}":' + _q(v) for k, v in (("name", scope.name), ("version", scope.version))
                if v]
        attrs = attributes_json(scope.attributes)
        if attrs:
            head.append(attrs)
    parts = ['"scope":{' + ",".join(head) + "}"]
    if items:
        parts.append(f'"{member}":[' + ",".join(items) + "]")
    if scope is not None and scope.schema_url:
        parts.append('"schemaUrl":' + _q(scope.schema_url))
    return "{" + ",".join(parts) + "}"


def request_json(member: str, entries: list[str]) -> str:
    """The Export*ServiceRequest around its Resource* entries ('{}' when there are none)."""
    return f'{{"{member}":[' + ",".join(entries) + "]}" if entries else "{}"


def resource_json(resource: Any, member: str, scopes: list[str]) -> str:
    """A Resource{Metrics,Logs} entry: the resource (written even when empty), its scope
    entries (scope_json) under `member`, the resource's schema URL."""
    parts = ['"resource":{' + attributes_json(resource.attributes) + "}"]
    if scopes:
        parts.append(f'"{member}":[' + ",".join(scopes) + "]")
    if resource.schema_url:
        parts.append('"schemaUrl":' + _q(resource.schema_url))
    return "{" + ",".join(parts) + "}"

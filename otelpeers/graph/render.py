"""Graph snapshots as JSON (schema in docs/graph.md) and as Graphviz DOT.

Names in the graph come from the network and from processes (DNS names, command lines,
paths), so DOT output never uses them as identifiers: nodes are n0, n1, ... and names appear
only in quoted, escaped, length-bounded labels.
"""

from __future__ import annotations

from typing import Any

from otelpeers.graph.model import (
    TRAFFIC_EDGES,
    AttrValue,
    EdgeKind,
    GraphEdge,
    GraphNode,
    GraphSnapshot,
    NodeKind,
)

SCHEMA_VERSION = 1
MAX_DOT_LABEL = 64  # characters of a name shown in a DOT label

_SHAPES = {
    NodeKind.PROCESS: "box",
    NodeKind.BINARY: "component",
    NodeKind.USER: "house",
    NodeKind.CONTAINER: "box3d",
    NodeKind.LOCAL_ENDPOINT: "cds",
    NodeKind.REMOTE_ENDPOINT: "ellipse",
    NodeKind.DOMAIN: "note",
    NodeKind.FILE: "tab",
}


class SchemaError(ValueError):
    """A graph document that does not follow the schema (e.g. from another version)."""


# ---- JSON --------------------------------------------------------------------------------
def to_json(s: GraphSnapshot) -> dict[str, Any]:
    return {
        "version": SCHEMA_VERSION,
        "since_ns": s.since_ns,
        "limits": {"max_nodes": s.max_nodes, "max_edges": s.max_edges},
        "stats": dict(s.stats),
        "nodes": [{
            "id": n.id, "kind": n.kind.value, "label": n.label,
            "first_seen_ns": n.first_seen_ns, "last_seen_ns": n.last_seen_ns,
            "count": n.count, "attrs": dict(n.attrs)} for n in s.nodes],
        "edges": [{
            "kind": e.kind.value, "source": e.source, "target": e.target,
            "first_seen_ns": e.first_seen_ns, "last_seen_ns": e.last_seen_ns,
            "count": e.count, "bytes_sent": e.bytes_sent, "bytes_received": e.bytes_received,
            "attrs": dict(e.attrs)} for e in s.edges],
    }


def _get(d: Any, key: str, types: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise SchemaError(f"graph document: {where} has no {key!r}")
    v = d[key]
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in _tuple(types)):
        raise SchemaError(f"graph document: {where}.{key} has the wrong type "
                          f"({type(v).__name__})")
    return v


def _tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def _attrs(d: Any, where: str) -> tuple[tuple[str, AttrValue], ...]:
    a = _get(d, "attrs", dict, where)
    if not all(isinstance(v, str | int | bool) or v is None for v in a.values()):
        raise SchemaError(f"graph document: {where}.attrs holds a non-scalar value")
    return tuple(a.items())


def from_json(doc: Any) -> GraphSnapshot:
    """Parse a graph document (what the agent's socket returns) back into a snapshot."""
    version = _get(doc, "version", int, "document")
    if version != SCHEMA_VERSION:
        raise SchemaError(f"graph document version {version} is not supported (this "
                          f"otelpeers reads version {SCHEMA_VERSION}); use a matching otelpeers")
    nodes = []
    for i, n in enumerate(_get(doc, "nodes", list, "document")):
        w = f"nodes[{i}]"
        try:
            kind = NodeKind(_get(n, "kind", str, w))
        except ValueError as exc:
            raise SchemaError(f"graph document: {w}.kind is unknown: {n['kind']!r}") from exc
        nodes.append(GraphNode(_get(n, "id", str, w), kind, _get(n, "label", str, w),
                               _get(n, "first_seen_ns", int, w), _get(n, "last_seen_ns", int, w),
                               _get(n, "count", int, w), _attrs(n, w)))
    edges = []
    for i, e in enumerate(_get(doc, "edges", list, "document")):
        w = f"edges[{i}]"
        try:
            kind = EdgeKind(_get(e, "kind", str, w))
        except ValueError as exc:
            raise SchemaError(f"graph document: {w}.kind is unknown: {e['kind']!r}") from exc
        edges.append(GraphEdge(
            kind, _get(e, "source", str, w), _get(e, "target", str, w),
            _get(e, "first_seen_ns", int, w), _get(e, "last_seen_ns", int, w),
            _get(e, "count", int, w), _get(e, "bytes_sent", (int, type(None)), w),
            _get(e, "bytes_received", (int, type(None)), w), _attrs(e, w)))
    limits = _get(doc, "limits", dict, "document")
    stats = _get(doc, "stats", dict, "document")
    return GraphSnapshot(
        since_ns=_get(doc, "since_ns", (int, type(None)), "document"),
        nodes=tuple(nodes), edges=tuple(edges),
        stats=tuple((str(k), int(v)) for k, v in stats.items()),
        max_nodes=_get(limits, "max_nodes", int, "limits"),
        max_edges=_get(limits, "max_edges", int, "limits"))


# ---- DOT ---------------------------------------------------------------------------------
def dot_escape(text: str, limit: int = MAX_DOT_LABEL) -> str:
    """Text safe inside a DOT double-quoted string: bounded, no control characters, quotes
    and backslashes escaped (a trailing backslash would otherwise eat the closing quote)."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif not ch.isprintable():
            out.append("?")  # newlines, tabs, escapes, bidi controls
        else:
            out.append(ch)
    return "".join(out)


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n}{unit}"
        n //= 1024
    return f"{n}TiB"


def to_dot(s: GraphSnapshot) -> str:
    ids = {n.id: f"n{i}" for i, n in enumerate(s.nodes)}
    lines = ["digraph otelpeers {", "  rankdir=LR;", "  node [fontsize=10];",
             "  edge [fontsize=8];"]
    for n in s.nodes:
        label = f"{n.kind.value}\\n{dot_escape(n.label)}"
        lines.append(f'  {ids[n.id]} [label="{label}", shape={_SHAPES[n.kind]}];')
    for e in s.edges:
        if e.source not in ids or e.target not in ids:
            continue  # a snapshot keeps the nodes of its edges; a hand-made one may not
        label = e.kind.value
        if e.kind in TRAFFIC_EDGES:
            label += f"\\n{_human_bytes(e.bytes_sent or 0)} out, " \
                     f"{_human_bytes(e.bytes_received or 0)} in"
        if e.count > 1:
            label += f" (x{e.count})"
        lines.append(f'  {ids[e.source]} -> {ids[e.target]} [label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"

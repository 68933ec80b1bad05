"""The peer relationship graph: model, pipeline sink, renderers and the live socket."""

from __future__ import annotations

from otelpeers.graph.model import (
    EdgeKind,
    GraphEdge,
    GraphNode,
    GraphSnapshot,
    NodeKind,
    RelationshipGraph,
)
from otelpeers.graph.render import from_json, to_dot, to_json
from otelpeers.graph.server import DEFAULT_SOCKET_PATH, GraphServer, start_graph_server
from otelpeers.graph.sink import GraphSink

__all__ = [
    "DEFAULT_SOCKET_PATH", "EdgeKind", "GraphEdge", "GraphNode", "GraphServer",
    "GraphSink", "GraphSnapshot", "NodeKind", "RelationshipGraph", "from_json",
    "start_graph_server", "to_dot", "to_json",
]

"""The peer relationship graph: model, pipeline stage, renderers and the live socket."""

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
from otelpeers.graph.stage import GraphStage

__all__ = [
    "DEFAULT_SOCKET_PATH", "EdgeKind", "GraphEdge", "GraphNode", "GraphServer",
    "GraphSnapshot", "GraphStage", "NodeKind", "RelationshipGraph", "from_json",
    "start_graph_server", "to_dot", "to_json",
]

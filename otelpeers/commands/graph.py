"""`otelpeers graph`: the graph from the live agent's socket, or from a recording."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import IO

from otelpeers.commands.common import duration_arg, parse_duration  # noqa: F401
from otelpeers.config import Config
from otelpeers.graph.model import RelationshipGraph
from otelpeers.graph.render import SchemaError, from_json, to_dot, to_json
from otelpeers.graph.server import DEFAULT_SOCKET_PATH, GraphClientError, query_graph
from otelpeers.recording import ReplayStats


def add_graph_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--format", choices=("json", "dot", "html"), default="json",
                    help="JSON document (docs/graph.md), Graphviz DOT, or a self-contained "
                         "HTML page (needs graphviz's dot) (default: json)")
    sp.add_argument("--since", type=duration_arg, metavar="DURATION",
                    help="only what was seen in the last DURATION (30s, 5m, 2h); with "
                         "--recording, counted back from the recording's last event")
    sp.add_argument("--socket", default=DEFAULT_SOCKET_PATH, metavar="PATH",
                    help=f"the live agent's graph socket (default {DEFAULT_SOCKET_PATH})")
    sp.add_argument("--recording", metavar="FILE",
                    help="build the graph by replaying a recording instead of asking the agent")


def graph_from_recording(path: str, config: Config
                         ) -> tuple[RelationshipGraph, ReplayStats, int]:
    """Replay a recording through the agent's pipeline into a graph, exactly as
    `otelpeers replay` does. Returns the graph, the replay counts and the time of the last
    event."""
    from dataclasses import replace

    from otelpeers.commands.replay import replay

    config = replace(config, graph=replace(config.graph, enabled=True))
    agent, stats = replay(config, path)
    assert agent.graph is not None
    return agent.graph, stats, agent.pipeline.last_time_ns


def cmd_graph(args: argparse.Namespace, config: Config, out: IO[str] | None = None) -> int:
    out = out if out is not None else sys.stdout
    since_window: int | None = args.since
    if args.recording:
        try:
            graph, stats, last_ns = graph_from_recording(args.recording, config)
        except OSError as exc:
            print(f"otelpeers: cannot read the recording {args.recording}: "
                  f"{exc.strerror or exc}; record one with `otelpeers record --output FILE`",
                  file=sys.stderr)
            return 1
        since_ns = None if since_window is None else max(0, last_ns - since_window)
        snap = graph.snapshot(since_ns)
        print(f"otelpeers: graph from {stats.events} events: {len(snap.nodes)} nodes, "
              f"{len(snap.edges)} edges; skipped {stats.malformed} malformed lines",
              file=sys.stderr)
        doc = to_json(snap)
    else:
        since_ns = None if since_window is None else max(0, time.time_ns() - since_window)
        try:
            doc = query_graph(args.socket, since_ns)
            snap = from_json(doc) if args.format in ("dot", "html") else None
        except (GraphClientError, SchemaError) as exc:
            print(f"otelpeers: {exc}", file=sys.stderr)
            return 1
    if args.format == "html":
        from otelpeers.graph.html import write_html

        return write_html(snap if snap is not None else from_json(doc), out)
    if args.format == "dot":
        out.write(to_dot(snap if snap is not None else from_json(doc)))
    else:
        out.write(json.dumps(doc) + "\n")
    out.flush()
    return 0

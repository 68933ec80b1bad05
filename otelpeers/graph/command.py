"""`otelpeers graph`: the graph from the live agent's socket, or from a recording."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import IO

from otelpeers.config import Config
from otelpeers.graph.model import RelationshipGraph
from otelpeers.graph.render import SchemaError, from_json, to_dot, to_json
from otelpeers.graph.server import DEFAULT_SOCKET_PATH, GraphClientError, query_graph
from otelpeers.recording import ReplayStats

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}
MAX_DURATION_NS = 366 * 86400 * 10**9


def parse_duration(text: str) -> int:
    """'30s', '5m', '2h', '1d', '250ms' -> nanoseconds; ValueError says what is accepted."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"invalid duration {text!r}: use a number followed by ms, s, m, h "
                         "or d, e.g. 30s, 5m, 2h")
    ns = int(float(m.group(1)) * _UNIT_NS[m.group(2)])
    if ns <= 0 or ns > MAX_DURATION_NS:
        raise ValueError(f"invalid duration {text!r}: must be more than 0 and at most 366d")
    return ns


def duration_arg(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_graph_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--format", choices=("json", "dot"), default="json",
                    help="JSON document (docs/graph.md) or Graphviz DOT (default: json)")
    sp.add_argument("--since", type=duration_arg, metavar="DURATION",
                    help="only what was seen in the last DURATION (30s, 5m, 2h); with "
                         "--recording, counted back from the recording's last event")
    sp.add_argument("--socket", default=DEFAULT_SOCKET_PATH, metavar="PATH",
                    help=f"the live agent's graph socket (default {DEFAULT_SOCKET_PATH})")
    sp.add_argument("--recording", metavar="FILE",
                    help="build the graph by replaying a recording instead of asking the agent")


def graph_from_recording(path: str, config: Config
                         ) -> tuple[RelationshipGraph, ReplayStats, int]:
    """Replay a recording through the pipeline and the DNS stage into a graph.

    Returns the graph, the replay counts and the time of the last event. Events are fed
    exactly as `otelpeers replay` feeds them (otelpeers.cli.replay_into).
    """
    from dataclasses import replace

    from otelpeers.assembly import assemble
    from otelpeers.cli import replay_into
    from otelpeers.recording import read_recording

    config = replace(config, graph=replace(config.graph, enabled=True))
    agent = assemble(config, live_host=False, export=False)
    stats = ReplayStats()
    replay_into(agent.pipeline, read_recording(path, stats))
    agent.graph.graph.flush_pending()
    return agent.graph.graph, stats, agent.pipeline.last_time_ns


def run_graph(args: argparse.Namespace, config: Config, out: IO[str] | None = None) -> int:
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
            snap = from_json(doc) if args.format == "dot" else None
        except (GraphClientError, SchemaError) as exc:
            print(f"otelpeers: {exc}", file=sys.stderr)
            return 1
    if args.format == "dot":
        out.write(to_dot(snap if snap is not None else from_json(doc)))
    else:
        out.write(json.dumps(doc) + "\n")
    out.flush()
    return 0

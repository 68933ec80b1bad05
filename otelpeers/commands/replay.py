"""`otelpeers replay`: the pipeline on a recording instead of the kernel."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from otelpeers.agent import Agent, build_agent
from otelpeers.commands.common import JsonFlowPrinter
from otelpeers.config import Config
from otelpeers.drive import EventClock, drive
from otelpeers.pipeline import Sink
from otelpeers.recording import ReplayStats
from otelpeers.sources import RecordingSource


def replay(config: Config, path: str, *, export: bool = False,
           extra_sinks: Sequence[Sink] = ()) -> tuple[Agent, ReplayStats]:
    """Replay a recording through the agent's pipeline on the events' own clock."""
    agent = build_agent(config, live_host=False, export=export, extra_sinks=extra_sinks)
    source = RecordingSource(path)
    agent.sources.append(source)
    try:
        drive(source, agent.pipeline, EventClock())
    finally:
        agent.close()
    return agent, source.stats


def cmd_replay(args: argparse.Namespace, config: Config) -> int:
    agent, stats = replay(config, args.file, export=args.export,
                          extra_sinks=[JsonFlowPrinter()] if args.print_flows else ())
    flows = agent.counters().get("flows.flows_completed", 0)
    print(f"otelpeers: replayed {stats.events} events, {flows} flows; "
          f"skipped {stats.malformed} malformed lines"
          + (f" (lines {', '.join(map(str, stats.malformed_lines))})" if stats.malformed else ""),
          file=sys.stderr)
    return 0

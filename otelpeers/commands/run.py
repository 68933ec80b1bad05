"""`otelpeers run`: the agent."""

from __future__ import annotations

import argparse
import os
import sys

from otelpeers.config import Config


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    if args.debug:
        from otelpeers.kernel.loader import generated_source

        print(generated_source(config))
        return 0
    if os.geteuid() == 0:
        # bcc compiles in a child while this process imports and assembles the rest: start-up
        # overlaps the two instead of adding them (KernelSensors.start() takes the result).
        from otelpeers.kernel.loader import precompile

        precompile(config)
    from otelpeers.agent import build_agent, run_live
    from otelpeers.commands.common import JsonFlowPrinter, write_ready_file

    live_view = config.export.live_view and not args.no_live_view and sys.stdout.isatty()
    agent = build_agent(config, live_host=True, live_view=live_view,
                        extra_sinks=[JsonFlowPrinter()] if args.print_flows else ())
    server = None

    def on_ready() -> None:
        nonlocal server
        if agent.graph is not None:  # only once the sensors are attached: root is proven
            from otelpeers.graph.server import start_graph_server

            server = start_graph_server(agent.graph, config.graph.socket_path)
        write_ready_file(args.ready_file)

    try:
        result = run_live(agent, duration_s=args.duration, on_ready=on_ready)
    finally:
        if server is not None:
            server.close()
        agent.close()
    c = agent.counters()
    src = result.source
    dropped = c.get("export.spans_dropped_queue_full", 0) + c.get(
        "export.spans_dropped_shutdown", 0)
    print(f"otelpeers: stopped after {result.drive.events} events; "
          f"{c.get('flows.flows_completed', 0)} flows; kernel drops: "
          f"{src.get('kernel_drops', 0)}; decode errors: {src.get('decode_errors', 0)}; "
          f"spans exported: {c.get('export.spans_exported', 0)}, failed: "
          f"{c.get('export.spans_failed', 0)}, dropped: {dropped}", file=sys.stderr)
    return 0

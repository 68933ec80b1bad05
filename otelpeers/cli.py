"""Command line: otelpeers run | record | replay | check | graph."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from otelpeers import __version__
from otelpeers.config import Config, ConfigError, load_config
from otelpeers.flows import FlowRecord, flow_to_dict

if TYPE_CHECKING:
    from otelpeers.events import Event
    from otelpeers.pipeline import Pipeline

log = logging.getLogger("otelpeers")

EXAMPLES = """examples:
    otelpeers check                          # is this host able to run the agent?
    otelpeers run                            # live view + OTLP JSON files (no collector set)
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 otelpeers run
    otelpeers run --config /etc/otelpeers.yaml --duration 60
    otelpeers run --print-flows --no-live-view   # one JSON line per completed flow
    otelpeers run --debug                    # print the generated BPF C and exit
    otelpeers record --output events.jsonl --duration 30
    otelpeers replay events.jsonl --print-flows
"""


class JsonFlowPrinter:
    """A flow sink that prints one JSON object per completed flow."""

    def __init__(self, stream=sys.stdout) -> None:  # noqa: ANN001
        self.stream = stream

    def export_flows(self, records: Sequence[FlowRecord]) -> None:
        for r in records:
            self.stream.write(json.dumps(flow_to_dict(r)) + "\n")
        self.stream.flush()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="otelpeers", description="OpenTelemetry-native network peer monitor (bcc eBPF)",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"otelpeers {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", metavar="FILE",
                        help="YAML config (default: the built-in config/otelpeers.yaml)")

    run = sub.add_parser("run", help="run the agent", epilog=EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    common(run)
    run.add_argument("--duration", type=float, metavar="SECONDS", help="stop after SECONDS")
    run.add_argument("--debug", action="store_true",
                     help="print the generated BPF C program and exit")
    run.add_argument("--no-live-view", action="store_true", help="no terminal view")
    run.add_argument("--print-flows", action="store_true",
                     help="print each completed flow as a JSON line on stdout")
    run.add_argument("--ready-file", metavar="FILE",
                     help="write this file once the sensors are attached (for scripts)")

    rec = sub.add_parser("record", help="record the decoded event stream as JSON lines")
    common(rec)
    rec.add_argument("--output", "-o", required=True, metavar="FILE")
    rec.add_argument("--duration", type=float, metavar="SECONDS")
    rec.add_argument("--ready-file", metavar="FILE",
                     help="write this file once the sensors are attached")

    rep = sub.add_parser("replay", help="run the pipeline on a recording instead of the kernel")
    common(rep)
    rep.add_argument("file", metavar="FILE")
    rep.add_argument("--print-flows", action="store_true",
                     help="print each completed flow as a JSON line on stdout")
    rep.add_argument("--export", action="store_true",
                     help="also export spans as `run` would (OTLP or files)")

    chk = sub.add_parser("check", help="check that this host can run the agent")
    common(chk)

    from otelpeers.graph.command import add_graph_arguments

    gra = sub.add_parser(
        "graph", help="print the peer relationship graph (live agent or a recording)",
        epilog="examples:\n    sudo otelpeers graph --since 5m\n"
               "    otelpeers graph --recording events.jsonl --format dot | dot -Tsvg > g.svg",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    common(gra)
    add_graph_arguments(gra)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="otelpeers: %(levelname)s %(message)s", stream=sys.stderr)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"otelpeers: {exc}", file=sys.stderr)
        return 2
    handler = {"run": cmd_run, "record": cmd_record, "replay": cmd_replay, "check": cmd_check,
               "graph": cmd_graph}
    try:
        return handler[args.command](args, config)
    except Exception as exc:
        from otelpeers.graph.server import GraphServerError
        from otelpeers.kernel.loader import SensorError
        from otelpeers.recording import RecordingError

        if isinstance(exc, SensorError | RecordingError | GraphServerError | ConfigError):
            print(f"otelpeers: {exc}", file=sys.stderr)
            return 1
        raise


def _ready(path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            f.write(f"{time.time_ns()}\n")


def cmd_check(args: argparse.Namespace, config: Config) -> int:
    from otelpeers.preflight import main_check

    return main_check(config)


def cmd_graph(args: argparse.Namespace, config: Config) -> int:
    from otelpeers.graph.command import run_graph

    return run_graph(args, config)


def cmd_record(args: argparse.Namespace, config: Config) -> int:
    from otelpeers.agent import run_live
    from otelpeers.recording import RecordingWriter

    writer = RecordingWriter(args.output)
    try:
        result = run_live(config, None, duration_s=args.duration,
                          on_events=lambda batch: [writer.write(ev) for ev in batch],
                          on_tick=writer.flush,
                          on_ready=lambda: _ready(args.ready_file))
    finally:
        writer.close()
    print(f"otelpeers: recorded {writer.count} events to {args.output}; kernel drops: "
          f"{result.source.kernel_drops or 0}, decode errors: {result.source.decode_errors}",
          file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace, config: Config) -> int:
    from otelpeers.assembly import assemble
    from otelpeers.recording import ReplayStats, read_recording

    agent = assemble(config, live_host=False, export=args.export,
                     extra_sinks=[JsonFlowPrinter()] if args.print_flows else ())
    pipeline = agent.pipeline
    stats = ReplayStats()
    try:
        replay_into(pipeline, read_recording(args.file, stats))
    finally:
        agent.shutdown()
    flows = pipeline.flows.stats
    print(f"otelpeers: replayed {stats.events} events, {flows.flows_completed} flows; "
          f"skipped {stats.malformed} malformed lines"
          + (f" (lines {', '.join(map(str, stats.malformed_lines))})" if stats.malformed else ""),
          file=sys.stderr)
    return 0


def replay_into(pipeline: Pipeline, events: Iterable[Event]) -> None:
    """Feed recorded events in batches; the clock is the events' own time."""
    next_tick = 0
    batch: list[Event] = []
    for ev in events:
        batch.append(ev)
        if len(batch) >= 256 or ev.time_ns >= next_tick:
            pipeline.handle(batch)
            batch = []
            if ev.time_ns >= next_tick:
                pipeline.tick(ev.time_ns)
                next_tick = ev.time_ns + 1_000_000_000
    pipeline.handle(batch)
    pipeline.finish(pipeline.last_time_ns)


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from otelpeers.agent import run_live
    from otelpeers.assembly import assemble
    from otelpeers.kernel.loader import generated_source

    if args.debug:
        print(generated_source(config))
        return 0
    live_view = config.export.live_view and not args.no_live_view and sys.stdout.isatty()
    agent = assemble(config, live_host=True, live_view=live_view,
                     extra_sinks=[JsonFlowPrinter()] if args.print_flows else ())
    server = None

    def on_ready() -> None:
        nonlocal server
        if agent.graph is not None:  # only once the sensors are attached: root is proven
            from otelpeers.graph import start_graph_server

            server = start_graph_server(agent.graph.graph, config.graph.socket_path)
        _ready(args.ready_file)

    try:
        result = run_live(config, agent.pipeline, duration_s=args.duration,
                          on_tick=agent.on_tick, on_ready=on_ready, counters=agent.counters)
    finally:
        if server is not None:
            server.close()
        agent.shutdown()
    export = agent.exporter.stats if agent.exporter is not None else {}
    dropped = export.get("spans_dropped_queue_full", 0) + export.get("spans_dropped_shutdown", 0)
    print(f"otelpeers: stopped after {result.events} events; "
          f"{agent.pipeline.flows.stats.flows_completed} flows; kernel drops: "
          f"{result.source.kernel_drops or 0}; decode errors: {result.source.decode_errors}; "
          f"spans exported: {export.get('spans_exported', 0)}, failed: "
          f"{export.get('spans_failed', 0)}, dropped: {dropped}", file=sys.stderr)
    return 0

"""Command line: otelpeers run | record | replay | check."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence

from otelpeers import __version__
from otelpeers.config import Config, ConfigError, load_config
from otelpeers.flows import FlowRecord, flow_to_dict

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
    handler = {"run": cmd_run, "record": cmd_record, "replay": cmd_replay, "check": cmd_check}
    try:
        return handler[args.command](args, config)
    except Exception as exc:
        from otelpeers.kernel.loader import SensorError
        from otelpeers.recording import RecordingError

        if isinstance(exc, SensorError | RecordingError):
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


def cmd_record(args: argparse.Namespace, config: Config) -> int:
    from otelpeers.agent import run_live
    from otelpeers.recording import RecordingWriter

    writer = RecordingWriter(args.output)
    try:
        result = run_live(config, None, duration_s=args.duration,
                          on_events=lambda batch: [writer.write(ev) for ev in batch],
                          on_ready=lambda: _ready(args.ready_file))
    finally:
        writer.close()
    print(f"otelpeers: recorded {writer.count} events to {args.output}; kernel drops: "
          f"{result.source.kernel_drops or 0}, decode errors: {result.source.decode_errors}",
          file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace, config: Config) -> int:
    from otelpeers.pipeline import Pipeline
    from otelpeers.recording import ReplayStats, read_recording

    sinks: list = []
    if args.print_flows:
        sinks.append(JsonFlowPrinter())
    exporter = _build_exporter(config) if args.export else None
    if exporter is not None:
        sinks.append(exporter)
    pipeline = Pipeline(config, sinks, dns=_build_dns(config))
    stats = ReplayStats()
    next_tick = 0
    batch = []
    for ev in read_recording(args.file, stats):
        batch.append(ev)
        if len(batch) >= 256:
            pipeline.handle(batch)
            batch = []
        if ev.time_ns >= next_tick:
            pipeline.handle(batch)
            batch = []
            pipeline.tick(ev.time_ns)
            next_tick = ev.time_ns + 1_000_000_000
    pipeline.handle(batch)
    pipeline.finish(pipeline.last_time_ns)
    if exporter is not None:
        exporter.shutdown()
    flows = pipeline.flows.stats
    print(f"otelpeers: replayed {stats.events} events, {flows.flows_completed} flows; "
          f"skipped {stats.malformed} malformed lines"
          + (f" (lines {', '.join(map(str, stats.malformed_lines))})" if stats.malformed else ""),
          file=sys.stderr)
    return 0


def _build_exporter(config: Config):  # noqa: ANN202
    """The span exporter for flows (OTLP or files); None when not available."""
    try:
        from otelpeers.otel import build_flow_exporter
    except ImportError:
        return None
    return build_flow_exporter(config)


def _build_dns(config: Config):  # noqa: ANN202
    try:
        from otelpeers.dns.stage import DnsPipelineStage
    except ImportError:
        return None
    return DnsPipelineStage(config)


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from otelpeers.agent import run_live
    from otelpeers.kernel.loader import generated_source
    from otelpeers.pipeline import Pipeline

    if args.debug:
        print(generated_source(config))
        return 0
    sinks: list = []
    if args.print_flows:
        sinks.append(JsonFlowPrinter())
    exporter = _build_exporter(config)
    if exporter is not None:
        sinks.append(exporter)
    live = None
    if config.export.live_view and not args.no_live_view and sys.stdout.isatty():
        try:
            from otelpeers.otel.liveview import LiveView
            live = LiveView()
            sinks.append(live)
        except ImportError:
            live = None
    pipeline = Pipeline(config, sinks, dns=_build_dns(config))

    def on_tick() -> None:
        if live is not None:
            live.refresh(pipeline.flows.live_flows())

    try:
        result = run_live(config, pipeline, duration_s=args.duration, on_tick=on_tick,
                          on_ready=lambda: _ready(args.ready_file))
    finally:
        if exporter is not None:
            exporter.shutdown()
    print(f"otelpeers: stopped after {result.events} events; "
          f"{pipeline.flows.stats.flows_completed} flows; kernel drops: "
          f"{result.source.kernel_drops or 0}; decode errors: {result.source.decode_errors}",
          file=sys.stderr)
    return 0

"""Command line: argument parsing and dispatch to otelpeers.commands.*."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from otelpeers import __version__
from otelpeers.config import ConfigError, load_config

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

    from otelpeers.commands.graph import add_graph_arguments

    gra = sub.add_parser(
        "graph", help="print the peer relationship graph (live agent or a recording)",
        epilog="examples:\n    sudo otelpeers graph --since 5m\n"
               "    otelpeers graph --recording events.jsonl --format dot | dot -Tsvg > g.svg",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    common(gra)
    add_graph_arguments(gra)

    from otelpeers.commands.detect import EXAMPLES as DETECT_EXAMPLES
    from otelpeers.commands.detect import add_detect_arguments

    det = sub.add_parser(
        "detect", help="run the detection rules over recordings or Zeek logs; score domains",
        epilog=DETECT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    common(det)
    add_detect_arguments(det)
    return p


COMMANDS = {"run": "run", "record": "record", "replay": "replay", "check": "check",
            "graph": "graph", "detect": "detect"}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="otelpeers: %(levelname)s %(message)s", stream=sys.stderr)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"otelpeers: {exc}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"otelpeers.commands.{COMMANDS[args.command]}")
    handler = getattr(module, f"cmd_{args.command}")
    try:
        return handler(args, config)
    except Exception as exc:
        from otelpeers.graph.server import GraphServerError
        from otelpeers.kernel.loader import SensorError
        from otelpeers.recording import RecordingError

        if isinstance(exc, SensorError | RecordingError | GraphServerError | ConfigError):
            print(f"otelpeers: {exc}", file=sys.stderr)
            return 1
        raise

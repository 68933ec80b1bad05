"""`otelpeers detect`: the detection rules offline, over recordings or Zeek logs, and
`otelpeers detect dga` to score domain names."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from otelpeers.config import Config, ConfigError
from otelpeers.pipeline import Pipeline, Sink

EXAMPLES = """examples:
    otelpeers detect dga domains.txt            # <score>\\t<domain> per line
    cat names | otelpeers detect dga -
    otelpeers detect events.jsonl               # an otelpeers recording
    otelpeers detect conn.log dns.log           # Zeek logs (TSV or JSON, plain or .gz)
    otelpeers detect --learning-period 12h conn.*.log.gz
    otelpeers detect --export conn.log          # as OTLP log records instead of JSON lines
"""


def add_detect_arguments(sp: argparse.ArgumentParser) -> None:
    from otelpeers.commands.common import duration_arg

    sp.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="otelpeers recordings, or Zeek conn.log/dns.log files; or `dga` "
                         "followed by files of domain names (- for stdin)")
    sp.add_argument("--export", action="store_true",
                    help="send detections as OTLP log records (config and OTEL_* rules) "
                         "instead of printing them")
    sp.add_argument("--learning-period", type=duration_arg, metavar="DURATION",
                    help="baseline rules learn during this first part of the input's event "
                         "time (default: detect.learning_period_s, 24h)")


def cmd_detect(args: argparse.Namespace, config: Config) -> int:
    if args.inputs[0] == "dga":
        return _score_dga(args.inputs[1:] or ["-"])
    if args.learning_period is not None:
        config = replace(config, detect=replace(
            config.detect, learning_period_s=args.learning_period / 1e9))
    config = replace(config, detect=replace(config.detect, enabled=True),
                     graph=replace(config.graph, enabled=False))
    kinds = {p: _kind(p) for p in args.inputs}
    if len(set(kinds.values())) > 1:
        raise ConfigError("give recordings and Zeek logs in separate runs: "
                          f"{', '.join(f'{p} ({k})' for p, k in kinds.items())}")
    sinks = _sinks(config, args.export)
    if next(iter(kinds.values())) == "recording":
        return _detect_recordings(config, args.inputs, sinks)
    return _detect_zeek(config, args.inputs, sinks)


def _kind(path: str) -> str:
    """recording | zeek, from the content; a clear error for anything else."""
    from otelpeers.detect.zeek import ZeekFormatError, sniff

    try:
        with open(path, "rb") as f:
            head = f.readline(4096)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if "otelpeers_recording" in json.loads(head):
            return "recording"
    except (ValueError, TypeError):
        pass
    try:
        sniff(path)
    except ZeekFormatError as exc:
        raise ConfigError(f"{path} is neither an otelpeers recording (record one with "
                          f"`otelpeers record`) nor a Zeek log: {exc}") from None
    return "zeek"


def _sinks(config: Config, export: bool) -> list[Sink]:
    if not export:
        from otelpeers.detect.offline import DetectionPrinter

        return [DetectionPrinter()]
    from otelpeers.ids import SpanIds
    from otelpeers.otel.factory import build_log_exporter
    from otelpeers.otel.logs import DetectionLogSink
    from otelpeers.otel.resources import ResourceCache, detect_host_resource

    e = config.export
    return [DetectionLogSink(e, ids=SpanIds(), resources=ResourceCache(
        detect_host_resource(), None, e.max_live_resources), exporter=build_log_exporter(e))]


def _detect_recordings(config: Config, paths: Sequence[str], sinks: list[Sink]) -> int:
    from otelpeers.agent import build_agent
    from otelpeers.drive import EventClock, drive
    from otelpeers.recording import ReplayStats
    from otelpeers.sources import RecordingSource

    agent = build_agent(config, live_host=False, export=False, extra_sinks=sinks)
    stats = ReplayStats()
    clock = EventClock()
    try:
        for path in paths:  # one stream, in the order given
            drive(RecordingSource(path, stats), agent.pipeline, clock)
    finally:
        agent.close()
    return _report(agent.counters(), f"{stats.events} events from {len(paths)} recording(s); "
                                     f"skipped {stats.malformed} malformed lines")


def _detect_zeek(config: Config, paths: Sequence[str], sinks: list[Sink]) -> int:
    from otelpeers.detect.build import build_detect_stage
    from otelpeers.detect.offline import ObservedStage, ZeekSource
    from otelpeers.drive import EventClock, drive

    pipeline = Pipeline([ObservedStage(config.dns), build_detect_stage(config.detect)], sinks)
    source = ZeekSource(paths)
    try:
        drive(source, pipeline, EventClock())
    finally:
        pipeline.close()
    bad = [f"{s.path}: {s.summary()}" for s in source.stats if s.bad_lines]
    c = source.counters()
    return _report(pipeline.counters(), f"{c['rows']} Zeek rows; skipped {c['bad_lines']} bad "
                                        f"lines" + (f" ({'; '.join(bad)})" if bad else ""))


def _report(counters: dict[str, int], what: str) -> int:
    det = counters.get("detect.detections", 0)
    rules = sorted({k.split(".")[1] for k in counters if k.startswith("detect.")
                    and k.count(".") >= 2 and not k.endswith("state_evicted")})
    print(f"otelpeers: {det} detections from {what}; suppressed repeats: "
          f"{counters.get('detect.suppressed', 0)}; rule errors: "
          f"{counters.get('detect.rule_errors', 0)}"
          + (f"; rules with state: {', '.join(rules)}" if rules else ""), file=sys.stderr)
    return 0


def _score_dga(paths: Sequence[str], out: TextIO | None = None) -> int:
    from otelpeers.detect.dga.model import score_lines

    out = out if out is not None else sys.stdout
    for path in paths:
        for line in score_lines(_lines(path)):
            out.write(line + "\n")
    out.flush()
    return 0


def _lines(path: str) -> Iterator[str]:
    if path == "-":
        yield from sys.stdin
        return
    try:
        with Path(path).open(encoding="utf-8", errors="replace") as f:
            yield from f
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None

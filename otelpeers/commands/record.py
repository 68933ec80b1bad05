"""`otelpeers record`: the decoded kernel event stream as JSON lines."""

from __future__ import annotations

import argparse
import sys
import time

from otelpeers.agent import Agent, run_live
from otelpeers.commands.common import write_ready_file
from otelpeers.config import Config
from otelpeers.ids import SpanIds
from otelpeers.pipeline import Pipeline
from otelpeers.recording import RecordingWriter


def cmd_record(args: argparse.Namespace, config: Config) -> int:
    writer = RecordingWriter(args.output)

    def tap(batch: object) -> None:
        for ev in batch:  # type: ignore[attr-defined]
            writer.write(ev)

    next_flush = time.monotonic() + 1.0

    def flush_quiet_host() -> None:  # a quiet host's last events reach the disk too
        nonlocal next_flush
        if time.monotonic() >= next_flush:
            writer.flush()
            next_flush = time.monotonic() + 1.0

    # No stages: the recorder taps the raw events.
    agent = Agent(config, Pipeline([], [], taps=[tap]), SpanIds())
    try:
        result = run_live(agent, duration_s=args.duration,
                          on_ready=lambda: write_ready_file(args.ready_file),
                          extra_after_batch=flush_quiet_host)
    finally:
        writer.close()
    src = result.source
    print(f"otelpeers: recorded {writer.count} events to {args.output}; kernel drops: "
          f"{src.get('kernel_drops', 0)}, decode errors: {src.get('decode_errors', 0)}",
          file=sys.stderr)
    return 0

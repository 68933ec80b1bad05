"""Throughput of the flow -> OTLP/gRPC span path, against the plain OTel SDK.

Starts rotel-agent (blackhole exporter) on loopback, sends N synthetic flows through
  1. otelpeers' SpanSink (ReadableSpans built directly, one resource per process);
  2. the plain SDK: Tracer + BatchSpanProcessor + OTLP gRPC exporter, same attributes and
     timestamps, one TracerProvider (a single resource: that only favours the SDK);
and writes spans/s (wall) and spans per CPU-second of this process to a JSON file.

    .venv/bin/python bench/otlp_pipeline.py --spans 50000 --out bench/otlp_pipeline.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from otelpeers.config import ExportConfig, OtlpConfig
from otelpeers.events import Direction
from otelpeers.otel.exporter import SpanSink
from otelpeers.otel.mapping import flow_attributes, span_name
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import many


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_rotel(tmp: Path) -> tuple[subprocess.Popen, int]:
    import rotel

    port = free_port()
    binary = Path(rotel.__file__).parent / "rotel-agent"
    proc = subprocess.Popen(
        [str(binary), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{port}",
         "--otlp-http-endpoint", f"127.0.0.1:{free_port()}", "--exporter", "blackhole",
         "--pid-file", str(tmp / "rotel.pid"), "--log-file", str(tmp / "rotel.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("rotel-agent did not start")


def _cpu() -> float:
    """CPU seconds of this process and of its children that have ended (the span export
    child is joined by SpanSink.close(), so its CPU counts)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(setup, fn) -> dict:
    """setup() is not timed (the agent starts its exporter once, at start); fn(state) is."""
    state = setup()
    w0, c0 = time.perf_counter(), _cpu()
    n = fn(state)
    wall, cpu = time.perf_counter() - w0, _cpu() - c0
    return {"spans": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "spans_per_s": round(n / wall), "spans_per_cpu_s": round(n / cpu)}


def otelpeers_sink(port: int, n: int, offload: bool) -> SpanSink:
    cfg = ExportConfig(otlp=OtlpConfig(endpoint=f"http://127.0.0.1:{port}"),
                       max_queue_size=n, max_export_batch_size=2048, schedule_delay_s=0.2)
    return SpanSink(cfg, offload=offload)


def run_otelpeers(exp: SpanSink, records) -> int:
    exp.consume(Outputs(flows=list(records)))
    exp.close()
    st = exp.counters()
    if st["spans_exported"] != len(records):
        raise SystemExit(f"otelpeers exporter lost spans: {st}")
    return st["spans_exported"]


_KIND = {Direction.OUTBOUND: SpanKind.CLIENT, Direction.INBOUND: SpanKind.SERVER}


def run_sdk(port: int, records) -> int:
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True),
        max_queue_size=len(records), max_export_batch_size=2048, schedule_delay_millis=200))
    tracer = provider.get_tracer("otelpeers-bench")
    for r in records:
        span = tracer.start_span(span_name(r), kind=_KIND.get(r.direction, SpanKind.INTERNAL),
                                 attributes=flow_attributes(r), start_time=r.start_ns)
        span.end(end_time=r.end_ns)
    provider.shutdown()
    return len(records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=50_000)
    ap.add_argument("--processes", type=int, default=200)
    ap.add_argument("--out", default="bench/otlp_pipeline.json")
    args = ap.parse_args()
    records = list(many(args.spans, processes=args.processes))
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_rotel(Path(tmp))
        try:
            n = len(records)
            results = {
                # as the agent runs by default: spans mapped and sent in a child process
                "otelpeers": measure(lambda: otelpeers_sink(port, n, True),
                                     lambda exp: run_otelpeers(exp, records)),
                # all in this process: the CPU cost per span without the second core
                "otelpeers_in_process": measure(lambda: otelpeers_sink(port, n, False),
                                                lambda exp: run_otelpeers(exp, records)),
                "sdk_tracer_batch": measure(lambda: None,
                                            lambda _: run_sdk(port, records)),
            }
        finally:
            proc.kill()
            proc.wait()
    results["speedup_cpu"] = round(results["otelpeers"]["spans_per_cpu_s"]
                                   / results["sdk_tracer_batch"]["spans_per_cpu_s"], 2)
    results["env"] = {"python": sys.version.split()[0], "machine": platform.machine(),
                      "processes": args.processes, "collector": "rotel-agent blackhole"}
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

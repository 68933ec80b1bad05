"""Choose the exporters of each signal: OTLP gRPC, OTLP HTTP/protobuf, or rotated local files.

Precedence (docs/telemetry.md), for each signal (traces, logs, metrics) on its own:
config.export.otlp.endpoint, when set, decides endpoint, protocol, headers (env headers
when the config has none) and timeout. Otherwise OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT /
OTEL_EXPORTER_OTLP_ENDPOINT decide, with protocol from OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL /
OTEL_EXPORTER_OTLP_PROTOCOL (else config), and the SDK reads the other OTEL_EXPORTER_OTLP_*
variables itself. With no endpoint anywhere, files are written when export.files.enabled;
else nothing is exported (None).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from opentelemetry.sdk.trace.export import SpanExporter

from otelpeers.exportconfig import ConfigError, ExportConfig
from otelpeers.otel.files import RotatingJsonLinesSpanExporter

if TYPE_CHECKING:  # the span export process builds spans only: no logs or metrics SDK there
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.metrics.export import MetricExporter

PROTOCOLS = ("grpc", "http/protobuf")
TRACES_PATH = "/v1/traces"
SIGNAL_PATHS = {"traces": "/v1/traces", "logs": "/v1/logs", "metrics": "/v1/metrics"}


def _env(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def resolve_otlp(config: ExportConfig, env: Mapping[str, str] | None = None,
                 signal: str = "traces") -> tuple[str, str | None] | None:
    """(protocol, endpoint or None when the SDK reads it from env), or None: no OTLP."""
    env = os.environ if env is None else env
    otlp = config.otlp
    if otlp.endpoint:
        return otlp.protocol, otlp.endpoint
    sig = signal.upper()
    if _env(env, f"OTEL_EXPORTER_OTLP_{sig}_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT") is None:
        return None
    protocol = _env(env, f"OTEL_EXPORTER_OTLP_{sig}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = protocol or otlp.protocol
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use one of "
            f"{', '.join(PROTOCOLS)} (or set export.otlp.protocol in the config)")
    return protocol, None


def http_traces_url(endpoint: str, signal_path: str = TRACES_PATH) -> str:
    """A configured base URL gets the signal path, as OTEL_EXPORTER_OTLP_ENDPOINT does."""
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"config: export.otlp.endpoint {endpoint!r} must be an http:// or "
                          "https:// URL for protocol http/protobuf")
    if parsed.path in ("", "/"):
        return endpoint.rstrip("/") + signal_path
    return endpoint


def _otlp_kwargs(config: ExportConfig, protocol: str, endpoint: str | None,
                 signal: str) -> dict[str, Any]:
    otlp = config.otlp
    kwargs: dict[str, Any] = {"headers": dict(otlp.headers) or None,
                              # env endpoint: the SDK reads the env timeout itself
                              "timeout": otlp.timeout_s if endpoint else None}
    if protocol == "grpc":
        kwargs["endpoint"] = endpoint
        kwargs["insecure"] = otlp.insecure if endpoint else None
    else:
        kwargs["endpoint"] = http_traces_url(endpoint, SIGNAL_PATHS[signal]) if endpoint else None
    return kwargs


def build_span_exporter(config: ExportConfig, env: Mapping[str, str] | None = None
                        ) -> SpanExporter | None:
    """The SpanExporter the config and environment ask for; None: export nothing."""
    resolved = resolve_otlp(config, env, "traces")
    if resolved is None:
        f = config.files
        if not f.enabled:
            return None
        return RotatingJsonLinesSpanExporter(f.directory, f.max_file_bytes, f.max_files)
    protocol, endpoint = resolved
    quiet_sdk_exporter_logs()
    from otelpeers.otel.otlp_export import FastGrpcSpanExporter, FastHttpSpanExporter

    cls = FastGrpcSpanExporter if protocol == "grpc" else FastHttpSpanExporter
    return cls(**_otlp_kwargs(config, protocol, endpoint, "traces"))


def build_log_exporter(config: ExportConfig, env: Mapping[str, str] | None = None
                       ) -> LogRecordExporter | None:
    """Where detections go as log records; same rules as spans (OTEL_EXPORTER_OTLP_LOGS_*)."""
    resolved = resolve_otlp(config, env, "logs")
    if resolved is None:
        f = config.files
        if not f.enabled:
            return None
        from otelpeers.otel.signalfiles import RotatingJsonLinesLogExporter

        return RotatingJsonLinesLogExporter(f.directory, f.max_file_bytes, f.max_files)
    protocol, endpoint = resolved
    quiet_sdk_exporter_logs()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import (  # type: ignore[assignment]
            OTLPLogExporter,
        )
    return OTLPLogExporter(**_otlp_kwargs(config, protocol, endpoint, "logs"))


def build_metric_exporter(config: ExportConfig, env: Mapping[str, str] | None = None
                          ) -> MetricExporter | None:
    """Where metrics go; same rules as spans (OTEL_EXPORTER_OTLP_METRICS_*). The SDK's
    exporters read OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE themselves; the file
    exporter is told the same preference."""
    resolved = resolve_otlp(config, env, "metrics")
    if resolved is None:
        f = config.files
        if not f.enabled:
            return None
        from otelpeers.otel.signalfiles import RotatingJsonLinesMetricExporter

        return RotatingJsonLinesMetricExporter(f.directory, f.max_file_bytes, f.max_files)
    protocol, endpoint = resolved
    quiet_sdk_exporter_logs()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
            OTLPMetricExporter,
        )
    return OTLPMetricExporter(**_otlp_kwargs(config, protocol, endpoint, "metrics"))


class RateLimitFilter(logging.Filter):
    """Let at most one warning-or-worse record through per interval; count the rest."""

    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.suppressed = 0
        self._last = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            return True
        self.suppressed += 1
        return False


_SDK_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
)
_quiet_installed = False


def quiet_sdk_exporter_logs(interval_s: float = 30.0) -> None:
    """The SDK exporters log each failed batch; with the collector down that is a warning
    every few seconds. The export queues report failures themselves, once per interval."""
    global _quiet_installed
    if _quiet_installed:
        return
    _quiet_installed = True
    for name in _SDK_EXPORTER_LOGGERS:
        logging.getLogger(name).addFilter(RateLimitFilter(interval_s))

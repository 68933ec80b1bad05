"""Choose the span exporter: OTLP gRPC, OTLP HTTP/protobuf, or rotating local files.

Precedence (docs/telemetry.md): config.export.otlp.endpoint, when set, decides endpoint,
protocol, headers (env headers when the config has none) and timeout. Otherwise
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT decide, with protocol from
OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL (else config) and the SDK reading the other
OTEL_EXPORTER_OTLP_* variables itself. With no endpoint anywhere, files are written when
export.files.enabled; else nothing is exported (None).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from urllib.parse import urlparse

from opentelemetry.sdk.trace.export import SpanExporter

from otelpeers.config import ConfigError, ExportConfig
from otelpeers.otel.files import RotatingJsonLinesSpanExporter

PROTOCOLS = ("grpc", "http/protobuf")
TRACES_PATH = "/v1/traces"


def _env(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def resolve_otlp(config: ExportConfig, env: Mapping[str, str] | None = None
                 ) -> tuple[str, str | None] | None:
    """(protocol, endpoint or None when the SDK reads it from env), or None: no OTLP."""
    env = os.environ if env is None else env
    otlp = config.otlp
    if otlp.endpoint:
        return otlp.protocol, otlp.endpoint
    if _env(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT") is None:
        return None
    protocol = _env(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
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


def build_span_exporter(config: ExportConfig, env: Mapping[str, str] | None = None
                        ) -> SpanExporter | None:
    """The SpanExporter the config and environment ask for; None: export nothing."""
    resolved = resolve_otlp(config, env)
    if resolved is None:
        f = config.files
        if not f.enabled:
            return None
        return RotatingJsonLinesSpanExporter(f.directory, f.max_file_bytes, f.max_files)
    protocol, endpoint = resolved
    otlp = config.otlp
    headers = dict(otlp.headers) or None
    timeout = otlp.timeout_s if endpoint else None  # env endpoint: the SDK reads env timeout
    quiet_sdk_exporter_logs()
    if protocol == "grpc":
        from otelpeers.otel.wire import FastOTLPSpanExporter
        return FastOTLPSpanExporter(endpoint=endpoint, insecure=otlp.insecure if endpoint else None,
                                headers=headers, timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )
    return HttpSpanExporter(endpoint=http_traces_url(endpoint) if endpoint else None,
                            headers=headers, timeout=timeout)


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
    "opentelemetry.exporter.otlp.proto.http._common",
)
_quiet_installed = False


def quiet_sdk_exporter_logs(interval_s: float = 30.0) -> None:
    """The SDK exporters log each failed batch; with the collector down that is a warning
    every few seconds. FlowSpanExporter reports failures itself, once per interval."""
    global _quiet_installed
    if _quiet_installed:
        return
    _quiet_installed = True
    for name in _SDK_EXPORTER_LOGGERS:
        logging.getLogger(name).addFilter(RateLimitFilter(interval_s))

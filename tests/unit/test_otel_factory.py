"""Exporter choice: config over OTEL_EXPORTER_OTLP_* env over local files."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

from otelpeers.config import ConfigError, ExportConfig, FilesConfig, OtlpConfig
from otelpeers.otel.factory import (
    RateLimitFilter,
    build_log_exporter,
    build_metric_exporter,
    build_span_exporter,
)
from otelpeers.otel.files import RotatingJsonLinesSpanExporter
from otelpeers.otel.resources import detect_host_resource
from otelpeers.otel.signalfiles import RotatingJsonLinesLogExporter, RotatingJsonLinesMetricExporter

ENV_KEYS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "OTEL_METRIC_EXPORT_INTERVAL",
            "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TIMEOUT",
            "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in ENV_KEYS:
        monkeypatch.delenv(k, raising=False)


def cfg(tmp_path=None, **otlp):
    files = FilesConfig(directory=str(tmp_path)) if tmp_path else FilesConfig()
    return ExportConfig(otlp=OtlpConfig(**otlp), files=files)


def test_no_endpoint_anywhere_writes_files(tmp_path):
    exp = build_span_exporter(cfg(tmp_path))
    assert isinstance(exp, RotatingJsonLinesSpanExporter)
    assert exp.files.directory == tmp_path
    assert build_span_exporter(ExportConfig(files=FilesConfig(enabled=False))) is None
    logs, metrics = build_log_exporter(cfg(tmp_path)), build_metric_exporter(cfg(tmp_path))
    assert isinstance(logs, RotatingJsonLinesLogExporter)
    assert isinstance(metrics, RotatingJsonLinesMetricExporter)
    assert logs.files.current_path == tmp_path / "otelpeers-logs.jsonl"
    assert metrics.files.current_path == tmp_path / "otelpeers-metrics.jsonl"
    assert build_log_exporter(ExportConfig(files=FilesConfig(enabled=False))) is None


def test_each_signal_resolves_its_own_endpoint(monkeypatch):
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetrics,
    )

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://10.9.9.9:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://10.9.9.9:4318/v1/metrics")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
    assert isinstance(build_log_exporter(cfg()), OTLPLogExporter)
    assert isinstance(build_metric_exporter(cfg()), HttpMetrics)
    # traces have no endpoint of their own: files
    assert isinstance(build_span_exporter(cfg()), RotatingJsonLinesSpanExporter)
    exp = build_log_exporter(cfg(endpoint="http://127.0.0.1:14318", protocol="http/protobuf"))
    assert exp._endpoint == "http://127.0.0.1:14318/v1/logs"


def test_metric_interval_and_temporality_from_env(monkeypatch, tmp_path):
    from opentelemetry.sdk.metrics import Counter
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    from otelpeers.otel.metrics import build_metric_reader

    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "1500")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    reader = build_metric_reader(cfg(tmp_path))
    assert reader._export_interval_millis == 1500
    assert reader._exporter._preferred_temporality[Counter] == AggregationTemporality.DELTA
    reader.shutdown()
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "soon")
    with pytest.raises(ConfigError, match="OTEL_METRIC_EXPORT_INTERVAL"):
        build_metric_reader(cfg(tmp_path))


def test_env_endpoint_and_protocol(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://10.9.9.9:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "3")
    exp = build_span_exporter(cfg())
    assert isinstance(exp, Http)
    assert exp._endpoint == "http://10.9.9.9:4318/v1/traces"
    assert exp._client._timeout == 3
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    exp = build_span_exporter(cfg())
    assert isinstance(exp, Grpc) and exp._endpoint == "10.9.9.9:4318"


def test_env_endpoint_without_protocol_uses_config_protocol(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://10.9.9.9:4318/v1/traces")
    assert isinstance(build_span_exporter(cfg(protocol="http/protobuf")), Http)
    assert isinstance(build_span_exporter(cfg()), Grpc)


def test_config_wins_over_env(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://10.9.9.9:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    exp = build_span_exporter(cfg(endpoint="http://127.0.0.1:14317", protocol="grpc",
                                  headers={"x-tenant": "a"}, timeout_s=2.5))
    assert isinstance(exp, Grpc)
    assert exp._endpoint == "127.0.0.1:14317"
    assert exp._timeout == 2.5 and dict(exp._headers) == {"x-tenant": "a"}
    exp = build_span_exporter(cfg(endpoint="http://127.0.0.1:14318", protocol="http/protobuf"))
    assert isinstance(exp, Http) and exp._endpoint == "http://127.0.0.1:14318/v1/traces"
    exp = build_span_exporter(cfg(endpoint="http://h:1/custom/path", protocol="http/protobuf"))
    assert exp._endpoint == "http://h:1/custom/path"


def test_bad_values_name_the_fix(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://10.9.9.9:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ConfigError, match="http/protobuf"):
        build_span_exporter(cfg())
    with pytest.raises(ConfigError, match="export.otlp.endpoint"):
        build_span_exporter(cfg(endpoint="127.0.0.1:4318", protocol="http/protobuf"))


def test_resource_attributes_env_merges_into_host(monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod,host.name=n1")
    attrs = detect_host_resource().attributes
    assert attrs["deployment.environment.name"] == "prod"
    assert attrs["host.name"] == "n1"  # env overrides detection
    assert attrs["os.type"] == "linux"


def test_rate_limit_filter():
    f = RateLimitFilter(3600)
    rec = logging.LogRecord("x", logging.WARNING, "", 0, "m", (), None)
    dbg = logging.LogRecord("x", logging.DEBUG, "", 0, "m", (), None)
    assert f.filter(rec) and not f.filter(rec) and not f.filter(rec)
    assert f.filter(dbg)
    assert f.suppressed == 2

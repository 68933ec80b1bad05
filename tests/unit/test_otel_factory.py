"""Exporter choice: config over OTEL_EXPORTER_OTLP_* env over local files."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

from otelpeers.config import ConfigError, ExportConfig, FilesConfig, OtlpConfig
from otelpeers.otel import RotatingJsonLinesSpanExporter, build_span_exporter
from otelpeers.otel.factory import RateLimitFilter
from otelpeers.otel.resources import detect_host_resource

ENV_KEYS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
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
    assert exp.directory == tmp_path
    assert build_span_exporter(ExportConfig(files=FilesConfig(enabled=False))) is None


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

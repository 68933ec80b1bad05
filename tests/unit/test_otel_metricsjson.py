"""The file exporter's own OTLP/JSON metrics encoding against the SDK's protobuf route, and
its temporality and aggregation choices against the SDK's OTLP exporters."""

from __future__ import annotations

import json
import math

import pytest
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import (
    OTLPMetricExporterMixin,
)
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics._internal.exemplar import AlwaysOnExemplarFilter
from opentelemetry.sdk.metrics._internal.point import Buckets
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricExporter,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otelpeers.otel.metricsjson import metrics_request_json, otlp_aggregation, otlp_temporality
from otelpeers.otel.signalfiles import RotatingJsonLinesMetricExporter
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import flow
from tests.unit.otlp_reference import proto_document, protobuf_modules_loaded_by
from tests.unit.test_otel_metrics import c, settle, sink


def same_as_protobuf(data: MetricsData) -> dict:
    ours = json.loads(metrics_request_json(data))
    assert ours == proto_document(encode_metrics(data))
    return ours


def sdk_metrics(temporality: AggregationTemporality) -> MetricsData:
    """Every instrument kind and attribute type, exemplars tied to a sampled span, a scope
    with version, attributes and schema, zero values."""
    from opentelemetry.sdk.metrics import Counter, UpDownCounter
    from opentelemetry.sdk.metrics import Histogram as HistogramInstrument

    reader = InMemoryMetricReader(preferred_temporality={
        Counter: temporality, HistogramInstrument: temporality, UpDownCounter: temporality})
    provider = MeterProvider(
        metric_readers=[reader], exemplar_filter=AlwaysOnExemplarFilter(),
        resource=Resource({"service.name": "t", "n": 3}, schema_url="https://r/1"),
        views=[View(instrument_name="exp", aggregation=ExponentialBucketHistogramAggregation())])
    meter = provider.get_meter("scope.a", "1.2", schema_url="https://s/1",
                               attributes={"scope.attr": "x"})
    plain = provider.get_meter("scope.b")
    attrs = {"s": "v", "empty": "", "b": False, "i": 0, "f": 1.5, "seq": ("a", "b"),
             "ints": (1, 2)}
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("parent"):
        meter.create_counter("ints", unit="By", description="d").add(7, attrs)
        meter.create_counter("floats").add(0.25)
        meter.create_up_down_counter("updown").add(-3, {"k": "v"})
        h = meter.create_histogram("hist", unit="s")
        for v in (0.0, 2.5, 900.0):
            h.record(v, {"k": "v"})
        e = plain.create_histogram("exp")
        for v in (0.0, 0.001, 3.0, 1e6):
            e.record(v)

    def gauges(_: CallbackOptions) -> list[Observation]:
        return [Observation(0, {"k": "zero"}), Observation(-2.5, {"k": "neg"})]

    plain.create_observable_gauge("gauge", callbacks=[gauges])
    plain.create_counter("unused")  # no points: the SDK reports no metric for it
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return data


@pytest.mark.parametrize("temporality", [AggregationTemporality.CUMULATIVE,
                                         AggregationTemporality.DELTA])
def test_every_instrument_kind_encodes_as_the_sdk_protobuf_route(temporality):
    doc = same_as_protobuf(sdk_metrics(temporality))
    (rm,) = doc["resourceMetrics"]
    assert rm["schemaUrl"] == "https://r/1"
    kinds = {m["name"]: next(k for k in m if k in ("sum", "gauge", "histogram",
                                                   "exponentialHistogram"))
             for sm in rm["scopeMetrics"] for m in sm["metrics"]}
    assert kinds == {"ints": "sum", "floats": "sum", "updown": "sum", "hist": "histogram",
                     "exp": "exponentialHistogram", "gauge": "gauge"}
    ints = next(m for sm in rm["scopeMetrics"] for m in sm["metrics"] if m["name"] == "ints")
    (ex,) = ints["sum"]["dataPoints"][0]["exemplars"]
    assert len(ex["traceId"]) == 32 and len(ex["spanId"]) == 16  # hex ids


def test_the_agents_own_metrics_encode_as_the_sdk_protobuf_route():
    reader, m = sink()
    m.consume(Outputs(flows=[flow("1", counters=c(100, 5)), flow("2", duration_ns=9 * 10**9)]))
    settle(reader)
    m.consume(Outputs(flows=[flow("3", counters=c(30, 0))]))
    data = reader.get_metrics_data()
    doc = same_as_protobuf(data)
    assert any("histogram" in mt for rm in doc["resourceMetrics"]
               for sm in rm["scopeMetrics"] for mt in sm["metrics"])


def test_values_the_sdk_does_not_make_itself():
    """Non-finite doubles, an empty histogram (min and max infinite), a sum without points,
    negative exponential buckets, a resource given twice (the later one wins, as in the
    SDK's encoder)."""
    scope = InstrumentationScope("s")
    points = [NumberDataPoint({"k": "nan"}, 0, 5, math.nan),
              NumberDataPoint({"k": "inf"}, 0, 5, -math.inf),
              NumberDataPoint({}, 0, 0, 0.0)]
    empty = HistogramDataPoint({}, 1, 2, 0, 0, [0, 0], [1.0, 2.0], math.inf, -math.inf)
    exp = ExponentialHistogramDataPoint(
        {}, 1, 2, 3, -5.0, -2, 1, Buckets(0, []), Buckets(-3, [1, 2]), 1, -4.0, -0.5)
    metrics = [Metric("g", "", "", Gauge(points)),
               Metric("h", "", "", Histogram([empty], AggregationTemporality.DELTA)),
               Metric("s", "", "", Sum([], AggregationTemporality.CUMULATIVE, True)),
               Metric("e", "", "", ExponentialHistogram([exp], AggregationTemporality.DELTA))]
    first = ResourceMetrics(Resource({"a": 1}), [ScopeMetrics(scope, metrics[:1], "")], "")
    again = ResourceMetrics(Resource({"a": 1}), [ScopeMetrics(scope, metrics, "")], "")
    other = ResourceMetrics(Resource({}), [], "")
    doc = same_as_protobuf(MetricsData([first, other, again]))
    assert [sum(len(sm.get("metrics", ())) for sm in rm.get("scopeMetrics", ()))
            for rm in doc["resourceMetrics"]] == [4, 0]


def test_attribute_values_outside_the_usual_types_as_the_sdk_encoder(caplog):
    """None is an empty value, a mapping a key-value list, an empty key is left out; a value
    neither encoder can write loses only its own attribute (logged), not the export."""
    attrs = {"none": None, "map": {"x": 1, "y": ["a", None]}, "": "empty key",
             "bad": object(), "nested": [[1, 2], []], "ok": "v"}
    point = NumberDataPoint(attrs, 0, 5, 1)
    data = MetricsData([ResourceMetrics(Resource({}), [ScopeMetrics(
        InstrumentationScope("s"), [Metric("g", "", "", Gauge([point]))], "")], "")])
    doc = same_as_protobuf(data)
    (dp,) = doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"]
    assert [a.get("key") for a in dp["attributes"]] == ["none", "map", None, "nested", "ok"]
    assert "attribute 'bad' not exported" in caplog.text


def test_no_metrics_is_an_empty_request():
    assert metrics_request_json(MetricsData(resource_metrics=[])) == "{}"


class _Sdk(MetricExporter, OTLPMetricExporterMixin):
    """The SDK's OTLP exporters' choices, without an exporter."""

    def __init__(self) -> None:
        self._common_configuration()

    def export(self, *a, **k):  # noqa: ANN002, ANN003, ANN201
        raise NotImplementedError

    def force_flush(self, timeout_millis: float = 0) -> bool:
        return True

    def shutdown(self, *a, **k) -> None:  # noqa: ANN002, ANN003
        pass


@pytest.mark.parametrize("preference", [None, "cumulative", "DELTA", " lowmemory ", "bogus"])
@pytest.mark.parametrize("histogram", [None, "base2_exponential_bucket_histogram",
                                       "explicit_bucket_histogram", "bogus"])
def test_temporality_and_aggregation_follow_the_sdk_exporters(monkeypatch, tmp_path,
                                                              preference, histogram):
    for var, v in (("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", preference),
                   ("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", histogram)):
        if v is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, v)
    sdk = _Sdk()
    ours = RotatingJsonLinesMetricExporter(tmp_path, 1 << 20, 2)
    assert ours._preferred_temporality == sdk._preferred_temporality
    assert ({k: type(v) for k, v in ours._preferred_aggregation.items()}
            == {k: type(v) for k, v in sdk._preferred_aggregation.items()})
    assert otlp_temporality({}) == sdk._get_temporality({})
    assert type(otlp_aggregation()[next(iter(otlp_aggregation()))]) is type(
        next(iter(sdk._get_aggregation({}).values())))


def test_writing_metrics_files_never_loads_protobuf(tmp_path):
    """The reason this encoder exists: the agent that writes files does without protobuf."""
    code = f"""
from otelpeers.otel.signalfiles import RotatingJsonLinesMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
exporter = RotatingJsonLinesMetricExporter({str(tmp_path)!r}, 1 << 20, 2)
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
provider = MeterProvider(metric_readers=[reader])
provider.get_meter("m").create_histogram("h").record(1.5, {{"k": "v"}})
provider.shutdown()
"""
    assert protobuf_modules_loaded_by(code) == []
    (line,) = (tmp_path / "otelpeers-metrics.jsonl").read_text().splitlines()
    (mt,) = json.loads(line)["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    assert mt["name"] == "h" and mt["histogram"]["dataPoints"][0]["sum"] == 1.5

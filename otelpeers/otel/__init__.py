"""OpenTelemetry mapping and export (docs/telemetry.md is the contract).

Everything that knows the OpenTelemetry SDK lives here; the rest of otelpeers hands over
plain data. Sinks of the pipeline:
    SpanSink (exporter.py)          flows and DNS lookups -> spans (OTLP gRPC/HTTP or files)
    DetectionLogSink (logs.py)      detections -> log records
    MetricsSink (metrics.py)        volume/frequency per peer pair, DNS, detections, agent
    LiveView (liveview.py)          terminal view
Mapping: mapping.py (flow spans), dns_spans.py, detections.py, resources.py (process
resources); encoders: wire.py (protobuf), otlpjson.py (OTLP/JSON); factory.py picks the
exporters of each signal. Import the submodules directly: this package imports nothing, so
commands that export nothing never load the SDK's exporters.
"""

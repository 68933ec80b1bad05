"""The `export:` section of the configuration, apart from the rest of otelpeers.config.

The span export process needs only this: importing otelpeers.config would bring the
detection settings (every rule's dataclasses) into that process too. otelpeers.config
re-exports everything here and validates it with the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A configuration problem, with the key path and the fix in the message."""


@dataclass(frozen=True)
class OtlpConfig:
    endpoint: str | None = None  # e.g. http://127.0.0.1:4317; None: OTEL_EXPORTER_OTLP_ENDPOINT
    protocol: str = "grpc"  # grpc | http/protobuf
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    insecure: bool = True


@dataclass(frozen=True)
class FilesConfig:
    enabled: bool = True  # write OTLP JSON files when no OTLP endpoint is configured
    directory: str = "/var/lib/otelpeers"
    max_file_bytes: int = 16 * 1024 * 1024
    max_files: int = 8


A_PROCESS = "process.executable.name"
METRIC_PAIR_ATTRIBUTES = ("process.executable.name", "container.id", "server.address",
                          "network.peer.address", "server.port", "network.transport",
                          "otelpeers.flow.direction")


@dataclass(frozen=True)
class MetricsConfig:
    # Attributes of a peer pair on the volume and frequency metrics (cardinality control).
    pair_attributes: tuple[str, ...] = METRIC_PAIR_ATTRIBUTES
    max_pairs: int = 2000  # beyond it new pairs are reported as "other" (counted)


@dataclass(frozen=True)
class PrometheusConfig:
    enabled: bool = False  # serve metrics for Prometheus to scrape (no collector needed)
    address: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True)
class ExportConfig:
    otlp: OtlpConfig = field(default_factory=OtlpConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    max_queue_size: int = 20_000  # spans waiting for export; beyond it they are counted and dropped
    max_export_batch_size: int = 2048
    schedule_delay_s: float = 2.0
    max_live_resources: int = 4096  # distinct process resources kept
    live_view: bool = True  # terminal view of the busiest peers when stdout is a terminal
    metrics_interval_s: float = 30.0
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    # Map, encode and send spans in a child process: a second core does that work instead
    # of competing with the pipeline for the interpreter lock.
    separate_process: bool = True

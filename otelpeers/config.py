"""Configuration: YAML in, frozen dataclasses out, validated strictly.

Every error names the offending key path and says what would be accepted, so a typo in a
file read by a root agent fails loudly at start instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otelpeers.detect.settings import DetectConfig, SettingsError
from otelpeers.exportconfig import (  # noqa: F401 (re-exported)
    A_PROCESS,
    METRIC_PAIR_ATTRIBUTES,
    ConfigError,
    ExportConfig,
    FilesConfig,
    MetricsConfig,
    OtlpConfig,
    PrometheusConfig,
)

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "otelpeers.yaml"


@dataclass(frozen=True)
class KernelConfig:
    ringbuf_pages: int = 2048  # ring buffer size in pages (8 MiB): absorbs bursts; power of two
    max_sockets: int = 65536  # kernel socket table entries (LRU)
    max_peers: int = 65536  # kernel (socket, peer) table entries for non-TCP sockets (LRU)
    max_listeners: int = 4096
    max_pairs: int = 16384  # exact per-(process, peer) aggregates per interval; more: overflow
    stats_interval_s: float = 1.0  # how often volume of live flows is read
    attach_mode: str = "link"  # link: detached by the kernel when the agent dies; legacy
    cgroup_path: str | None = None  # cgroup-v2 root; detected from /proc/mounts when unset
    adopt_existing: bool = True  # seed the kernel tables with sockets older than the agent
    # compiled programs kept between starts (only the first start runs clang); "" = off
    program_cache: str = "/var/cache/otelpeers"


@dataclass(frozen=True)
class FlowConfig:
    udp_idle_timeout_s: float = 60.0
    icmp_idle_timeout_s: float = 30.0
    tcp_close_grace_s: float = 120.0
    max_flows: int = 100_000


@dataclass(frozen=True)
class DnsConfig:
    ports: tuple[int, ...] = (53,)
    max_payload: int = 512  # bytes of each DNS packet copied from the kernel
    query_timeout_s: float = 5.0
    cache_max_entries: int = 65536
    cache_grace_s: float = 300.0
    history_max_entries: int = 100_000


@dataclass(frozen=True)
class ProcessConfig:
    redact_command_lines: bool = True
    max_processes: int = 65536
    exited_grace_s: float = 60.0
    max_command_line: int = 4096
    hash_executables: bool = True
    # Opens of these paths are reported (filtered in the kernel): absolute prefixes, matched
    # on their first 64 bytes, and file basenames (up to 31 bytes) anywhere.
    sensitive_prefixes: tuple[str, ...] = (
        "/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ssh/", "/root/.ssh/",
        "/root/.aws/", "/root/.kube/", "/root/.gnupg/", "/root/.docker/config.json",
        "/var/run/secrets/", "/run/secrets/", "/etc/kubernetes/pki/",
    )
    sensitive_basenames: tuple[str, ...] = (
        "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "authorized_keys", "credentials",
        ".netrc", ".pgpass", ".git-credentials", ".npmrc", ".pypirc", ".vault-token",
        "Login Data", "Cookies", "cookies.sqlite", "logins.json", "key4.db", "wallet.dat",
        "kubeconfig", ".bash_history",
    )
    max_file_events_per_process: int = 32  # recent sensitive opens kept per process
    # Also report every open by a process that has used the network (graph edges only;
    # can be a lot of events on a busy host).
    file_opens_of_networked_processes: bool = False


@dataclass(frozen=True)
class GraphConfig:
    enabled: bool = True
    socket_path: str = "/run/otelpeers/graph.sock"  # root-only; `otelpeers graph` reads it
    max_nodes: int = 20_000  # about 0.7 KiB each
    max_edges: int = 80_000


@dataclass(frozen=True)
class Config:
    kernel: KernelConfig = field(default_factory=KernelConfig)
    flows: FlowConfig = field(default_factory=FlowConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)

    def validate(self) -> Config:
        k = self.kernel
        _check(k.ringbuf_pages > 0 and k.ringbuf_pages & (k.ringbuf_pages - 1) == 0,
               "kernel.ringbuf_pages", f"must be a power of two, got {k.ringbuf_pages}")
        for name in ("max_sockets", "max_peers", "max_listeners", "max_pairs"):
            v = getattr(k, name)
            _check(1 <= v <= 16_777_216, f"kernel.{name}", f"must be 1..16777216, got {v}")
        _check(k.stats_interval_s > 0, "kernel.stats_interval_s", "must be > 0")
        _check(k.attach_mode in ("link", "legacy"), "kernel.attach_mode",
               f"must be 'link' or 'legacy', got {k.attach_mode!r}")
        _check(k.program_cache == "" or (os.path.isabs(k.program_cache)
                                         and "\0" not in k.program_cache),
               "kernel.program_cache", "must be an absolute directory path, or \"\" to "
               f"compile at every start; got {k.program_cache!r}")
        f = self.flows
        for name in ("udp_idle_timeout_s", "icmp_idle_timeout_s", "tcp_close_grace_s"):
            _check(getattr(f, name) > 0, f"flows.{name}", "must be > 0")
        _check(f.max_flows >= 1, "flows.max_flows", "must be >= 1")
        e = self.export
        _check(e.otlp.protocol in ("grpc", "http/protobuf"), "export.otlp.protocol",
               f"must be 'grpc' or 'http/protobuf', got {e.otlp.protocol!r}")
        ep = e.otlp.endpoint
        _check(ep is None or (ep.startswith(("http://", "https://")) and len(ep) > 8),
               "export.otlp.endpoint", f"must be an http:// or https:// URL such as "
               f"http://127.0.0.1:4317, got {ep!r}")
        _check(e.max_queue_size >= 1, "export.max_queue_size", "must be >= 1")
        _check(1 <= e.max_export_batch_size <= e.max_queue_size, "export.max_export_batch_size",
               "must be between 1 and export.max_queue_size")
        _check(e.files.max_file_bytes >= 4096, "export.files.max_file_bytes", "must be >= 4096")
        _check(e.files.max_files >= 1, "export.files.max_files", "must be >= 1")
        _check(e.metrics_interval_s > 0, "export.metrics_interval_s", "must be > 0")
        bad = [a for a in e.metrics.pair_attributes if a not in METRIC_PAIR_ATTRIBUTES]
        _check(not bad and A_PROCESS in e.metrics.pair_attributes,
               "export.metrics.pair_attributes",
               f"must be a list of {', '.join(METRIC_PAIR_ATTRIBUTES)} including {A_PROCESS}; "
               f"got {list(e.metrics.pair_attributes)}")
        _check(e.metrics.max_pairs >= 1, "export.metrics.max_pairs", "must be >= 1")
        _check(1 <= e.prometheus.port <= 65535, "export.prometheus.port", "must be 1..65535")
        try:
            ipaddress.ip_address(e.prometheus.address)
        except ValueError:
            raise ConfigError("config: export.prometheus.address must be an IP address such as "
                              f"127.0.0.1 or 0.0.0.0, got {e.prometheus.address!r}") from None
        p = self.process
        _check(len(p.sensitive_prefixes) <= 256 and all(
            x.startswith("/") and 1 < len(x.encode()) <= 64 for x in p.sensitive_prefixes),
            "process.sensitive_prefixes",
            "must be at most 256 absolute paths of 2..64 bytes (e.g. /etc/shadow)")
        _check(len(p.sensitive_basenames) <= 256 and all(
            "/" not in x and 1 <= len(x.encode()) <= 31 for x in p.sensitive_basenames),
            "process.sensitive_basenames",
            "must be at most 256 file names of 1..31 bytes without '/' (e.g. id_rsa)")
        _check(p.max_file_events_per_process >= 1, "process.max_file_events_per_process",
               "must be >= 1")
        g = self.graph
        _check(g.max_nodes >= 1 and g.max_edges >= 1, "graph.max_nodes/max_edges", "must be >= 1")
        _check(g.socket_path.startswith("/"), "graph.socket_path", "must be an absolute path")
        d = self.dns
        _check(bool(d.ports) and all(1 <= p <= 65535 for p in d.ports), "dns.ports",
               "must be a non-empty list of ports 1..65535")
        _check(12 <= d.max_payload <= 1024, "dns.max_payload", "must be 12..1024 bytes")
        try:
            self.detect.validate()
        except SettingsError as exc:
            raise ConfigError(str(exc)) from None
        return self


def _check(ok: bool, path: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"config: {path} {why}")


def _build(cls: type, data: Any, path: str) -> Any:
    """Build dataclass cls from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        where = path or "top level"
        raise ConfigError(f"config: {where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        known = ", ".join(sorted(names))
        key = _join(path, unknown[0])
        raise ConfigError(f"config: unknown key {key}; known keys here: {known}")
    # Keys a section still accepts (so that existing files load) but no longer reads: say so
    # once at load instead of letting a user believe the setting does something.
    retired: typing.Mapping[str, str] = getattr(cls, "RETIRED_KEYS", {})
    for name in sorted(set(data) & set(retired)):
        log.warning("config: %s is accepted but no longer used (%s); remove it from the file",
                    _join(path, name), retired[name])
    kwargs = {name: _coerce(hints[name], value, _join(path, name)) for name, value in data.items()}
    return cls(**kwargs)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, path)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config: {path} must be a list, got {value!r}")
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        return tuple(_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ConfigError(f"config: {path} must be a mapping of strings to strings")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config: {path} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config: {path} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config: {path} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config: {path} must be a string, got {value!r}")
        return value
    raise ConfigError(f"config: {path}: unsupported type {tp}")  # pragma: no cover


def parse_config(data: Any) -> Config:
    return _build(Config, data, "").validate()


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate a YAML config; None loads the built-in default."""
    p = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if path is None and not p.exists():
        return Config().validate()
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(
            f"config: cannot read {p}: {exc.strerror}; check the path and permissions") from exc
    import yaml  # here, not at the top: the detection process imports this module, reads no YAML

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {p} is not valid YAML: {exc}") from exc
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (in {p})") from None

"""The shipped config file equals the code's defaults, and bad input fails naming its key."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path

import pytest
import yaml

from otelpeers.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    load_config,
    parse_config,
)

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "configuration.md"


def _field_paths(cls: type, prefix: str = "", retired: bool = True) -> list[str]:
    """Every leaf key's path; retired=False leaves out the keys a section retired."""
    paths = []
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            paths += _field_paths(type(default), path + ".", retired)
        elif retired or f.name not in getattr(cls, "RETIRED_KEYS", {}):
            paths.append(path)
    return paths


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_default_file_is_the_shipped_one() -> None:
    assert DEFAULT_CONFIG_PATH == REPO / "config" / "otelpeers.yaml"
    assert DEFAULT_CONFIG_PATH.is_file()


def test_default_file_equals_code_defaults() -> None:
    assert load_config(DEFAULT_CONFIG_PATH) == Config()
    assert load_config(None) == Config()


def test_default_file_spells_out_every_key() -> None:
    # Equality alone would pass if a key were left out of the file; users read it as reference.
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())

    def leaves(d: dict, prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            if isinstance(v, dict) and v:
                out += leaves(v, f"{prefix}{k}.")
            else:
                out.append(f"{prefix}{k}")
        return out

    assert sorted(leaves(data)) == sorted(_field_paths(Config, retired=False))


RETIRED = ["detect.rules.exfiltration.max_flows", "detect.rules.volume_anomaly.max_open_flows"]


def test_retired_keys_load_with_a_warning_that_names_them(caplog) -> None:
    assert sorted(set(_field_paths(Config)) - set(_field_paths(Config, retired=False))) == RETIRED
    data = {"detect": {"rules": {"exfiltration": {"max_flows": 10},
                                 "volume_anomaly": {"max_open_flows": 20}}}}
    with caplog.at_level(logging.WARNING, logger="otelpeers.config"):
        c = parse_config(data)
    assert c.detect.rules.exfiltration.max_flows == 10  # still loads: old files keep working
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2
    for path, msg in zip(RETIRED, warned, strict=True):
        assert path in msg and "no longer used" in msg and "remove it" in msg
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="otelpeers.config"):
        load_config(DEFAULT_CONFIG_PATH)
    assert not caplog.records  # the shipped file sets none of them


def _documented_as(path: str) -> str:
    """Keys every rule has are documented once, as detect.rules.<rule>.KEY."""
    import re

    return re.sub(r"^detect\.rules\.[a-z_]+\.(enabled|severity|dedup_window_s|allow\..+)$",
                  r"detect.rules.<rule>.\1", path)


def test_every_key_is_documented() -> None:
    text = DOC.read_text()
    missing = [p for p in _field_paths(Config) if f"`{_documented_as(p)}`" not in text]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_partial_file_keeps_other_defaults(tmp_path: Path) -> None:
    text = "kernel:\n  ringbuf_pages: 512\ndns:\n  ports: [53, 5353]\n"
    cfg = load_config(_write(tmp_path, text))
    assert cfg.kernel.ringbuf_pages == 512
    assert cfg.dns.ports == (53, 5353)
    assert cfg.flows == Config().flows
    assert cfg.export == Config().export


def test_empty_file_is_defaults(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "")) == Config()


def test_ints_are_accepted_for_floats(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "flows:\n  udp_idle_timeout_s: 10\n"))
    assert cfg.flows.udp_idle_timeout_s == 10.0
    assert isinstance(cfg.flows.udp_idle_timeout_s, float)


@pytest.mark.parametrize(("data", "key"), [
    ({"kernel": {"ringbuf_pages": 100}}, "kernel.ringbuf_pages"),
    ({"kernel": {"max_sockets": 0}}, "kernel.max_sockets"),
    ({"kernel": {"attach_mode": "magic"}}, "kernel.attach_mode"),
    ({"kernel": {"stats_interval_s": 0}}, "kernel.stats_interval_s"),
    ({"flows": {"udp_idle_timeout_s": -1}}, "flows.udp_idle_timeout_s"),
    ({"flows": {"max_flows": 0}}, "flows.max_flows"),
    ({"export": {"otlp": {"protocol": "thrift"}}}, "export.otlp.protocol"),
    ({"export": {"max_export_batch_size": 30000}}, "export.max_export_batch_size"),
    ({"export": {"files": {"max_file_bytes": 10}}}, "export.files.max_file_bytes"),
    ({"dns": {"ports": []}}, "dns.ports"),
    ({"dns": {"ports": [70000]}}, "dns.ports"),
    ({"dns": {"max_payload": 4}}, "dns.max_payload"),
])
def test_bad_values_name_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        parse_config(data)


@pytest.mark.parametrize(("data", "key"), [
    ({"kernal": {}}, "kernal"),
    ({"kernel": {"ringbuf_page": 256}}, "kernel.ringbuf_page"),
    ({"export": {"otlp": {"endpiont": "http://x:4317"}}}, "export.otlp.endpiont"),
])
def test_unknown_keys_are_errors(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match="unknown key " + re.escape(key)):
        parse_config(data)


@pytest.mark.parametrize(("data", "key"), [
    ({"kernel": {"ringbuf_pages": "256"}}, "kernel.ringbuf_pages"),
    ({"kernel": {"ringbuf_pages": True}}, "kernel.ringbuf_pages"),
    ({"kernel": {"ringbuf_pages": 2.5}}, "kernel.ringbuf_pages"),
    ({"flows": {"udp_idle_timeout_s": "60s"}}, "flows.udp_idle_timeout_s"),
    ({"export": {"live_view": "yes"}}, "export.live_view"),
    ({"export": {"otlp": {"headers": {"a": 1}}}}, "export.otlp.headers"),
    ({"export": {"otlp": {"endpoint": 4317}}}, "export.otlp.endpoint"),
    ({"export": {"files": []}}, "export.files"),
    ({"dns": {"ports": 53}}, "dns.ports"),
    ({"dns": {"ports": [53, "x"]}}, "dns.ports[1]"),
    ({"kernel": "fast"}, "kernel"),
])
def test_wrong_types_name_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        parse_config(data)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(_write(tmp_path, "- kernel\n"))


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    p = _write(tmp_path, "kernel: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(p)
    assert str(p) in str(info.value)


def test_errors_in_a_file_name_the_file_and_key(tmp_path: Path) -> None:
    p = _write(tmp_path, "kernel:\n  attach_mode: sideways\n")
    with pytest.raises(ConfigError, match="kernel.attach_mode") as info:
        load_config(p)
    assert str(p) in str(info.value)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of their mode")
def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    p = _write(tmp_path, "kernel: {}\n")
    p.chmod(0)
    with pytest.raises(ConfigError, match="cannot read .*Permission denied"):
        load_config(p)


def test_directory_instead_of_file_is_an_error(tmp_path: Path) -> None:
    # Unreadable as a file even for root, so this runs under `sudo make test` too.
    with pytest.raises(ConfigError, match="cannot read " + re.escape(str(tmp_path))):
        load_config(tmp_path)


def test_otlp_endpoint_must_be_a_url() -> None:
    from otelpeers.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="export.otlp.endpoint must be an http"):
        parse_config({"export": {"otlp": {"endpoint": "collector:4317"}}})
    ok = parse_config({"export": {"otlp": {"endpoint": "https://collector:4317"}}})
    assert ok.export.otlp.endpoint == "https://collector:4317"

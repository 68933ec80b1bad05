"""otelpeers: an OpenTelemetry-native network peer monitor built on bcc eBPF."""

from __future__ import annotations

__version__ = "0.1.0"

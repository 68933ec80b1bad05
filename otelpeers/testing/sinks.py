"""A pipeline sink that keeps what it is given, for tests and the detection evaluations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from otelpeers.detect.model import Detection
from otelpeers.flows import FlowRecord
from otelpeers.pipeline import Outputs


class CollectSink:
    """Keeps every completed flow and every detection it consumes, in order."""

    name: ClassVar[str] = "collect"

    def __init__(self) -> None:
        self.flows: list[FlowRecord] = []
        self.detections: list[Detection] = []

    def consume(self, out: Outputs) -> None:
        self.flows.extend(out.flows)
        self.detections.extend(out.detections)

    def counters(self) -> Mapping[str, int]:
        return {}

    def close(self) -> None:
        pass

"""DGA detection: a per-domain character model and a per-actor decision.

``load_model()`` gives the shipped model (``model.npz``, trained by scripts/train_dga.py) for
batch scoring in numpy; ``score_lines`` backs ``otelpeers detect dga``; ``actor.DgaActorScorer``
decides when a process's lookups look like a DGA hunting for its C2, scoring one name at a time
with ``scalar.load_scalar_model()`` (the same model without numpy). The numpy names are
imported on first use, so the detection process never loads numpy.
"""

from __future__ import annotations

from typing import Any

from otelpeers.detect.dga.actor import DgaActorConfig, DgaActorScorer, DgaDecision
from otelpeers.detect.dga.codes import ModelFormatError

_NUMPY_NAMES = ("DgaModel", "load_model", "score_lines")

__all__ = [
    "DgaActorConfig",
    "DgaActorScorer",
    "DgaDecision",
    "DgaModel",
    "ModelFormatError",
    "load_model",
    "score_lines",
]


def __getattr__(name: str) -> Any:
    if name in _NUMPY_NAMES:
        from otelpeers.detect.dga import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

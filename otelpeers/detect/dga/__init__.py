"""DGA detection: a per-domain character model and a per-actor decision.

``load_model()`` gives the shipped model (``model.npz``, trained by scripts/train_dga.py);
``score_lines`` backs ``otelpeers detect dga``; ``actor.DgaActorScorer`` decides when a
process's lookups look like a DGA hunting for its C2.
"""

from __future__ import annotations

from otelpeers.detect.dga.actor import DgaActorConfig, DgaActorScorer, DgaDecision
from otelpeers.detect.dga.model import DgaModel, ModelFormatError, load_model, score_lines

__all__ = [
    "DgaActorConfig",
    "DgaActorScorer",
    "DgaDecision",
    "DgaModel",
    "ModelFormatError",
    "load_model",
    "score_lines",
]

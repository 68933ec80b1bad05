"""Baselines that survive restarts: a small JSON file under detect.state_dir.

Rules that learn (novel_peer, lateral_movement, volume_anomaly) hand their state over as
JSON-able dicts (each rule bounds its own); the store writes them atomically (temporary file
and rename) every save_interval_s of event time and at shutdown, and reads them at start, so
a restarted agent keeps what it learned and does not learn again from scratch. The file is
root-only: it describes which peers each binary talks to.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from otelpeers.detect.engine import Engine

log = logging.getLogger(__name__)

FORMAT = 1
FILE_NAME = "baselines.json"
MAX_FILE_BYTES = 64 * 1024 * 1024  # a larger file is not read (damage, or not ours)
NS = 1_000_000_000


class BaselineStore:
    def __init__(self, directory: str | os.PathLike[str], engine: Engine, *,
                 save_interval_s: float = 300.0) -> None:
        self.path = Path(directory) / FILE_NAME
        self.engine = engine
        self.save_interval_ns = int(save_interval_s * NS)
        self._next_save_ns: int | None = None
        self.stats = {"loaded": 0, "saved": 0, "errors": 0}

    def load(self) -> None:
        """Give each rule its saved state; the learning clock starts where it started."""
        try:
            if self.path.stat().st_size > MAX_FILE_BYTES:
                raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
            doc = json.loads(self.path.read_text())
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT}")
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self.stats["errors"] += 1
            log.warning("cannot read the detection baselines in %s (%s); learning again",
                        self.path, exc)
            return
        born = doc.get("learning_start_ns")
        if isinstance(born, int) and born > 0:
            self.engine.ctx.learning_start_ns = born
        states: dict[str, Any] = doc.get("rules") or {}
        for rule, _ in self.engine.rules:
            state = states.get(rule.meta.name)
            if isinstance(state, dict):
                try:
                    rule.load_state(state)
                    self.stats["loaded"] += 1
                except Exception:  # a damaged entry must not stop the agent
                    self.stats["errors"] += 1
                    log.exception("baseline of rule %s not loaded", rule.meta.name)

    def maybe_save(self, now_ns: int) -> None:
        if self._next_save_ns is None:
            self._next_save_ns = now_ns + self.save_interval_ns
        elif now_ns >= self._next_save_ns:
            self.save()
            self._next_save_ns = now_ns + self.save_interval_ns

    def save(self) -> None:
        states = {}
        for rule, _ in self.engine.rules:
            state = rule.save_state()
            if state is not None:
                states[rule.meta.name] = state
        if not states:
            return
        doc = {"format": FORMAT, "learning_start_ns": self.engine.ctx.learning_start_ns,
               "rules": states}
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, separators=(",", ":"))
            os.replace(tmp, self.path)
            self.stats["saved"] += 1
        except OSError as exc:
            self.stats["errors"] += 1
            log.warning("cannot save the detection baselines to %s: %s", self.path, exc)

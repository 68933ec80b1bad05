"""The rules, one module each; ALL_RULES is the order they run in."""

from __future__ import annotations

from otelpeers.detect.engine import Rule


def all_rules() -> list[type[Rule]]:
    """Every rule class. Imported here, lazily, so that loading the config (which only needs
    otelpeers.detect.settings) never loads a rule's model."""
    from otelpeers.detect.rules.registry import RULES

    return list(RULES)

"""`otelpeers check`: can this host run the agent?"""

from __future__ import annotations

import argparse

from otelpeers.config import Config


def cmd_check(args: argparse.Namespace, config: Config) -> int:
    from otelpeers.preflight import main_check

    return main_check(config)

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Agent, NetNs, netns  # noqa: E402


@pytest.fixture
def agent() -> Iterator[Agent]:
    a = Agent()
    try:
        yield a
    finally:
        a.stop()


@pytest.fixture
def ns() -> Iterator[NetNs]:
    with netns() as n:
        yield n

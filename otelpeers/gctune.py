"""Garbage-collector settings for the agent's long-running processes.

The agent allocates a few container objects per event and per flow; nearly all of them die
by reference counting within a round, and the rest (flow table, graph, caches) live long.
With CPython's default thresholds (a young collection every 700 net allocations) the three
processes ran 2,000 to 3,300 collections each in 20 s at 20,000 flows/s, about 0.8 s of
wall time per process, to find a few hundred cyclic objects; each full collection also walks
the whole (growing) heap. So, once a process has set itself up:

- gc.freeze() moves everything allocated so far (modules, config, compiled rules, models)
  out of every later collection: it is never garbage;
- the young-generation threshold goes from 700 to GEN0_THRESHOLD net allocations: still a
  collection every few seconds at full rate, so cyclic garbage stays bounded (tens of
  thousands of objects at most), at about a hundredth of the collections.

Measured in docs/benchmarks.md (issue 10, fifth session).
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000
GEN1_THRESHOLD = 20  # young collections per middle-generation one (default 10)
GEN2_THRESHOLD = 10  # CPython's default; full collections also wait for 25% heap growth


def tune_for_throughput() -> None:
    """Call once a process has finished starting (its imports and set-up are done)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)

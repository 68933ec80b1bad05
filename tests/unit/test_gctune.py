"""The agent's processes run with the collector tuned once they are set up."""

from __future__ import annotations

import json
import subprocess
import sys


def test_tuning_freezes_what_start_up_made_and_raises_the_young_threshold() -> None:
    # In a child: freezing and re-thresholding the test process would change every test after.
    code = ("import gc, json\n"
            "from otelpeers import gctune\n"
            "before = gc.get_freeze_count()\n"
            "gctune.tune_for_throughput()\n"
            "print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold()]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    before, after, threshold = json.loads(out)
    assert before == 0 and after > 1000  # the interpreter's and otelpeers' own objects
    assert threshold == [50_000, 20, 10]

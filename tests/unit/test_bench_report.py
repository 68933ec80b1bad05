"""Benchmark result helpers: ratios, targets, the markdown summary and the doc splice."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the bench package

from bench.report import (  # noqa: E402
    BEGIN,
    END,
    Figure,
    Target,
    fmt,
    markdown_table,
    median,
    paired_ratios,
    ratio,
    splice,
    summary_markdown,
    verdict,
)


def test_ratio_and_missing_baselines() -> None:
    assert ratio(19.0, 20.0) == pytest.approx(0.95)
    assert ratio(5.0, 0) is None
    assert ratio(None, 3.0) is None
    assert ratio(3.0, None) is None


def test_median_ignores_missing_and_paired_ratios_pair_rounds() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2.0  # type: ignore[list-item]
    assert median([]) is None
    assert paired_ratios([9.0, 10.0, 4.0], [10.0, 10.0, 0.0]) == [0.9, 1.0]


def test_target_on_ratio_and_on_value() -> None:
    f = Figure("overhead", "iperf", 9.4, "Gbit/s", 10.0, "off", Target(">=", 0.95))
    assert f.ratio == pytest.approx(0.94) and f.met is False
    g = Figure("memory", "rss", 120.0, "MB", 80.0, "idle", Target("<=", 150, "value"))
    assert g.ratio == pytest.approx(1.5) and g.met is True
    h = Figure("startup", "start", 11.0, "s", None, "", Target("<=", 10, "value"))
    assert h.met is False
    assert Figure("x", "y", None, "s", 1.0, "", Target(">=", 1.0)).met is None
    assert Figure("x", "y", 1.0, "s").met is None


def test_exact_target_and_unknown_operators() -> None:
    exact = Target("==", 1.0)  # exact counts: a ratio above 1 is a double count, not a win
    assert Figure("loss", "n", 100, "c", 100, "", exact).met is True
    assert Figure("loss", "n", 101, "c", 100, "", exact).met is False
    assert Figure("loss", "n", 99, "c", 100, "", exact).met is False
    with pytest.raises(ValueError, match="op must be"):
        Target("!=", 1.0)
    with pytest.raises(ValueError, match="'on' must be"):
        Target(">=", 1.0, on="median")


def test_figure_to_dict_carries_target_text_and_verdict() -> None:
    d = Figure("pipeline", "spans", 25_000, "spans/s", 10_000, "sdk",
               Target(">=", 20_000, "value")).to_dict()
    assert d["ratio"] == 2.5 and d["met"] is True
    assert d["target"]["text"] == ">= 20000 spans/s"


def test_fmt() -> None:
    assert fmt(None) == "n/a"
    assert fmt(12345.6) == "12,346"
    assert fmt(3.0) == "3"
    assert fmt(0.12345) == "0.123"


def test_markdown_table_escapes_pipes_and_reports_not_met() -> None:
    rows = markdown_table([
        Figure("loss", "a|b", 90, "flows", 100, "made", Target(">=", 1.0), "note|x"),
    ]).splitlines()
    assert len(rows) == 3
    assert "a\\|b" in rows[2] and "note\\|x" in rows[2]
    assert "NOT met" in rows[2] and "0.900" in rows[2]


def test_summary_lists_missed_targets_and_errors() -> None:
    figs = [Figure("overhead", "iperf", 0.9, "", 1.0, "off", Target(">=", 0.95)),
            Figure("startup", "start", 2.0, "s", 0.5, "py", Target("<=", 10, "value")),
            Figure("bpf", "prog", 50, "ns/run")]
    md = summary_markdown({"date": "d", "kernel": "6.18", "cpu": "EPYC", "cpus": 2},
                          figs, {"tcplife": "RuntimeError: no kprobes"}, ["a note"])
    assert "Targets: 1 of 2 met; not met: overhead/iperf." in md
    assert "kernel 6.18" in md and "EPYC" in md
    assert "`tcplife`: RuntimeError: no kprobes" in md
    assert "- a note" in md


def test_an_overruled_figure_takes_the_forced_verdict_and_says_why() -> None:
    lost = Figure("loss", "spans", 100, "flows", 100, "made", Target(">=", 1.0), "n",
                  overrule=("NOT met: 3 spans failed or dropped at export", False))
    short = Figure("loss", "slow", 100, "flows", 100, "made", Target(">=", 1.0), "n",
                   overrule=("not measured: the generator reached 6,900", None))
    assert lost.ratio == 1.0 and lost.met is False
    assert short.met is None and verdict(short) == "not measured"
    rows = markdown_table([lost, short]).splitlines()
    assert "NOT met" in rows[2] and "n; NOT met: 3 spans failed" in rows[2]
    assert "| not measured | n; not measured: the generator reached 6,900 |" in rows[3]
    md = summary_markdown({}, [lost, short], {})
    assert "Targets: 0 of 2 met; not met: loss/spans; not measured: loss/slow." in md
    # no target: nothing to overrule
    assert Figure("g", "x", 1, "", overrule=("why", False)).met is None


def test_splice_replaces_only_the_generated_block() -> None:
    doc = f"# Title\n\nintro\n\n{BEGIN}\nold\n{END}\n\nafter\n"
    out = splice(doc, "new table\n")
    assert "old" not in out and "new table" in out
    assert out.startswith("# Title\n\nintro\n") and out.endswith("\n\nafter\n")
    assert splice(out, "newer") == splice(doc, "newer")


def test_splice_appends_when_no_block() -> None:
    out = splice("# Benchmarks\n", "table")
    assert out == f"# Benchmarks\n\n{BEGIN}\ntable\n{END}\n"

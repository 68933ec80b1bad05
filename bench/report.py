"""Pure helpers: figures, ratios, targets and the markdown summary (unit-tested, no I/O)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b,
       "==": lambda a, b: abs(a - b) < 1e-9}  # exact counts: ratio == 1


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline; None when either is missing or the baseline is zero."""
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


def median(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def paired_ratios(with_values: Sequence[float], without_values: Sequence[float]) -> list[float]:
    """Per-round ratios of alternating rounds (round i with / round i without)."""
    out = []
    for w, wo in zip(with_values, without_values, strict=False):
        r = ratio(w, wo)
        if r is not None:
            out.append(r)
    return out


@dataclass(frozen=True)
class Target:
    op: str  # ">=" or "<="
    threshold: float
    on: str = "ratio"  # "ratio" or "value": which number the target is about

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"target op must be one of {sorted(OPS)}, not {self.op!r}")
        if self.on not in ("ratio", "value"):
            raise ValueError(f"target 'on' must be 'ratio' or 'value', not {self.on!r}")

    def met(self, value: float | None, ratio_: float | None) -> bool | None:
        x = ratio_ if self.on == "ratio" else value
        return None if x is None else OPS[self.op](x, self.threshold)

    def text(self, unit: str) -> str:
        if self.on == "ratio":
            return f"ratio {self.op} {self.threshold:g}"
        return f"{self.op} {self.threshold:g} {unit}".strip()


@dataclass(frozen=True)
class Figure:
    """One measured number, its same-run baseline and (optionally) its target."""

    group: str
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    target: Target | None = None
    note: str = ""
    # Why the value alone cannot decide the target, and the verdict that forces instead:
    # (reason, False) NOT met, e.g. spans lost at export although every record was made;
    # (reason, None) not measured, e.g. the load generator did not reach the asked rate.
    overrule: tuple[str, bool | None] | None = None
    ratio: float | None = field(init=False, default=None)
    met: bool | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        r = ratio(self.value, self.baseline)
        object.__setattr__(self, "ratio", r)
        met = None if self.target is None else self.target.met(self.value, r)
        if self.target is not None and self.overrule is not None:
            met = self.overrule[1]
        object.__setattr__(self, "met", met)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target"] = None if self.target is None else {
            **asdict(self.target), "text": self.target.text(self.unit)}
        return d


def fmt(x: float | None, digits: int = 3) -> str:
    """Numbers for humans: thousands separators for large values, 3 significant digits else."""
    if x is None:
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if x == int(x):
        return str(int(x))
    return f"{x:.{digits}g}"


def verdict(f: Figure) -> str:
    if f.target is None:
        return "-"
    if f.met is None:
        return "not measured"
    return "met" if f.met else "NOT met"


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def markdown_table(figures: Sequence[Figure]) -> str:
    rows = ["| group | figure | value | baseline | ratio | target | verdict | note |",
            "|---|---|---|---|---|---|---|---|"]
    for f in figures:
        base = "-" if f.baseline is None else f"{fmt(f.baseline)} {f.unit} ({f.baseline_label})"
        rows.append("| " + " | ".join(_cell(c) for c in (
            f.group, f.name, f"{fmt(f.value)} {f.unit}".strip(), base,
            "-" if f.ratio is None else f"{f.ratio:.3f}",
            "-" if f.target is None else f.target.text(f.unit), verdict(f),
            f.note if f.overrule is None else f"{f.note}; {f.overrule[0]}")) + " |")
    return "\n".join(rows)


def summary_markdown(meta: dict[str, Any], figures: Sequence[Figure],
                     errors: dict[str, str], notes: Sequence[str] = ()) -> str:
    """The generated part of docs/benchmarks.md."""
    lines = [
        f"Run: {meta.get('date', '?')}, mode `{meta.get('mode', '?')}`, "
        f"{meta.get('duration_s', '?')} s wall.",
        f"Host: kernel {meta.get('kernel', '?')}, CPU {meta.get('cpu', '?')} "
        f"({meta.get('cpus', '?')} cores), {meta.get('memory_gib', '?')} GiB RAM, "
        f"Python {meta.get('python', '?')}; load average at start "
        f"{meta.get('loadavg_at_start', '?')}.",
        "",
    ]
    met = sum(1 for f in figures if f.met is True)
    missed = [f for f in figures if f.met is False]
    with_target = sum(1 for f in figures if f.target is not None)
    unmeasured = [f for f in figures if f.target is not None and f.met is None]
    lines.append(f"Targets: {met} of {with_target} met"
                 + (f"; not met: {', '.join(f'{f.group}/{f.name}' for f in missed)}"
                    if missed else "")
                 + (f"; not measured: {', '.join(f'{f.group}/{f.name}' for f in unmeasured)}"
                    if unmeasured else "") + ".")
    lines += ["", markdown_table(figures)]
    if errors:
        lines += ["", "Benchmarks that could not run:", ""]
        lines += [f"- `{k}`: {_cell(v)}" for k, v in sorted(errors.items())]
    if notes:
        lines += ["", "Notes from this run:", ""]
        lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


BEGIN = "<!-- bench:begin (generated by python -m bench.run; edits here are overwritten) -->"
END = "<!-- bench:end -->"


def splice(doc: str, generated: str) -> str:
    """Replace the generated block of a document, or append one when it has none."""
    block = f"{BEGIN}\n{generated.rstrip()}\n{END}"
    start, end = doc.find(BEGIN), doc.find(END)
    if start == -1 or end == -1 or end < start:
        return doc.rstrip() + "\n\n" + block + "\n"
    return doc[:start] + block + doc[end + len(END):]

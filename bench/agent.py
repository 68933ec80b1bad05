"""The real agent as a subprocess: `python -m otelpeers run --print-flows --ready-file F`.

The bench measures the product as users run it. Flows go to a file (one JSON line each);
the stop summary on stderr gives events, flows and kernel drops.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.host import child_pids, tree_cpu_seconds, tree_pss_bytes, tree_rss_bytes

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0
LOCK_PATH = "/run/otelpeers.lock"  # the agent's one-per-host lock (otelpeers.kernel.loader)


def wait_for_lock(timeout: float = 300.0) -> float:
    """Wait until no other agent (a test run, say) holds the host lock; returns seconds waited.

    Another agent would also skew every figure, so waiting is right, not only convenient.
    """
    t0 = time.monotonic()
    while True:
        try:
            fd = os.open(LOCK_PATH, os.O_RDONLY)
        except FileNotFoundError:
            return time.monotonic() - t0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return time.monotonic() - t0
        except BlockingIOError:
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"another otelpeers agent held {LOCK_PATH} for "
                                   f"{timeout:.0f} s; stop it and rerun") from None
            time.sleep(0.5)
        finally:
            os.close(fd)

_SUMMARY = re.compile(
    r"stopped after (?P<events>\d+) events; (?P<flows>\d+) flows; kernel drops: "
    r"(?P<drops>\{.*?\}|\d+); decode errors: (?P<decode>\d+)"
    r"(?:; spans exported: (?P<exported>\d+), failed: (?P<failed>\d+), "
    r"dropped: (?P<dropped>\d+))?")


@dataclass(frozen=True)
class AgentSummary:
    events: int
    flows: int
    kernel_drops: dict[str, int]
    decode_errors: int
    # What the span exporter did with the flows and lookups (None: an agent that did not say)
    spans_exported: int | None = None
    spans_failed: int | None = None
    spans_dropped: int | None = None

    @property
    def drops_total(self) -> int:
        return sum(self.kernel_drops.values())


def parse_summary(stderr: str) -> AgentSummary | None:
    """The agent's last 'stopped after ...' line, or None when it never printed one."""
    matches = list(_SUMMARY.finditer(stderr))
    if not matches:
        return None
    m = matches[-1]
    drops = m["drops"]
    if drops.isdigit():  # the total only
        parsed = {"total": int(drops)} if int(drops) else {}
    else:
        parsed = ast.literal_eval(drops)
    spans = [None if m[k] is None else int(m[k]) for k in ("exported", "failed", "dropped")]
    return AgentSummary(int(m["events"]), int(m["flows"]),
                        {str(k): int(v) for k, v in parsed.items()}, int(m["decode"]), *spans)


PROGRAM_CACHE = "progcache"


def has_program_cache(root: Path) -> bool:
    """Whether the agent in root knows kernel.program_cache (older checkouts, compared with
    --agent-root, do not)."""
    with contextlib.suppress(OSError):
        return "program_cache" in (root / "otelpeers" / "config.py").read_text()
    return False


def cache_outcome(stderr_path: str) -> bool | None:
    """True: the agent loaded its programs from the cache; False: it compiled; None: it did
    not say (an agent without a program cache)."""
    with contextlib.suppress(OSError):
        text = Path(stderr_path).read_text(errors="replace")
        if "sensors loaded from the program cache" in text:
            return True
        if "sensors compiled" in text:
            return False
    return None


def config_yaml(files_dir: str, kernel: dict[str, Any] | None = None,
                flows: dict[str, Any] | None = None,
                detect: dict[str, Any] | None = None) -> str:
    """A bench config: OTLP JSON files into a scratch directory, plus size overrides."""
    lines = ["export:", "  live_view: false", "  files:", f"    directory: {json.dumps(files_dir)}"]
    for section, values in (("kernel", kernel), ("flows", flows), ("detect", detect)):
        if values:
            lines.append(f"{section}:")
            lines += [f"  {k}: {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class FlowCount:
    """What a --print-flows file says about one kind of flow."""

    records: int = 0  # per-connection records (summary records not included)
    complete: int = 0  # of which complete
    summarized: int = 0  # connections that summary records stand for (their own records lost)
    summary_records: int = 0

    @property
    def connections(self) -> int:
        """Every connection the agent accounted for: its own record, or a summary's count."""
        return self.records + self.summarized


def count_flows(path: Path, pred: Callable[[dict[str, Any]], bool]) -> FlowCount:
    """Flows matching pred in a --print-flows file; bad lines are skipped."""
    n = complete = summarized = summaries = 0
    with contextlib.suppress(FileNotFoundError), path.open() as f:
        for line in f:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if not pred(d):
                continue
            if d.get("summary"):
                summaries += 1
                summarized += int(d["summary"])
            else:
                n += 1
                complete += bool(d.get("complete"))
    return FlowCount(n, complete, summarized, summaries)


@dataclass
class AgentProc:
    workdir: Path
    kernel: dict[str, Any] = field(default_factory=dict)
    flows: dict[str, Any] = field(default_factory=dict)
    # detection's learned baselines go to the scratch directory, not /var/lib/otelpeers
    detect: dict[str, Any] = field(default_factory=dict)
    name: str = "agent"
    root: Path = REPO  # the checkout whose agent runs (python -m otelpeers from there)
    p: subprocess.Popen | None = None
    startup_s: float | None = None
    cached: bool | None = None  # programs from the program cache (None: the agent did not say)
    summary: AgentSummary | None = None
    stderr_tail: str = ""

    @property
    def flows_path(self) -> Path:
        return self.workdir / f"{self.name}.flows.jsonl"

    @property
    def pid(self) -> int:
        assert self.p is not None
        return self.p.pid

    def start(self) -> float:
        """Start the agent; returns seconds from process start to the ready file."""
        for attempt in range(3):
            wait_for_lock()
            try:
                return self._start_once()
            except RuntimeError as exc:
                # Lost a race for the host lock to another agent: wait for it again.
                if "another otelpeers agent" not in str(exc) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> float:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / f"{self.name}.yaml"
        detect = {"state_dir": str(self.workdir / f"{self.name}-state")} | self.detect
        kernel = dict(self.kernel)
        if has_program_cache(self.root):  # one per bench run: its first start compiles
            kernel = {"program_cache": str(self.workdir / PROGRAM_CACHE)} | kernel
        cfg.write_text(config_yaml(str(self.workdir / f"{self.name}-otlp"), kernel,
                                   self.flows, detect))
        ready = self.workdir / f"{self.name}.ready"
        ready.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self._out = self.flows_path.open("w")
        self._err = (self.workdir / f"{self.name}.stderr").open("w+")
        t0 = time.monotonic()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "otelpeers", "run", "--config", str(cfg), "--no-live-view",
             "--print-flows", "--ready-file", str(ready)],
            cwd=self.root, stdout=self._out, stderr=self._err, env=env, start_new_session=True)
        deadline = t0 + READY_TIMEOUT_S
        while not ready.exists():
            if self.p.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"agent did not get ready: {self.stderr_tail[-800:]}")
            time.sleep(0.01)
        self.startup_s = time.monotonic() - t0
        self.cached = cache_outcome(self._err.name)
        return self.startup_s

    def rss(self) -> int | None:
        """VmRSS of the agent and every process it started (span export runs in one)."""
        main, children = tree_rss_bytes(self.pid)
        return None if main is None else main + children

    def pss(self) -> int | None:
        """Proportional set size of the agent and its processes (shared pages once)."""
        return tree_pss_bytes(self.pid)

    def rss_split(self) -> tuple[int | None, int]:
        """(the agent process, its children)."""
        return tree_rss_bytes(self.pid)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The agent and every process it started stopped (SIGSTOP), its programs still
        attached: what the kernel side costs alone. Continued on the way out, whatever
        happened meanwhile."""
        pids = [self.pid, *child_pids(self.pid)]
        stopped: list[int] = []
        try:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
            yield
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def wait_idle(self, quiet_s: float = 1.0, timeout: float = 60.0) -> float:
        """Wait until the agent's CPU time (its children's included: span export runs in
        one) stops growing for quiet_s (it has caught up)."""
        t0 = time.monotonic()
        last = tree_cpu_seconds(self.pid)
        quiet_since = time.monotonic()
        while time.monotonic() - t0 < timeout:
            time.sleep(0.25)
            now = tree_cpu_seconds(self.pid)
            if now is None:
                break
            if last is not None and now - last > 0.02:  # more than 8% of a core
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                break
            last = now
        return time.monotonic() - t0

    def stop(self, timeout: float = 120.0) -> AgentSummary | None:
        """SIGINT (the agent drains and detaches), SIGKILL if it does not end in time."""
        if self.p is None or self._out.closed:  # not started, or already stopped
            return self.summary
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGINT)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=10)
        self._out.close()
        self._err.seek(0)
        text = self._err.read()
        self._err.close()
        self.stderr_tail = text[-4000:]
        self.summary = parse_summary(text)
        return self.summary


@contextlib.contextmanager
def running(workdir: Path, name: str, **kw: Any) -> Iterator[AgentProc]:
    a = AgentProc(workdir, name=name, **kw)
    a.start()
    try:
        yield a
    finally:
        a.stop()

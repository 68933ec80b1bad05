"""Real observability software for end-to-end tests, installed by scripts/test-backends.sh.

- VictoriaMetrics (OTLP metrics in, PromQL out), started per test on a free loopback port
  with its own storage directory, stopped and removed afterwards;
- Prometheus (bookworm 2.42; for scrape tests), headless Chromium, and the Grafana schema
  checker (npm @grafana/schema + typescript): located, not started.

A backend that is missing skips the test on a developer machine and FAILS it when CI=true
(a CI run that skipped these would prove nothing). The fix is always the same:
`sudo scripts/test-backends.sh` (setup.sh runs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from otlp_sink import free_port

TEST_ROOT = Path(os.environ.get("OTELPEERS_TEST_ROOT", "/opt/otelpeers-test"))
VICTORIA_METRICS = TEST_ROOT / "victoria-metrics" / "usr" / "bin" / "victoria-metrics"
PROMETHEUS = TEST_ROOT / "prometheus" / "usr" / "bin" / "prometheus"
GRAFANA_SCHEMA = TEST_ROOT / "grafana-schema"
CHROMIUM = Path("/usr/bin/chromium")
FIX = "install it with `sudo scripts/test-backends.sh` (part of `sudo make setup`)"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def backend_missing(what: str) -> None:
    """Skip, or fail when CI=true: the backend the test needs is not installed."""
    msg = f"{what} is not installed: {FIX}"
    if in_ci():
        pytest.fail(f"{msg} (CI=true turns this skip into a failure)", pytrace=False)
    pytest.skip(msg)


def require(path: Path, what: str) -> Path:
    if not (path.exists() and os.access(path, os.X_OK)):
        backend_missing(f"{what} ({path})")
    return path


class PromQLError(RuntimeError):
    """The store answered a query with an error (bad PromQL, unknown function, ...)."""


class VictoriaMetrics:
    """A single-node VictoriaMetrics on 127.0.0.1:<free port>, data in `data_dir`.

    `-opentelemetry.usePrometheusNaming` is on by default: OTLP metrics then get the names
    Prometheus' own OTLP receiver and Mimir give them (otelpeers_flow_bytes_total, label
    process_executable_name), so one dashboard works on all three; without it
    VictoriaMetrics keeps the dotted OTLP names. `-search.latencyOffset=0` makes samples
    queryable as soon as they are flushed (flush()), instead of 30 s later.
    """

    READY_TIMEOUT_S = 30.0

    def __init__(self, data_dir: Path, *, prometheus_naming: bool = True,
                 extra_args: tuple[str, ...] = ()) -> None:
        binary = require(VICTORIA_METRICS, "VictoriaMetrics")
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        args = [str(binary), f"-storageDataPath={data_dir}",
                f"-httpListenAddr=127.0.0.1:{self.port}",
                "-search.latencyOffset=0", "-search.disableCache",
                "-memory.allowedPercent=10", "-loggerLevel=WARN", *extra_args]
        if prometheus_naming:
            args.append("-opentelemetry.usePrometheusNaming")
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def otlp_metrics_endpoint(self) -> str:
        return f"{self.url}/opentelemetry/v1/metrics"

    def _wait_ready(self) -> None:
        """Until /health answers OK. The port opens before storage is ready, so /health is
        the event; each failed try is answered (refused) at once, so this does not spin."""
        deadline = time.monotonic() + self.READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"victoria-metrics exited with {self.proc.returncode}; "
                                   f"log: {self.log_path}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200 and r.read().strip() == b"OK":
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"victoria-metrics not healthy after "
                                   f"{self.READY_TIMEOUT_S} s; log: {self.log_tail()}")
            time.sleep(0.05)  # nothing to block on until the listener exists

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                body = r.read()
        except urllib.error.HTTPError as exc:
            raise PromQLError(f"{path} {params}: HTTP {exc.code}: "
                              f"{exc.read().decode(errors='replace')[:500]}") from None
        if path.startswith("/internal/"):
            return body
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise PromQLError(f"{path} {params}: {doc}")
        return doc["data"]

    def flush(self) -> None:
        """Make every sample received so far visible to queries (VictoriaMetrics buffers
        recent samples in memory for up to a second)."""
        self._get("/internal/force_flush")

    def query(self, promql: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query; the result vector (or [] for none). Matrix/scalar results are
        returned as the API gives them."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        result = data["result"]
        if data.get("resultType") == "scalar":
            return [{"metric": {}, "value": result}]
        return result

    def wait_for(self, promql: str, ok: Callable[[list[dict[str, Any]]], bool], *,
                 timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Flush and run `promql` until ok(result); returns that result.

        A sample is queryable only once VictoriaMetrics has indexed its series, which for a
        series it has never seen takes up to a second or two even after a flush (measured:
        0.7 s); a test waits for what it pushed to show up rather than for a fixed time.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            self.flush()
            result = self.query(promql)
            if ok(result):
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"after {timeout_s} s the store still answers {promql!r} "
                                   f"with {result!r:.600}")
            time.sleep(0.05)  # the store offers nothing to block on until then

    def wait_for_samples(self, n: int, *, timeout_s: float = 30.0) -> None:
        """Until the store holds exactly n samples of the last hour: everything a test
        pushed (ContractMetrics.samples_sent) is visible, and nothing else is there."""
        q = 'sum(count_over_time({__name__=~".+"}[1h]))'
        got = self.wait_for(q, lambda r: bool(r) and float(r[0]["value"][1]) >= n,
                            timeout_s=timeout_s)
        have = int(float(got[0]["value"][1]))
        if have != n:
            raise AssertionError(f"the store holds {have} samples, {n} were pushed")

    def metric_names(self) -> list[str]:
        return sorted(self._get("/api/v1/label/__name__/values"))

    def label_values(self, label: str, selector: str | None = None) -> list[str]:
        """What Grafana's label_values(selector, label) variable query lists."""
        params = {"match[]": selector} if selector else None
        return sorted(self._get(f"/api/v1/label/{urllib.parse.quote(label)}/values", params))

    def series(self, match: str) -> list[dict[str, str]]:
        return self._get("/api/v1/series", {"match[]": match})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    vm = VictoriaMetrics(tmp_path / "vmdata")
    try:
        yield vm
    finally:
        vm.stop()  # the log stays in tmp_path for post-mortems


def prometheus_binary() -> Path:
    """Debian's Prometheus 2.42 (bookworm)."""
    return require(PROMETHEUS, "Prometheus")


class Prometheus:
    """Prometheus 2.42 on 127.0.0.1:<free port> with its own TSDB in `data_dir`.

    `scrape_configs` goes into its configuration as is (a list of Prometheus scrape_config
    dicts; none by default). Readiness is /-/ready answering 200.
    """

    READY_TIMEOUT_S = 30.0

    def __init__(self, data_dir: Path, scrape_configs: list[dict[str, Any]] | None = None,
                 *, scrape_interval_s: float = 1.0) -> None:
        binary = prometheus_binary()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = data_dir / "prometheus.yml"
        # JSON is YAML: no YAML writer needed for a generated config.
        config.write_text(json.dumps({
            "global": {"scrape_interval": f"{round(scrape_interval_s * 1000)}ms",
                       "evaluation_interval": f"{round(scrape_interval_s * 1000)}ms"},
            "scrape_configs": scrape_configs or []}))
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(binary), f"--config.file={config}", f"--storage.tsdb.path={data_dir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus not ready after {self.READY_TIMEOUT_S} s")
            time.sleep(0.05)  # nothing to block on until the listener exists

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query; PromQLError when Prometheus rejects it (e.g. a parse error)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                doc = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            raise PromQLError(f"{promql}: HTTP {exc.code}: "
                              f"{exc.read().decode(errors='replace')[:500]}") from None
        if doc.get("status") != "success":
            raise PromQLError(f"{promql}: {doc}")
        return doc["data"]["result"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    """An empty Prometheus (no scrape targets)."""
    p = Prometheus(tmp_path / "promdata")
    try:
        yield p
    finally:
        p.stop()


def chromium_binary() -> Path:
    return require(CHROMIUM, "Chromium (Debian package chromium)")


def tsc_binary() -> Path:
    return require(GRAFANA_SCHEMA / "node_modules" / ".bin" / "tsc",
                   "the Grafana schema checker (npm @grafana/schema + typescript)")

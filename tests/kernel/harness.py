"""Kernel test harness: the real sensors in-process, test network namespaces, peers."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from otelpeers.config import Config
from otelpeers.dns.transactions import DnsTransaction
from otelpeers.events import Event
from otelpeers.flows import FlowRecord
from otelpeers.kernel.loader import KernelSensors
from otelpeers.kernel.source import KernelSource

PEERS = str(Path(__file__).with_name("peers.py"))
PYTHON = sys.executable


class Agent:
    """Sensors + source + pipeline in a background thread, collecting flows and events."""

    def __init__(self, config: Config | None = None) -> None:
        from otelpeers.assembly import assemble

        config = config or Config()
        # Short intervals so idle expiry and volume reads happen within a test.
        self.config = replace(config, kernel=replace(config.kernel, stats_interval_s=0.5))
        self.records: list[FlowRecord] = []
        self.events: list[Event] = []
        self.transactions: list[DnsTransaction] = []
        self._cond = threading.Condition()
        self.sensors = KernelSensors(self.config)
        self.sensors.start()
        try:
            self.source = KernelSource(self.sensors, stats_interval_s=0.5)
            # The agent's own assembly, minus export: what `otelpeers run` builds.
            self.assembled = assemble(self.config, live_host=True, export=False,
                                      extra_sinks=[self],
                                      on_transaction=self.transactions.append)
            self.pipeline = self.assembled.pipeline
            self.process_table = self.assembled.process_table
            self.dns = self.pipeline.dns
            self._thread = threading.Thread(target=self._loop, name="agent", daemon=True)
            self._thread.start()
        except BaseException:
            self.sensors.close()
            raise

    def export_flows(self, records: Sequence[FlowRecord]) -> None:
        self.records.extend(records)  # called with self._cond held

    def _loop(self) -> None:
        next_tick = 0
        for batch in self.source.batches(poll_timeout_ms=50):
            with self._cond:
                self.events.extend(batch)
                self.pipeline.handle(batch)
                if time.monotonic_ns() >= next_tick:
                    self.pipeline.tick(time.time_ns())
                    next_tick = time.monotonic_ns() + 200_000_000
                self._cond.notify_all()

    def wait_flow(self, pred: Callable[[FlowRecord], bool], timeout: float = 15.0) -> FlowRecord:
        with self._cond:
            ok = self._cond.wait_for(lambda: any(pred(r) for r in self.records), timeout)
            if not ok:
                raise AssertionError(f"no matching flow within {timeout}s; flows seen: "
                                     f"{[self._brief(r) for r in self.records][-20:]}")
            return next(r for r in self.records if pred(r))

    def wait_event(self, pred: Callable[[Event], bool], timeout: float = 15.0) -> Event:
        with self._cond:
            ok = self._cond.wait_for(lambda: any(pred(e) for e in self.events), timeout)
            if not ok:
                raise AssertionError(f"no matching event within {timeout}s")
            return next(e for e in self.events if pred(e))

    def wait_txn(self, pred: Callable[[DnsTransaction], bool],
                 timeout: float = 15.0) -> DnsTransaction:
        with self._cond:
            ok = self._cond.wait_for(lambda: any(pred(t) for t in self.transactions), timeout)
            if not ok:
                seen = [(t.question_name, t.qtype, t.rcode) for t in self.transactions]
                raise AssertionError(f"no matching DNS transaction within {timeout}s: {seen}")
            return next(t for t in self.transactions if pred(t))

    @staticmethod
    def _brief(r: FlowRecord) -> str:
        comm = r.owner.comm if r.owner else "?"
        return (f"{comm} {r.transport} {r.direction.name} {r.local_addr}:{r.local_port}->"
                f"{r.peer_addr}:{r.peer_port} {r.close_reason.value}")

    def stop(self) -> None:
        self.source.stop()
        self._thread.join(timeout=10)
        with self._cond:
            self.pipeline.finish(time.time_ns())
        self.sensors.close()


@dataclass(frozen=True)
class NetNs:
    name: str
    host_ip: str
    ns_ip: str
    host_ip6: str
    ns_ip6: str

    def cmd(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]


_counter = itertools.count(1)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def netns() -> Iterator[NetNs]:
    """A network namespace joined to this one by a veth pair (IPv4 and IPv6)."""
    n = (os.getpid() + next(_counter)) % 200 + 20
    name = f"otp-test-{os.getpid()}-{n}"
    host_if, ns_if = f"otph{n}", f"otpn{n}"
    ns = NetNs(name, f"10.231.{n}.1", f"10.231.{n}.2", f"fd00:231:{n}::1", f"fd00:231:{n}::2")
    _ip("netns", "add", name)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", name)
        _ip("addr", "add", f"{ns.host_ip}/24", "dev", host_if)
        _ip("addr", "add", f"{ns.host_ip6}/64", "dev", host_if, "nodad")
        _ip("link", "set", host_if, "up")
        _ip("-n", name, "addr", "add", f"{ns.ns_ip}/24", "dev", ns_if)
        _ip("-n", name, "addr", "add", f"{ns.ns_ip6}/64", "dev", ns_if, "nodad")
        _ip("-n", name, "link", "set", ns_if, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield ns
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Proc:
    """A peer process; its first stdout line "READY <port>" is waited for, not slept on."""

    def __init__(self, argv: list[str]) -> None:
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        self.port = 0

    def ready(self, timeout: float = 15.0) -> int:
        line = self._line(timeout)
        if not line.startswith("READY"):
            raise AssertionError(f"peer did not get ready: {line!r} {self.p.stderr.read()}")
        self.port = int(line.split()[1])
        return self.port

    def _line(self, timeout: float) -> str:
        result: list[str] = []
        t = threading.Thread(target=lambda: result.append(self.p.stdout.readline()))
        t.start()
        t.join(timeout)
        return result[0].strip() if result else ""

    def finish(self, timeout: float = 15.0) -> str:
        out, err = self.p.communicate(timeout=timeout)
        if self.p.returncode != 0:
            raise AssertionError(f"peer failed ({self.p.returncode}): {err}")
        return out

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def peer(*args: str, ns: NetNs | None = None) -> Proc:
    argv = [PYTHON, PEERS, *args]
    return Proc(ns.cmd(*argv) if ns else argv)


# ---- a real DNS server in a test namespace -------------------------------------------------
CHAIN = ["www.otp.test", "a.otp.test", "b.otp.test", "c.otp.test"]


@dataclass(frozen=True)
class DnsHost:
    ns: NetNs
    resolv_conf: Path


DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


@contextlib.contextmanager
def running_dnsmasq(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    """Start dnsmasq (argv with --no-daemon --log-facility=-) and wait for its "started"
    line, which it logs once its socket is bound; killed on exit."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started = threading.Event()

        def watch() -> None:
            for line in p.stdout:
                if "started" in line:
                    started.set()

        threading.Thread(target=watch, daemon=True).start()
        assert started.wait(15), "dnsmasq did not start"
        yield p
    finally:
        p.kill()
        p.wait()


@contextlib.contextmanager
def dnsmasq(ns: NetNs, tmp: Path) -> Iterator[None]:
    upstream = peer("dns-servfail", "127.0.0.9", "5353", ns=ns)
    upstream.ready()
    args = ns.cmd(DNSMASQ, "--no-daemon",
                  "--log-facility=-", "--no-resolv", "--no-hosts", "--bind-interfaces",
                  f"--listen-address={ns.ns_ip}", "--port=53", "--user=root",
                  f"--pid-file={tmp / 'dnsmasq.pid'}",
                  f"--host-record=c.otp.test,{ns.ns_ip},{ns.ns_ip6}",
                  "--cname=b.otp.test,c.otp.test", "--cname=a.otp.test,b.otp.test",
                  "--cname=www.otp.test,a.otp.test", "--local=/otp.test/",
                  "--server=/fail.test/127.0.0.9#5353", "--log-queries")
    try:
        with running_dnsmasq(args):
            yield
    finally:
        upstream.kill()


def with_resolver(host: DnsHost, *argv: str) -> list[str]:
    """Run argv with /etc/resolv.conf replaced in a private mount namespace only."""
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
            str(host.resolv_conf), *argv]




@contextlib.contextmanager
def dns_environment(tmp: Path) -> Iterator[DnsHost]:
    """A test namespace with dnsmasq on its address, and a resolv.conf pointing there."""
    with netns() as ns, dnsmasq(ns, tmp):
        conf = tmp / "resolv.conf"
        conf.write_text(f"nameserver {ns.ns_ip}\noptions timeout:2 attempts:1\n")
        yield DnsHost(ns, conf)

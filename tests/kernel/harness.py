"""Kernel test harness: the real sensors in-process, test network namespaces, peers."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from otelpeers.config import Config
from otelpeers.detect.model import Detection
from otelpeers.dns.transactions import DnsTransaction
from otelpeers.drive import WallClock, drive
from otelpeers.events import Event, TcpInfo
from otelpeers.flows import FlowRecord
from otelpeers.kernel.loader import KernelSensors
from otelpeers.kernel.source import KernelSource
from otelpeers.pipeline import Outputs

PEERS = str(Path(__file__).with_name("peers.py"))
PYTHON = sys.executable


class Agent:
    """The agent's own pipeline (build_agent, minus export) driven by otelpeers.drive in a
    background thread with the real sensors, collecting flows, events, DNS lookups and
    detections for the test to wait on."""

    def __init__(self, config: Config | None = None, *, tick_ns: int = 200_000_000) -> None:
        from otelpeers.agent import build_agent

        config = config or Config()
        # Short intervals so idle expiry and volume reads happen within a test.
        self.config = replace(config, kernel=replace(config.kernel, stats_interval_s=0.5))
        self.records: list[FlowRecord] = []
        self.events: list[Event] = []
        self.transactions: list[DnsTransaction] = []
        self.detections: list[Detection] = []
        self._cond = threading.Condition()
        self.tick_ns = tick_ns
        self.sensors = KernelSensors(self.config)
        self.sensors.start()
        try:
            self.source = KernelSource(self.sensors, stats_interval_s=0.5)
            self.built = build_agent(self.config, live_host=True, export=False,
                                     extra_sinks=[_Collector(self)])
            self.built.pipeline.taps.append(self._tap)
            self.built.sources.append(self.source)
            self.pipeline = self.built.pipeline
            self.process_table = self.built.process_table
            self.dns = self.built.stage("dns")
            self._thread = threading.Thread(target=self._loop, name="agent", daemon=True)
            self._thread.start()
        except BaseException:
            self.sensors.close()
            raise

    def _tap(self, batch: Sequence[Event]) -> None:
        self.events.extend(batch)

    def _loop(self) -> None:
        def wake() -> None:
            with self._cond:
                self._cond.notify_all()

        drive(self.source, self.pipeline, WallClock(self.tick_ns), after_batch=wake)

    def _wait(self, what: str, found: Callable[[], object | None], timeout: float) -> object:
        """Wait until found() returns something (checked after every pipeline round)."""
        with self._cond:
            hit = self._cond.wait_for(found, timeout)
        if not hit:
            raise AssertionError(f"no matching {what} within {timeout}s")
        return hit

    def wait_flow(self, pred: Callable[[FlowRecord], bool], timeout: float = 15.0) -> FlowRecord:
        try:
            return self._wait("flow", lambda: next((r for r in list(self.records)
                                                    if pred(r)), None), timeout)
        except AssertionError:
            raise AssertionError(f"no matching flow within {timeout}s; flows seen: "
                                 f"{[self._brief(r) for r in self.records][-20:]}") from None

    def wait_event(self, pred: Callable[[Event], bool], timeout: float = 15.0) -> Event:
        return self._wait("event", lambda: next((e for e in list(self.events) if pred(e)),
                                                None), timeout)

    def wait_txn(self, pred: Callable[[DnsTransaction], bool],
                 timeout: float = 15.0) -> DnsTransaction:
        try:
            return self._wait("DNS transaction", lambda: next(
                (t for t in list(self.transactions) if pred(t)), None), timeout)
        except AssertionError:
            seen = [(t.question_name, t.qtype, t.rcode) for t in self.transactions]
            raise AssertionError(f"no matching DNS transaction within {timeout}s: "
                                 f"{seen}") from None

    def wait_detection(self, pred: Callable[[Detection], bool],
                       timeout: float = 15.0) -> Detection:
        try:
            return self._wait("detection", lambda: next(
                (d for d in list(self.detections) if pred(d)), None), timeout)
        except AssertionError:
            seen = [(d.rule.name, d.actor.key, d.summary) for d in self.detections]
            raise AssertionError(f"no matching detection within {timeout}s: {seen}") from None

    @staticmethod
    def _brief(r: FlowRecord) -> str:
        comm = r.owner.comm if r.owner else "?"
        return (f"{comm} {r.transport} {r.direction.name} {r.local_addr}:{r.local_port}->"
                f"{r.peer_addr}:{r.peer_port} {r.close_reason.value}")

    def stop(self) -> None:
        """Stop the source; the loop finishes the pipeline (open flows end) and returns."""
        self.source.stop()
        self._thread.join(timeout=10)
        self.built.close()
        self.sensors.close()


def assert_tcp_lifetime(tcp: TcpInfo | None, sent: int, received: int) -> None:
    """The kernel's own totals of a whole connection (before the agent too): the payload each
    way, plus the SYN and FIN that TCP counts in sequence space."""
    assert tcp is not None, "no TCP totals"
    assert 0 <= tcp.bytes_acked - sent <= 2, (tcp, sent)
    assert 0 <= tcp.bytes_received - received <= 2, (tcp, received)


class _Collector:
    """A sink keeping what the test waits for."""

    name = "test_collector"

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def consume(self, out: Outputs) -> None:
        a = self.agent
        a.records.extend(out.flows)
        a.transactions.extend(lk.txn for lk in out.dns)
        a.detections.extend(out.detections)

    def counters(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


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


@dataclass(frozen=True)
class TcpExchange:
    port: int
    client: Proc
    server: Proc
    client_said: str  # the client peer's last line: "DONE <bytes it received>"


def tcp_exchange(addr: str, send: int, reply: int, ns: NetNs | None = None) -> TcpExchange:
    """One real TCP connection, both peers finished: a server peer on addr (in ns when
    given), a client peer in this namespace that sends `send` bytes and reads `reply`."""
    server = peer("tcp-server", addr, str(send), str(reply), ns=ns)
    port = server.ready()
    client = peer("tcp-client", addr, str(port), str(send), str(reply))
    said = client.finish().strip()
    server.finish()
    return TcpExchange(port, client, server, said)


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

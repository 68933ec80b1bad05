"""The port_scan rule through the real engine: vertical and horizontal scans, refused and
timed-out probes, raw-socket SYN scans; crawlers, retries and slow trickles stay quiet."""

from __future__ import annotations

import ipaddress
import random
import socket
from dataclasses import fields, replace

from otelpeers.config import parse_config
from otelpeers.detect.engine import Engine
from otelpeers.detect.model import ActorKind, EvidenceKind
from otelpeers.detect.rules.local import is_local
from otelpeers.detect.rules.port_scan import PortScan, covering_cidr
from otelpeers.events import Counters
from otelpeers.flows import CloseReason, FlowRecord
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import T0, flow, owner

S = 10**9
TARGET = "10.20.0.5"
_ids = iter(range(0x20000, 1 << 40))


def engine(rules: dict | None = None, **detect: object) -> Engine:
    cfg = parse_config({"detect": {**detect, "rules": {"port_scan": rules or {}}}}).detect
    return Engine(cfg, [PortScan])


def probe(t: float, host: str, port: int, result: str, *, comm: str = "nmap",
          transport: str = "tcp", zeek: bool = False, local: str = "10.20.0.2") -> FlowRecord:
    """One probe: answered (established), refused (RST back), timed_out (nothing back), or
    raw (a SYN sent from a raw socket: a flow with sock_type SOCK_RAW, nothing seen back)."""
    failed = result in ("refused", "timed_out")
    back = 0 if result in ("timed_out", "raw") else 1
    f = flow(f"{next(_ids):x}", peer=host, peer_port=port, transport=transport,
             proc=None if zeek else owner(999, comm), local=local,
             start_ns=T0 + int(t * S), duration_ns=1_000_000,
             counters=Counters(packets_out=1, bytes_out=60, payload_out=0,
                               packets_in=back * (1 if failed else 3), bytes_in=back * 40,
                               payload_in=0 if failed or result == "raw" else 100),
             close_reason=CloseReason.CONNECT_FAILED if failed else CloseReason.CLOSED)
    if result == "raw":
        f = replace(f, sock_type=socket.SOCK_RAW, tcp=None)
    return f


def run(e: Engine, flows: list[FlowRecord]) -> list:
    flows = sorted(flows, key=lambda f: f.start_ns)
    found = []
    for i in range(0, len(flows), 64):
        found += e.evaluate(Outputs(flows=flows[i:i + 64]))
    return found


def test_vertical_connect_scan_fires_once_with_its_evidence() -> None:
    e = engine()
    flows = [probe(i * 0.01, TARGET, port, "answered" if port in (22, 80) else "refused")
             for i, port in enumerate(range(1, 201))]
    ds = run(e, flows)
    assert len(ds) == 1  # grows past double within the dedup window: suppressed, counted
    d = ds[0]
    assert d.rule.name == "port_scan" and d.actor.key == "nmap" and d.actor.pid == 999
    assert d.peer is not None and d.peer.address == TARGET
    ev = d.evidence
    assert ev["kind"] == "vertical" and ev["refused"] >= 8 and ev["timed_out"] == 0
    assert ev["peers"] == (TARGET,) and len(ev["ports"]) <= 20 and not ev["raw_socket"]
    assert d.evidence_span is not None and d.evidence_span.kind == EvidenceKind.FLOW
    assert "vertical" in d.summary and "refused" in d.summary
    assert e.counters()["suppressed"] >= 1  # it fired again at 16, 32 ... refused ports


def test_horizontal_sweep_with_a_third_silent_is_a_scan() -> None:
    rng = random.Random(1)
    hosts = [f"203.0.113.{i}" for i in range(1, 91)]
    silent = set(rng.sample(hosts, 31))
    flows = [probe(i * 3.0, h, 80, "timed_out" if h in silent else "answered",
                   zeek=True, local="10.0.0.9") for i, h in enumerate(hosts)]
    ds = run(engine(), flows)
    assert len(ds) == 1
    d = ds[0]
    assert d.actor.kind == ActorKind.ADDRESS and d.actor.key == "10.0.0.9"
    ev = d.evidence
    assert ev["kind"] == "horizontal" and ev["ports"] == (80,)
    assert ev["timed_out"] >= 10 and ev["unanswered_share"] >= 0.25
    assert d.peer is not None and d.peer.port == 80 and d.peer.cidr is not None
    net = ipaddress.ip_network(d.peer.cidr)  # the hosts probed so far, nothing wider
    assert net.subnet_of(ipaddress.ip_network("203.0.113.0/24")) and net.prefixlen >= 25
    assert set(ev["peers"]) <= set(hosts) and len(ev["peers"]) <= 20
    assert all(ipaddress.ip_address(h) in net for h in ev["peers"])


def test_a_crawler_with_a_few_failures_is_not_a_scan() -> None:
    rng = random.Random(2)
    flows = []
    for i in range(600):  # 600 sites on 443 in an hour, 3 % failing
        x = rng.random()
        result = "timed_out" if x < 0.02 else "refused" if x < 0.03 else "answered"
        flows.append(probe(i * 6.0, f"198.51.{i // 250}.{i % 250 + 1}", 443, result,
                           comm="crawler"))
    assert run(engine(), flows) == []


def test_retries_to_one_port_and_a_few_closed_ports_are_not_a_scan() -> None:
    flows = [probe(i * 2.0, TARGET, 5432, "refused", comm="app") for i in range(100)]
    flows += [probe(300 + i, TARGET, port, "refused", comm="app") for i, port in
              enumerate((8080, 8443, 9000, 9090, 3000, 5000, 7000))]  # 7 + 5432: 8 ports
    assert run(engine({"min_ports": 9}), flows) == []
    assert len(run(engine(), flows)) == 1  # at the default of 8 ports it is one


def test_probes_slower_than_the_window_do_not_add_up() -> None:
    flows = [probe(i * 1800.0, TARGET, 1000 + i, "refused") for i in range(40)]  # 2 per hour
    assert run(engine(), flows) == []
    assert run(engine({"window_s": 86400.0}), flows)


def test_raw_socket_syn_scan_fires_although_replies_are_not_visible() -> None:
    flows = [probe(i * 0.001, TARGET, port, "raw") for i, port in enumerate(range(1, 101))]
    ds = run(engine(), flows)
    assert len(ds) == 1
    ev = ds[0].evidence
    assert ev["raw_socket"] and ev["unknown"] >= 8 and ev["refused"] + ev["timed_out"] == 0
    assert ev["replies"] == "not visible (raw socket)" and "raw socket" in ds[0].summary


def test_answered_wins_over_earlier_failures_of_the_same_target() -> None:
    e = engine()
    flows = []
    for i, port in enumerate(range(1, 21)):  # each port answers the retry a second later
        flows.append(probe(2 * i, TARGET, port, "timed_out", comm="app"))
        flows.append(probe(2 * i + 1, TARGET, port, "answered", comm="app"))
    assert run(e, flows) == []
    rule = e.rules[0][0]
    assert isinstance(rule, PortScan)
    (entry,) = [x for k, x in rule.entries.items() if k[1] == "v"]
    assert entry.counts == [20, 0, 0, 0]


def test_udp_sweep_without_answers_is_a_scan_and_local_peers_are_ignored() -> None:
    flows = [probe(i, f"192.0.2.{i}", 161, "timed_out", transport="udp") for i in range(1, 40)]
    ds = run(engine(), flows)
    assert len(ds) == 1 and ds[0].evidence["transport"] == "udp"
    local = [probe(i, "127.0.0.1", 1000 + i, "refused") for i in range(100)]
    assert run(engine(), local) == []
    assert is_local("ff02::1") and is_local("169.254.3.4") and not is_local("10.1.2.3")


def test_allow_lists_and_dedup_window() -> None:
    flows = [probe(i * 0.01, TARGET, port, "refused") for i, port in enumerate(range(1, 50))]
    assert run(engine({"allow": {"executables": ["nmap"]}}), flows) == []
    assert run(engine(allow={"peer_cidrs": ["10.20.0.0/16"]}), flows) == []
    e = engine(dedup_window_s=60)
    later = [probe(120 + i * 0.01, TARGET, port, "refused") for i, port in
             enumerate(range(1000, 1400))]
    ds = run(e, flows + later)
    assert len(ds) == 2 and ds[1].evidence["refused"] > ds[0].evidence["refused"]


def test_covering_cidr() -> None:
    assert covering_cidr(["10.1.2.3", "10.1.2.200"]) == "10.1.2.0/24"
    assert covering_cidr(["10.1.2.3"]) == "10.1.2.3/32"
    assert covering_cidr(["10.1.2.3", "11.1.2.3"]) is None  # a /7: too wide to name
    assert covering_cidr(["1.2.3.4", "200.1.1.1"]) is None
    assert covering_cidr(["2001:db8::1", "2001:db8::ff"]) == "2001:db8::/120"
    assert covering_cidr(["10.0.0.1", "2001:db8::1"]) is None


def test_state_stays_bounded_under_a_million_unique_targets() -> None:
    cfg = parse_config({"detect": {"rules": {"port_scan": {
        "max_entries": 1000, "max_targets": 64}}}}).detect
    e = Engine(cfg, [PortScan])
    rule = e.rules[0][0]
    assert isinstance(rule, PortScan)
    base = probe(0, TARGET, 1, "timed_out")
    actor = e.actors.of_flow(base)
    assert actor is not None
    names = [f.name for f in fields(FlowRecord)]
    values = [getattr(base, n) for n in names]
    addr_at, port_at, start_at = (names.index("peer_addr"), names.index("peer_port"),
                                  names.index("start_ns"))
    for i in range(1_000_000):  # a new host and port every millisecond, all unanswered
        values[addr_at] = f"100.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        values[port_at] = 1 + i % 65535
        values[start_at] = T0 + i * 1_000_000
        rule.on_flow(actor, FlowRecord(*values))
    assert len(rule.entries) <= 1000
    assert all(len(x.targets) <= 64 for x in rule.entries.values())
    assert len(rule._answered) <= 1000
    assert e.counters()["port_scan.entries.state_evicted"] > 0

"""Synthetic Zeek traffic (bench.detect): determinism, readability, look-alikes, truth, scoring.

The generated logs go through the real Zeek reader, so these tests also exercise it on a
quarter of a million rows of TSV (and a JSON sample).
"""

from __future__ import annotations

import gzip
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the bench package

from bench.detect import generate as gen  # noqa: E402
from bench.detect.naive import internal_test, run_naive  # noqa: E402
from bench.detect.rita import bowley_score, mad_score, rita_beacons, score_pairs  # noqa: E402
from bench.detect.truth import Detection, GroundTruth, Incident, score  # noqa: E402
from otelpeers.detect.zeek import (  # noqa: E402
    ZeekConn,
    conn_from_row,
    iter_events_sorted,
    read_zeek,
)
from otelpeers.dns.transactions import DnsTransaction  # noqa: E402

S = 10**9
SEED = 5


@pytest.fixture(scope="module")
def data() -> gen.Dataset:
    return gen.generate(gen.small(SEED))


@pytest.fixture(scope="module")
def written(data: gen.Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    gen.write(data, out)
    return out


@pytest.fixture(scope="module")
def parsed(written: Path) -> tuple[list[ZeekConn], list[DnsTransaction]]:
    stats: list = []
    items = list(iter_events_sorted([written / "conn.log", written / "dns.log"], stats=stats))
    assert [s.bad_lines for s in stats] == [0, 0]
    conns = [i for i in items if isinstance(i, ZeekConn)]
    dns = [i for i in items if isinstance(i, DnsTransaction)]
    return conns, dns


@pytest.fixture(scope="module")
def pairs(parsed: tuple[list[ZeekConn], list[DnsTransaction]]) -> dict[tuple[str, str],
                                                                       list[ZeekConn]]:
    out: dict[tuple[str, str], list[ZeekConn]] = defaultdict(list)
    for c in parsed[0]:
        out[(c.record.local_addr, c.record.peer_addr)].append(c)
    return out


# ---- determinism and formats ---------------------------------------------------------


def test_same_seed_same_bytes(written: Path, tmp_path: Path) -> None:
    gen.write(gen.generate(gen.small(SEED)), tmp_path)
    for name in ("conn.log", "dns.log", "truth.json"):
        assert (tmp_path / name).read_bytes() == (written / name).read_bytes(), name


def sample(data: gen.Dataset, n: int = 3000) -> gen.Dataset:
    """Every DNS row and the first n connections: enough to check a format, and quick."""
    return gen.Dataset(data.conn[:n], data.dns, data.truth)


def test_gzip_and_json_output_is_deterministic(data: gen.Dataset, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    gen.write(sample(data), a, fmt="json", compress=True)
    gen.write(sample(data), b, fmt="json", compress=True)
    assert (a / "conn.log.gz").read_bytes() == (b / "conn.log.gz").read_bytes()
    assert gzip.decompress((a / "dns.log.gz").read_bytes()).startswith(b'{"ts":')


def test_files_are_ordered_by_end_time_like_zeek(written: Path) -> None:
    starts, ends = [], []
    with open(written / "conn.log") as f:
        for line in f:
            if not line.startswith("#"):
                parts = line.split("\t")
                starts.append(float(parts[0]))
                ends.append(starts[-1] + (0.0 if parts[8] == "-" else float(parts[8])))
    assert ends == sorted(ends)
    assert starts != sorted(starts)  # long connections are written late: readers must sort


def test_json_variant_reads_to_the_same_records(
        data: gen.Dataset, tmp_path: Path,
        parsed: tuple[list[ZeekConn], list[DnsTransaction]]) -> None:
    gen.write(sample(data), tmp_path, fmt="json", iso_ts=True, compress=True)
    log = read_zeek(tmp_path / "conn.log.gz")
    assert (log.format, log.log_type) == ("json", "conn")
    by_uid = {c.uid: c for c in parsed[0]}
    rows = list(log)
    assert len(rows) == 3000 and log.stats.bad_lines == 0
    for c in rows:
        assert c == by_uid[c.uid]
    dns_log = read_zeek(tmp_path / "dns.log.gz")
    key = {t.txn_id: t for t in parsed[1]}
    dns_rows = list(dns_log)
    assert len(dns_rows) == len(parsed[1]) and all(t == key[t.txn_id] for t in dns_rows)


# ---- look-alikes ---------------------------------------------------------------------


def median_gap(conns: list[ZeekConn]) -> float:
    t = sorted(c.record.start_ns for c in conns)
    return statistics.median(b - a for a, b in zip(t, t[1:], strict=False)) / S


def test_ntp_heartbeats_and_mail_polling(data: gen.Dataset, pairs: dict) -> None:
    look = data.truth.lookalikes
    internal = data.truth.counts["internal_hosts"]
    ntp = {k: v for k, v in pairs.items() if k[1] in look["ntp"]["servers"]}
    assert len(ntp) == internal  # every host keeps its clock
    assert all(v[0].record.peer_port == 123 and v[0].record.transport == "udp"
               for v in ntp.values())
    periods = {round(median_gap(v)) for v in ntp.values() if len(v) > 3}
    assert periods <= {64, 128, 256, 512, 1024} and len(periods) >= 3
    beats = {k: v for k, v in pairs.items() if k[1] == look["heartbeat"]["collector"]}
    assert len(beats) == internal - 1
    assert {round(median_gap(v)) for v in beats.values()} == {10, 30, 60}
    mail = {k: v for k, v in pairs.items() if k[1] in look["mail"]["servers"]}
    assert len(mail) == look["mail"]["hosts"]
    assert all(abs(median_gap(v) - 300) < 5 for v in mail.values())


def test_video_calls_and_backups_are_big_and_regular(data: gen.Dataset,
                                                     parsed: tuple[list, list]) -> None:
    look, t0 = data.truth.lookalikes, data.truth.start_ns
    calls = [c for c in parsed[0] if c.record.peer_addr in look["video"]["sfu"]
             and c.record.transport == "udp"]
    assert len(calls) == look["video"]["calls"]
    assert all(c.record.end_ns - c.record.start_ns >= 600 * S
               and c.record.counters.payload_out >= 50_000_000 for c in calls)
    days = defaultdict(set)
    for c in calls:
        days[c.record.local_addr].add((c.record.start_ns - t0) // (86400 * S))
    assert all(d == {0, 1} for d in days.values())  # every caller, both days
    backups = [c for c in parsed[0] if c.record.peer_addr == gen.BACKUP]
    assert len(backups) == 2 * len({c.record.local_addr for c in backups}) == 2 * 30
    for c in backups:
        hour = (c.record.start_ns - t0) % (86400 * S) / (3600 * S)
        assert 2.0 <= hour < 2.7 and c.record.counters.payload_out >= 500_000_000


def test_admins_crawler_and_browsing(data: gen.Dataset, parsed: tuple[list, list]) -> None:
    look, t0 = data.truth.lookalikes, data.truth.start_ns
    conns, dns = parsed
    new_on_day2 = 0
    for admin in look["admin"]["hosts"]:
        per_day: list[set[tuple[str, int]]] = [set(), set()]
        for c in conns:
            r = c.record
            if r.local_addr == admin and r.peer_port in (22, 3389, 5985):
                per_day[(r.start_ns - t0) // (86400 * S)].add((r.peer_addr, r.peer_port))
        assert len(per_day[0]) >= 10 and len(per_day[1]) >= 10
        new_on_day2 += len(per_day[1] - per_day[0])
    assert new_on_day2 > 0  # routine work, yet (server, port) pairs not seen on day 1
    crawl = [c for c in conns if c.record.local_addr == gen.CRAWLER
             and c.record.peer_port == 443]
    failed = sum(c.record.failed for c in crawl)
    assert 0 < failed < 0.1 * len(crawl)
    first = min(c.record.start_ns for c in crawl)
    burst = {c.record.peer_addr for c in crawl if first <= c.record.start_ns < first + 600 * S}
    assert len(burst) >= 40  # many hosts on one port within 10 minutes, few failures
    nets = [{c.record.peer_addr.rsplit(".", 1)[0] for c in crawl
             if (c.record.start_ns - t0) // (86400 * S) == d} for d in (0, 1)]
    assert len(nets[1] - nets[0]) >= 100
    assert sum(1 for t in dns if len(t.cname_chain) > 1) > 100  # CDN chains
    assert sum(1 for t in dns if t.rcode == "NXDOMAIN") > 0
    assert data.truth.lookalikes["browsing"]["uploads"] > 0


def test_long_lived_poisson_kubernetes_and_mirror(data: gen.Dataset, pairs: dict,
                                                  parsed: tuple[list, list]) -> None:
    look = data.truth.lookalikes
    long = [c for c in parsed[0] if c.record.end_ns - c.record.start_ns >= 4 * 3600 * S]
    assert len(long) >= look["long_lived"]["connections"] * 0.9
    for client in look["poisson_api"]["clients"]:
        t = sorted(c.record.start_ns for (s, d), v in pairs.items() if s == client
                   and d in look["poisson_api"]["peers"] for c in v)
        gaps = [b - a for a, b in zip(t, t[1:], strict=False)]
        cv = statistics.pstdev(gaps) / statistics.fmean(gaps)
        assert 0.8 < cv < 1.2  # exponential gaps: not periodic
    k8s = look["kubernetes"]
    for w in k8s["workers"]:
        assert abs(median_gap(pairs[(k8s["control"], w)]) - 120) < 2
    moved = look["mirror_moved"]
    new_prefix = moved["new"].rsplit(".", 1)[0]
    for host in moved["hosts"]:
        hits = [c.record.start_ns for (s, d), v in pairs.items() if s == host
                and d.startswith(new_prefix + ".") for c in v]
        assert hits and min(hits) >= moved["at_ns"]
    answers = {a for t in parsed[1] if t.question_name == moved["name"] for a in t.addresses}
    assert any(a.startswith(new_prefix + ".") for a in answers)


# ---- ground truth --------------------------------------------------------------------


def test_incidents_cover_what_the_issue_asks(data: gen.Dataset) -> None:
    tr = data.truth
    by_rule = defaultdict(list)
    for inc in tr.incidents:
        by_rule[inc.rule].append(inc)
    assert {r: len(v) for r, v in by_rule.items()} == {
        "beacon": 14, "port_scan": 7, "lateral_movement": 8, "volume_anomaly": 5,
        "novel_peer": 5}
    b = [i.params for i in by_rule["beacon"]]
    assert min(p["period_s"] for p in b) == 1 and max(p["period_s"] for p in b) == 3600
    assert max(p["jitter"] for p in b) == 0.5 and max(p["miss"] for p in b) == 0.3
    assert {p["proto"] for p in b} == {"tcp", "udp"}
    assert {p["sizes"] for p in b} == {"const", "varied", "none"}  # none: dead C2s
    shared = [i for i in by_rule["beacon"] if i.note == "C2 shared by 3 hosts"]
    assert len({i.peers for i in shared}) == 1 and len({i.actor for i in shared}) == 3
    kinds = {(i.params["kind"], i.params["span_s"] >= 3600) for i in by_rule["port_scan"]}
    assert kinds == {("vertical", False), ("vertical", True), ("horizontal", False),
                     ("horizontal", True)}
    for rule in ("lateral_movement", "volume_anomaly", "novel_peer"):
        assert all(i.start_ns >= tr.learning_end_ns for i in by_rule[rule]), rule
    actors = [i.actor for i in tr.incidents if i.note != "C2 shared by 3 hosts"]
    assert len(actors) == len(set(actors))  # one incident per host: truth stays unambiguous


def test_every_incident_is_in_the_logs(data: gen.Dataset, pairs: dict) -> None:
    for inc in data.truth.incidents:
        for peer in inc.peers:
            hits = [c for c in pairs.get((inc.actor, peer), ())
                    if inc.start_ns <= c.record.start_ns <= inc.end_ns]
            assert hits, (inc.id, peer)


def test_baseline_incidents_are_new_behaviour(data: gen.Dataset,
                                              parsed: tuple[list, list]) -> None:
    tr = data.truth
    day1 = [c.record for c in parsed[0] if c.record.start_ns < tr.learning_end_ns]
    nets_day1 = {(r.local_addr, r.peer_addr.rsplit(".", 1)[0]) for r in day1}
    anyone_day1 = {n for _, n in nets_day1}
    for inc in tr.incidents:
        if inc.rule == "novel_peer":
            prefix = inc.networks[0].rsplit(".", 1)[0]
            assert inc.actor.startswith("10.10.10.")  # a server: stable peers
            assert prefix not in anyone_day1
            assert all(p.startswith(prefix + ".") for p in inc.peers)
        if inc.rule == "lateral_movement":
            assert len(inc.peers) >= 3
            admin = {(r.peer_addr, r.peer_port) for r in day1 if r.local_addr == inc.actor}
            assert not any(p in inc.peers for p, _ in admin)
        if inc.rule == "volume_anomaly":
            assert inc.peers[0] != gen.BACKUP
            before = sum(r.counters.payload_out for r in day1
                         if r.local_addr == inc.actor and r.peer_addr == inc.peers[0])
            assert before < 0.05 * inc.params["bytes"]
        if "novel_peer" in inc.accept:
            assert any((inc.actor, p.rsplit(".", 1)[0]) not in nets_day1 for p in inc.peers)


def test_benign_pairs_exclude_malicious_ones(data: gen.Dataset, pairs: dict) -> None:
    mal = {(i.actor, p) for i in data.truth.incidents for p in i.peers}
    assert 0 < data.truth.benign_pairs <= len(set(pairs) - mal)
    assert data.truth.benign_pairs >= 0.8 * len(pairs)


def test_truth_round_trips(written: Path, data: gen.Dataset) -> None:
    assert GroundTruth.load(written / "truth.json") == data.truth


# ---- the scorer ----------------------------------------------------------------------

H = 3600 * S


def hand_truth() -> GroundTruth:
    return GroundTruth(
        seed=0, start_ns=0, end_ns=48 * H, learning_end_ns=24 * H, benign_pairs=2000,
        incidents=(
            Incident("beacon-01", "beacon", "10.0.0.1", ("198.51.100.1",), True, 1 * H, 5 * H,
                     names=("evil.example",), accept=("novel_peer",)),
            Incident("port_scan-01", "port_scan", "10.0.0.2", ("10.0.1.1", "10.0.1.2"), False,
                     2 * H, 3 * H),
            Incident("novel_peer-01", "novel_peer", "10.0.0.3", ("203.0.113.5",), True,
                     30 * H, 31 * H, networks=("203.0.113.0/24",)),
        ))


def test_scorer_arithmetic() -> None:
    d = Detection
    dets = [
        d("beacon", "10.0.0.1", "198.51.100.1", 2 * H),  # caught
        d("beacon", "10.0.0.1", "198.51.100.1", 3 * H),  # caught again: no double count
        d("beacon", "10.0.0.1", "c2.evil.example", 4 * H),  # by DNS name: matches
        d("novel_peer", "10.0.0.1", "198.51.100.0/24", 4 * H),  # accepted, neutral
        d("beacon", "10.0.0.1", "198.51.100.9", 2 * H),  # wrong peer: false
        d("beacon", "10.0.0.1", None, 2 * H),  # a per-peer rule must name the peer: false
        d("beacon", "10.0.0.9", "192.0.2.1", 1 * H),  # three detections, one false alert
        d("beacon", "10.0.0.9", "192.0.2.1", 2 * H),
        d("beacon", "10.0.0.9", "192.0.2.1", 3 * H),
        d("beacon", "10.0.0.1", "198.51.100.1", 7 * H),  # after end + 1 h: false, outside
        d("port_scan", "10.0.0.2", None, 2 * H + 60 * S),  # caught, no peer needed
        d("port_scan", "10.0.0.2", "10.0.1.0/24", 2 * H + 90 * S),  # CIDR of the targets
        d("port_scan", "10.0.0.2", "10.0.9.9", 2 * H + 90 * S),  # a host it never touched
        d("novel_peer", "10.0.0.3", "203.0.113.0/24", 29 * H),  # too early: missed + false
        d("lateral_movement", "10.0.0.4", None, 30 * H),  # a rule with no incidents
    ]
    rep = score(dets, hand_truth())
    b, p, n, lat = (rep.rules[k] for k in ("beacon", "port_scan", "novel_peer",
                                           "lateral_movement"))
    assert (b.positives, b.caught, b.recall) == (1, 1, 1.0)
    assert b.false_alerts == 4 and b.accepted == 0
    assert {(f.actor, f.peer, f.detections, f.why) for f in b.false_list} == {
        ("10.0.0.1", "198.51.100.9", 1, "no incident"), ("10.0.0.1", None, 1, "no incident"),
        ("10.0.0.9", "192.0.2.1", 3, "no incident"),
        ("10.0.0.1", "198.51.100.1", 1, "outside window")}
    assert (p.caught, p.false_alerts) == (1, 1)
    assert (n.positives, n.caught, n.false_alerts, n.accepted) == (1, 0, 1, 1)
    assert [m.id for m in n.misses] == ["novel_peer-01"]
    assert (lat.positives, lat.recall, lat.false_alerts) == (0, None, 1)
    assert rep.false_alerts == 7
    assert rep.false_per_1000 == pytest.approx(3.5)
    assert b.false_per_1000 == pytest.approx(2.0)
    assert "beacon" in rep.table("x") and "MISSED novel_peer-01" in rep.debug()


def test_scorer_rule_filter_and_lateness() -> None:
    tr = hand_truth()
    late = [Detection("beacon", "10.0.0.1", "198.51.100.1", 5 * H + 1800 * S)]
    assert score(late, tr).rules["beacon"].caught == 1
    assert score(late, tr, late_s=0).rules["beacon"].caught == 0
    only = score(late, tr, rules=["beacon"])
    assert list(only.rules) == ["beacon"]


# ---- the baselines -------------------------------------------------------------------


def test_naive_rules_miss_slow_lateral_and_fire_on_look_alikes(
        data: gen.Dataset, parsed: tuple[list, list]) -> None:
    tr = data.truth
    dets = run_naive(parsed[0], learning_end_ns=tr.learning_end_ns, internal_cidrs=tr.internal)
    rep = score(dets, tr, rules=tr.rules())
    lat = rep.rules["lateral_movement"]
    assert lat.recall == 0.75 and all("slow" in m.note for m in lat.misses)
    look = tr.lookalikes
    false_peers = {f.peer for f in rep.rules["beacon"].false_list}
    assert look["heartbeat"]["collector"] in false_peers or set(look["ntp"]["servers"]) & \
        false_peers
    vol_false = {f.peer for f in rep.rules["volume_anomaly"].false_list}
    assert gen.BACKUP in vol_false  # the nightly backup looks like a big upload
    assert rep.rules["volume_anomaly"].recall == 1.0


def conn(ts: float, src: str, dst: str, ob: int = 300) -> ZeekConn:
    return conn_from_row({"ts": f"{ts:.6f}", "uid": f"C{ts}", "id.orig_h": src, "id.orig_p": "1",
                          "id.resp_h": dst, "id.resp_p": "443", "proto": "tcp",
                          "conn_state": "SF", "orig_bytes": str(ob), "orig_ip_bytes": str(ob)})


def test_rita_style_score_separates_a_beacon_from_poisson() -> None:
    import random

    assert bowley_score([10, 20, 30, 40, 50]) == 1.0
    assert bowley_score([10, 11, 12, 60, 100]) < 0.5
    assert mad_score([300.0] * 9, 1.0) == 1.0 and mad_score([0.0, 0.0, 0.0], 1.0) == 1.0
    r = random.Random(1)
    beacon = [conn(i * 300 + r.uniform(-3, 3), "10.0.0.1", "198.51.100.1") for i in range(288)]
    t, poisson = 0.0, []
    while t < 86400:
        t += r.expovariate(1 / 300)
        poisson.append(conn(t, "10.0.0.2", "198.51.100.2", r.randint(200, 20000)))
    others = [conn(40_000 + i, f"10.0.1.{i}", "203.0.113.80") for i in range(100)]
    conns = sorted(beacon + poisson + others, key=lambda c: c.record.start_ns)
    scores = {s.src: s for s in score_pairs(conns, internal=internal_test(["10.0.0.0/8"]),
                                            start_ns=0, end_ns=86400 * S)}
    beacon_score, steady = scores["10.0.0.1"], scores["10.0.0.2"]
    assert beacon_score.ts >= 0.95 and beacon_score.score >= 0.95
    assert steady.ts < 0.6  # its gaps give steady random traffic away...
    # ...yet flat hourly counts and full coverage score it high overall: RITA's blind spot
    assert 0.8 < steady.score < beacon_score.score
    found = rita_beacons(list(scores.values()), 0.95)
    assert [(d.actor, d.peer) for d in found] == [("10.0.0.1", "198.51.100.1")]


def test_scenario_rejects_too_small_networks() -> None:
    with pytest.raises(ValueError, match="at least 40 workstations"):
        gen.Scenario(workstations=10)

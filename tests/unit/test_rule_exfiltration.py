"""exfiltration through the real Engine: sensitive reads, then bytes to a peer."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from otelpeers.config import ConfigError, parse_config
from otelpeers.detect.engine import Engine
from otelpeers.detect.model import EvidenceKind
from otelpeers.detect.rules.exfiltration import Exfiltration
from otelpeers.dns.lookups import DnsLookup
from otelpeers.dns.transactions import DnsTransaction
from otelpeers.events import Counters, Direction, Kind, ProcessEvent
from otelpeers.flows import CloseReason, DnsAnnotation, FileAccess
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import T0, Snapshots, flow, owner

S = 10**9
KEY = "/root/.ssh/id_rsa"
EVIL = "198.51.100.66"


def engine(yaml: dict | None = None, top: dict | None = None) -> Engine:
    cfg = parse_config({"detect": {**(top or {}),
                                   "rules": {"exfiltration": yaml or {}}}}).detect
    return Engine(cfg, [Exfiltration])


def opened(pid: int, comm: str, path: str = KEY, t: int = T0) -> ProcessEvent:
    return ProcessEvent(Kind.FILE_OPEN, t, pid, pid, 0, 0, 1, comm, path=path)


def fork(parent: int, child: int, t: int = T0 - S) -> ProcessEvent:
    return ProcessEvent(Kind.FORK, t, parent, parent, 0, 0, 1, "sh", ppid=parent,
                        child_pid=child)


def upload(fid: str, pid: int, comm: str, sent: int, *, start: int = T0 + S,
           dur: int = S, peer: str = EVIL, complete: bool = True, resolved: bool = False,
           name: str = ""):
    f = flow(fid, proc=owner(pid, comm), peer=peer, peer_port=443, start_ns=start,
             duration_ns=dur, complete=complete,
             close_reason=CloseReason.CLOSED if complete else CloseReason.SHUTDOWN,
             counters=Counters(packets_out=10, payload_out=sent, payload_in=500))
    if complete:
        f = replace(f, dns=DnsAnnotation(resolved=resolved, question_name=name))
    return f


def test_read_then_upload_fires_with_evidence_linking_file_and_connection() -> None:
    e = engine()
    assert e.evaluate(Outputs(process=[opened(10, "curl")])) == []
    (d,) = e.evaluate(Outputs(flows=[upload("1f", 10, "curl", 200_000)]))
    assert d.rule.name == "exfiltration" and d.actor.key == "curl" and d.actor.pid == 10
    ev = d.evidence
    assert ev["file_path"] == KEY and ev["file_relation"] == "self"
    assert ev["file_read_by_pid"] == 10 and ev["file_read_time_ns"] == T0
    assert ev["bytes_sent"] == 200_000 and ev["connections"] == 1
    assert ev["new_peer"] is True and ev["dns"] == "direct_ip"
    assert ev["seconds_after_read"] == pytest.approx(2.0)
    assert d.evidence_span.kind == EvidenceKind.FLOW and d.evidence_span.ident == "1f"
    assert d.peer.address == EVIL and d.time_ns == T0 + 2 * S
    assert d.score >= 0.95 and KEY in d.summary and "200000 bytes" in d.summary


def test_fires_while_the_upload_is_still_open_from_progress_deltas() -> None:
    e = engine()
    snaps = Snapshots()
    e.evaluate(Outputs(process=[opened(10, "curl")]))
    snap1 = snaps.progress(upload("2a", 10, "curl", 30_000, dur=S, complete=False))
    assert e.evaluate(Outputs(progress=[snap1])) == []
    snap2 = snaps.progress(upload("2a", 10, "curl", 70_000, dur=2 * S, complete=False))
    (d,) = e.evaluate(Outputs(progress=[snap2]))
    assert d.time_ns == snap2.end_ns and d.evidence["bytes_sent"] == 70_000
    assert d.evidence["dns"] == "unknown"  # an open flow has no DNS verdict yet
    assert d.evidence["new_peer"] is True  # still the flow that showed the peer first
    # The end of the same upload does not fire again.
    end = snaps.final(upload("2a", 10, "curl", 500_000, dur=5 * S))
    assert e.evaluate(Outputs(flows=[end])) == []


def test_a_peer_is_new_for_the_flow_that_showed_it_first_and_for_no_later_one() -> None:
    e = engine()
    rule = e.rules[0][0]
    snaps = Snapshots()
    first = snaps.progress(upload("5a", 10, "curl", 100, dur=S, complete=False))
    e.evaluate(Outputs(progress=[first]))
    e.evaluate(Outputs(process=[opened(10, "curl", t=T0 + 2 * S)]))
    # A second connection to the same peer, after the read: the peer is known by now.
    (later,) = e.evaluate(Outputs(flows=[upload("5b", 10, "curl", 90_000,
                                                start=T0 + 3 * S, dur=S)]))
    assert later.evidence["new_peer"] is False
    # The first connection's own bytes after the read: its peer was new when it began.
    e2 = engine()
    e2.evaluate(Outputs(progress=[first]))
    e2.evaluate(Outputs(process=[opened(10, "curl", t=T0 + 2 * S)]))
    grown = snaps.progress(replace(first, end_ns=T0 + 4 * S,
                                   counters=Counters(payload_out=90_100)))
    (d,) = e2.evaluate(Outputs(progress=[grown]))
    assert d.evidence["new_peer"] is True and d.evidence["bytes_sent"] == 90_000
    # Once it ends, its id is not kept: the pair stays known, for no flow in particular.
    e2.evaluate(Outputs(flows=[snaps.final(replace(grown, complete=True))]))
    assert list(rule._known.values()) == ["5a"]  # the first engine's flow is still open
    assert list(e2.rules[0][0]._known.values()) == [None]


def test_a_connection_older_than_the_read_counts_only_later_bytes() -> None:
    e = engine()
    snaps = Snapshots()
    old = snaps.progress(upload("3a", 10, "python3", 5_000_000, start=T0 - 60 * S,
                                dur=59 * S, complete=False))
    e.evaluate(Outputs(progress=[old]))
    e.evaluate(Outputs(process=[opened(10, "python3", t=T0)]))
    more = snaps.progress(replace(old, end_ns=T0 + 2 * S,
                                  counters=Counters(payload_out=5_000_000 + 10_000)))
    assert e.evaluate(Outputs(progress=[more])) == []
    lots = snaps.progress(replace(old, end_ns=T0 + 3 * S,
                                  counters=Counters(payload_out=5_000_000 + 80_000)))
    (d,) = e.evaluate(Outputs(progress=[lots]))
    assert d.evidence["bytes_sent"] == 80_000
    # First seen only after the read, begun before it: its earlier bytes are unknown, not 0.
    e = engine()
    e.evaluate(Outputs(process=[opened(10, "python3", t=T0)]))
    assert e.evaluate(Outputs(progress=[replace(lots, flow_id="3b", reported=None)])) == []


def test_threshold_is_per_peer_summed_over_connections() -> None:
    e = engine()
    e.evaluate(Outputs(process=[opened(10, "curl")]))
    assert e.evaluate(Outputs(flows=[upload("4a", 10, "curl", 40_000)])) == []
    assert e.evaluate(Outputs(flows=[upload("4b", 10, "curl", 40_000, peer="192.0.2.1")])) == []
    (d,) = e.evaluate(Outputs(flows=[upload("4c", 10, "curl", 40_000, start=T0 + 5 * S)]))
    assert d.evidence["bytes_sent"] == 80_000 and d.evidence["connections"] == 2


def test_outside_the_window_below_the_threshold_or_no_read() -> None:
    e = engine()
    e.evaluate(Outputs(process=[opened(10, "curl")]))
    assert e.evaluate(Outputs(flows=[upload("5a", 10, "curl", 60_000)])) == []
    assert e.evaluate(Outputs(flows=[upload("5b", 10, "curl", 10**7, start=T0 + 400 * S,
                                            peer="192.0.2.2")])) == []
    assert e.evaluate(Outputs(flows=[upload("5c", 11, "curl", 10**7)])) == []
    # An upload that ended before the read is no evidence either.
    e = engine()
    e.evaluate(Outputs(process=[opened(12, "curl", t=T0 + 10 * S)]))
    assert e.evaluate(Outputs(flows=[upload("5d", 12, "curl", 10**7)])) == []


def test_trusted_readers_ssh_keys_and_aws_credentials() -> None:
    e = engine()
    e.evaluate(Outputs(process=[opened(20, "ssh"), opened(20, "ssh", "/etc/ssh/ssh_config"),
                                opened(21, "aws", "/root/.aws/credentials"),
                                opened(22, "git", ".git-credentials")]))
    assert e.evaluate(Outputs(flows=[upload("6a", 20, "ssh", 10**7),
                                     upload("6b", 21, "aws", 10**7),
                                     upload("6c", 22, "git", 10**7)])) == []
    assert e.counters()["exfiltration.trusted_reads"] == 4
    # aws reading an SSH key is not its own credential.
    e.evaluate(Outputs(process=[opened(21, "aws", KEY, t=T0 + 10 * S)]))
    (d,) = e.evaluate(Outputs(flows=[upload("6d", 21, "aws", 10**6, start=T0 + 11 * S,
                                            peer="192.0.2.3")]))
    assert d.actor.key == "aws"


def test_scp_reads_the_key_its_ssh_child_sends_it() -> None:
    e = engine()
    e.evaluate(Outputs(process=[fork(30, 31), opened(30, "scp")]))
    (d,) = e.evaluate(Outputs(flows=[upload("7a", 31, "ssh", 100_000)]))
    assert d.actor.key == "ssh" and d.evidence["file_relation"] == "parent"
    assert d.evidence["file_read_by"] == "scp" and d.score < 0.95


def test_pipeline_tar_to_nc_is_a_sibling_read() -> None:
    e = engine()
    e.evaluate(Outputs(process=[fork(40, 41), fork(40, 42), opened(41, "tar")]))
    (d,) = e.evaluate(Outputs(flows=[upload("8a", 42, "nc", 100_000)]))
    ev = d.evidence
    assert ev["file_relation"] == "sibling" and ev["file_read_by_pid"] == 41
    assert "read by its sibling tar" in d.summary
    # A child's read also counts for the parent that sends (python runs cat, then posts).
    e = engine()
    e.evaluate(Outputs(process=[fork(50, 51), opened(51, "cat")]))
    (d,) = e.evaluate(Outputs(flows=[upload("8b", 50, "python3", 100_000)]))
    assert d.evidence["file_relation"] == "child"


def test_related_reads_expire_sooner_and_can_be_turned_off() -> None:
    e = engine()
    e.evaluate(Outputs(process=[fork(40, 41), fork(40, 42), opened(41, "tar")]))
    late = upload("9a", 42, "nc", 10**6, start=T0 + 60 * S)
    assert e.evaluate(Outputs(flows=[late])) == []
    e = engine({"related_window_s": 0})
    e.evaluate(Outputs(process=[fork(40, 41), fork(40, 42), opened(41, "tar")]))
    assert e.evaluate(Outputs(flows=[upload("9b", 42, "nc", 10**6)])) == []


def test_known_resolved_peer_scores_lower_than_a_new_direct_ip_one() -> None:
    e = engine({"dedup_window_s": 0})
    # curl talked to the backup host before (not new), by name.
    e.evaluate(Outputs(flows=[upload("a0", 10, "curl", 100, start=T0 - 100 * S,
                                     resolved=True, name="backup.example.com")]))
    e.evaluate(Outputs(process=[opened(10, "curl")]))
    (known,) = e.evaluate(Outputs(flows=[upload("a1", 10, "curl", 100_000, resolved=True,
                                                name="backup.example.com")]))
    assert known.evidence["new_peer"] is False and known.evidence["dns"] == "resolved"
    assert known.peer.name == "backup.example.com" and known.score == pytest.approx(0.6, abs=0.01)
    (new,) = e.evaluate(Outputs(flows=[upload("a2", 10, "curl", 100_000)]))
    assert new.score > 0.9


def test_dns_answers_name_the_peer_of_open_connections() -> None:
    e = engine()
    txn = DnsTransaction("t1", 1, owner(10, "curl"), "10.0.0.53", 53, "10.0.0.2", 5000,
                         "drop.example.net", "A", "NOERROR", (), (EVIL,), (), 60,
                         T0 - S, T0 - S + 1000, 0, False, False, "udp")
    e.evaluate(Outputs(dns=[DnsLookup(txn)], process=[opened(10, "curl")]))
    (d,) = e.evaluate(Outputs(progress=[upload("b1", 10, "curl", 100_000, complete=False)]))
    assert d.peer.name == "drop.example.net" and d.evidence["dns"] == "resolved"
    assert "drop.example.net" in d.summary


def test_files_attached_to_a_completed_flow_count_as_reads() -> None:
    e = engine()
    f = replace(upload("c1", 60, "curl", 100_000),
                files=(FileAccess(T0, "/etc/shadow", 0),))
    (d,) = e.evaluate(Outputs(flows=[f]))
    assert d.evidence["file_path"] == "/etc/shadow"


def test_loopback_zeek_rows_and_allow_lists() -> None:
    e = engine()
    e.evaluate(Outputs(process=[opened(10, "curl")]))
    assert e.evaluate(Outputs(flows=[upload("d1", 10, "curl", 10**6, peer="127.0.0.1")])) == []
    zeek = replace(upload("d2", 10, "curl", 10**6), owner=None)
    assert e.evaluate(Outputs(flows=[zeek])) == []
    e = engine({"include_loopback": True})
    e.evaluate(Outputs(process=[opened(10, "curl")]))
    assert len(e.evaluate(Outputs(flows=[upload("d3", 10, "curl", 10**6,
                                                peer="127.0.0.1")]))) == 1
    e = engine({"allow": {"executables": ["curl"]}})
    e.evaluate(Outputs(process=[opened(10, "curl")]))
    assert e.evaluate(Outputs(flows=[upload("d4", 10, "curl", 10**6)])) == []
    e = engine(top={"allow": {"peer_cidrs": ["198.51.100.0/24"]}})
    e.evaluate(Outputs(process=[opened(10, "curl")]))
    assert e.evaluate(Outputs(flows=[upload("d5", 10, "curl", 10**6)])) == []


def test_writing_a_sensitive_file_is_not_reading_it() -> None:
    e = engine()
    w = replace(opened(10, "python3"), open_flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    e.evaluate(Outputs(process=[w]))
    assert e.evaluate(Outputs(flows=[upload("e2", 10, "python3", 10**6)])) == []
    assert e.counters()["exfiltration.write_opens"] == 1
    rw = replace(opened(11, "python3"), open_flags=os.O_RDWR)
    e.evaluate(Outputs(process=[rw]))
    assert len(e.evaluate(Outputs(flows=[upload("e3", 11, "python3", 10**6)]))) == 1


def test_pid_reuse_forgets_the_old_process_reads() -> None:
    e = engine()
    e.evaluate(Outputs(process=[opened(70, "cat")]))
    e.evaluate(Outputs(process=[fork(1, 70, t=T0 + S // 2)]))  # pid 70 is a new process now
    assert e.evaluate(Outputs(flows=[upload("e1", 70, "curl", 10**6)])) == []


def test_dedup_per_binary_and_peer() -> None:
    e = engine()
    e.evaluate(Outputs(process=[opened(10, "curl"), opened(11, "curl")]))
    assert len(e.evaluate(Outputs(flows=[upload("f1", 10, "curl", 10**6)]))) == 1
    assert e.evaluate(Outputs(flows=[upload("f2", 11, "curl", 10**6)])) == []
    assert e.counters()["suppressed"] == 1


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="trusted_readers\\[0\\]"):
        parse_config({"detect": {"rules": {"exfiltration": {"trusted_readers": ["ssh"]}}}})
    with pytest.raises(ConfigError, match="min_bytes"):
        parse_config({"detect": {"rules": {"exfiltration": {"min_bytes": 0}}}})
    e = engine({"trusted_readers": ["*:*"]})
    e.evaluate(Outputs(process=[opened(10, "curl")]))
    assert e.evaluate(Outputs(flows=[upload("b9", 10, "curl", 10**6)])) == []


def test_state_stays_bounded_under_adversarial_input() -> None:
    e = engine({"max_processes": 100, "max_flows": 1000, "max_known_peers": 1000},
               top={"max_actors": 100})
    rule = e.rules[0][0]
    # 10 000 processes reading sensitive files, each uploading to its own peer, and 30 000
    # open connections to distinct peers.
    for b in range(4):
        base = 1000 + b * 2500
        procs = [opened(base + i, "x", t=T0 + b * S) for i in range(2500)]
        e.evaluate(Outputs(process=procs))
        e.evaluate(Outputs(flows=[
            upload(f"{base + i:x}", base + i, "x", 1000,
                   peer=f"10.{b}.{i >> 8}.{i & 255}", start=T0 + b * S + 1)
            for i in range(2500)]))
    for b in range(3):
        e.evaluate(Outputs(progress=[
            upload(f"{b:x}{i:05x}", 99, "y", 100 + i, complete=False,
                   peer=f"172.16.{i >> 8}.{i & 255}") for i in range(10_000)]))
    assert len(rule._reads) <= 100
    assert len(rule._known) <= 1000 and len(rule._uploads) <= 100
    c = e.counters()
    assert c["exfiltration.reads.state_evicted"] > 0
    assert c["exfiltration.known_peers.state_evicted"] > 0


def test_only_outbound_direction_does_not_matter_inbound_sends_count() -> None:
    # A web server reading /etc/shadow (path traversal) and serving it on an accepted
    # connection sends the bytes as well.
    e = engine()
    e.evaluate(Outputs(process=[opened(80, "nginx", "/etc/shadow")]))
    f = replace(upload("a1", 80, "nginx", 100_000), direction=Direction.INBOUND)
    assert len(e.evaluate(Outputs(flows=[f]))) == 1

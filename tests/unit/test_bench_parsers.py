"""Parsers the benchmarks rely on: bpftool JSON, /proc, agent stop line, tools' output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the bench package

from bench.agent import (  # noqa: E402
    REPO,
    FlowCount,
    cache_outcome,
    config_yaml,
    count_flows,
    has_program_cache,
    parse_summary,
)
from bench.figures import parse_iperf_bps, parse_lost, parse_tcplife  # noqa: E402
from bench.host import (  # noqa: E402
    ProgStat,
    map_ids_of_programs,
    parse_cpu_model,
    parse_cpu_ticks,
    parse_map_memory,
    parse_mapped_libraries,
    parse_prog_stats,
    parse_pss_kib,
    parse_vm_rss_kib,
    prog_stats_delta,
)
from bench.storm import parse_client_output  # noqa: E402
from otelpeers.config import load_config  # noqa: E402

PROGS = [
    {"id": 1, "name": "otelp_sock_new", "run_time_ns": 1000, "run_cnt": 10, "map_ids": [5, 6]},
    {"id": 2, "name": "otelp_skb_egr", "run_time_ns": 500, "run_cnt": 20, "map_ids": [6, 7]},
    {"id": 3, "name": "other_prog", "run_time_ns": 99, "run_cnt": 9, "map_ids": [8]},
    {"id": 4, "name": "otelp_conn4", "map_ids": []},  # stats never enabled: no fields
    # bcc tracepoints of the agent share its maps and their cut names collide.
    {"id": 5, "name": "tracepoint__sch", "run_time_ns": 30, "run_cnt": 3, "map_ids": [7]},
    {"id": 6, "name": "tracepoint__sch", "run_time_ns": 70, "run_cnt": 7, "map_ids": [5]},
    {"id": 7, "name": "tracepoint__soc", "run_time_ns": 9, "run_cnt": 9, "map_ids": [99]},
]


def test_prog_stats_only_ours_and_delta_per_run() -> None:
    before = parse_prog_stats(PROGS)
    assert set(before) == {"otelp_sock_new", "otelp_skb_egr", "otelp_conn4", "tracepoint__sch"}
    assert before["otelp_conn4"] == ProgStat("otelp_conn4", 0, 0)
    assert before["tracepoint__sch"] == ProgStat("tracepoint__sch", 100, 10, 2)
    after = dict(before, otelp_sock_new=ProgStat("otelp_sock_new", 4000, 40))
    d = prog_stats_delta(before, after)
    assert d["otelp_sock_new"] == {"runs": 30, "run_time_ns": 3000, "programs": 1,
                                   "ns_per_run": 100.0}
    assert d["otelp_skb_egr"]["runs"] == 0 and d["otelp_skb_egr"]["ns_per_run"] == 0.0


def test_map_memory_by_program_maps_and_by_name() -> None:
    assert map_ids_of_programs(PROGS) == {5, 6, 7}
    maps = [{"id": 5, "name": "sockets", "bytes_memlock": 100},
            {"id": 6, "name": "sensitive_basen", "bytes_memlock": 7},
            {"id": 9, "name": "foreign", "bytes_memlock": 1000}]
    assert parse_map_memory(maps, {"sockets", "sensitive_basenames"}) == {
        "sockets": 100, "sensitive_basen": 7}


def test_proc_parsers() -> None:
    assert parse_vm_rss_kib("Name:\tpython\nVmRSS:\t  123456 kB\n") == 123456
    assert parse_vm_rss_kib("Name:\tkthread\n") is None
    rollup = "55d0-7ffe ---p 00000000 00:00 0  [rollup]\nRss:  46292 kB\nPss:  40227 kB\n"
    assert parse_pss_kib(rollup) == 40227
    assert parse_pss_kib("Rss:  1 kB\n") is None
    stat = "42 (my prog) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0"
    assert parse_cpu_ticks(stat) == 300
    assert parse_cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"


def test_agent_stop_line_with_and_without_drops() -> None:
    s = parse_summary("otelpeers: INFO x\notelpeers: stopped after 1200 events; 37 flows; "
                      "kernel drops: {'ringbuf_established': 4, 'ringbuf_release': 2}; "
                      "decode errors: 1\n")
    assert s is not None and s.events == 1200 and s.flows == 37 and s.decode_errors == 1
    assert s.drops_total == 6
    z = parse_summary("otelpeers: stopped after 5 events; 1 flows; kernel drops: 0; "
                      "decode errors: 0")
    assert z is not None and z.kernel_drops == {} and z.drops_total == 0
    n = parse_summary("otelpeers: stopped after 5 events; 1 flows; kernel drops: 17; "
                      "decode errors: 0")  # the total only
    assert n is not None and n.drops_total == 17
    assert parse_summary("Traceback ...") is None
    assert n.spans_exported is None  # an agent that did not report its spans


def test_agent_stop_line_with_spans() -> None:
    s = parse_summary("otelpeers: stopped after 9 events; 4 flows; kernel drops: 0; decode "
                      "errors: 0; spans exported: 3, failed: 1, dropped: 2")
    assert s is not None and (s.spans_exported, s.spans_failed, s.spans_dropped) == (3, 1, 2)


def test_a_step_with_dropped_spans_is_lossy() -> None:
    from bench.figures import lossy_step

    row = {"connections_ok": 10, "client_records": 10, "server_records": 10, "spans_lost": 0}
    assert not lossy_step(row)
    assert lossy_step({**row, "spans_lost": 1})
    assert lossy_step({**row, "server_records": 9})


def test_the_sustained_step_is_judged_on_spans_and_on_the_rate_reached() -> None:
    from bench.figures import loss_overrule

    row = {"connections_ok": 10, "client_records": 10, "server_records": 10, "spans_lost": 0,
           "achieved_rate": 10_000}
    assert loss_overrule(row, 10_000) is None  # lossless at the asked rate: records decide
    why, met = loss_overrule({**row, "spans_lost": 2}, 10_000)  # type: ignore[misc]
    assert met is False and "2 spans" in why
    why, met = loss_overrule({**row, "achieved_rate": 6_900}, 10_000)  # type: ignore[misc]
    assert met is None and "6,900 of the 10,000" in why
    # lossy at a lower rate than asked: NOT met on the records themselves
    assert loss_overrule({**row, "achieved_rate": 6_900, "client_records": 9}, 10_000) is None
    assert loss_overrule({**row, "achieved_rate": 9_600}, 10_000) is None  # reached


def test_the_storm_is_not_measured_when_its_baseline_ran_on_a_slower_host() -> None:
    from bench.figures import storm_overrule
    from bench.report import Figure, Target

    # the full run of 2026-12-03 15:12: baseline rounds at half the host's usual speed
    off = [9_424.0, 8_100.0, 11_000.0]
    why, met = storm_overrule([12_976.0, 13_500.0, 12_000.0], off)  # type: ignore[misc]
    assert met is None and "1.38x faster" in why and "12,976 against 9,424" in why
    fig = Figure("overhead", "storm", 9_288.0, "conn/s", 9_424.0, "not attached",
                 Target(">=", 0.8), overrule=storm_overrule([12_976.0], [9_424.0]))
    assert fig.ratio is not None and fig.ratio > 0.8 and fig.met is None  # not "met"
    # the kernel side alone a little slower (or within noise of) the baseline: ratios stand
    assert storm_overrule([14_908.0], [17_101.0]) is None
    assert storm_overrule([10_300.0], [10_000.0]) is None
    assert storm_overrule([], off) is None  # a run without the stopped state


def test_capacity_adds_the_agents_cost_per_record_to_the_load_alone(monkeypatch) -> None:
    from bench import figures

    monkeypatch.setattr(figures.os, "cpu_count", lambda: 2)
    alone = {"seconds": 15, "achieved_rate": 9_997, "busy_cores": 1.24}
    # 40 CPU-s for 800,000 records: 50 us each, 1.0 core for 20,000 records/s
    row = {"agent_cpu_s": 40.0, "agent_flows": 800_000}
    fig = figures.capacity_figure(alone, row, 10_000)
    assert fig.value == 2.24 and fig.baseline == 2 and fig.ratio == pytest.approx(1.12)
    assert "50 us of CPU per record" in fig.note and "1.00 cores" in fig.note
    assert fig.met is None  # an explanation, not a target
    missing = figures.capacity_figure(alone, {"agent_cpu_s": None, "agent_flows": 5}, 10_000)
    assert missing.value is None and "not measured" in missing.note
    assert missing.name == fig.name  # one figure across runs, measured or not


def test_bench_config_is_valid_for_the_agent(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(config_yaml(str(tmp_path / "otlp dir"), {"max_sockets": 262144},
                             {"max_flows": 262144}))
    cfg = load_config(p)
    assert cfg.kernel.max_sockets == 262144 and cfg.flows.max_flows == 262144
    assert cfg.export.files.directory == str(tmp_path / "otlp dir")
    assert cfg.export.live_view is False


def test_count_flows_counts_matches_and_complete(tmp_path: Path) -> None:
    p = tmp_path / "flows.jsonl"
    p.write_text("\n".join([
        json.dumps({"peer_port": 80, "complete": True}),
        json.dumps({"peer_port": 80, "complete": False}),
        json.dumps({"peer_port": 81, "complete": True}),
        "{not json",
    ]) + "\n")
    c = count_flows(p, lambda d: d["peer_port"] == 80)
    assert (c.records, c.complete, c.connections) == (2, 1, 2)
    assert count_flows(tmp_path / "missing", lambda d: True) == FlowCount()


def test_count_flows_adds_the_connections_summary_records_stand_for(tmp_path: Path) -> None:
    p = tmp_path / "flows.jsonl"
    p.write_text("\n".join(json.dumps(d) for d in [
        {"peer_port": 80, "complete": True, "summary": 0},
        {"peer_port": 80, "complete": True, "summary": 40},
        {"peer_port": 80, "complete": True, "summary": 2},
    ]) + "\n")
    c = count_flows(p, lambda d: True)
    assert (c.records, c.complete, c.summarized, c.summary_records) == (1, 1, 42, 2)
    assert c.connections == 43


def test_process_tree_of_this_process() -> None:
    """An agent with a helper process is measured whole (RSS and CPU of its children)."""
    import os
    import subprocess

    from bench.host import child_pids, tree_cpu_seconds, tree_rss_bytes

    p = subprocess.Popen(["sleep", "30"])
    try:
        assert p.pid in child_pids(os.getpid())
        main, children = tree_rss_bytes(os.getpid())
        assert main is not None and main > 0 and children > 0
        assert (tree_cpu_seconds(os.getpid()) or 0) > 0
    finally:
        p.kill()
        p.wait()
    assert tree_cpu_seconds(2**22 + 12345) is None  # no such process


def test_mapped_libraries_from_proc_maps() -> None:
    text = ("7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1\n"
            "7f02-7f03 r--p 00000000 08:01 2 /usr/lib/python3.11/lib-dynload/_ssl.cpython.so\n"
            "7f04-7f05 rw-p 00000000 00:00 0 \n"
            "7f06-7f07 r--p 00000000 08:01 3 /usr/lib/locale/C.utf8/LC_CTYPE\n")
    assert parse_mapped_libraries(text) == {"libLLVM-14.so.1", "_ssl.cpython.so"}


def test_storm_client_output() -> None:
    r = parse_client_output('{"attempted": 10, "ok": 8, "failed": 2, "elapsed_s": 2.0}\n')
    assert (r.ok, r.failed, r.rate) == (8, 2, 4.0)
    with pytest.raises(ValueError, match="no result line"):
        parse_client_output("segfault")


def test_iperf_json() -> None:
    doc = {"end": {"sum_received": {"bits_per_second": 2.5e10}}}
    assert parse_iperf_bps(json.dumps(doc)) == 2.5e10
    with pytest.raises(RuntimeError, match="busy"):
        parse_iperf_bps(json.dumps({"error": "the server is busy"}))


def test_tcplife_output_counts_both_sides_and_lost_samples() -> None:
    out = "\n".join([
        "PID   COMM       LADDR           LPORT RADDR           RPORT TX_KB RX_KB MS",
        "100   storm      10.232.5.1      40000 10.232.5.2      7000  0     0     0.05",
        "101   storm      10.232.5.2      7000  10.232.5.1      40000 0     0     0.04",
        "102   curl       127.0.0.1       40001 127.0.0.1       7000  0     0     0.01",
        "Possibly lost 12 samples",
        "Possibly lost 3 samples",
    ])
    assert parse_tcplife(out, "10.232.5.2", 7000) == (1, 1)
    assert parse_lost(out) == 15


def test_cache_outcome_from_the_agents_log(tmp_path: Path) -> None:
    log = tmp_path / "agent.stderr"
    log.write_text("INFO otelpeers.kernel.loader: sensors loaded from the program cache in "
                   "/x (not compiled)\n")
    assert cache_outcome(str(log)) is True
    log.write_text("INFO otelpeers.kernel.loader: sensors compiled; kept in the program cache\n")
    assert cache_outcome(str(log)) is False
    log.write_text("an older agent says neither\n")
    assert cache_outcome(str(log)) is None
    assert cache_outcome(str(tmp_path / "absent")) is None
    assert has_program_cache(REPO) and not has_program_cache(tmp_path)

"""The benchmarks. Each returns figures (value, same-run baseline, target), raw details and
notes; bench/run.py runs them, isolates their failures and writes the results.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import host, storm
from bench.agent import PROGRAM_CACHE, REPO, AgentProc, count_flows, running
from bench.report import Figure, Target, median, paired_ratios

MB = 1024 * 1024


@dataclass
class Ctx:
    quick: bool
    workdir: Path
    agent_root: Path = REPO
    # every agent start in this run: (seconds, programs from the cache; None: not said)
    startups: list[tuple[float, bool | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def agent(self, name: str, **kw: Any) -> contextlib.AbstractContextManager[AgentProc]:
        @contextlib.contextmanager
        def cm() -> Iterator[AgentProc]:
            with running(self.workdir, name, root=self.agent_root, **kw) as a:
                self.startups.append((a.startup_s or 0.0, a.cached))
                yield a
        return cm()


@dataclass
class Result:
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def client_pred(ns: host.NetNs, port: int) -> Callable[[dict[str, Any]], bool]:
    return lambda d: (d.get("transport") == "tcp" and d.get("direction") == "outbound"
                      and d.get("peer_addr") == ns.ns_ip and d.get("peer_port") == port)


def server_pred(ns: host.NetNs, port: int) -> Callable[[dict[str, Any]], bool]:
    # summary records of inbound pairs have no local address, only the server port
    return lambda d: (d.get("transport") == "tcp" and d.get("direction") == "inbound"
                      and (d.get("local_addr") == ns.ns_ip or bool(d.get("summary")))
                      and d.get("local_port") == port)


# ---- 1. end-to-end pipeline ------------------------------------------------------------
def pipeline(ctx: Ctx) -> Result:
    """bench/otlp_pipeline.py (flow records -> OTLP/gRPC -> rotel), against the plain SDK."""
    spans = 10_000 if ctx.quick else 50_000
    out = ctx.workdir / "otlp_pipeline.json"
    p = subprocess.run([sys.executable, "bench/otlp_pipeline.py", "--spans", str(spans),
                        "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"bench/otlp_pipeline.py failed: {p.stderr.strip()[-600:]}")
    d = json.loads(out.read_text())
    ours, sdk = d["otelpeers"], d["sdk_tracer_batch"]
    base = "plain OTel SDK, BatchSpanProcessor"
    note = f"{spans} synthetic flows, OTLP/gRPC to rotel-agent (blackhole)"
    return Result([
        Figure("pipeline", "flow lifecycles -> spans, wall", ours["spans_per_s"], "spans/s",
               sdk["spans_per_s"], base, Target(">=", 20_000, "value"), note),
        Figure("pipeline", "speedup vs SDK, wall", ours["spans_per_s"], "spans/s",
               sdk["spans_per_s"], base, Target(">=", 2.5), "same numbers, ratio target"),
        Figure("pipeline", "speedup vs SDK, per CPU-second", ours["spans_per_cpu_s"],
               "spans/CPU-s", sdk["spans_per_cpu_s"], base, Target(">=", 2.5),
               "CPU time of the exporting process and its span export child"),
        Figure("pipeline", "in one process (no export child), wall",
               d["otelpeers_in_process"]["spans_per_s"], "spans/s", sdk["spans_per_s"], base,
               None, f"CPU: {d['otelpeers_in_process']['spans_per_cpu_s']:,} spans/CPU-s"),
    ], {"otlp_pipeline": d})


# ---- 2. kernel overhead + BPF run time ----------------------------------------------------
def parse_iperf_bps(text: str) -> float:
    d = json.loads(text)
    if "error" in d:
        raise RuntimeError(f"iperf3: {d['error']}")
    return float(d["end"]["sum_received"]["bits_per_second"])


@contextlib.contextmanager
def iperf_server(ns: host.NetNs, port: int = 5201) -> Iterator[int]:
    p = subprocess.Popen(ns.cmd("iperf3", "-s", "-p", str(port), "-B", ns.ns_ip),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait for the listener, not a fixed sleep
            out = host.sh(*ns.cmd("ss", "-ltnH", f"sport = :{port}"), check=False)
            if out.strip():
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("iperf3 server did not start")
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


def iperf(ns: host.NetNs, port: int, seconds: int) -> float:
    last = ""
    for _ in range(3):  # the server answers one client at a time; retry a busy refusal
        p = subprocess.run(["iperf3", "-c", ns.ns_ip, "-p", str(port), "-t", str(seconds),
                            "-J"], capture_output=True, text=True, timeout=seconds + 30)
        try:
            return parse_iperf_bps(p.stdout)
        except (RuntimeError, ValueError, KeyError) as exc:
            last = str(exc)
            time.sleep(0.5)
    raise RuntimeError(f"iperf3 client failed: {last}")


def overhead(ctx: Ctx) -> Result:
    # five rounds: iperf3 over veth swings 0.7-1.2x between single rounds on this host kind,
    # and three rounds left the 0.95 verdict to chance (docs/benchmarks.md)
    rounds = 1 if ctx.quick else 5
    secs = 2 if ctx.quick else 5
    storm_s = 2 if ctx.quick else 5
    tput: dict[str, list[float]] = {"off": [], "on": []}
    rate: dict[str, list[float]] = {"off": [], "on": [], "tcplife": [], "stopped": []}
    seen: list[dict[str, Any]] = []
    paused: list[dict[str, Any]] = []
    stats: dict[str, Any] = {}
    tl_path = ensure_tcplife()
    with host.netns(1) as ns, iperf_server(ns) as iport, storm.server(ns) as sport:
        def storm_rate() -> float:
            return storm.client(ns, sport, rate=0, seconds=storm_s).rate

        def measure(state: str) -> None:
            tput[state].append(iperf(ns, iport, secs))
            rate[state].append(storm_rate())

        states = ("off", "on", "tcplife", "stopped")
        for i in range(rounds):
            # rotate, so that no state always runs first or last in a round
            order = states[i % 4:] + states[:i % 4]
            for state in order:
                if state == "off":
                    measure("off")
                    continue
                if state == "stopped":  # programs attached, every agent process stopped
                    with ctx.agent(f"overhead-stopped-{i}") as a:
                        a.wait_idle()
                        with a.paused():
                            rate["stopped"].append(storm_rate())
                        a.wait_idle(timeout=240)
                    paused.append({"round": i, "kernel_drops": a.summary.drops_total
                                   if a.summary else None})
                    continue
                if state == "tcplife":  # the peer a user would pick instead, same storm
                    with tcplife_running(tl_path, ctx.workdir, f"overhead-{i}"):
                        rate["tcplife"].append(storm_rate())
                    continue
                with ctx.agent(f"overhead-{i}") as a:
                    measure("on")
                    if i == rounds - 1:
                        stats = bpf_run_time(ns, iport, sport, quick=ctx.quick)
                        a.wait_idle()
                flows = count_flows(a.flows_path, client_pred(ns, sport)).connections
                seen.append({"round": i, "agent_flows_to_storm": flows,
                             "summary": asdict(a.summary) if a.summary else None})
    gbit = 1e9
    figs = [
        Figure("overhead", "iperf3 TCP over veth, agent attached", median(tput["on"]) / gbit,
               "Gbit/s", median(tput["off"]) / gbit, "not attached", Target(">=", 0.95),
               f"median of {rounds} alternating rounds, -t {secs}; per-round ratios "
               + ", ".join(f"{r:.3f}" for r in paired_ratios(tput["on"], tput["off"]))),
        Figure("overhead", "connection storm rate, agent attached", median(rate["on"]),
               "conn/s", median(rate["off"]), "not attached", Target(">=", 0.80),
               f"C client, 2 procs, {storm_s} s, max rate; per-round ratios "
               + ", ".join(f"{r:.3f}" for r in paired_ratios(rate["on"], rate["off"])),
               overrule=storm_overrule(rate["stopped"], rate["off"])),
        Figure("overhead", "connection storm rate, bcc tcplife attached",
               median(rate["tcplife"]), "conn/s", median(rate["off"]), "not attached", None,
               "same storm, same rounds: the tool a user would run instead; per-round ratios "
               + ", ".join(f"{r:.3f}" for r in paired_ratios(rate["tcplife"], rate["off"]))),
        Figure("overhead", "connection storm rate, programs attached, agent stopped",
               median(rate["stopped"]), "conn/s", median(rate["off"]), "not attached", None,
               "same storm, same rounds, the agent and its processes stopped (SIGSTOP): the "
               "kernel side alone, the most any user space could reach; per-round ratios "
               + ", ".join(f"{r:.3f}" for r in paired_ratios(rate["stopped"], rate["off"]))
               + "; kernel drops while stopped "
               + ", ".join(f"{p['kernel_drops']:,}" if p["kernel_drops"] is not None else "?"
                           for p in paused)),
    ]
    per_conn = stats.get("storm", {}).get("bpf_ns_per_connection")
    if per_conn is not None:
        figs.append(Figure("overhead", "BPF run time per storm connection (all programs)",
                           per_conn, "ns", None, "", None,
                           "kernel.bpf_stats_enabled only during this reading"))
    for phase in ("storm", "iperf"):
        for name, s in stats.get(phase, {}).get("programs", {}).items():
            if s["runs"]:
                many = f", {s['programs']} programs" if s.get("programs", 1) > 1 else ""
                figs.append(Figure("bpf run time", f"{name} ({phase})", s["ns_per_run"],
                                   "ns/run", None, "", None, f"{s['runs']:,} runs{many}"))
    ctx.notes.append("Overhead ratios on 2 cores include the agent's user-space CPU: the "
                     "Python agent competes with client and server for the same cores.")
    return Result(figs, {"iperf_bps": tput, "storm_rate": rate, "rounds": seen,
                         "stopped_rounds": paused,
                         "bpf_stats": stats})


# Attaching programs cannot make a storm faster: past this much, the host's speed changed
# during the overhead group and its storm ratios do not stand.
UNSTEADY = 1.10


def storm_overrule(stopped: list[float], off: list[float]) -> tuple[str, bool | None] | None:
    """The storm target is not measured when the storm with the agent's programs attached
    (the agent stopped) ran clearly faster than the storm without them: the baseline rounds
    ran on a slower host than the others, so any ratio to them flatters the agent."""
    s, o = median(stopped), median(off)
    if s is None or not o or s <= UNSTEADY * o:
        return None
    return (f"not measured: the storm ran {s / o:.2f}x faster with the programs attached "
            f"and the agent stopped than without them ({s:,.0f} against {o:,.0f} conn/s); "
            "the host's speed changed during the group"), None


def bpf_run_time(ns: host.NetNs, iport: int, sport: int, quick: bool) -> dict[str, Any]:
    """Per-program run time from BPF statistics, enabled only for this reading."""
    out: dict[str, Any] = {}
    with host.sysctl("kernel.bpf_stats_enabled", "1"):
        b = host.read_prog_stats()
        r = storm.client(ns, sport, rate=0, seconds=2 if quick else 3)
        a = host.read_prog_stats()
        progs = host.prog_stats_delta(b, a)
        total = sum(p["run_time_ns"] for p in progs.values())
        out["storm"] = {"programs": progs, "connections": r.ok,
                        "bpf_ns_per_connection": round(total / r.ok, 1) if r.ok else None}
        b = host.read_prog_stats()
        bps = iperf(ns, iport, 2 if quick else 3)
        a = host.read_prog_stats()
        out["iperf"] = {"programs": host.prog_stats_delta(b, a), "bits_per_second": bps}
    return out


# ---- 3. loss ----------------------------------------------------------------------------
LOSS_STEPS = [1000, 2000, 5000, 10000, 20000, 0]  # conn/s; 0 = the storm's maximum rate
SUSTAINED_RATE, SUSTAINED_S = 10000, 60


def lossy_step(row: dict[str, Any]) -> bool:
    """A loss step lost detail: a connection without its own record on either side, or a
    span the exporter dropped or failed to send (the records alone would not show that)."""
    ok = row["connections_ok"]
    return (row["client_records"] < ok or row["server_records"] < ok
            or bool(row.get("spans_lost")))


REACHED = 0.95  # a step's rate counts as reached at this share of the asked rate


def loss_overrule(row: dict[str, Any], asked_rate: float) -> tuple[str, bool | None] | None:
    """When a step's spans target cannot stand on its record count: spans lost at export
    (NOT met, though every record was made), or a lossless step at a rate the generator did
    not reach (not measured: the target is about the asked rate). A lossy step at a lower
    rate than asked stays NOT met on its records."""
    if row["client_records"] >= row["connections_ok"] and row.get("spans_lost"):
        return f"NOT met: {row['spans_lost']:,} spans failed or dropped at export", False
    if asked_rate and row["achieved_rate"] < REACHED * asked_rate and not lossy_step(row):
        return (f"not measured: the generator reached {row['achieved_rate']:,} of the "
                f"{asked_rate:,.0f} conn/s asked on this host"), None
    return None


CAPACITY_S = 15  # the generator alone, before the sustained step


def generator_alone(ns: host.NetNs, port: int, tl_path: str, workdir: Path, rate: float,
                    seconds: float) -> dict[str, Any]:
    """The sustained step's load without the agent (tcplife beside it, as in the step): the
    cores the host keeps busy, and the rate reached."""
    with tcplife_running(tl_path, workdir, "capacity") as (_out, _err, tpid):
        b0 = host.host_busy()
        r = storm.client(ns, port, rate=rate, seconds=seconds)
        b1 = host.host_busy()
        _wait_cpu_idle(tpid, timeout=120)
    return {"seconds": seconds, "achieved_rate": round(r.rate),
            "busy_cores": round(host.busy_cores(b0, b1), 2)}


def capacity_figure(alone: dict[str, Any], row: dict[str, Any], rate: float) -> Figure:
    """The CPU the sustained step needs: the generator's and tcplife's (measured alone) plus
    the agent's CPU per record in the step times the records the asked rate makes. Above
    the host's cores, no agent at that cost per record can be lossless there."""
    cores = os.cpu_count() or 1
    name = f"CPU the {SUSTAINED_S} s step needs (generator and tcplife alone + agent)"
    cpu, records = row.get("agent_cpu_s"), row.get("agent_flows")
    if cpu is None or not records:
        return Figure("loss", name, None, "cores", cores, "the host's cores", None,
                      "not measured: no agent CPU or records")
    per_record = cpu / records
    agent_cores = per_record * 2 * rate  # both ends of each connection on this host
    return Figure(
        "loss", name, round(alone["busy_cores"] + agent_cores, 2), "cores", cores,
        "the host's cores", None,
        f"generator and tcplife alone at {rate:,.0f} conn/s ({alone['seconds']} s, no agent): "
        f"{alone['busy_cores']:.2f} cores busy, {alone['achieved_rate']:,} conn/s reached; "
        f"the agent in the step: {1e6 * per_record:.0f} us of CPU per record (its processes, "
        f"{cpu:.1f} CPU-s for {records:,} records), so {agent_cores:.2f} cores for the "
        f"{2 * rate:,.0f} records/s asked; above the host's cores no agent at that cost can "
        "keep every record")


def loss(ctx: Ctx) -> Result:
    """Paced storms, the agent and bcc's tcplife side by side at every step (both restarted
    per step). Counts against the generator: connections the agent accounted for (its own
    records plus the counts of summary records, from the kernel's aggregates: must be exact)
    and per-connection records (spans), and tcplife's sessions."""
    steps = [1000, 10000, 0] if ctx.quick else LOSS_STEPS
    step_s = 2 if ctx.quick else 5
    tl_path = ensure_tcplife()
    rows: list[dict[str, Any]] = []
    figs: list[Figure] = []
    base = "connections the generator completed"
    with host.netns(2) as ns, storm.server(ns) as port:
        def step(rate_: float, seconds: float, tag: str) -> dict[str, Any]:
            with ctx.agent(f"loss-{tag}") as a, \
                    tcplife_running(tl_path, ctx.workdir, f"loss-{tag}") as (out, err, tpid):
                cpu0 = host.tree_cpu_seconds(a.pid)
                r = storm.client(ns, port, rate=rate_, seconds=seconds)
                a.wait_idle(timeout=240)
                cpu1 = host.tree_cpu_seconds(a.pid)
                _wait_cpu_idle(tpid, timeout=120)
            cl = count_flows(a.flows_path, client_pred(ns, port))
            sv = count_flows(a.flows_path, server_pred(ns, port))
            tl_cl, tl_sv = parse_tcplife(out.read_text(), ns.ns_ip, port)
            s = a.summary
            return {"target_rate": rate_, "seconds": seconds, "achieved_rate": round(r.rate),
                    "connections_ok": r.ok, "connections_failed": r.failed,
                    "client": asdict(cl), "server": asdict(sv),
                    "client_connections": cl.connections, "server_connections": sv.connections,
                    "client_records": cl.complete, "server_records": sv.complete,
                    "tcplife_client": tl_cl, "tcplife_server": tl_sv,
                    "tcplife_lost": parse_lost(err.read_text() + out.read_text()),
                    "kernel_drops": s.kernel_drops if s else None,
                    "drops_total": s.drops_total if s else None,
                    "agent_events": s.events if s else None,
                    "agent_flows": s.flows if s else None,
                    "spans_exported": s.spans_exported if s else None,
                    "spans_lost": (s.spans_failed or 0) + (s.spans_dropped or 0) if s else None,
                    "agent_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 2)}

        def label(rate_: float) -> str:
            return "max rate" if rate_ == 0 else f"{rate_:,.0f} conn/s"

        def step_figures(row: dict[str, Any], what: str, spans_target: Target | None,
                         asked_rate: float = 0) -> list[Figure]:
            ok = row["connections_ok"]
            lossy = lossy_step(row)
            return [
                Figure("loss", f"connections accounted, {what} (aggregates)",
                       row["client_connections"], "connections", ok, base, Target("==", 1.0),
                       f"client side; server side {row['server_connections']:,}; "
                       f"achieved {row['achieved_rate']:,} conn/s"),
                Figure("loss", f"per-connection records (spans), {what}",
                       row["client_records"], "flows", ok, base, spans_target,
                       f"client side; server side {row['server_records']:,}; summary records "
                       f"stand for {row['client']['summarized'] + row['server']['summarized']:,}"
                       f"; kernel drops {row['drops_total']}; spans exported "
                       f"{row['spans_exported']} (flows and DNS lookups) for the agent's "
                       f"{row['agent_flows']} flows, "
                       f"failed or dropped {row['spans_lost']}" + ("; LOSSY" if lossy else ""),
                       overrule=loss_overrule(row, asked_rate) if spans_target else None),
                Figure("loss", f"tcplife sessions, {what}", row["tcplife_client"], "sessions",
                       ok, base, None, f"client side, same storm beside the agent; server side "
                       f"{row['tcplife_server']:,}; perf buffer lost {row['tcplife_lost']}"),
            ]

        first_lossy: float | None = None
        for rate_ in steps:
            row = step(rate_, step_s, str(rate_ or "max"))
            rows.append(row)
            figs += step_figures(row, f"{label(rate_)}, {step_s} s", None)
            if first_lossy is None and (lossy_step(row) or row["drops_total"]):
                first_lossy = row["achieved_rate"] if rate_ == 0 else rate_
        if not ctx.quick:
            alone = generator_alone(ns, port, tl_path, ctx.workdir, SUSTAINED_RATE, CAPACITY_S)
            row = step(SUSTAINED_RATE, SUSTAINED_S, f"sustained-{SUSTAINED_RATE}")
            rows.append(row | {"generator_alone": alone})
            figs += step_figures(row, f"{SUSTAINED_S} s at {SUSTAINED_RATE:,} conn/s",
                                 Target(">=", 1.0), SUSTAINED_RATE)
            figs.append(capacity_figure(alone, row, SUSTAINED_RATE))
    figs.insert(0, Figure(
        "loss", "first step with lost per-connection records", first_lossy, "conn/s", None, "",
        None, "none up to the storm's maximum rate" if first_lossy is None else
        f"steps {[label(r) for r in steps]}, {step_s} s each; agent and tcplife restarted "
        "per step; both ends of each connection on this host (2 flows per connection)"))
    return Result(figs, {"steps": rows})


# ---- 4. memory ----------------------------------------------------------------------------
# conn/s for building and churning state, kept below the rates where events dropped here
HOLD_RATE = 2000  # held connections: ~5 events each (no close while measured)
CHURN_RATE = 1000  # short connections: ~8 events each
PER_PROCESS = 15_000  # held connections per holder/server process
SCAN_WAIT_S = 6.0  # one scan interval (kernel.stats_interval_s) and the 1 s open-flow age


def memory(ctx: Ctx) -> Result:
    """RSS and map memory with N idle connections held open, then under churn.

    One agent per level, stopped while the connections are still open: its drain at stop
    reports every flow it was tracking (incomplete), which is the live-flow count.
    """
    levels = [500, 5000] if ctx.quick else [500, 5000, 50000]  # connections; 2 flows each
    churn_total = 20_000 if ctx.quick else 100_000
    kernel = {"max_sockets": 262144}
    flows_cfg = {"max_flows": 262144}
    rows: list[dict[str, Any]] = []
    figs: list[Figure] = []
    floor = runtime_floor_rss(ctx.agent_root)
    idle: dict[str, Any] = {}
    with ctx.agent("memory-idle") as a:
        a.wait_idle()
        main, children = a.rss_split()
        idle = {"rss": a.rss(), "main": main, "children": children, "pss": a.pss(),
                "maps": host.mapped_libraries(a.pid)}
    llvm = [m for m in idle["maps"] if COMPILER_LIBS.search(m)]
    figs.append(Figure(
        "memory", "agent RSS, idle (all its processes)", (idle["rss"] or 0) / MB, "MB",
        floor / MB, "interpreter + OTel SDK + gRPC, imported, nothing else",
        Target("<=", 80, "value"),
        f"after start-up, no traffic; agent process {(main or 0) / MB:.1f} MB, its children "
        f"(detection, span export) {children / MB:.1f} MB; the compiler child is gone by then"))
    figs.append(Figure(
        "memory", "agent PSS, idle (all its processes)", (idle["pss"] or 0) / MB, "MB", None,
        "", None, "proportional set size: pages the processes share (the interpreter, libc, "
        "module files) counted once in the total, where the RSS sum counts them in each; "
        "what the agent adds to the host's used memory, apart from kernel memory (BPF maps)"))
    figs.append(Figure(
        "memory", "compiler libraries mapped in the idle agent", len(llvm), "libraries", None,
        "", Target("<=", 0, "value"), ", ".join(sorted(llvm)) or "no libLLVM, libclang, libbcc"))
    with host.netns(3) as ns:
        for conns in levels:
            with contextlib.ExitStack() as stack:
                # Without CAP_SYS_RESOURCE a process keeps at most RLIMIT_NOFILE (20,000
                # here) fds: one server and one holder process per 15,000 connections.
                sizes = [min(PER_PROCESS, conns - i) for i in range(0, conns, PER_PROCESS)]
                ports = [stack.enter_context(storm.server(ns, workers=1, hold=True))
                         for _ in sizes]
                a = stack.enter_context(ctx.agent(f"memory-{conns}", kernel=kernel,
                                                  flows=flows_cfg))
                a.wait_idle()
                idle_rss, idle_maps = a.rss(), sum(host.read_agent_map_memory().values())
                t0 = time.monotonic()
                held = failed = 0
                for port, n in zip(ports, sizes, strict=True):
                    h, f = stack.enter_context(storm.held(ns, [port], n, rate=HOLD_RATE))
                    held, failed = held + h, failed + f
                # long connections are announced by the agent's periodic scan of the kernel
                # socket table (kernel.stats_interval_s): let one pass before measuring
                time.sleep(SCAN_WAIT_S)
                a.wait_idle(timeout=120)
                rss, maps = a.rss(), sum(host.read_agent_map_memory().values())
                pss = a.pss()
                s = a.stop()  # connections still open: open flows are drained as live
            live = sum(count_flows(a.flows_path, client_pred(ns, p)).records
                       + count_flows(a.flows_path, server_pred(ns, p)).records for p in ports)
            rows.append({"connections": conns, "held": held, "failed": failed,
                         "setup_s": round(time.monotonic() - t0, 1), "idle_rss": idle_rss,
                         "rss": rss, "pss": pss, "idle_bpf_map_bytes": idle_maps,
                         "bpf_map_bytes": maps,
                         "live_flows": live, "kernel_drops": s.drops_total if s else None})
        churn_rows: list[dict[str, Any]] = []
        with storm.server(ns) as port, ctx.agent("memory-churn", kernel=kernel,
                                                 flows=flows_cfg) as a:
            a.wait_idle()
            churn_rows.append({"after_connections": 0, "ok": 0, "rss": a.rss()})
            chunks, done = 4, 0
            for _ in range(chunks):
                r = storm.client(ns, port, rate=CHURN_RATE,
                                 seconds=churn_total / chunks / CHURN_RATE)
                done += r.ok
                a.wait_idle(timeout=120)
                churn_rows.append({"after_connections": done, "ok": r.ok, "rss": a.rss()})
        churn_drops = a.summary.drops_total if a.summary else None
    for row in rows:
        target = Target("<=", 150, "value") if row["connections"] >= 50000 else None
        figs.append(Figure(
            "memory", f"agent RSS, {row['live_flows']:,} live flows "
            f"({row['held']:,} idle TCP connections)", (row["rss"] or 0) / MB, "MB",
            (row["idle_rss"] or 0) / MB, "same agent before the connections", target,
            f"kernel drops {row['kernel_drops']}; kernel.max_sockets and flows.max_flows "
            f"raised to 262144; PSS (shared pages once) {(row['pss'] or 0) / MB:.0f} MB"))
        figs.append(Figure(
            "memory", f"BPF map memory at {row['held']:,} connections",
            row["bpf_map_bytes"] / MB, "MB", row["idle_bpf_map_bytes"] / MB, "idle", None,
            "bytes_memlock of the agent's maps (preallocated)"))
    if len(churn_rows) > 2:
        first, last = churn_rows[1], churn_rows[-1]
        figs.append(Figure(
            "memory", f"agent RSS after {last['after_connections']:,} churned connections",
            (last["rss"] or 0) / MB, "MB", (first["rss"] or 0) / MB,
            f"after the first {first['after_connections']:,}", Target("<=", 1.10),
            f"flat = grows <= 10% over the churn; short flows at {CHURN_RATE:,} conn/s; "
            f"idle before churn {(churn_rows[0]['rss'] or 0) / MB:.0f} MB; kernel drops "
            f"{churn_drops}"))
    return Result(figs, {"levels": rows, "churn": churn_rows, "hold_rate": HOLD_RATE,
                         "churn_rate": CHURN_RATE, "churn_kernel_drops": churn_drops,
                         "floor_rss": floor, "idle": idle})


COMPILER_LIBS = re.compile(r"libLLVM|libclang|libbcc")
FLOOR_SCRIPT = """
import otelpeers.cli, otelpeers.agent, otelpeers.config
import opentelemetry.sdk.trace, opentelemetry.sdk.metrics
import opentelemetry.exporter.otlp.proto.grpc.trace_exporter
import opentelemetry.exporter.otlp.proto.grpc.metric_exporter
import grpc
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]) * 1024)
"""


def runtime_floor_rss(root: Path) -> int:
    """RSS of the interpreter with what the agent imports (OTel SDK, gRPC), doing nothing:
    the floor under any Python agent of this kind, measured in the same run."""
    p = subprocess.run([sys.executable, "-c", FLOOR_SCRIPT], cwd=root, capture_output=True,
                       text=True, timeout=120, check=True)
    return int(p.stdout.strip().splitlines()[-1])


# ---- 5. start-up -------------------------------------------------------------------------
def interpreter_baseline(root: Path, n: int = 3) -> float:
    """Seconds for `python -m otelpeers --version`: the interpreter and CLI import alone."""
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "otelpeers", "--version"], cwd=root,
                       capture_output=True, timeout=60, check=True)
        times.append(time.monotonic() - t0)
    return statistics.median(times)


def startup(ctx: Ctx, cold_starts: int = 2, warm_starts: int = 3) -> Result:
    """Start-up with the programs from the program cache (every start after the first on a
    host) and compiled (the first start, and after a kernel, bcc or configuration change)."""
    for i in range(cold_starts):  # an empty cache: these compile
        shutil.rmtree(ctx.workdir / PROGRAM_CACHE, ignore_errors=True)
        with ctx.agent(f"startup-cold-{i}"):
            pass
    for i in range(warm_starts):
        with ctx.agent(f"startup-warm-{i}"):
            pass
    base = interpreter_baseline(ctx.agent_root)
    warm = [s for s, cached in ctx.startups if cached]
    cold = [s for s, cached in ctx.startups if not cached]
    figures = []
    if warm:
        figures.append(Figure(
            "startup", "process start -> sensors attached, programs cached (median)",
            median(warm), "s", base, "`python -m otelpeers --version`", Target("<=", 2, "value"),
            f"{len(warm)} starts in this run, max {max(warm):.2f} s; programs compiled at an "
            "earlier start loaded from the program cache (no clang)"))
    figures.append(Figure(
        "startup", "process start -> sensors attached, compiled (median)", median(cold), "s",
        base, "`python -m otelpeers --version`", None,
        f"{len(cold)} starts in this run, max {max(cold):.2f} s; bcc compiles the C source in "
        "a child process: a host's first start, and the first after a kernel, bcc or "
        "table-size change" + ("" if warm else "; this agent has no program cache")))
    return Result(figures, {"startup_s": [s for s, _ in ctx.startups],
                            "startup_cached": [c for _, c in ctx.startups],
                            "interpreter_s": base})


# ---- 6. bcc tcplife side by side ---------------------------------------------------------
TCPLIFE = "/usr/sbin/tcplife-bpfcc"


def ensure_tcplife() -> str:
    if shutil.which(TCPLIFE) or os.path.exists(TCPLIFE):
        return TCPLIFE
    p = subprocess.run(["apt-get", "install", "-y", "bpfcc-tools"], capture_output=True,
                       text=True, timeout=300)
    if p.returncode != 0 or not os.path.exists(TCPLIFE):
        raise RuntimeError(f"bpfcc-tools could not be installed: {p.stderr.strip()[-300:]}")
    return TCPLIFE


def parse_tcplife(text: str, addr: str, port: int) -> tuple[int, int]:
    """(client-side, server-side) sessions to addr:port in tcplife's default output."""
    client = server = 0
    for line in text.splitlines():
        f = line.split()
        if len(f) < 9 or not f[0].isdigit():
            continue
        laddr, lport, raddr, rport = f[-7], f[-6], f[-5], f[-4]
        if raddr == addr and rport == str(port):
            client += 1
        elif laddr == addr and lport == str(port):
            server += 1
    return client, server


def parse_lost(text: str) -> int:
    """Samples bcc's perf buffer reported lost ('Possibly lost N samples')."""
    n = 0
    for line in text.splitlines():
        if line.startswith("Possibly lost"):
            with contextlib.suppress(ValueError, IndexError):
                n += int(line.split()[2])
    return n


@contextlib.contextmanager
def tcplife_running(path: str, workdir: Path, tag: str) -> Iterator[tuple[Path, Path, int]]:
    out, err = workdir / f"tcplife-{tag}.out", workdir / f"tcplife-{tag}.err"
    with out.open("w") as fo, err.open("w") as fe:
        t0 = time.monotonic()
        p = subprocess.Popen([path], stdout=fo, stderr=fe, start_new_session=True)
        try:
            while "PID" not in out.read_text():  # the header comes once the probe is attached
                if p.poll() is not None or time.monotonic() - t0 > 60:
                    raise RuntimeError(f"tcplife did not start: {err.read_text()[-400:]}")
                time.sleep(0.05)
            yield out, err, p.pid
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=10)


def _wait_cpu_idle(pid: int, quiet_s: float = 1.0, timeout: float = 60) -> None:
    """Wait until a process's CPU time stops growing for quiet_s (it has caught up)."""
    t0 = time.monotonic()
    last, quiet_since = host.cpu_seconds(pid), time.monotonic()
    while time.monotonic() - t0 < timeout:
        time.sleep(0.25)
        now = host.cpu_seconds(pid)
        if now is None:
            return
        if last is not None and now - last > 0.02:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        last = now


# ---- 6. detection's cost: every rule on against detection off ------------------------------
DETECT_RATES = [5000, 10000]  # conn/s: lossless here, and the first lossy step


def detect(ctx: Ctx) -> Result:
    """The loss steps and the user-space pipeline, detection off against every rule on,
    alternating in the same run (off, on, on, off per rate)."""
    figs: list[Figure] = []
    records = 20_000 if ctx.quick else 120_000
    out = ctx.workdir / "detect_cost.json"
    p = subprocess.run([sys.executable, "bench/detect_cost.py", "--records", str(records),
                        "--rounds", "2" if ctx.quick else "6", "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"bench/detect_cost.py failed: {p.stderr.strip()[-600:]}")
    d = json.loads(out.read_text())
    note = (f"{records:,} synthetic connection records through the whole pipeline as `run` "
            "builds it (rules in their own process; spans to files), median of alternating "
            "rounds")
    base = "detection off, same stream"
    on_rounds = d["rounds"]["on"]
    off_rounds = d["rounds"]["off"]
    rules_cpu = (sum(r["children_cpu_s"] for r in on_rounds) / len(on_rounds)
                 - sum(r["children_cpu_s"] for r in off_rounds) / len(off_rounds))
    figs += [
        Figure("detect", "pipeline records/s, every rule on", d["on_records_per_s"],
               "records/s", d["off_records_per_s"], base, Target(">=", 0.9),
               note + ", flows reaching the sinks per wall second, 10% to 90% of the stream"),
        Figure("detect", "pipeline records per CPU-second, every rule on",
               d["on_records_per_cpu_s"], "records/CPU-s", d["off_records_per_cpu_s"], base,
               Target(">=", 0.9), note + ", CPU of the agent's process (every thread) until "
               "all was exported"),
        Figure("detect", "CPU of the rules' own process per record", rules_cpu / records * 1e6,
               "us", None, "children's CPU, on minus off", None,
               f"detections {[r['detections'] for r in on_rounds]}, inputs not judged "
               f"{[r['inputs_dropped'] for r in on_rounds]}, exported before their verdict "
               f"{[r['exported_before_verdict'] for r in on_rounds]} (niced: behind at "
               "saturation)"),
    ]
    rows: list[dict[str, Any]] = []
    step_s = 2 if ctx.quick else 5
    with host.netns(2) as ns, storm.server(ns) as port:
        for rate_ in DETECT_RATES:
            got: dict[str, list[int]] = {"off": [], "on": []}
            made: dict[str, list[int]] = {"off": [], "on": []}
            for mode in ("off", "on", "on", "off"):
                with ctx.agent(f"detect-{mode}-{rate_}",
                               detect={"enabled": mode == "on"}) as a:
                    r = storm.client(ns, port, rate=rate_, seconds=step_s)
                    a.wait_idle(timeout=240)
                cl = count_flows(a.flows_path, client_pred(ns, port))
                got[mode].append(cl.complete)
                made[mode].append(r.ok)
                rows.append({"rate": rate_, "detect": mode, "made": r.ok,
                             "client_records": cl.complete,
                             "drops_total": a.summary.drops_total if a.summary else None})
            on = sum(got["on"]) / max(1, sum(made["on"]))
            off = sum(got["off"]) / max(1, sum(made["off"]))
            figs.append(Figure(
                "detect", f"per-connection records at {rate_:,} conn/s, every rule on", on,
                "of made", off, "detection off (share of made)", Target(">=", 0.9),
                f"client side, 2 rounds each of {step_s} s, alternating; made on "
                f"{sum(made['on']):,}, off {sum(made['off']):,}"))
    return Result(figs, {"pipeline": d, "steps": rows})


# bcc's tcplife runs beside the agent in "loss" (every step) and "overhead" (storm rate).
BENCHES: dict[str, Callable[[Ctx], Result]] = {
    "pipeline": pipeline, "overhead": overhead, "loss": loss, "detect": detect,
    "memory": memory, "startup": startup,  # startup last: it uses every start before it
}

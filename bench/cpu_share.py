"""Where the agent's CPU goes under a paced storm, and how long its threads wait for a CPU.

The loss group's 60 s step as one run: the agent as the bench starts it (its own session),
bcc's tcplife beside it (--tcplife), the storm generator into a test namespace. Per thread of
the agent's processes: CPU used and time spent runnable but waiting for a CPU
(/proc/PID/task/TID/schedstat), then the kernel drops from the agent's stop line. A thread
that waits a large share of each second is short of CPU share (the host is saturated), not
of work it could do faster; see docs/benchmarks.md (sixth session).

    sudo .venv/bin/python bench/cpu_share.py --rate 10000 --seconds 30 --tcplife
    sudo .venv/bin/python bench/cpu_share.py --rate 10000 --seconds 60 --tcplife --nice -4
    sudo .venv/bin/python bench/cpu_share.py --rate 10000 --seconds 25 --profile /tmp/p.txt
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import host, storm  # noqa: E402
from bench.agent import REPO, running  # noqa: E402
from bench.figures import ensure_tcplife, tcplife_running  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")

Sample = dict[tuple[int, int], tuple[float, float, str]]  # (pid, tid) -> (cpu s, wait s, comm)


def sample(pids: list[int]) -> Sample:
    out: Sample = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError):
                    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                    comm = stat[stat.index("(") + 1:stat.rindex(")")]
                    rest = stat[stat.rindex(")") + 2:].split()
                    cpu = (int(rest[11]) + int(rest[12])) / TICK
                    wait = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
                    out[(pid, int(tid))] = (cpu, wait / 1e9, comm)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:70]
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=10_000, help="connections/s asked (0: max)")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--tcplife", action="store_true", help="run bcc's tcplife beside it")
    ap.add_argument("--nice", type=int, default=None,
                    help="set this niceness on the agent and its export process (experiment)")
    ap.add_argument("--profile", type=Path, default=None,
                    help="py-spy raw profile of the agent's process to this file (py-spy on PATH)")
    ap.add_argument("--agent-root", type=Path, default=REPO, help="checkout to run the agent from")
    a = ap.parse_args(argv)
    wd = Path(tempfile.mkdtemp(prefix="otelpeers-cpu-share-"))
    with host.netns(2) as ns, storm.server(ns) as port, contextlib.ExitStack() as stack:
        agent = stack.enter_context(running(wd, "cpu-share", root=a.agent_root))
        if a.tcplife:
            stack.enter_context(tcplife_running(ensure_tcplife(), wd, "cpu-share"))
        pids = [agent.pid, *host.child_pids(agent.pid)]
        if a.nice is not None:
            for pid in (p for p in pids if "detect" not in cmdline(p)):
                for tid in os.listdir(f"/proc/{pid}/task"):
                    os.setpriority(os.PRIO_PROCESS, int(tid), a.nice)
        prof = None
        if a.profile is not None:
            prof = subprocess.Popen(
                ["py-spy", "record", "--pid", str(agent.pid), "--duration",
                 str(max(1, int(a.seconds) - 4)), "--rate", "100", "--format", "raw",
                 "-o", str(a.profile), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before, busy0 = sample(pids), host.host_busy()
        t0 = time.monotonic()
        result = storm.client(ns, port, rate=a.rate, seconds=a.seconds)
        wall = time.monotonic() - t0
        after, busy1 = sample(pids), host.host_busy()
        names = {pid: cmdline(pid) for pid in pids}  # before the agent stops
        if prof is not None:
            prof.wait()
        summary = agent.stop()
    print(f"achieved {result.rate:,.0f} conn/s ({result.ok:,} connections) in {wall:.1f} s; "
          f"host busy {100 * host.busy_cores(busy0, busy1):.0f}% of "
          f"{100 * (os.cpu_count() or 1)}%")
    print(f"agent: {summary.flows if summary else '?'} flows, kernel drops "
          f"{summary.kernel_drops if summary else '?'}")
    for (pid, tid), (cpu, wait, comm) in sorted(after.items()):
        cpu0, wait0, _ = before.get((pid, tid), (0.0, 0.0, comm))
        if cpu - cpu0 >= 0.02 * wall:
            print(f"  {names[pid][:48]:48s} tid {tid} ({comm}): {(cpu - cpu0) / wall:.2f} "
                  f"core, runnable-waiting {(wait - wait0) / wall:.2f} s/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

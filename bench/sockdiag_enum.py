"""How long enumerate_sockets() takes with many real sockets.

    sudo .venv/bin/python -m bench.sockdiag_enum [--connections 5000] [--processes 4] [--runs 5]

Creates a network namespace, starts PROCESSES holders in it that together open CONNECTIONS
loopback TCP connections (both ends held: 2 x CONNECTIONS sockets, plus one listener each)
and waits until all are established, then times enumerate_sockets() over the whole host
(every namespace, owners included). Prints one JSON line. Loads no BPF. The namespace and
the holders are removed on every exit path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

HOLDER = r"""
import os, resource, socket, sys
n = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 2 * n + 64)), hard))
lst = socket.socket()
lst.bind(("127.0.0.1", 0))
lst.listen(4096)
port = lst.getsockname()[1]
held = []
for _ in range(n):
    c = socket.socket()
    c.connect(("127.0.0.1", port))
    a, _ = lst.accept()
    held += (c, a)
print("READY", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def namespace(name: str) -> Iterator[None]:
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sockdiag_enum",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=5000)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespace, other processes' fds)", file=sys.stderr)
        return 2
    from otelpeers.kernel.sockdiag import enumerate_sockets

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    name = f"otp-bench-sd-{os.getpid()}"
    per = max(1, args.connections // args.processes)
    holders: list[subprocess.Popen[str]] = []
    with namespace(name):
        try:
            t0 = time.monotonic()
            for _ in range(args.processes):
                holders.append(subprocess.Popen(
                    ["ip", "netns", "exec", name, sys.executable, "-c", HOLDER, str(per)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            for h in holders:
                line = h.stdout.readline()  # type: ignore[union-attr]
                if not line.startswith("READY"):
                    raise RuntimeError(f"holder failed to start: {line!r}")
            setup_s = time.monotonic() - t0
            times, last = [], None
            for _ in range(args.runs):
                t = time.monotonic()
                last = enumerate_sockets()
                times.append(time.monotonic() - t)
            assert last is not None
            pids = {h.pid for h in holders}
            in_ns = [s for s in last.sockets if s.netns_inode != last.stats.namespaces[0].inode]
            owned = sum(1 for s in in_ns if s.owner is not None and s.owner.tgid in pids)
            print(json.dumps({
                "sockets_total": len(last.sockets),
                "sockets_in_bench_namespace": len(in_ns),
                "owned_by_holders": owned,
                "namespaces": len(last.stats.namespaces),
                "processes_walked": last.stats.walk.processes,
                "fds_read": last.stats.walk.fds,
                "enumerate_s_median": round(statistics.median(times), 4),
                "enumerate_s_min": round(min(times), 4),
                "enumerate_s_max": round(max(times), 4),
                "dump_s": round(last.stats.dump_s, 4),
                "walk_s": round(last.stats.walk_s, 4),
                "setup_s": round(setup_s, 2),
                "rlimit_nofile": [soft, hard],
            }))
        finally:
            for h in holders:
                with contextlib.suppress(Exception):
                    h.stdin.close()  # type: ignore[union-attr]
            for h in holders:
                try:
                    h.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    h.kill()
                    h.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Beacon and port-scan incidents with parameters drawn at random: the held-out variants.

bench.detect.generate plants a fixed list of beacons (periods 1 s - 1 h at chosen jitter and
miss rates) and scans. The `beacon` and `port_scan` rules were tuned on those; this module
keeps the same benign network (the same look-alikes, the same Scenario) and replaces the
beacons and scans with ones drawn from a seeded generator, so the rules are also judged on
parameter combinations nobody looked at while tuning:

- beacons: period log-uniform in 1 s - 1 h, jitter uniform in 0-50 %, missed beats uniform
  in 0-30 %, TCP or UDP, constant or varied sizes, some opening two connections per beat
  (a burst), some reaching a dead C2 (every attempt refused or unanswered), one C2 shared
  by 2-4 hosts;
- scans: vertical (connect and SYN style) of 30-3000 ports in 10 s - 10 min, horizontal
  sweeps of 20-400 hosts (internal and external, TCP and a UDP sweep) with 30-95 %
  unanswered, and slow scans pacing 10-30 probes an hour over hours.

    python -m bench.detect.beacon_scan_variants --out DIR --seed N [--small]

writes the same files as bench.detect.generate (conn.log, dns.log, truth.json).
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable

from bench.detect import generate as gen
from bench.detect.generate import HOUR, Dataset, Scenario, _Gen, periodic


class VariantGen(_Gen):
    """The benign network of bench.detect.generate with drawn beacons and scans."""

    def beacons(self, take: Callable[[list[str]], str], ws: list[str], ws_on: list[str],
                servers: list[str]) -> None:
        r = self.rng("variant-beacon")
        # Periods spread over 1 s - 1 h: one draw per band (log-uniform within it).
        bands = [(1, 4), (4, 20), (20, 90), (90, 400), (400, 1500), (1500, 3600)]
        for i in range(12):
            lo, hi = bands[i % len(bands)]
            period = math.exp(r.uniform(math.log(lo), math.log(hi)))
            jitter, miss = r.uniform(0, 0.5), r.uniform(0, 0.3)
            proto = r.choice(("tcp", "udp"))
            sizes = r.choice(("const", "varied"))
            burst = r.random() < 0.25
            # long enough for about 60 beats (48 h at most), on hosts that are on that long
            hours = min(46.0, max(0.25, 60 * period / (1 - miss) / HOUR))
            pool = servers if hours > 8 else r.choice((ws, servers, ws_on))
            actor = take(pool)
            c2 = self.fresh_addrs(1, r)[0]
            day = 0 if hours > 20 else r.choice((0, 1))
            start = self.at(day, r.uniform(0, 1) if hours > 8 else r.uniform(9.5, 14))
            if pool is ws:
                start = max(start, self.on[actor][day][0] + 60)
            mark = len(self.conn)
            beats = self._variant_beacon(r, actor, c2, r.choice((443, 80, 8080, 53535)), proto,
                                         period, jitter, miss, sizes, burst, start,
                                         start + hours * HOUR)
            self.incident("beacon", actor, mark, peers=[c2], period_s=round(period, 2),
                          jitter=round(jitter, 3), miss=round(miss, 3), proto=proto,
                          sizes=sizes, burst=burst, beats=beats,
                          note=f"variant: period {period:.1f}s jitter {jitter:.0%} "
                               f"miss {miss:.0%} {proto}{' burst' if burst else ''}")
        for _ in range(2):  # dead C2s
            period = r.uniform(2, 30)
            jitter = r.uniform(0, 0.4)
            state = r.choice(("S0", "REJ"))
            actor = take(servers)
            c2 = self.fresh_addrs(1, r)[0]
            start = self.at(r.choice((0, 1)), r.uniform(1, 20))
            mark = len(self.conn)
            times = periodic(r, start, start + r.uniform(20, 60) * 60, period, jitter)
            for t in times:
                if state == "S0":
                    self.tcp(t, actor, c2, 443, r.randint(1, 3), 0, 0, state="S0", mal=True)
                else:
                    self.tcp(t, actor, c2, 443, 0, 0, 0.03, state="REJ", mal=True)
            self.incident("beacon", actor, mark, peers=[c2], period_s=round(period, 2),
                          jitter=round(jitter, 3), miss=0.0, proto="tcp", sizes="none",
                          beats=len(times), note=f"variant: dead C2 ({state}) every "
                                                 f"{period:.1f}s jitter {jitter:.0%}")
        c2 = self.fresh_addrs(1, r)[0]
        period, jitter, miss = r.uniform(60, 900), r.uniform(0.1, 0.5), r.uniform(0, 0.2)
        for k in range(r.randint(2, 4)):
            actor = take(ws_on)
            start = self.at(k % 2, r.uniform(0, 6))
            mark = len(self.conn)
            beats = self._variant_beacon(r, actor, c2, 443, "tcp", period, jitter, miss,
                                         "varied", False, start, start + 20 * HOUR)
            self.incident("beacon", actor, mark, peers=[c2], period_s=round(period, 2),
                          jitter=round(jitter, 3), miss=round(miss, 3), proto="tcp",
                          sizes="varied", beats=beats,
                          note=f"variant: shared C2 every {period:.0f}s jitter {jitter:.0%}")

    def _variant_beacon(self, r: random.Random, actor: str, c2: str, port: int, proto: str,
                        period: float, jitter: float, miss: float, sizes: str, burst: bool,
                        start: float, end: float) -> int:
        ob0, rb0 = r.randint(100, 1500), r.randint(80, 4000)
        beats = 0
        for t in periodic(r, start, end, period, jitter, miss):
            if not self.is_on(actor, t):
                continue
            for j in range(2 if burst else 1):
                tt = t + j * r.uniform(0.05, 0.5) * min(1.0, period / 4)
                if sizes == "const":
                    ob, rb = ob0 + r.randint(-4, 4), rb0 + r.randint(-4, 4)
                else:
                    ob = int(ob0 * r.lognormvariate(0, 0.8))
                    rb = int(rb0 * r.lognormvariate(0, 1.2))
                if proto == "tcp":
                    self.tcp(tt, actor, c2, port, ob, rb, r.uniform(0.02, 0.3), mal=True)
                else:
                    self.udp(tt, actor, c2, port, ob, rb, r.uniform(0.02, 0.2), mal=True)
            beats += 1
        return beats

    def scans(self, take: Callable[[list[str]], str], ws: list[str], ws_on: list[str],
              servers: list[str]) -> None:
        r = self.rng("variant-scan")

        def probe(t: float, actor: str, dst: str, port: int, kind: str, proto: str) -> None:
            if proto == "udp":
                if kind == "open":
                    self.udp(t, actor, dst, port, r.randint(20, 80), r.randint(20, 200), 0.01,
                             mal=True)
                else:
                    self.udp(t, actor, dst, port, r.randint(20, 80), 0, None, mal=True)
                return
            if kind == "open":
                self.tcp(t, actor, dst, port, 0, 0, r.uniform(0.001, 0.01), mal=True)
            elif kind == "syn_open":
                self.tcp(t, actor, dst, port, 0, 0, 0.005, state="RSTO", mal=True)
            elif kind == "closed":
                self.tcp(t, actor, dst, port, 0, 0, 0.001, state="REJ", mal=True)
            else:
                self.tcp(t, actor, dst, port, r.choice((1, 2)), 0, 0, state="S0", mal=True)

        def times(start: float, span: float, n: int) -> list[float]:
            if span < HOUR:
                return sorted(r.uniform(start, start + span) for _ in range(n))
            return periodic(r, start, start + 3 * span, span / n, 0.3)[:n]

        def run(actor: str, targets: list[tuple[str, int]], start: float, span: float,
                answer: Callable[[str, int], str], proto: str, note: str, **params: object
                ) -> None:
            mark = len(self.conn)
            order = list(targets)
            r.shuffle(order)
            for t, (dst, port) in zip(times(start, span, len(order)), order, strict=False):
                probe(t, actor, dst, port, answer(dst, port), proto)
            self.incident("port_scan", actor, mark, note=note, proto=proto, span_s=span,
                          **params)

        def mix(p_closed: float, p_silent: float, open_: str = "open") -> Callable[[str, int],
                                                                                    str]:
            def answer(dst: str, port: int) -> str:
                x = r.random()
                return "closed" if x < p_closed else "silent" if x < p_closed + p_silent \
                    else open_
            return answer

        def ws_day(actor: str, day: int, hour: float) -> float:
            return max(self.at(day, hour), self.on[actor][day][0] + 60)

        for i in range(3):  # vertical
            a = take(servers if i == 1 else ws)
            n = int(math.exp(r.uniform(math.log(30), math.log(3000))))
            ports = r.sample(range(1, 65536), n)
            closed = r.uniform(0.5, 0.98)
            silent = r.uniform(0, 1 - closed) * 0.9
            dst = r.choice(servers + ws)
            span = r.uniform(10, 600)
            day = r.choice((0, 1))
            start = self.at(day, r.uniform(1, 6)) if i == 1 else ws_day(a, day, r.uniform(10, 15))
            run(a, [(dst, p) for p in ports], start, span,
                mix(closed, silent, "syn_open" if i == 1 else "open"), "tcp",
                f"variant: vertical {n} ports in {span:.0f}s, {closed:.0%} closed",
                kind="vertical", ports=n)
        for i in range(3):  # horizontal, TCP
            a = take(servers if i == 0 else ws)
            port = r.choice((22, 23, 80, 443, 445, 1433, 3306, 3389, 5900, 8080))
            if i == 2:
                subnet = f"10.10.{r.choice((1, 2, 10))}"
                hosts = [f"{subnet}.{k}" for k in range(1, 255) if f"{subnet}.{k}" != a]
                live = set(self.internal_hosts)

                def answer(d: str, p: int, live: set[str] = live) -> str:
                    if d not in live:
                        return "silent"
                    return "closed" if r.random() < 0.7 else "open"
                note = f"variant: internal sweep of {subnet}.0/24 on {port}"
            else:
                n = r.randint(20, 400)
                hosts = [self.fresh_addrs(1, r)[0] for _ in range(n)]
                share = r.uniform(0.3, 0.95)
                silent = set(r.sample(hosts, max(1, round(share * n))))

                def answer(d: str, p: int, silent: set[str] = silent) -> str:
                    if d not in silent:
                        return "open"
                    return "silent" if r.random() < 0.7 else "closed"
                note = f"variant: external sweep of {n} hosts on {port}, {share:.0%} unanswered"
            span = r.uniform(30, 900)
            day = r.choice((0, 1))
            start = self.at(day, r.uniform(1, 6)) if i == 0 else ws_day(a, day, r.uniform(10, 15))
            run(a, [(h, port) for h in hosts], start, span, answer, "tcp", note,
                kind="horizontal", hosts=len(hosts), port=port, accept=["lateral_movement"])
        a = take(ws)  # UDP sweep (SNMP), most hosts silent
        n = r.randint(40, 200)
        hosts = [self.fresh_addrs(1, r)[0] for _ in range(n)]
        run(a, [(h, 161) for h in hosts], ws_day(a, 1, r.uniform(10, 15)), r.uniform(30, 300),
            lambda d, p: "silent" if r.random() < 0.85 else "open", "udp",
            f"variant: UDP sweep of {n} hosts on 161", kind="horizontal", hosts=n, port=161)
        for i in range(2):  # slow scans: 10-30 probes an hour
            a = take(ws_on)
            rate = r.uniform(10, 30)
            n = r.randint(60, 150)
            span = n / rate * HOUR
            start = self.at(0, r.uniform(17, 20))
            if i == 0:
                dst = r.choice(servers)
                ports = r.sample(range(1, 20000), n)
                run(a, [(dst, p) for p in ports], start, span, mix(0.85, 0.12), "tcp",
                    f"variant: slow vertical, {n} ports at {rate:.0f}/h", kind="vertical",
                    ports=n, rate_per_h=round(rate, 1))
            else:
                hosts = [self.fresh_addrs(1, r)[0] for _ in range(n)]
                run(a, [(h, 22) for h in hosts], start, span, mix(0.3, 0.6), "tcp",
                    f"variant: slow horizontal, {n} hosts at {rate:.0f}/h", kind="horizontal",
                    hosts=n, rate_per_h=round(rate, 1))


def generate(sc: Scenario | None = None) -> Dataset:
    """Like bench.detect.generate.generate, with the drawn beacons and scans."""
    g = VariantGen(sc or Scenario())
    g.benign()
    g.malicious()
    end = g.t0 + 2 * gen.DAY
    g.conn = [row for row in g.conn if g.t0 <= row[0] < end]
    g.dns = [row for row in g.dns if g.t0 <= row[0] < end]
    return Dataset(g.conn, g.dns, g.truth())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.detect.beacon_scan_variants",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, metavar="DIR")
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--small", action="store_true")
    args = ap.parse_args(argv)
    sc = gen.small(args.seed) if args.small else Scenario(seed=args.seed)
    for p in gen.write(generate(sc), args.out):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

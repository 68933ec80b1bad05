"""Scenario variants for evaluating the baseline rules on networks they were not tuned on.

The rules were tuned on seeds 1 and 2 of the default scenario. The size variants change
the network's shape (how many workstations, servers, admin hosts, sites), which changes
every look-alike: how many servers an admin reaches per day, how many callers, backups,
mirror hosts, how popular sites are; the incidents are drawn anew for each.

``drift`` adds benign change on the second day that a baseline must tolerate, on top of the
default network (all of it benign; the incidents are the default ones):
- a quarter of the servers send their nightly backup to a new backup host from day 2;
- video clients resolve their conferencing service by name, and each call lands on another
  address of the service's pool (so the address a client sends hundreds of MB to changes);
- a quarter of the servers take their time from a pool name whose addresses rotate daily
  (a new outside /24 on day 2, same DNS name);
- a new Kubernetes worker joins on day 2 and the control plane polls its kubelet.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.detect import generate as gen

NEW_BACKUP = "10.10.0.31"
NEW_WORKER = "10.10.10.251"
SFU_NAME = "meet.confer-video.com"
NTP_POOL = "2.pool.ntp.org"


class _DriftGen(gen._Gen):
    """The default generator with benign day-2 drift (see the module docstring)."""

    def backups(self) -> None:
        super().backups()
        moved = set(self.rng("drift-backup").sample(self.srv, len(self.srv) // 4))
        day2 = self.t0 + gen.DAY
        self.conn = [(*row[:5], NEW_BACKUP, *row[6:])
                     if row[5] == gen.BACKUP and row[3] in moved and row[0] >= day2 else row
                     for row in self.conn]
        self.lookalikes["drift_backup"] = {"hosts": sorted(moved), "new": NEW_BACKUP}

    def video_calls(self) -> None:
        mark = len(self.conn)
        super().video_calls()
        r = self.rng("drift-video")
        rows, self.conn = self.conn[mark:], self.conn[:mark]
        by_start: dict[tuple[str, float], str] = {}
        for row in sorted(rows, key=lambda x: x[0]):
            src, ts = row[3], row[0]
            key = (src, round(ts + (2 if row[7] == "tcp" else 0), 3))
            addr = by_start.get(key)
            if addr is None:  # one lookup per call, one pool address per call
                addr = by_start[key] = r.choice(self.sfu)
                self.lookup(ts - 0.05, src, SFU_NAME, self.sfu, ttl=60)
            self.conn.append((*row[:5], addr, *row[6:]))
        self.lookalikes["drift_video"] = {"name": SFU_NAME, "pool": list(self.sfu)}

    def ntp_polls(self) -> None:
        super().ntp_polls()
        r = self.rng("drift-ntp")
        servers = set(r.sample(self.srv, len(self.srv) // 4))
        day_addrs = [self.fresh_addrs(1, r)[0] for _ in range(2)]
        ntp = set(self.ntp)
        out = []
        looked: set[tuple[str, int]] = set()
        for row in self.conn:
            if row[3] in servers and row[5] in ntp and row[6] == 123:
                day = int((row[0] - self.t0) // gen.DAY)
                if (row[3], day) not in looked:
                    looked.add((row[3], day))
                    self.lookup(row[0] - 0.05, row[3], NTP_POOL, [day_addrs[day]], ttl=3600)
                row = (*row[:5], day_addrs[day], *row[6:])
            out.append(row)
        self.conn = out
        self.lookalikes["drift_ntp"] = {"servers": sorted(servers), "name": NTP_POOL,
                                        "addresses": day_addrs}

    def kubernetes(self) -> None:
        super().kubernetes()
        r = self.rng("drift-k8s")
        for t in gen.periodic(r, self.t0 + gen.DAY + 9 * gen.HOUR, self.t0 + 2 * gen.DAY, 120,
                              wobble=0.8):
            self.tcp(t, self.k8s_control, NEW_WORKER, 10250, r.randint(300, 600),
                     r.randint(20_000, 60_000), r.uniform(0.02, 0.2))
        self.lookalikes["drift_k8s"] = {"new_worker": NEW_WORKER}


def _generate_drift(seed: int) -> gen.Dataset:
    g = _DriftGen(gen.Scenario(seed=seed))
    g.benign()
    g.malicious()
    end = g.t0 + 2 * gen.DAY
    g.conn = [row for row in g.conn if g.t0 <= row[0] < end]
    g.dns = [row for row in g.dns if g.t0 <= row[0] < end]
    return gen.Dataset(g.conn, g.dns, g.truth())


SCENARIOS: dict[str, Callable[[int], gen.Scenario]] = {
    "default": lambda seed: gen.Scenario(seed=seed),
    "small": gen.small,  # 40 workstations, 30 servers, 2 admins
    "large": lambda seed: gen.Scenario(seed=seed, workstations=320, servers=80, admins=8,
                                       sites=5000, crawl_sites=2000),
    "server_heavy": lambda seed: gen.Scenario(seed=seed, workstations=60, servers=160,
                                              admins=3, sites=1500, crawl_sites=1500),
}
VARIANTS = (*SCENARIOS, "drift")


def build(variant: str, seed: int) -> gen.Dataset:
    """The two days of one variant and seed."""
    if variant == "drift":
        return _generate_drift(seed)
    try:
        scenario = SCENARIOS[variant](seed)
    except KeyError:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}") from None
    return gen.generate(scenario)

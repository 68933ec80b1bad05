"""The seeded DNS streams the DGA (and dns_tunnel) evaluations run on."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.detect import dga_generators
from bench.detect.dns_benign import (
    DAY_S,
    MX,
    NS,
    NXDOMAIN,
    PROCESS_TYPES,
    benign_host_day,
    benign_host_days,
    infected_process,
)


def test_host_day_is_deterministic_sorted_and_within_the_day() -> None:
    a = benign_host_day(3, host="h", start_ns=5 * DAY_S * NS)
    assert a == benign_host_day(3, host="h", start_ns=5 * DAY_S * NS)
    assert a != benign_host_day(4, host="h", start_ns=5 * DAY_S * NS)
    times = [e.time_ns for e in a]
    assert times == sorted(times)
    assert times[0] >= 5 * DAY_S * NS and times[-1] < 6 * DAY_S * NS + 3600 * NS
    assert {e.host for e in a} == {"h"}


def test_every_process_type_shows_its_look_alike() -> None:
    events = benign_host_day(1, processes=PROCESS_TYPES)
    by = Counter(e.process for e in events)
    assert set(by) == set(PROCESS_TYPES)
    probes = [e for e in events
              if e.process == "browser" and "." not in e.name and not e.name.startswith("xn--")]
    assert probes and all(e.rcode == NXDOMAIN and 7 <= len(e.name) <= 15 for e in probes)
    av = [e for e in events if e.process == "av"]
    assert max(len(e.name.split(".")[0]) for e in av) >= 32
    assert any(e.qtype == MX for e in events if e.process == "mta")
    assert any(".corp." in e.name and e.rcode == NXDOMAIN for e in events)
    assert any(e.name.startswith("xn--") or ".xn--" in e.name for e in events)
    assert all((e.answer_bytes > 0) == e.answered for e in events)


def test_unknown_process_type_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown process types"):
        benign_host_day(1, processes=["browser", "miner"])


def test_host_days_are_distinct_hosts_on_consecutive_days() -> None:
    days = list(benign_host_days(2, seed=9, processes=["ntp"]))
    assert [d[0].host for d in days] == ["host-0", "host-1"]
    assert days[1][0].time_ns >= DAY_S * NS


def test_infected_process_burst() -> None:
    names = dga_generators.generate("xorshift", 100)
    events = infected_process(names, seed=1, lookups=20, nx_share=0.85, spread_s=180)
    assert len({e.name for e in events}) == 20
    assert sum(e.rcode == NXDOMAIN for e in events) == 17
    assert (events[-1].time_ns - events[0].time_ns) <= 180 * NS
    with pytest.raises(ValueError, match="need 20 names"):
        infected_process(names[:5], seed=1)


@pytest.mark.parametrize("style", sorted(dga_generators.GENERATORS))
def test_generators_are_deterministic_and_distinct(style: str) -> None:
    names = dga_generators.generate(style, 200)
    assert names == dga_generators.generate(style, 200)
    assert len(set(names)) == 200 and all("." in n for n in names)

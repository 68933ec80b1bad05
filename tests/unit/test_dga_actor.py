"""Per-actor DGA decisions: what fires, what must not, and that state stays bounded."""

from __future__ import annotations

import random
import string
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otelpeers.detect.dga import domains
from otelpeers.detect.dga.actor import DgaActorConfig, DgaActorScorer, DgaDecision

S = 1_000_000_000
A, MX, TXT = 1, 15, 16
NOERROR, NXDOMAIN = 0, 3


class StubModel:
    """Names whose registered label starts with "dga" score 0.95, others 0.05."""

    threshold_1pct = 0.8
    tld_index = {"biz": 0, "com": 1}
    tld_w = np.array([1.0, -0.2, 0.0])

    def __init__(self) -> None:
        self.calls = 0

    def score_parsed(self, parsed: Sequence[domains.DomainName | None]) -> np.ndarray:
        self.calls += 1
        return np.array(
            [0.95 if p is not None and p.registered_label.startswith("dga") else 0.05
             for p in parsed]
        )


def feed(scorer: DgaActorScorer, actor, events) -> list[DgaDecision]:
    out = []
    for t, name, qtype, rcode, answered in events:
        d = scorer.observe(actor, t, name, qtype, rcode, answered)
        if d is not None:
            out.append(d)
    return out


def nx_burst(prefix: str, count: int, start: int = 0, gap_s: float = 6.0, tld: str = "com"):
    return [(start + int(i * gap_s * S), f"{prefix}{i:03d}x.{tld}", A, NXDOMAIN, False)
            for i in range(count)]


def test_burst_of_high_scoring_nxdomains_fires_once_with_evidence() -> None:
    scorer = DgaActorScorer(StubModel())
    events = nx_burst("dga", 12)
    decisions = feed(scorer, ("bin/evil", ""), events)
    assert len(decisions) == 1
    d = decisions[0]
    # min_unique (8) NXDOMAIN registered domains, each of weight 1: fires on the 8th
    assert d.time_ns == events[7][0]
    assert d.nxdomain_domains == 8 and d.new_domains == 8 and d.nxdomain_share == 1.0
    assert d.high_scoring == 8 and d.score >= 0.5 and d.score <= 1.0
    ev = d.as_evidence()
    assert ev["names"][0]["nxdomain"] is True and ev["names"][0]["score"] == 0.95
    assert ev["tlds"] == {"com": 8}
    assert scorer.stats["decisions"] == 1


def test_fires_again_only_after_the_quiet_window() -> None:
    cfg = DgaActorConfig(window_s=300)
    scorer = DgaActorScorer(StubModel(), cfg)
    first = feed(scorer, "p", nx_burst("dga", 20, gap_s=1))
    assert len(first) == 1
    # quiet until 300 s after the first decision; then low scorers (0.4 each) stay below 6
    later = feed(scorer, "p", nx_burst("dgb", 12, start=400 * S, gap_s=1))
    assert later == []
    again = feed(scorer, "p", nx_burst("dga-again", 8, start=800 * S, gap_s=1))
    assert len(again) == 1


def test_low_scoring_names_need_a_bigger_burst() -> None:
    # word-like names (score 0.05) weigh `floor` = 0.4: 15 of them reach min_evidence 6
    few = feed(DgaActorScorer(StubModel()), "p", nx_burst("word", 14))
    assert few == []
    many = feed(DgaActorScorer(StubModel()), "p", nx_burst("word", 16))
    assert len(many) == 1 and many[0].high_scoring == 0


def test_bursts_need_names_that_look_generated() -> None:
    # 30 human-looking dead domains within 3 s (link prefetch of an old page): nothing
    assert feed(DgaActorScorer(StubModel()), "p", nx_burst("word", 30, gap_s=0.1)) == []
    # nor three such pages a few minutes apart
    pages = [(t + k * 200 * S, n.replace("word", f"w{k}x"), q, r, a) for k in range(3)
             for t, n, q, r, a in nx_burst("word", 12, gap_s=0.05)]
    assert feed(DgaActorScorer(StubModel()), "p", pages) == []
    # the same number spread over a minute and a half: a hunt
    assert len(feed(DgaActorScorer(StubModel()), "p", nx_burst("word", 30, gap_s=3))) == 1
    # generated-looking names fire at any pace
    assert len(feed(DgaActorScorer(StubModel()), "p", nx_burst("dga", 10, gap_s=0.01))) == 1


def test_tld_prior_adds_weight() -> None:
    # .biz has a model TLD weight above tld_bonus_min_weight: 0.4 + 0.15 per name
    fired = feed(DgaActorScorer(StubModel()), "p", nx_burst("word", 12, tld="biz"))
    assert len(fired) == 1
    assert feed(DgaActorScorer(StubModel()), "p", nx_burst("word", 12, tld="com")) == []


@pytest.mark.parametrize(
    "events",
    [
        # the same names, answered: they exist
        [(t, n, A, NOERROR, True) for t, n, _, _, _ in nx_burst("dga", 30)],
        # anti-virus style: many random labels under one registered domain
        [(i * S, f"dga{i:05d}deadbeef.avlookup.com", A, NXDOMAIN, False) for i in range(50)],
        # browser probes: single labels
        [(i * S, f"dgaprobe{i:03d}", A, NXDOMAIN, False) for i in range(50)],
        # mail server checking spam senders: MX / TXT
        [(t, n, q, NXDOMAIN, False) for (t, n, _, _, _), q in
         zip(nx_burst("dga", 40), [MX, TXT] * 20, strict=True)],
        # slow drip: one every 5 minutes, never min_unique within 15 minutes
        nx_burst("dga", 40, gap_s=300),
        # CDN hashes and DNSBL lookups are not scored at all
        [(i * S, f"dga{i:04d}abc.cloudfront.net", A, NXDOMAIN, False) for i in range(40)]
        + [(i * S, f"{i}.2.0.192.zen.spamhaus.org", A, NXDOMAIN, False) for i in range(40)],
    ],
    ids=["answered", "one-registered-domain", "single-label", "mx-txt", "slow-drip",
         "allow-listed"],
)
def test_ordinary_patterns_do_not_fire(events) -> None:
    scorer = DgaActorScorer(StubModel())
    assert feed(scorer, "p", events) == []


BUSY = [(i * S, f"site{i:03d}.com", A, NOERROR, True) for i in range(40)]


def test_nxdomain_share_gate() -> None:
    # 20 word-like NXDOMAINs among 40 answered new domains: share 1/3, nothing lexical
    scorer = DgaActorScorer(StubModel())
    assert feed(scorer, "browser", BUSY + nx_burst("word", 20, start=41 * S)) == []


def test_many_high_scorers_fire_inside_a_busy_process() -> None:
    scorer = DgaActorScorer(StubModel())
    assert feed(scorer, "browser", BUSY + nx_burst("dga", 9, start=41 * S)) == []
    scorer = DgaActorScorer(StubModel())
    fired = feed(scorer, "browser", BUSY + nx_burst("dga", 10, start=41 * S))
    assert len(fired) == 1 and fired[0].nxdomain_share == 0.2 and fired[0].high_scoring == 10


def test_high_scorer_that_resolves_leaves_the_high_count() -> None:
    scorer = DgaActorScorer(StubModel())
    events = BUSY + nx_burst("dga", 9, start=41 * S)
    # the first DGA name resolves after all: 8 high-scoring NXDOMAINs remain
    t0, name0 = events[40][0], events[40][1]
    events += [(t0 + 60 * S, name0, A, NOERROR, True)]
    events += nx_burst("dgaa", 1, start=t0 + 61 * S)
    assert feed(scorer, "browser", events) == []
    fired = feed(scorer, "browser", nx_burst("dgab", 1, start=t0 + 62 * S))
    assert len(fired) == 1 and fired[0].high_scoring == 11  # the resolved one counts here
    assert fired[0].nxdomain_domains == 10


def test_domains_known_to_exist_are_not_evidence() -> None:
    scorer = DgaActorScorer(StubModel())
    names = nx_burst("dga", 12)
    # another process resolved these registered domains successfully
    feed(scorer, "other", [(t, n, A, NOERROR, True) for t, n, _, _, _ in names])
    assert feed(scorer, "p", [(t + S, n, q, r, a) for t, n, q, r, a in names]) == []
    assert scorer.stats["ignored_known_domain"] == 12


def test_event_time_only_and_out_of_order_events() -> None:
    scorer = DgaActorScorer(StubModel())
    events = nx_burst("dga", 12, start=10_000 * S)
    events[3] = (0, *events[3][1:])  # a late event from far back: counted at the actor clock
    decisions = feed(scorer, "p", events)
    assert len(decisions) == 1 and decisions[0].time_ns == events[7][0]


def test_scores_are_cached() -> None:
    model = StubModel()
    scorer = DgaActorScorer(model)
    feed(scorer, "p", [(i * S, "dga001.com", A, NXDOMAIN, False) for i in range(10)])
    assert model.calls == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"window_s": 0}, "window_s"), ({"min_unique": 0}, "min_unique"),
     ({"min_nxdomain_share": 1.5}, "min_nxdomain_share"), ({"max_actors": 2.5}, "max_actors"),
     ({"score_threshold": 0.05, "low_score": 0.1}, "score_threshold"),
     ({"burst_s": 900.0}, "burst_s"), ({"burst_cap": 0}, "burst_cap")],
)
def test_config_is_validated(kwargs, field) -> None:
    with pytest.raises(ValueError, match=field):
        DgaActorConfig(**kwargs)


# -- bounds --------------------------------------------------------------------------------


def check_bounds(scorer: DgaActorScorer) -> None:
    cfg = scorer.config
    sizes = scorer.table_sizes()
    assert sizes["actors"] <= cfg.max_actors
    assert sizes["max_window_entries"] <= cfg.max_names_per_actor
    assert sizes["max_actor_known"] <= cfg.max_names_per_actor
    assert sizes["known_domains"] <= cfg.max_known_domains
    assert sizes["score_cache"] <= cfg.score_cache


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 20),  # actor
            st.text(alphabet=string.ascii_lowercase + string.digits + ".-", min_size=1,
                    max_size=30),
            st.sampled_from([1, 28, 15, "A", "TXT"]),
            st.sampled_from([0, 3, 2, "NXDOMAIN"]),
            st.booleans(),
            st.integers(0, 120),  # seconds since the previous event
        ),
        max_size=300,
    )
)
def test_state_stays_bounded_under_any_input(events) -> None:
    cfg = DgaActorConfig(max_actors=5, max_names_per_actor=7, max_known_domains=11,
                         score_cache=13, min_unique=3, min_evidence=1.0)
    scorer = DgaActorScorer(StubModel(), cfg)
    t = 0
    for actor, name, qtype, rcode, answered, gap in events:
        t += gap * S
        scorer.observe(actor, t, name, qtype, rcode, answered)
        check_bounds(scorer)
    assert scorer.stats["events"] == len(events)


def test_bounded_table_of_1000_under_100k_unique_names() -> None:
    cfg = DgaActorConfig(max_actors=1000, max_names_per_actor=64, max_known_domains=1000,
                         score_cache=1000)
    scorer = DgaActorScorer(StubModel(), cfg)
    for i in range(100_000):
        scorer.observe(i % 1500, i * S // 100, f"n{i}x{i % 7}.com", A,
                       NXDOMAIN if i % 3 else NOERROR, i % 3 == 0)
    check_bounds(scorer)
    st_ = scorer.stats
    assert st_["actors_evicted"] > 0 and st_["known_domains_evicted"] > 0
    assert st_["score_cache_evicted"] == 100_000 - 1000


def test_a_million_unique_names_and_actors_stay_bounded() -> None:
    # The full observe() path costs ~10 us a lookup (the 100k test above covers it); here a
    # million unique keys go straight through the shared tables' insert paths, cheaply.
    cfg = DgaActorConfig(max_actors=1000, max_known_domains=1000, score_cache=1000)
    scorer = DgaActorScorer(StubModel(), cfg)
    remember, actor = scorer._remember_known, scorer._actor
    for i in range(1_000_000):
        remember(f"d{i}.com")
        actor(i)
    check_bounds(scorer)
    assert scorer.stats["known_domains_evicted"] == 1_000_000 - 1000
    assert scorer.stats["actors_evicted"] == 1_000_000 - 1000


# -- with the shipped model ----------------------------------------------------------------


def random_names(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [
        "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(10, 16)))
        + rng.choice([".com", ".net", ".info", ".ru"])
        for _ in range(count)
    ]


def test_shipped_model_catches_a_random_dga_process_not_a_browser() -> None:
    scorer = DgaActorScorer()  # the shipped model, scored as the detection process does
    infected = [(i * 7 * S, n, A, NXDOMAIN if i % 6 else NOERROR, i % 6 == 0)
                for i, n in enumerate(random_names(1, 20))]
    decisions = feed(scorer, ("evil", "ctr"), infected)
    assert len(decisions) == 1 and decisions[0].high_scoring >= 8
    rng = random.Random(2)
    sites = ["wikipedia.org", "github.com", "debian.org", "python.org", "bbc.co.uk",
             "nytimes.com", "spiegel.de", "stackoverflow.com"]
    browser = []
    for i in range(300):
        t = i * 5 * S
        browser.append((t, rng.choice(sites), A, NOERROR, True))
        browser.append((t + 1, f"d{rng.getrandbits(48):012x}.cloudfront.net", A, NOERROR, True))
    for i in range(3):  # Chrome probes and a typo
        browser.append((i * S, "".join(rng.choice(string.ascii_lowercase) for _ in range(12)),
                        A, NXDOMAIN, False))
    browser.append((100 * S, "wikipeda.org", A, NXDOMAIN, False))
    browser.sort()
    assert feed(scorer, ("chrome", ""), browser) == []

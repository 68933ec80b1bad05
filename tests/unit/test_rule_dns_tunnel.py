"""dns_tunnel: tunnels of several styles fire, reputation lookups and browsing do not."""

from __future__ import annotations

import base64
import random
import string

import pytest
from dns_rule_inputs import S, engine, lookup, run

from otelpeers.config import ConfigError, parse_config
from otelpeers.detect.model import Actor, ActorKind, EvidenceKind
from otelpeers.detect.rules.dns_names import information_bits, split
from otelpeers.detect.rules.dns_tunnel import DnsTunnel
from otelpeers.testing.flows import T0

B32 = string.ascii_lowercase + "234567"
HEX = "0123456789abcdef"


def rand(r: random.Random, alphabet: str, n: int) -> str:
    return "".join(r.choice(alphabet) for _ in range(n))


def dotted(data: str, size: int) -> str:
    return ".".join(data[i:i + size] for i in range(0, len(data), size))


def iodine(n: int, domain: str = "t1.tunnel-example.net", gap: float = 0.2, **kw: object):
    r = random.Random(1)
    return [lookup(f"{dotted(rand(r, B32, 170), 57)}.{domain}", qtype="NULL",
                   data=[("NULL", "\\# 600 " + "ab" * 100)], t=i * gap, comm="iodine", **kw)
            for i in range(n)]


def test_iodine_style_session_fires_once_with_its_evidence() -> None:
    e = engine(DnsTunnel)
    lookups = iodine(60)
    ds = run(e, lookups)
    assert len(ds) == 1
    (d,) = ds
    assert d.rule.name == "dns_tunnel" and d.actor.kind == ActorKind.PROCESS
    assert d.actor.executable == "iodine" and d.peer is not None
    assert d.peer.name == "tunnel-example.net"
    ev = d.evidence
    assert ev["domain"] == "tunnel-example.net" and ev["alphabet"] == "base32"
    assert ev["longest_label"] == 57 and ev["label_length_mode"] == 57
    assert ev["evidence_bits"] >= 16000 and ev["answer_bits"] > 0
    assert len(ev["label_samples"]) == 3 and all(len(x) == 57 for x in ev["label_samples"])
    assert ev["qtypes"] == ("NULL:" + str(ev["queries"]),)
    # the evidence span is the DNS span of the lookup that completed the evidence, at its time
    hit = next(lk for lk in lookups if lk.txn.txn_id == d.evidence_span.ident)
    assert d.evidence_span.kind == EvidenceKind.DNS and d.time_ns == hit.txn.end_ns
    assert ev["queries"] == lookups.index(hit) + 1
    assert "tunnel-example.net" in d.summary and "base32" in d.summary
    assert 0.5 <= d.score <= 0.99


def test_dnscat2_style_hex_with_data_in_answers_fires() -> None:
    r = random.Random(2)
    lookups = []
    for i in range(300):
        qtype = ("TXT", "CNAME", "MX")[i % 3]
        resp = r.randbytes(20).hex()
        data = [("TXT", f'"{resp}"')] if qtype == "TXT" else [(qtype, f"{resp}.c2-example.org")]
        lookups.append(lookup(f"{r.randbytes(16).hex()}.c2-example.org", qtype=qtype, data=data,
                              t=i * 1.0, comm="dnscat"))
    (d,) = run(engine(DnsTunnel), lookups)
    assert d.evidence["alphabet"] == "hex" and d.evidence["answer_bits"] > 0
    assert set(x.split(":")[0] for x in d.evidence["qtypes"]) == {"TXT", "CNAME", "MX"}


def test_unanswered_exfiltration_fires_too() -> None:
    r = random.Random(3)
    lookups = [lookup(f"{r.randbytes(30).hex()}.{r.randbytes(30).hex()}.exfil-example.com",
                      rcode="NXDOMAIN", t=i * 0.1, comm="exfil") for i in range(80)]
    (d,) = run(engine(DnsTunnel), lookups)
    assert d.evidence["nxdomain_share"] == 1.0 and d.evidence["answer_bits"] == 0


def test_answers_alone_carry_a_download_through_short_names() -> None:
    r = random.Random(4)
    lookups = [lookup(f"{i}.stage-example.com", qtype="TXT", t=i * 0.5, comm="powershell",
                      data=[("TXT", '"' + base64.b64encode(r.randbytes(180)).decode() + '"')])
               for i in range(40)]
    (d,) = run(engine(DnsTunnel), lookups)
    assert d.evidence["answer_bits"] >= 16000 and d.evidence["unique_names"] == 0


def test_numbered_chunks_score_up() -> None:
    r = random.Random(5)

    def chunks(numbered: bool) -> list:
        return [lookup((f"{i}." if numbered else "") + f"{dotted(rand(r, B32, 48), 63)}"
                       ".exfil-example.com", qtype="TXT", t=i * 0.1) for i in range(200)]

    first = {}
    for numbered in (False, True):
        ds = run(engine(DnsTunnel), chunks(numbered))
        first[numbered] = ds[0].evidence["queries"]
        assert ds[0].evidence["weight_sequence"] == (1.5 if numbered else 1.0)
    assert first[True] < first[False]


def av_lookups(r: random.Random, comm: str, parent: str, seconds: float, gap: float,
               client: str = "10.0.0.2", t0: float = 0.0) -> list:
    out, t = [], t0
    while t < t0 + seconds:
        label = rand(r, HEX, 40) if r.random() < 0.5 else rand(r, B32, r.randint(26, 52))
        nx = r.random() < 0.9
        out.append(lookup(f"{label}.{parent}", rcode="NXDOMAIN" if nx else "NOERROR",
                          addresses=() if nx else ("127.0.0.4",), t=t, comm=comm,
                          client=client))
        t += gap
    return out


def test_reputation_hash_lookups_at_ordinary_rates_do_not_fire() -> None:
    r = random.Random(6)
    # an unlisted vendor: bursts of up to 40 lookups every few minutes, for a day
    lookups = []
    t = 0.0
    while t < 86400:
        lookups += av_lookups(r, "avscan", "hashlookup.unlisted-av.net", r.randint(1, 40),
                              1.0, t0=t)
        t += r.expovariate(1 / 300)
    assert run(engine(DnsTunnel), lookups) == []
    # a listed reputation service, even at two lookups a second
    assert run(engine(DnsTunnel), av_lookups(r, "savd", "avqs.mcafee.com", 3600, 0.5)) == []


def test_many_actors_score_a_shared_service_down_but_one_actor_still_fires() -> None:
    r = random.Random(7)
    # one host sending these names at this rate fires ...
    alone = av_lookups(r, None, "lookup.shared-example.net", 1800, 0.25, client="10.0.0.9")
    assert len(run(engine(DnsTunnel), alone)) == 1
    # ... twenty hosts doing the same are a service they all use
    crowd = []
    for h in range(20):
        crowd += av_lookups(r, None, "lookup.shared-example.net", 1800, 0.25,
                            client=f"10.0.1.{h}")
    crowd.sort(key=lambda lk: lk.txn.start_ns)
    e = engine(DnsTunnel)
    ds = run(e, crowd)
    assert len({d.actor.key for d in ds}) <= 2  # the first hosts, before the crowd showed
    assert all(d.actor.kind == ActorKind.ADDRESS for d in ds)
    later = [d for d in ds if d.time_ns > T0 + 300 * S]
    assert later == []


def test_browsing_cdn_hashes_and_search_domain_names_stay_quiet() -> None:
    r = random.Random(8)
    words = ("stackoverflow", "wikipedia", "github", "nytimes", "guardian", "python",
             "debian", "mozilla", "microsoft", "reddit", "amazon", "netflix", "booking")
    lookups = []
    for i in range(20000):
        t = i * 0.5
        k = i % 5
        if k == 0:
            name = f"www.{r.choice(words)}.com"
        elif k == 1:
            name = f"d{rand(r, HEX + 'xyz', 13)}.cloudfront.net"
        elif k == 2:  # search-domain NXDOMAINs: long, unique, made of words
            name = (f"{r.choice(words)}-{r.choice(words)}.{r.choice(words)}.com.corp."
                    "example-industries.net")
        elif k == 3:
            name = "v10.events.data.microsoft.com"
        else:
            name = f"{rand(r, HEX, 16)}.cdn.cloudflare.net"
        lookups.append(lookup(name, rcode="NXDOMAIN" if k == 2 else "NOERROR",
                              addresses=() if k == 2 else ("93.184.216.34",), t=t,
                              comm="firefox"))
    e = engine(DnsTunnel)
    assert run(e, lookups) == []
    assert e.counters()["dns_tunnel.gated"] < len(lookups)  # the cheap gate stops most


def test_words_carry_little_information_and_encodings_their_alphabet() -> None:
    hex40, cls = information_bits("0123456789abcdef" * 2 + "01234567")
    assert cls == "hex" and hex40 == pytest.approx(160)
    b32, cls = information_bits(rand(random.Random(9), B32, 52))
    assert cls == "base32" and b32 > 200
    words, _ = information_bits("stackoverflowcomcorpinternational")
    assert words < 0.4 * len("stackoverflowcomcorpinternational") * 4.7


def test_names_that_are_not_host_names_still_split() -> None:
    sp = split("ab\\xbc\\xfd+/=.x.t1.tunnel-example.net")
    assert sp is not None and sp.registered == "tunnel-example.net"
    assert sp.sub == ("ab\\xbc\\xfd+/=", "x", "t1")
    assert split("1.2.0.192.in-addr.arpa") is None


def test_repeats_are_deduplicated_and_allow_lists_apply() -> None:
    e = engine(DnsTunnel, dedup_window_s=600)
    session = iodine(1000, gap=0.5)  # a tunnel for 500 s, then more after the window
    assert len(run(e, session[:600])) == 1 and e.counters()["suppressed"] > 0
    (again,) = run(e, [lookup(lk.txn.question_name, qtype="NULL", t=700 + i * 0.5,
                              comm="iodine") for i, lk in enumerate(session[600:])])
    assert again.repeats > 0
    allowed = engine(DnsTunnel, allow={"domain_suffixes": ["tunnel-example.net"]})
    assert run(allowed, iodine(200)) == []
    by_exe = engine(DnsTunnel, allow={"executables": ["iodine"]})
    assert run(by_exe, iodine(200)) == []


def test_state_stays_bounded_under_a_million_unique_names() -> None:
    e = engine(DnsTunnel, max_channels=500, max_names_per_channel=64, max_domains=300,
               max_actors_per_domain=8)
    rule = e.rules[0][0]
    actors = [_actor(i) for i in range(1000)]
    # The rule directly, one lookup rewritten in place (the rule keeps no reference to it):
    # a million engine rounds and lookups would take minutes on a shared CI machine.
    lk = lookup("x" * 30 + ".flood-example.com", comm=None)
    txn, set_ = lk.txn, object.__setattr__
    n = 1_000_000
    for i in range(n):
        # unique names under one registered domain, from a thousand actors
        set_(txn, "question_name", f"{i:012x}.d{i % 7}.flood-example.com")
        set_(txn, "end_ns", T0 + i * 1000)
        for _ in rule.on_dns(actors[i % 1000], lk):
            pass
    for i in range(5000):  # and many registered domains
        set_(txn, "question_name", f"{i:012x}.flood{i}-example.com")
        for _ in rule.on_dns(actors[i % 1000], lk):
            pass
    assert rule.stats["scored_names"] == n + 5000
    assert len(rule._channels) <= 500
    assert all(len(ch.names) <= 64 for ch in rule._channels.values())
    assert len(rule._prevalence) <= 300
    assert all(len(a) <= 8 for a in rule._prevalence.values())
    assert len(rule._names) <= 8192
    c = e.counters()
    assert c["dns_tunnel.channels.state_evicted"] > 0 and c["dns_tunnel.domains.state_evicted"] > 0


def _actor(i: int) -> Actor:
    addr = f"10.9.{i // 250}.{i % 250}"
    return Actor(ActorKind.ADDRESS, addr, address=addr)


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match="dns_tunnel.long_query_bits"):
        parse_config({"detect": {"rules": {"dns_tunnel": {"long_query_bits": 100}}}})
    with pytest.raises(ConfigError, match="dns_tunnel.max_channels"):
        parse_config({"detect": {"rules": {"dns_tunnel": {"max_channels": 0}}}})

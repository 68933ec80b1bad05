"""Malformed packets: the parser rejects each one with a counted category; it never crashes
or hangs. hypothesis draws the shapes, a seeded mutator provides the volume."""

from __future__ import annotations

import random
import time

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from otelpeers.dns.parse import ERROR_CATEGORIES, DnsParser, ParseError
from otelpeers.testing.dns_wire import query_wire, response_wire

VOLUME = 100_000

labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))


def _seed_packets() -> list[bytes]:
    out = [query_wire("www.example.com", "A"), query_wire("x.example", "AAAA", edns=True)]
    out.append(response_wire("www.example.com", "A", cnames=["a.cdn.net", "b.cdn.net"],
                             addresses=["192.0.2.1", "192.0.2.2"], edns=True))
    out.append(response_wire("v6.example", "AAAA", addresses=["2001:db8::1"]))
    out.append(response_wire("gone.example", "A", rcode="NXDOMAIN"))
    return out


def mutate(rng: random.Random, wire: bytes) -> tuple[bytes, int | None]:
    """One mutation; returns (payload, wire_len or None)."""
    b = bytearray(wire)
    kind = rng.randrange(9)
    if kind == 0:  # cut by the capture
        cut = rng.randrange(len(b))
        return bytes(b[:cut]), len(b)
    if kind == 1:  # plain truncation
        return bytes(b[:rng.randrange(len(b))]), None
    if kind == 2:  # compression pointer to itself or forward, somewhere after the header
        pos = rng.randrange(12, max(13, len(b) - 1))
        target = pos if rng.random() < 0.5 else rng.randrange(pos, pos + 200)
        b[pos:pos + 2] = bytes([0xC0 | (target >> 8) & 0x3F, target & 0xFF])
        return bytes(b), None
    if kind == 3:  # two pointers pointing at each other
        b[12:16] = b"\xc0\x0e\xc0\x0c"
        return bytes(b), None
    if kind == 4:  # oversized label or name
        pos = rng.randrange(12, len(b))
        b[pos:pos] = (bytes([rng.choice((63, 64, 100, 127))]) + b"z" * 63) * rng.randrange(1, 6)
        return bytes(b), None
    if kind == 5:  # bit flips
        for _ in range(rng.randrange(1, 6)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b), None
    if kind == 6:  # inflated section counts
        i = rng.choice((4, 6, 8, 10))
        b[i:i + 2] = rng.randrange(65536).to_bytes(2, "big")
        return bytes(b), None
    if kind == 7:  # random bytes spliced in
        pos = rng.randrange(len(b))
        b[pos:pos + rng.randrange(1, 8)] = rng.randbytes(rng.randrange(1, 16))
        return bytes(b), None
    return rng.randbytes(rng.randrange(0, 64)), None  # noise


def _feed(parser: DnsParser, payload: bytes, wire_len: int | None) -> None:
    try:
        parser.parse(payload, wire_len)
    except ParseError as exc:
        assert exc.category in ERROR_CATEGORIES


def test_seeded_mutations_volume() -> None:
    rng = random.Random(20240611)
    seeds = _seed_packets()
    parser = DnsParser()
    t0 = time.monotonic()
    slowest = 0.0
    for _ in range(VOLUME):
        payload, wire_len = mutate(rng, rng.choice(seeds))
        s = time.perf_counter()
        _feed(parser, payload, wire_len)
        slowest = max(slowest, time.perf_counter() - s)
    elapsed = time.monotonic() - t0
    stats = parser.stats
    assert sum(stats.values()) == parser.fed == VOLUME
    # Every mutation family reaches the parser's error paths, not just one of them.
    for category in ("truncated", "bad_pointer", "name_too_long", "garbage", "malformed"):
        assert stats.get(f"error.{category}", 0) > 0, stats
    assert stats.get("salvaged", 0) > 0
    assert elapsed < 60, f"{VOLUME} packets took {elapsed:.1f}s"
    assert slowest < 0.5, f"one packet took {slowest:.3f}s"


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(name=names, cnames=st.lists(names, max_size=3, unique=True),
       addrs=st.lists(ipv4, max_size=4, unique=True),
       seed=st.integers(0, 2**32 - 1))
def test_generated_packets_and_mutations(name: str, cnames: list[str], addrs: list[str],
                                         seed: int) -> None:
    assume(name not in cnames)
    wire = response_wire(name, "A", cnames=cnames, addresses=addrs)
    parser = DnsParser()
    m = parser.parse(wire)
    assert m.cname_chain == (name, *cnames)
    assert m.addresses == tuple(addrs)
    rng = random.Random(seed)
    for _ in range(50):
        payload, wire_len = mutate(rng, wire)
        _feed(parser, payload, wire_len)
    assert parser.fed == 51 == sum(parser.stats.values())

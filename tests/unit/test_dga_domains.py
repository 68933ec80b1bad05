"""Query-name handling of the DGA model: normalising, public suffixes, allow lists."""

from __future__ import annotations

import pytest

from otelpeers.detect.dga import domains
from otelpeers.detect.dga.lists import (
    DYNAMIC_DNS_PARENTS,
    GENERATED_LABEL_PARENTS,
    REPUTATION_PARENTS,
    matching_parent,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("WWW.Example.COM.", "www.example.com"),
        ("  example.org  ", "example.org"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("_dmarc.example.com", "_dmarc.example.com"),
    ],
)
def test_normalise_valid(raw: str, expected: str) -> None:
    assert domains.normalise(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "   ", ".", "a..b", "-a.com", "a-.com", "a b.com", "x" * 64 + ".com",
            ".".join(["abcdefgh"] * 32), "exa$mple.com"],
)
def test_normalise_invalid(raw: str) -> None:
    assert domains.normalise(raw) is None
    assert domains.parse(raw) is None


def test_registered_domain_and_scored_labels() -> None:
    name = domains.parse("cdn.static.Example.co.uk.")
    assert name is not None
    assert name.suffix == "co.uk"
    assert name.registered == "example.co.uk"
    assert name.registered_label == "example"
    assert name.scored == ("example", "static", "cdn")  # registered label first
    assert name.skip == ""


def test_dynamic_dns_parent_acts_as_suffix() -> None:
    # duckdns.org is in the PSL's private section, changeip.com is not: both behave the same
    for raw, parent in (("abcxyz.duckdns.org", "duckdns.org"), ("qq.x.changeip.com",
                                                               "changeip.com")):
        name = domains.parse(raw)
        assert name is not None
        assert name.dynamic_dns and name.parent == parent and name.suffix == parent
        assert name.registered == f"{raw.split('.')[-3]}.{parent}"


@pytest.mark.parametrize(
    ("raw", "skip"),
    [
        ("d1a2b3c4d5e6f7.cloudfront.net", domains.SKIP_GENERATED),
        ("e1234.dscb.akamaiedge.net", domains.SKIP_GENERATED),
        ("4.3.2.1.zen.spamhaus.org", domains.SKIP_REPUTATION),
        ("printer.corp.example", domains.SKIP_SPECIAL),
        ("4.3.2.1.in-addr.arpa", domains.SKIP_SPECIAL),
        ("github.io", domains.SKIP_SUFFIX_ONLY),
        ("xn--bcher-kva.de", domains.SKIP_NO_LETTERS),
    ],
)
def test_names_that_are_not_scored_say_why(raw: str, skip: str) -> None:
    name = domains.parse(raw)
    assert name is not None and name.skip == skip and name.scored == ()


def test_single_label_is_flagged() -> None:
    name = domains.parse("qwkdjfhsl")
    assert name is not None and name.single_label and name.registered == ""
    assert name.scored == ("qwkdjfhsl",)


def test_lists_are_disjoint_and_lower_case() -> None:
    lists = (GENERATED_LABEL_PARENTS, REPUTATION_PARENTS, DYNAMIC_DNS_PARENTS)
    for a in lists:
        assert all(p == p.lower().strip(".") and "." in p for p in a)
        for b in lists:
            if a is not b:
                assert not (a & b)
    assert matching_parent("a.b.cloudfront.net", GENERATED_LABEL_PARENTS) == "cloudfront.net"
    assert matching_parent("cloudfront.net.evil.com", GENERATED_LABEL_PARENTS) is None

"""Query names: normalise, split at the public suffix, and pick the labels worth scoring.

The public suffix list is the copy bundled in the ``publicsuffixlist`` package (ICANN and
private sections), so nothing is fetched at run time. Dynamic-DNS parents count as suffixes
(the label under ``duckdns.org`` is what an attacker registers); names under CDN, cloud,
reputation and reverse-DNS parents are recognised and not scored (see ``lists``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from publicsuffixlist import PublicSuffixList

from otelpeers.detect.dga.lists import (
    DYNAMIC_DNS_PARENTS,
    GENERATED_LABEL_PARENTS,
    REPUTATION_PARENTS,
)

MAX_NAME_LEN = 253
MAX_LABEL_LEN = 63
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME_RE = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")

# RFC 6761 / 8375 special-use names and private TLDs seen on corporate networks: never
# registrable on the Internet, so never DGA rendezvous points.
SPECIAL_USE_TLDS: frozenset[str] = frozenset(
    {
        "arpa", "local", "localhost", "invalid", "test", "example", "internal", "lan", "home",
        "localdomain", "corp", "intranet", "private", "onion",
    }
)

# Why a valid name has nothing scored (DomainName.skip).
SKIP_GENERATED = "generated_label_parent"
SKIP_REPUTATION = "reputation_service"
SKIP_SPECIAL = "special_use"
SKIP_SUFFIX_ONLY = "public_suffix_only"
SKIP_NO_LETTERS = "only_idna_or_service_labels"

_DYNAMIC = "dynamic_dns"
# One table for all listed parents: a name's parents are looked up once, longest first.
_PARENT_KIND: dict[str, str] = {
    **{p: _DYNAMIC for p in DYNAMIC_DNS_PARENTS},
    **{p: SKIP_REPUTATION for p in REPUTATION_PARENTS},
    **{p: SKIP_GENERATED for p in GENERATED_LABEL_PARENTS},
}


class DomainName(NamedTuple):
    """A normalised query name and how it splits (a NamedTuple: cheap to build per lookup)."""

    name: str
    labels: tuple[str, ...]
    suffix: str  # public suffix, or the dynamic-DNS parent; "" for single-label names
    registered: str  # registered domain (label + suffix); "" when there is none
    scored: tuple[str, ...]  # labels to score: the registered label first, then subdomains
    tld: str
    skip: str = ""  # non-empty: nothing is scored, and this says why
    parent: str = ""  # the listed parent that decided (allow list or dynamic DNS)
    dynamic_dns: bool = False
    single_label: bool = False
    punycode: bool = False  # some label is IDNA (xn--); such labels are not scored

    @property
    def registered_label(self) -> str:
        """The label left of the suffix when it is scored (not IDNA), else ""."""
        if not self.registered:
            return ""
        label = self.registered.split(".", 1)[0]
        return label if self.scored and self.scored[0] == label else ""


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


@lru_cache(maxsize=1)
def _psl_known() -> PublicSuffixList:
    """Only listed suffixes (no implicit "*" rule): is a single label a real TLD?"""
    return PublicSuffixList(accept_unknown=False)


def normalise(raw: str) -> str | None:
    """Lower case, no surrounding blanks, no trailing dot; Unicode names become IDNA (xn--).

    Returns None when the result is not a valid DNS name (empty label, bad character, too
    long). Names already in punycode are kept as given.
    """
    name = raw.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        return None
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except (UnicodeError, ValueError):
            return None
    if len(name) > MAX_NAME_LEN or _NAME_RE.fullmatch(name) is None:
        return None
    return name


def parse(raw: str) -> DomainName | None:
    """Split a query name; None when it is not a valid DNS name."""
    name = normalise(raw)
    if name is None:
        return None
    labels = tuple(name.split("."))
    tld = labels[-1]
    punycode = "xn--" in name and any(label.startswith("xn--") for label in labels)
    if len(labels) == 1:
        if _psl_known().is_public(name):
            return DomainName(name, labels, name, "", (), tld, skip=SKIP_SUFFIX_ONLY,
                              single_label=True, punycode=punycode)
        scored = () if punycode or tld.startswith("_") else labels
        return DomainName(
            name, labels, "", "", scored, tld, single_label=True, punycode=punycode,
            skip="" if scored else SKIP_SUFFIX_ONLY,
        )
    if tld in SPECIAL_USE_TLDS:
        return DomainName(name, labels, tld, "", (), tld, skip=SKIP_SPECIAL, punycode=punycode)
    dyn = None
    pos = -1
    while True:
        parent = name[pos + 1 :]
        kind = _PARENT_KIND.get(parent)
        if kind == _DYNAMIC:
            dyn = parent
            break
        if kind is not None:
            return DomainName(
                name, labels, "", "", (), tld, skip=kind, parent=parent, punycode=punycode
            )
        pos = name.find(".", pos + 1)
        if pos < 0:
            break
    suffix = _psl().publicsuffix(name) or tld
    dynamic_dns = dyn is not None
    if dyn is not None and len(dyn) > len(suffix):
        suffix = dyn
    n_suffix = suffix.count(".") + 1
    if n_suffix >= len(labels):
        return DomainName(
            name, labels, suffix, "", (), tld, skip=SKIP_SUFFIX_ONLY, parent=dyn or "",
            dynamic_dns=dynamic_dns, punycode=punycode,
        )
    left = labels[: len(labels) - n_suffix]
    registered = f"{left[-1]}.{suffix}"
    if punycode or "_" in name:
        scored = tuple(
            label for label in reversed(left) if not label.startswith(("xn--", "_"))
        )
    else:
        scored = left[::-1]
    return DomainName(
        name, labels, suffix, registered, scored, tld, parent=dyn or "",
        dynamic_dns=dynamic_dns, punycode=punycode, skip="" if scored else SKIP_NO_LETTERS,
    )

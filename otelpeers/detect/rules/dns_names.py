"""What the DNS rules need to know about a query name, computed once and cached.

- ``split(name)``: the registered domain a name belongs to (the public suffix list bundled in
  the ``publicsuffixlist`` package, through the DGA rule's parser
  ``otelpeers.detect.dga.domains``: nothing is fetched at run time), the labels left of it,
  and whether a listed CDN, cloud or reputation service runs that zone (the DGA rule's lists;
  nobody but that service answers below it). Special-use names (``.test``, ``.lan``,
  ``.internal``, ...) group by their last two labels; reverse-DNS (``.arpa``), single labels
  and bare suffixes have no registered domain.
- ``information_bits(text)``: how many bits a string of label characters can carry, from its
  alphabet (hex 4 bits a character, base32 5, ...) times how random it looks (the share of
  its letter pairs that are common in English and in domain names: words score low, encoded
  data high). An upper bound in the spirit of Paxson et al., "Practical Comprehensive Bounds
  on Surreptitious Communication Over DNS" (USENIX Security 2013), cheap enough to run on
  every candidate lookup.
"""

from __future__ import annotations

import ipaddress
import string
from collections import Counter, OrderedDict
from dataclasses import dataclass
from operator import add

from otelpeers.detect.dga import domains

# The 150 most frequent letter pairs of English text (Norvig's counts over the Google books
# corpus, public), in order. Domain-name labels made of words have about 75% of their letter
# pairs in this set; random letters about 22%.
_BIGRAMS_TEXT = (
    "th he in er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou io "
    "le ve co me de hi ri ro ic ne ea ra ce li ch ll be ma si om ur ca el ta la ns di fo ho "
    "pe ec pr no ct us ac ot il tr ly nc et ut ss so rs un lo wa ge ie wh ee wi em ad ol rt "
    "po we na ul ni ts mo ow pa im mi ai sh ir su id os iv ia am fi ci vi pl ig tu ev ld ry "
    "mp fe bl ab gh ty op wo sa ay ex ke fr oo av ag if ap gr od bo sp rd do uc bu ei ov by "
    "rm ep tt oc fa ef cu rn sc gi da yo cr cl")
COMMON_BIGRAMS = frozenset(_BIGRAMS_TEXT.split(" "))
_PAIRS = {a + b: int(a + b in COMMON_BIGRAMS) for a in string.ascii_lowercase
          for b in string.ascii_lowercase}
WORDY = 0.70  # common-pair share at and above which a string reads as words
RANDOM = 0.22  # the share random letters have
MIN_RANDOMNESS = 0.15  # words still carry some information
RANDOMNESS_CHARS = 64

_HEX = frozenset("0123456789abcdef")
_B32 = frozenset("abcdefghijklmnopqrstuvwxyz234567")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz")
_DIGITS = frozenset("0123456789")
_ALNUM = _LETTERS | _DIGITS

SERVICE_CDN = "cdn_or_cloud"
SERVICE_REPUTATION = "reputation"


@dataclass(frozen=True, slots=True)
class NameSplit:
    name: str
    registered: str  # grouping key: the registered domain, or the listed service's parent
    sub: tuple[str, ...]  # labels left of registered
    service: str = ""  # SERVICE_CDN / SERVICE_REPUTATION when a listed service runs the zone

    @property
    def data(self) -> str:
        """The characters left of the registered domain, without dots."""
        return "".join(self.sub)


def _split_valid(name: str) -> NameSplit | None:
    d = domains.parse(name)
    if d is None:
        return None
    if d.skip in (domains.SKIP_GENERATED, domains.SKIP_REPUTATION):
        reg = d.parent
        service = SERVICE_CDN if d.skip == domains.SKIP_GENERATED else SERVICE_REPUTATION
    elif d.skip == domains.SKIP_SPECIAL:
        if d.tld == "arpa" or len(d.labels) < 2:
            return None
        reg, service = ".".join(d.labels[-2:]), ""
    elif d.registered:
        reg, service = d.registered, ""
    else:
        return None
    n = reg.count(".") + 1
    return NameSplit(d.name, reg, d.labels[: len(d.labels) - n], service)


def split(name: str) -> NameSplit | None:
    """A query name's registered domain and the labels left of it; None when it has none.

    DNS carries any bytes in a label; tunnels use that (iodine's base128, base64 with '+'
    and '/'). A name that is not a valid host name is split at its longest valid suffix,
    and everything left of that counts as labels."""
    sp = _split_valid(name)
    if sp is not None or not name:
        return sp
    labels = name.rstrip(".").lower().split(".")
    for i in range(1, len(labels) - 1):
        tail = _split_valid(".".join(labels[i:]))
        if tail is not None:
            return NameSplit(name, tail.registered, tuple(labels[:i]) + tail.sub, tail.service)
    return None


class NameCache:
    """split() with a bounded LRU in front. Names repeat, and new names mostly sit under a
    registered domain seen before (a tunnel's, a CDN's): those are split by walking up to
    a cached parent instead of parsing again (the public suffix of a name never depends on
    labels added on the left of its registered domain)."""

    def __init__(self, maxsize: int = 8192) -> None:
        self.maxsize = maxsize
        self._cache: OrderedDict[str, NameSplit | None] = OrderedDict()
        self.hits = self.misses = 0

    def split(self, name: str) -> NameSplit | None:
        cache = self._cache
        try:
            v = cache[name]
        except KeyError:
            pass
        else:
            self.hits += 1
            cache.move_to_end(name)
            return v
        v = self._from_parent(name)
        if v is None:
            self.misses += 1
            v = split(name)
            if v is not None and v.sub:
                self._put(v.registered, NameSplit(v.registered, v.registered, (), v.service))
        self._put(name, v)
        return v

    def _from_parent(self, name: str) -> NameSplit | None:
        cache = self._cache
        pos = name.find(".")
        while pos >= 0:
            parent = name[pos + 1:]
            p = cache.get(parent)
            if p is not None:
                cache.move_to_end(parent)
                return NameSplit(name, p.registered,
                                 tuple(name[:pos].split(".")) + p.sub, p.service)
            pos = name.find(".", pos + 1)
        return None

    def _put(self, name: str, v: NameSplit | None) -> None:
        cache = self._cache
        cache[name] = v
        cache.move_to_end(name)
        if len(cache) > self.maxsize:
            cache.popitem(last=False)

    def __len__(self) -> int:
        return len(self._cache)


def alphabet(text: str) -> tuple[str, float]:
    """(class name, bits per character) of the smallest usual alphabet holding text."""
    chars = set(text)
    if chars <= _DIGITS:
        return "digits", 3.32
    if chars <= _HEX and len(text) >= 8:
        return "hex", 4.0
    if chars <= _B32:
        return ("letters", 4.7) if chars <= _LETTERS else ("base32", 5.0)
    if chars <= _ALNUM:
        return "alphanumeric", 5.17
    return "base64-like", 5.25  # letters, digits, '-' and '_' (DNS folds case)


def randomness(text: str) -> float:
    """1.0 for random-looking letters (or hex and digits, which are data), down to
    MIN_RANDOMNESS for words."""
    # letter pairs counted in C: 1 common, 0 rare, None (absent) when not two letters
    c = Counter(map(_PAIRS.get, map(add, text, text[1:])))
    common = c[1]
    pairs = common + c[0]
    if pairs < 4:
        return 1.0
    r = (WORDY - common / pairs) / (WORDY - RANDOM)
    return min(1.0, max(MIN_RANDOMNESS, r))


def information_bits(text: str) -> tuple[float, str]:
    """(bits the string can carry, alphabet class); hex strings are never read as words."""
    if not text:
        return 0.0, ""
    cls, per_char = alphabet(text)
    # randomness from the first RANDOMNESS_CHARS: enough to tell words from data, and the
    # cost per name stays bounded
    r = 1.0 if cls in ("hex", "digits") else randomness(text[:RANDOMNESS_CHARS])
    return len(text) * per_char * r, cls


def network_keys(addr: str) -> tuple[str, str] | None:
    """(narrow, wide) network of an address: IPv4 /24 and /16, IPv6 /48 and /32."""
    if ":" not in addr:
        a, b, c, _ = (addr.split(".") + ["", "", "", ""])[:4]
        if not c:
            return None
        return f"{a}.{b}.{c}.0/24", f"{a}.{b}.0.0/16"
    try:
        ip = ipaddress.IPv6Address(addr)
    except ValueError:
        return None
    v = int(ip)
    n48 = ipaddress.IPv6Address(v >> 80 << 80)
    n32 = ipaddress.IPv6Address(v >> 96 << 96)
    return f"{n48}/48", f"{n32}/32"

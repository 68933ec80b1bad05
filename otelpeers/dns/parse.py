"""DNS wire messages to bounded, frozen records (dnspython does the wire parsing).

The kernel copies at most ``dns.max_payload`` bytes of each packet, so large responses arrive
cut short. A cut message is parsed a second time in dnspython's ``continue_on_error`` mode,
which keeps every record read before the cut: the header, the question and usually the first
answers survive, and the message is marked ``cut``/``truncated``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from otelpeers.dns.records import Answer

MAX_ANSWERS = 32  # answer records kept per message
MAX_CHAIN = 16  # CNAME hops followed (dnspython's own resolver stops at 16 too)
MAX_NAME = 255  # a DNS name in presentation form is short; escapes can triple it, so cut
MAX_VALUE = 255  # presentation text of one record's data (TXT can be 64 KiB)
MAX_QUESTIONS = 4  # real queries carry exactly one
# Records whose data is one name: shown like question names (lower case, no final dot).
_NAME_TYPES = frozenset({dns.rdatatype.CNAME, dns.rdatatype.DNAME, dns.rdatatype.NS,
                         dns.rdatatype.PTR})

# Error categories, in the order they are checked. Names are stable: they label counters.
ERROR_CATEGORIES = (
    "truncated",  # shorter than a header, or cut by the capture and not salvageable
    "bad_pointer",  # pointer forward, to itself, chain too long, or where forbidden
    "name_too_long",  # label > 63 or name > 255 octets
    "garbage",  # bad label type, trailing bytes after the message
    "malformed",  # ran out of data inside a record, rdata length mismatch
    "bad_edns",  # OPT record misplaced or malformed
    "tsig",  # TSIG present (we hold no keys) or misplaced
    "bad_rdata",  # record data that does not decode for its type
    "other",  # anything else dnspython raised
)


class ParseError(ValueError):
    """A packet that is not a DNS message we can read; category labels the drop counter."""

    def __init__(self, category: str, detail: str) -> None:
        super().__init__(f"{category}: {detail}")
        self.category = category
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Question:
    name: str  # lower case, no trailing dot ("." for the root)
    qtype: str  # "A", "AAAA", "HTTPS", or "TYPE65280" for unknown types


@dataclass(frozen=True, slots=True)
class Flags:
    tc: bool
    rd: bool
    ra: bool
    aa: bool


@dataclass(frozen=True, slots=True)
class DnsMessage:
    id: int
    is_response: bool
    opcode: str  # "QUERY", "NOTIFY", ...
    rcode: str  # "NOERROR", "NXDOMAIN", "SERVFAIL", ... (extended rcodes included)
    flags: Flags
    questions: tuple[Question, ...]
    answers: tuple[Answer, ...]  # at most MAX_ANSWERS, in wire order
    answers_omitted: int  # answer records beyond MAX_ANSWERS
    cname_chain: tuple[str, ...]  # question name, then each CNAME target, in order
    addresses: tuple[str, ...]  # A/AAAA values owned by the chain's final name
    ttl_min: int | None  # smallest TTL among the answer records; None without answers
    edns: bool
    edns_payload: int | None  # advertised UDP payload size when EDNS is present
    cut: bool  # the capture kept fewer bytes than the packet had
    truncated: bool  # TC flag set, or cut

    @property
    def question(self) -> Question | None:
        return self.questions[0] if self.questions else None


def _bound(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def name_text(name: dns.name.Name) -> str:
    """Lower case (resolvers randomise case, "0x20"), no trailing dot, bounded. A name made
    too long by escaped bytes (tunnels carry binary labels) is cut on the left, so its
    registered domain, what names are judged by, stays."""
    text = name.to_text(omit_final_dot=True).lower() or "."
    return text if len(text) <= MAX_NAME else "…" + text[-(MAX_NAME - 1):]


def _category(exc: Exception) -> str:
    if isinstance(exc, dns.message.ShortHeader):
        return "truncated"
    if isinstance(exc, dns.name.BadPointer | dns.name.PointerChainTooLong
                  | dns.name.DecompressionForbidden):
        return "bad_pointer"
    if isinstance(exc, dns.name.NameTooLong | dns.name.LabelTooLong):
        return "name_too_long"
    if isinstance(exc, dns.name.BadLabelType | dns.message.TrailingJunk):
        return "garbage"
    if isinstance(exc, dns.message.BadEDNS):
        return "bad_edns"
    if isinstance(exc, dns.message.BadTSIG | dns.message.UnknownTSIGKey):
        return "tsig"
    if type(exc) is dns.exception.FormError:
        return "malformed"
    if isinstance(exc, dns.exception.DNSException | ValueError | UnicodeError):
        return "bad_rdata"
    return "other"


def _from_wire(payload: bytes, lenient: bool) -> dns.message.Message:
    # keyring=False: a TSIG record is kept, not verified (we hold no keys).
    return dns.message.from_wire(payload, keyring=False, ignore_trailing=lenient,
                                 continue_on_error=lenient)


def parse_message(payload: bytes, wire_len: int | None = None) -> DnsMessage:
    """Parse one DNS message; wire_len is its length before the capture cut it (if known).

    Raises ParseError (with a category) for anything that is not a readable DNS message.
    """
    cut = wire_len is not None and len(payload) < wire_len
    try:
        msg = _from_wire(payload, lenient=False)
    except Exception as exc:  # dnspython raises many types; each is a counted category
        if not cut or isinstance(exc, dns.message.ShortHeader):
            raise ParseError(_category(exc), type(exc).__name__) from None
        try:
            msg = _from_wire(payload, lenient=True)
        except Exception as exc2:
            raise ParseError("truncated", type(exc2).__name__) from None
        if len(msg.question) == 0 and _qdcount(payload) > 0:
            raise ParseError("truncated", "question section cut") from None
    try:
        return _convert(msg, cut)
    except Exception as exc:  # to_text of odd rdata; never let one packet stop the pipeline
        raise ParseError(_category(exc), f"convert: {type(exc).__name__}") from None


def _qdcount(payload: bytes) -> int:
    return int.from_bytes(payload[4:6], "big") if len(payload) >= 6 else 0


def _convert(msg: dns.message.Message, cut: bool) -> DnsMessage:
    flags = msg.flags
    questions = tuple(Question(name_text(rr.name), dns.rdatatype.to_text(rr.rdtype))
                      for rr in msg.question[:MAX_QUESTIONS])
    answers: list[Answer] = []
    omitted = 0
    # owner name -> CNAME target, and owner name -> addresses, for the chain walk
    cnames: dict[str, str] = {}
    addrs: dict[str, list[str]] = {}
    for rrset in msg.answer:
        owner = name_text(rrset.name)
        rtype = dns.rdatatype.to_text(rrset.rdtype)
        # Other classes decode as generic rdata (no .address/.target): text only.
        internet = rrset.rdclass == dns.rdataclass.IN
        for rd in rrset:
            if internet and rrset.rdtype == dns.rdatatype.CNAME:
                cnames.setdefault(owner, name_text(rd.target))
            elif internet and rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                addrs.setdefault(owner, []).append(rd.address)
            if len(answers) >= MAX_ANSWERS:
                omitted += 1
                continue
            value = (name_text(rd.target) if internet and rrset.rdtype in _NAME_TYPES
                     else _bound(rd.to_text(), MAX_VALUE))
            answers.append(Answer(owner, rtype, int(rrset.ttl), value))
    chain: list[str] = []
    if questions:
        name = questions[0].name
        chain.append(name)
        seen = {name}
        while name in cnames and len(chain) <= MAX_CHAIN:
            name = cnames[name]
            if name in seen:  # a CNAME loop: stop, keep what we walked
                break
            seen.add(name)
            chain.append(name)
        final = chain[-1]
        addresses = tuple(addrs.get(final, ())[:MAX_ANSWERS])
    else:
        addresses = ()
    ttls = [a.ttl for a in answers]
    return DnsMessage(
        id=msg.id,
        is_response=bool(flags & dns.flags.QR),
        opcode=dns.opcode.to_text(msg.opcode()),
        rcode=dns.rcode.to_text(msg.rcode()),
        flags=Flags(tc=bool(flags & dns.flags.TC), rd=bool(flags & dns.flags.RD),
                    ra=bool(flags & dns.flags.RA), aa=bool(flags & dns.flags.AA)),
        questions=questions,
        answers=tuple(answers),
        answers_omitted=omitted,
        cname_chain=tuple(chain),
        addresses=addresses,
        ttl_min=min(ttls) if ttls else None,
        edns=msg.edns >= 0,
        edns_payload=int(msg.payload) if msg.edns >= 0 else None,
        cut=cut,
        truncated=bool(flags & dns.flags.TC) or cut,
    )


class DnsParser:
    """parse_message with counters: every packet fed is counted exactly once in stats."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def parse(self, payload: bytes, wire_len: int | None = None) -> DnsMessage:
        """Parse and count; raises ParseError (already counted) on bad input."""
        try:
            msg = parse_message(payload, wire_len)
        except ParseError as exc:
            self._counts["error." + exc.category] += 1
            raise
        self._counts["salvaged" if msg.cut else "ok"] += 1
        return msg

    def try_parse(self, payload: bytes, wire_len: int | None = None) -> DnsMessage | None:
        try:
            return self.parse(payload, wire_len)
        except ParseError:
            return None

    @property
    def stats(self) -> dict[str, int]:
        """ok, salvaged (cut but readable) and error.<category>; they sum to packets fed."""
        return dict(self._counts)

    @property
    def fed(self) -> int:
        return sum(self._counts.values())

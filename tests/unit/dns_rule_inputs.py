"""DNS lookups by hand for the DNS rules' unit tests (what the DNS stage would emit)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from otelpeers.config import parse_config
from otelpeers.detect.engine import Engine, Rule
from otelpeers.detect.model import Detection
from otelpeers.dns.lookups import DnsLookup
from otelpeers.dns.parse import Answer
from otelpeers.dns.transactions import DnsTransaction
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import T0, owner

S = 10**9
_ids = itertools.count(1)


def lookup(name: str, *, qtype: str = "A", rcode: str = "NOERROR",
           addresses: Sequence[str] = (), cnames: Sequence[str] = (),
           data: Sequence[tuple[str, str]] = (), ttl: int = 300, t: float = 0.0,
           comm: str | None = "curl", tgid: int = 4242,
           client: str = "10.0.0.2") -> DnsLookup:
    """One completed lookup at T0 + t seconds. cnames: the chain after the question name;
    data: (record type, presentation text) answers such as ("TXT", '"abc"'). comm None:
    no owner (a Zeek row: the actor is the client address)."""
    chain = (name, *cnames)
    answers = [Answer(chain[i], "CNAME", ttl, chain[i + 1]) for i in range(len(cnames))]
    answers += [Answer(chain[-1], "AAAA" if ":" in a else "A", ttl, a) for a in addresses]
    answers += [Answer(name, rtype, ttl, value) for rtype, value in data]
    start = T0 + int(t * S)
    i = next(_ids)
    txn = DnsTransaction(
        txn_id=f"txn-{i}", cookie=i, owner=owner(tgid, comm) if comm else None,
        resolver_addr="10.0.0.53", resolver_port=53, client_addr=client,
        client_port=30000 + i % 30000, question_name=name, qtype=qtype, rcode=rcode,
        answers=tuple(answers), addresses=tuple(addresses), cname_chain=chain,
        ttl_min=min((a.ttl for a in answers), default=None), start_ns=start,
        end_ns=start + 2_000_000, retries=0, truncated=False, timed_out=False,
        protocol="udp")
    return DnsLookup(txn)


def engine(rule: type[Rule], **settings: object) -> Engine:
    """The real engine with one rule and its settings (a config file's values)."""
    return Engine(parse_config({"detect": {"rules": {rule.meta.name: dict(settings)}}}).detect,
                  [rule])


def run(e: Engine, lookups: Iterable[DnsLookup]) -> list[Detection]:
    """Each lookup in its own pipeline round, as the agent delivers them; all detections."""
    out: list[Detection] = []
    for lk in lookups:
        out.extend(e.evaluate(Outputs(dns=[lk])))
    return out

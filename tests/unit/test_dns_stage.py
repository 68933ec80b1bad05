"""DnsStage: live progress snapshots and completed flows named from the resolution cache."""

from __future__ import annotations

from otelpeers.config import Config
from otelpeers.dns.stage import DnsStage
from otelpeers.dns.transactions import DnsTransaction, make_txn_id
from otelpeers.events import Direction
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import T0, flow, owner

MS = 1_000_000


def resolved(name: str, addr: str) -> DnsTransaction:
    start = T0 - 10 * MS
    return DnsTransaction(
        txn_id=make_txn_id(1, 1, "A", start), cookie=1, owner=owner(), resolver_addr="10.0.0.53",
        resolver_port=53, client_addr="10.0.0.2", client_port=40000, question_name=name,
        qtype="A", rcode="NOERROR", answers=(), addresses=(addr,), cname_chain=(name,),
        ttl_min=60, start_ns=start, end_ns=start + 5 * MS, retries=0, truncated=False,
        timed_out=False, protocol="udp")


def stage_knowing(name: str, addr: str) -> DnsStage:
    st = DnsStage(Config())
    st.cache.record(resolved(name, addr))
    return st


def test_open_outbound_flow_is_named_once_and_forgotten_at_close() -> None:
    st = stage_knowing("api.example", "192.0.2.7")
    live = flow("2a", peer="192.0.2.7", complete=False)
    for _ in range(2):  # the second snapshot reuses the first one's annotation
        out = Outputs(progress=[live])
        st.process(out)
        (r,) = out.progress
        assert r.dns is not None and r.dns.question_name == "api.example"
    assert list(st._open) == [0x2a]  # keyed by the TCP cookie
    out = Outputs(flows=[flow("2a", peer="192.0.2.7")])
    st.process(out)
    assert out.flows[0].dns is not None and out.flows[0].dns.question_name == "api.example"
    assert not st._open


def test_flows_dns_cannot_name_are_not_held_while_open() -> None:
    """Inbound flows (half of a busy server's) and resolver traffic never get a name: the
    stage keeps nothing for them, however many are open."""
    st = stage_knowing("api.example", "192.0.2.7")
    inbound = [flow(f"{i:x}", direction=Direction.INBOUND, peer="192.0.2.7", complete=False)
               for i in range(1, 1001)]
    resolver = flow("ffff", peer="10.0.0.53", peer_port=53, transport="udp", complete=False)
    out = Outputs(progress=[*inbound, resolver])
    st.process(out)
    assert all(r.dns is None for r in out.progress)
    assert not st._open
    # an unresolved outbound flow is held (UNRESOLVED): its lookup is not repeated
    unnamed = flow("abc", peer="198.51.100.1", complete=False)
    out = Outputs(progress=[unnamed])
    st.process(out)
    assert out.progress[0].dns is not None and not out.progress[0].dns.resolved
    assert list(st._open) == [0xabc]

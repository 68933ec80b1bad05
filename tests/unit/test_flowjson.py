"""flow_json writes the same text as json.dumps(flow_to_dict(r)): the schema lives there."""

from __future__ import annotations

import io
import json
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from otelpeers.commands.common import JsonFlowPrinter
from otelpeers.events import Direction, Owner
from otelpeers.flowjson import flow_json
from otelpeers.flows import CloseReason, DnsAnnotation, FileAccess, flow_to_dict
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import flow, local_pair, many


def reference(r) -> str:  # type: ignore[no-untyped-def]
    return json.dumps(flow_to_dict(r))


def test_same_text_as_the_schema_for_synthetic_streams() -> None:
    records = [*many(400), *local_pair()]
    assert [flow_json(r) for r in records] == [reference(r) for r in records]


def test_every_optional_part_and_odd_value() -> None:
    base = flow("ff", peer="2001:db8::1", local="2001:db8::2")
    variants = [
        base,
        replace(base, owner=None, tcp=None, local_peer_flow_id=None),
        replace(base, owner=Owner(1, 2, 0, 0, 0, 'we"ird\\comm\n', joined=True)),
        replace(base, dns=DnsAnnotation(True, "www.example.com", ("a.cdn.net", "b.cdn.net"),
                                         "same_process", "t1")),
        replace(base, dns=DnsAnnotation(False)),
        replace(base, files=(FileAccess(5, "/etc/shadow", 0), FileAccess(6, "/root/ключ", 2))),
        replace(base, summary=17, cookie=0, complete=False, adopted=True,
                close_reason=CloseReason.CONNECT_FAILED, direction=Direction.UNKNOWN),
        replace(base, cookie=2**64 - 1, netns_cookie=2**64 - 2, local_addr=""),
    ]
    for r in variants:
        assert flow_json(r) == reference(r)
        json.loads(flow_json(r))  # and it is JSON


@settings(max_examples=200, deadline=None)
@given(comm=st.text(max_size=16), name=st.text(max_size=40), path=st.text(max_size=40))
def test_any_text_is_escaped_like_json(comm: str, name: str, path: str) -> None:
    r = replace(flow("1a"), owner=Owner(7, 7, 0, 0, 1, comm),
                dns=DnsAnnotation(True, name, (name,), "host", name),
                files=(FileAccess(1, path, 0),), local_peer_flow_id=name)
    assert flow_json(r) == reference(r)


def test_printer_writes_one_line_per_flow() -> None:
    out = io.StringIO()
    printer = JsonFlowPrinter(out)
    records = list(many(5))
    printer.consume(Outputs(flows=records))
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["flow_id"] for line in lines] == [r.flow_id for r in records]
    assert printer.counters() == {"printed": 5}

"""Graph snapshots as JSON (the documented schema) and as Graphviz DOT with hostile names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from test_graph_model import T0, lookup_txn, outbound_flow

from otelpeers.events import Owner
from otelpeers.flows import FlowTable
from otelpeers.graph import RelationshipGraph, from_json, to_dot, to_json
from otelpeers.graph.render import MAX_DOT_LABEL, SCHEMA_VERSION, SchemaError, dot_escape

NODE_KEYS = {"id", "kind", "label", "first_seen_ns", "last_seen_ns", "count", "attrs"}
EDGE_KEYS = {"kind", "source", "target", "first_seen_ns", "last_seen_ns", "count",
             "bytes_sent", "bytes_received", "attrs"}


def sample() -> RelationshipGraph:
    g = RelationshipGraph()
    g.add_dns(lookup_txn("www.example.com", ["cdn.example.net"], ["192.0.2.7"]))
    g.add_flow(outbound_flow(FlowTable(), 1, "192.0.2.7"))
    return g


def test_json_schema_keys_and_round_trip() -> None:
    snap = sample().snapshot()
    doc = to_json(snap)
    assert set(doc) == {"version", "since_ns", "limits", "stats", "nodes", "edges"}
    assert doc["version"] == SCHEMA_VERSION
    assert doc["limits"] == {"max_nodes": 50_000, "max_edges": 200_000}
    assert {"nodes", "edges", "nodes_evicted", "edges_evicted"} <= set(doc["stats"])
    assert all(set(n) == NODE_KEYS for n in doc["nodes"])
    assert all(set(e) == EDGE_KEYS for e in doc["edges"])
    conn = next(e for e in doc["edges"] if e["kind"] == "connected_to")
    assert conn["bytes_sent"] == 120 and conn["attrs"]["transport"] == "tcp"
    text = json.dumps(doc)
    assert from_json(json.loads(text)) == snap


def test_from_json_rejects_other_versions_and_bad_types() -> None:
    doc = to_json(sample().snapshot())
    with pytest.raises(SchemaError, match="version 99"):
        from_json({**doc, "version": 99})
    bad = json.loads(json.dumps(doc))
    bad["edges"][0]["count"] = "many"
    with pytest.raises(SchemaError, match=r"edges\[0\]\.count"):
        from_json(bad)
    bad = json.loads(json.dumps(doc))
    bad["nodes"][0]["kind"] = "planet"
    with pytest.raises(SchemaError, match="unknown"):
        from_json(bad)


def test_dot_escape_hostile_text() -> None:
    assert dot_escape('a"b') == 'a\\"b'
    assert dot_escape("a\\") == "a\\\\"  # a trailing backslash must not eat the quote
    assert dot_escape("l1\nl2\r\x1b[31m\u202e") == "l1?l2??[31m?"
    long = dot_escape("y" * 1_000_000)
    assert len(long) == MAX_DOT_LABEL and long.endswith("…")


def _label_strings(dot: str) -> list[str]:
    return re.findall(r'label="((?:[^"\\]|\\.)*)"', dot)


def test_dot_with_hostile_names_is_well_formed() -> None:
    g = RelationshipGraph()
    evil = Owner(66, 66, 0, 0, 1, 'x"];\nevil->x;//')
    g.add_dns(lookup_txn("www.example.com", [], ["192.0.2.7"], owner=evil))
    g.add_file_access(66, '/tmp/"quoted"\\\n' + "z" * 1_000_000, T0 + 5, comm=evil.comm)
    dot = to_dot(g.snapshot())
    assert len(dot) < 10_000  # a megabyte name is bounded
    body = dot.splitlines()
    assert body[0] == "digraph otelpeers {" and body[-1] == "}"
    # Every statement line is one node or one edge; no injected statements.
    for line in body[4:-1]:
        assert re.fullmatch(r'  n\d+ (-> n\d+ )?\[label="(?:[^"\\]|\\.)*"(, shape=\w+)?\];',
                            line), line
    labels = _label_strings(dot)
    assert any('x\\"];?evil->x;//' in s for s in labels)
    assert dot.count("\n") == len(body)  # no raw newline inside a label


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz not installed")
def test_graphviz_accepts_the_output() -> None:
    g = sample()
    g.add_file_access(100, 'a"b\\', T0, comm="curl")
    g.add_file_access(66, 'x"];\nevil->x;//\\' + "\u202e" * 10 + "z" * 100_000, T0,
                      comm='"\\')
    out = subprocess.run(["dot", "-Tplain"], input=to_dot(g.snapshot()), text=True,
                         capture_output=True, check=True)
    assert out.stdout.startswith("graph ")
    nodes = [ln for ln in out.stdout.splitlines() if ln.startswith("node ")]
    assert len(nodes) == len(g.snapshot().nodes)  # nothing injected, nothing lost

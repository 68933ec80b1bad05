"""`otelpeers graph --format html` without a browser: the page's structure, escaping of
hostile names, its Content-Security-Policy, and clear errors when graphviz cannot help.

The page opened in headless Chromium: tests/e2e/test_graph_html.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import stat
from dataclasses import replace

import pytest
from test_graph_cli import write_recording
from test_graph_model import CURL, info, lookup_txn, outbound_flow

from otelpeers.cli import main
from otelpeers.flows import FlowTable
from otelpeers.graph import EdgeKind, NodeKind, RelationshipGraph
from otelpeers.graph.html import MAX_NODES, GraphvizError, dot_names, to_html
from otelpeers.graph.render import to_dot

# graphviz is one of setup.sh's packages: without it these skip, except under CI=true.
pytestmark = pytest.mark.skipif(shutil.which("dot") is None and os.environ.get("CI") != "true",
                                reason="graphviz is not installed (sudo scripts/setup.sh)")

HOSTILE = '</script><img src=x onerror="alert(1)">&amp;<!--'


def graph() -> RelationshipGraph:
    g = RelationshipGraph()
    g.add_dns(lookup_txn("www.example.com", ["cdn.example.net"], ["192.0.2.7"]))
    proc = replace(info(100, "curl", exe="/usr/bin/curl", container="c" * 64,
                        ancestry=((90, "bash"),)),
                   command_line=f"curl {HOSTILE}")
    g.add_flow(outbound_flow(FlowTable(), 1, "192.0.2.7", owner=CURL), proc)
    return g


@pytest.fixture(scope="module")
def page() -> str:
    return to_html(graph().snapshot())


def data_block(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="otelpeers-graph-data">(.*?)</script>',
                  page, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_every_node_and_edge_is_in_the_svg_with_details(page: str) -> None:
    snap = graph().snapshot()
    data = data_block(page)
    names = dot_names(snap)
    assert set(data["nodes"]) == set(names)
    for dot_name, node_id in names.items():
        node = next(n for n in snap.nodes if n.id == node_id)
        m = re.search(rf'<g id="node\d+" class="node" data-key="{dot_name}"><title>([^<]*)',
                      page)
        assert m is not None, f"{node_id} is not in the SVG"
        assert m.group(1).startswith(f"{node.kind.value}: "), m.group(1)
        assert ("id", node_id) in map(tuple, data["nodes"][dot_name]["fields"])
    edge_groups = re.findall(r'class="edge" data-key="([^"]*)"', page)
    assert len(edge_groups) == len(snap.edges)
    conn = next(e for e in snap.edges if e.kind == EdgeKind.CONNECTED_TO)
    inv = {v: k for k, v in names.items()}
    (item,) = data["edges"][f"{inv[conn.source]}->{inv[conn.target]}"]
    assert ["bytes received", "800 B"] in item["fields"]


def test_dot_names_follow_render(page: str) -> None:
    """html.py names nodes n0, n1, ... as render.to_dot() does; the labels agree."""
    snap = graph().snapshot()
    dot = to_dot(snap)
    for dot_name, node_id in dot_names(snap).items():
        node = next(n for n in snap.nodes if n.id == node_id)
        assert re.search(rf'^  {dot_name} \[label="{re.escape(node.kind.value)}\\n',
                         dot, re.M), dot_name


def test_hostile_text_never_becomes_markup(page: str) -> None:
    assert "<img" not in page
    assert "<!--" not in page
    # The command line is in the data (escaped for a script) and in a tooltip (as text).
    proc = next(v for v in data_block(page)["nodes"].values()
                if ["id", "process:100@1000"] in v["fields"])
    assert ["command_line", f"curl {HOSTILE}"] in proc["fields"]
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;amp;" in page
    body = page.split('id="otelpeers-graph-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in body and ">" not in body


def test_page_loads_nothing_and_only_its_own_script_runs(page: str) -> None:
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page).group(1)
    assert "default-src 'none'" in csp
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", page)


def test_legend_names_every_kind(page: str) -> None:
    aside = page.split("<aside>", 1)[1]
    for kind in list(NodeKind) + list(EdgeKind):
        assert f"<code>{kind.value}</code>" in aside
    for kind in NodeKind:
        assert f"<title>{kind.value}</title>" in aside  # the shape, drawn by graphviz
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "element ids are unique"


def test_missing_dot_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(GraphvizError, match="apt-get install graphviz"):
        to_html(graph().snapshot(), dot=str(tmp_path / "no-dot"))


def test_slow_dot_is_stopped(tmp_path) -> None:
    slow = tmp_path / "dot"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(slow.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(GraphvizError, match="--since"):
        to_html(graph().snapshot(), dot=str(slow), timeout_s=0.3)


def test_failing_dot_reports_its_message(tmp_path) -> None:
    bad = tmp_path / "dot"
    bad.write_text("#!/bin/sh\necho 'syntax error in line 1' >&2\nexit 1\n")
    bad.chmod(bad.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(GraphvizError, match=r"exit status 1\): syntax error in line 1"):
        to_html(graph().snapshot(), dot=str(bad))


def test_too_big_a_graph_names_the_fix() -> None:
    snap = graph().snapshot()
    big = replace(snap, nodes=snap.nodes * (MAX_NODES // len(snap.nodes) + 1))
    with pytest.raises(GraphvizError, match="--since"):
        to_html(big)


def test_cli_writes_html_from_a_recording(tmp_path, capsys) -> None:
    rec = tmp_path / "events.jsonl"
    write_recording(rec)
    assert main(["graph", "--recording", str(rec), "--format", "html"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("<!DOCTYPE html>")
    data = data_block(out)
    titles = {v["title"] for v in data["nodes"].values()}
    assert {"domain: www.example.com", "domain: cdn.example.net",
            "remote_endpoint: 192.0.2.7:443/tcp"} <= titles

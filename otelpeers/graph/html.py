"""`otelpeers graph --format html`: the relationship graph as one self-contained HTML page.

Graphviz lays out the DOT text render.to_dot() makes (`dot -Tsvg`, run without a shell and
with a time limit); the SVG is embedded inline with a legend and per-node and per-edge
details, shown as SVG <title> tooltips (no script needed) and, on click, in a side panel by
a small inline script. Nothing is loaded from the network: the page's Content-Security-
Policy allows no source at all, only the inline style and the one inline script (by hash).

Everything shown comes from the network or from processes (DNS names, command lines,
paths): it reaches the page only HTML-escaped, or as JSON with <, > and & escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import subprocess
import sys
import time
from typing import IO, Any

from otelpeers.graph.model import TRAFFIC_EDGES, EdgeKind, GraphSnapshot, NodeKind
from otelpeers.graph.render import _SHAPES, dot_escape, to_dot

DEFAULT_TIMEOUT_S = 60.0
MAX_NODES = 5000  # dot's layout time grows quickly; beyond this, narrow the graph first
MAX_TOOLTIP = 1024  # characters of one node's or edge's tooltip

NODE_HELP = {
    NodeKind.PROCESS: "a process (pid, command line, user)",
    NodeKind.BINARY: "an executable file",
    NodeKind.USER: "a user (uid)",
    NodeKind.CONTAINER: "a container",
    NodeKind.LOCAL_ENDPOINT: "an address and port a process listened on",
    NodeKind.REMOTE_ENDPOINT: "a peer address (and port)",
    NodeKind.DOMAIN: "a DNS name",
    NodeKind.FILE: "a file a process opened",
}
EDGE_HELP = {
    EdgeKind.SPAWNED: "parent process started child",
    EdgeKind.EXECUTED: "process runs this executable",
    EdgeKind.RUNS_AS: "process runs as this user",
    EdgeKind.IN_CONTAINER: "process is in this container",
    EdgeKind.CONNECTED_TO: "outbound connection (bytes out / in)",
    EdgeKind.LISTENED_ON: "process accepted connections here",
    EdgeKind.ACCEPTED_FROM: "inbound connection from this peer",
    EdgeKind.RESOLVED: "process looked this name up",
    EdgeKind.CNAME_OF: "alias of the next name",
    EdgeKind.RESOLVES_TO: "name answered with this address",
    EdgeKind.ACCESSED_FILE: "process opened this file",
}


class GraphvizError(RuntimeError):
    """dot is missing, failed, or took too long; the message says what to do."""


def dot_names(snapshot: GraphSnapshot) -> dict[str, str]:
    """DOT node name (n0, n1, ... as render.to_dot() assigns them) -> graph node id."""
    return {f"n{i}": n.id for i, n in enumerate(snapshot.nodes)}


def run_dot(dot_text: str, *, dot: str = "dot", timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """SVG of a DOT graph from Graphviz (argv list, no shell; killed after timeout_s)."""
    try:
        proc = subprocess.run([dot, "-Tsvg"], input=dot_text.encode(), capture_output=True,
                              timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise GraphvizError(f"graphviz is not installed ({dot!r} not found); install it "
                            "(Debian/Ubuntu: apt-get install graphviz), or use --format dot "
                            "and lay the graph out elsewhere") from None
    except subprocess.TimeoutExpired:
        raise GraphvizError(f"graphviz took longer than {timeout_s:.0f} s to lay out the "
                            "graph; narrow it with --since (e.g. --since 10m)") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-500:]
        raise GraphvizError(f"graphviz failed (exit status {proc.returncode}): {err}")
    return proc.stdout.decode()


def _ns_text(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns / 1e9)) + " UTC"


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _bounded(text: str, limit: int = MAX_TOOLTIP) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _details(snapshot: GraphSnapshot) -> dict[str, Any]:
    """What the page shows about each node and edge, keyed by DOT name / SVG edge title."""
    names = {node_id: name for name, node_id in dot_names(snapshot).items()}
    nodes = {}
    for n in snapshot.nodes:
        fields: list[tuple[str, str]] = [("kind", n.kind.value), ("id", n.id),
                                         ("first seen", _ns_text(n.first_seen_ns)),
                                         ("last seen", _ns_text(n.last_seen_ns)),
                                         ("records", str(n.count))]
        fields += [(k, str(v)) for k, v in n.attrs if v is not None]
        nodes[names[n.id]] = {"title": f"{n.kind.value}: {n.label}", "fields": fields}
    edges = {}
    for e in snapshot.edges:
        if e.source not in names or e.target not in names:
            continue  # to_dot() leaves these out too
        fields = [("kind", e.kind.value), ("from", e.source), ("to", e.target),
                  ("first seen", _ns_text(e.first_seen_ns)),
                  ("last seen", _ns_text(e.last_seen_ns)), ("records", str(e.count))]
        if e.kind in TRAFFIC_EDGES:
            fields += [("bytes sent", _human_bytes(e.bytes_sent or 0)),
                       ("bytes received", _human_bytes(e.bytes_received or 0))]
        fields += [(k, str(v)) for k, v in e.attrs if v is not None]
        # Graphviz titles an edge "n3->n7" (escaped in the SVG); edges of different kinds
        # between the same two nodes share that title, so they share their details too.
        key = f"{names[e.source]}->{names[e.target]}"
        edges.setdefault(key, []).append({"title": f"{e.kind.value}", "fields": fields})
    return {"nodes": nodes, "edges": edges}


def _tooltip(item: dict[str, Any]) -> str:
    lines = [item["title"]] + [f"{k}: {v}" for k, v in item["fields"]]
    return _bounded("\n".join(lines))


_SVG_START = re.compile(r"<svg\b", re.I)
_GROUP_TITLE = re.compile(
    r'<g id="(?P<gid>(?:node|edge)\d+)" class="(?P<cls>node|edge)">\s*'
    r"<title>(?P<title>[^<]*)</title>")


def _annotate_svg(svg: str, details: dict[str, Any]) -> str:
    """Inline-ready SVG: no XML prolog, each node/edge group tagged with its DOT name
    (data-key) and titled with its details (the browser shows <title> as a tooltip)."""
    m = _SVG_START.search(svg)
    if m is None:
        raise GraphvizError("graphviz produced no SVG")
    # Graphviz's comments repeat the DOT names; nothing in a page needs them.
    svg = re.sub(r"<!--.*?-->\n?", "", svg[m.start():], flags=re.S)

    def retitle(g: re.Match[str]) -> str:
        key = html.unescape(g["title"])
        if g["cls"] == "node":
            item = details["nodes"].get(key)
            text = _tooltip(item) if item else key
        else:
            items = details["edges"].get(key, [])
            text = "\n\n".join(_tooltip(i) for i in items) or key
        return (f'<g id="{g["gid"]}" class="{g["cls"]}" data-key="{html.escape(key)}">'
                f"<title>{html.escape(text)}</title>")

    return _GROUP_TITLE.sub(retitle, svg)


def _legend_svg(dot: str, timeout_s: float) -> str:
    """The node shapes as Graphviz draws them, one under the other, for the legend."""
    lines = ["digraph legend {", "  ranksep=0.12;", "  node [fontsize=10, height=0.3];",
             "  edge [style=invis];"]
    for i, kind in enumerate(NodeKind):
        lines.append(f'  k{i} [label="{dot_escape(kind.value)}", shape={_SHAPES[kind]}];')
    lines.append("  " + " -> ".join(f"k{i}" for i in range(len(NodeKind))) + ";")
    lines.append("}")
    svg = run_dot("\n".join(lines) + "\n", dot=dot, timeout_s=timeout_s)
    m = _SVG_START.search(svg)
    if m is None:
        raise GraphvizError("graphviz produced no SVG for the legend")
    kinds = {f"k{i}": kind.value for i, kind in enumerate(NodeKind)}
    # Ids of its own (the graph's SVG uses node1, node2, ...) and kind names as tooltips.
    svg = re.sub(r"<!--.*?-->\n?", "", svg[m.start():], flags=re.S)
    svg = re.sub(r'\bid="', 'id="legend-', svg)
    return re.sub(r"<title>(k\d+)</title>",
                  lambda t: f"<title>{kinds.get(t[1], t[1])}</title>", svg)


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d1d1f; }
header { padding: 12px 20px; background: #f4f5f7; border-bottom: 1px solid #d0d4da; }
header h1 { font-size: 18px; margin: 0 0 4px; }
header p { margin: 0; color: #555; }
main { display: flex; align-items: flex-start; }
#graph { flex: 1; overflow: auto; padding: 12px; }
#graph svg { max-width: none; }
#graph g.node, #graph g.edge { cursor: pointer; }
#graph g.selected polygon, #graph g.selected ellipse, #graph g.selected path {
  stroke: #d62728; stroke-width: 2.5; }
aside { width: 340px; padding: 12px 16px; border-left: 1px solid #d0d4da;
  position: sticky; top: 0; max-height: 100vh; overflow: auto; }
aside h2 { font-size: 15px; margin: 12px 0 6px; }
#details dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; margin: 0; }
#details dt { color: #555; }
#details dd { margin: 0; overflow-wrap: anywhere; font-family: ui-monospace, monospace;
  font-size: 12px; }
.shapes svg { width: 130px; height: auto; }
table.legend { border-collapse: collapse; font-size: 12px; }
table.legend td { padding: 2px 6px 2px 0; vertical-align: top; }
table.legend code { font-size: 12px; }
.stats { font-size: 12px; color: #555; }
"""

# Shows a clicked node's or edge's details beside the graph. Text goes in via
# textContent only, so nothing from the graph can become markup.
_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById("otelpeers-graph-data").textContent);
  var panel = document.getElementById("details");
  var selected = null;
  function show(title, fields) {
    var h = document.createElement("h2");
    h.textContent = title;
    var dl = document.createElement("dl");
    fields.forEach(function (f) {
      var dt = document.createElement("dt"); dt.textContent = f[0];
      var dd = document.createElement("dd"); dd.textContent = f[1];
      dl.appendChild(dt); dl.appendChild(dd);
    });
    panel.replaceChildren(h, dl);
  }
  var groups = document.querySelectorAll("#graph g.node, #graph g.edge");
  groups.forEach(function (g) {
    g.addEventListener("click", function () {
      var key = g.getAttribute("data-key");
      var items = g.classList.contains("node") ? [data.nodes[key]] : data.edges[key];
      if (!items || !items[0]) { return; }
      if (selected) { selected.classList.remove("selected"); }
      g.classList.add("selected");
      selected = g;
      var fields = [];
      items.forEach(function (it, i) {
        if (i > 0) { fields.push(["", ""]); }
        fields = fields.concat(it.fields);
      });
      show(items[0].title, fields);
    });
  });
  // Says the script ran (a page whose script the CSP blocked would lack it).
  document.getElementById("graph").setAttribute("data-interactive", String(groups.length));
})();
"""


def _json_for_script(doc: Any) -> str:
    """JSON that cannot end its <script> element or open a comment."""
    return (json.dumps(doc, ensure_ascii=False).replace("&", "\\u0026")
            .replace("<", "\\u003c").replace(">", "\\u003e"))


def _script_hash(script: str) -> str:
    return base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


def to_html(snapshot: GraphSnapshot, *, title: str = "otelpeers relationship graph",
            dot: str = "dot", timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """The whole page. Raises GraphvizError when the graph cannot be laid out."""
    if len(snapshot.nodes) > MAX_NODES:
        raise GraphvizError(f"the graph has {len(snapshot.nodes)} nodes; an HTML page is "
                            f"drawn for at most {MAX_NODES}. Narrow it with --since "
                            f"(e.g. --since 10m), or use --format json")
    details = _details(snapshot)
    svg = _annotate_svg(run_dot(to_dot(snapshot), dot=dot, timeout_s=timeout_s), details)
    legend_shapes = _legend_svg(dot, timeout_s)
    stats = dict(snapshot.stats)
    span = ""
    if snapshot.nodes:
        first = min(n.first_seen_ns for n in snapshot.nodes)
        last = max(n.last_seen_ns for n in snapshot.nodes)
        span = f" seen from {_ns_text(first)} to {_ns_text(last)}"
    since = f"; since {_ns_text(snapshot.since_ns)}" if snapshot.since_ns is not None else ""
    dropped = {k: v for k, v in stats.items()
               if k in ("nodes_evicted", "edges_evicted", "edges_dropped",
                        "strings_truncated") and v}
    node_rows = "".join(
        f"<tr><td><code>{k.value}</code></td><td>{html.escape(NODE_HELP[k])}</td></tr>"
        for k in NodeKind)
    edge_rows = "".join(
        f"<tr><td><code>{k.value}</code></td><td>{html.escape(EDGE_HELP[k])}</td></tr>"
        for k in EdgeKind)
    script_hash = _script_hash(_SCRIPT)
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; "
           f"script-src 'sha256-{script_hash}'; img-src data:")
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n',
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n",
        f"<header><h1>{html.escape(title)}</h1>",
        f"<p>{len(snapshot.nodes)} nodes, {len(snapshot.edges)} edges{span}{since}. "
        "Hover over a node or edge for its details; click to pin them on the right.</p>",
        (f'<p class="stats">Left out at the graph\'s bounds: '
         f'{html.escape(", ".join(f"{k} {v}" for k, v in sorted(dropped.items())))}</p>'
         if dropped else ""),
        "</header>\n<main>\n",
        f'<div id="graph">{svg}</div>\n',
        '<aside><div id="details"><h2>Details</h2><p>Click a node or an edge.</p></div>',
        f'<h2>Node kinds</h2><div class="shapes">{legend_shapes}</div>',
        f'<table class="legend">{node_rows}</table>',
        f'<h2>Edge kinds</h2><table class="legend">{edge_rows}</table>',
        "<p class=\"stats\">Edge labels: kind, then payload bytes out and in for "
        "connections, and (xN) when N records were merged into the edge.</p></aside>\n",
        "</main>\n",
        '<script type="application/json" id="otelpeers-graph-data">',
        _json_for_script(details), "</script>\n",
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n",
    ]
    return "".join(parts)


def write_html(snapshot: GraphSnapshot, out: IO[str]) -> int:
    """`otelpeers graph --format html`: the page on `out`; exit status (1: dot failed)."""
    try:
        page = to_html(snapshot)
    except GraphvizError as exc:
        print(f"otelpeers: {exc}", file=sys.stderr)
        return 1
    out.write(page)
    out.flush()
    return 0

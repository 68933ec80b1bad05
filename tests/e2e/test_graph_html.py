"""The HTML relationship graph opened in a real browser (Debian's headless Chromium).

A graph of a known traffic run, built with the graph model API from real DNS packets (the
DNS tracker) and flow records: curl resolves a name through a CNAME and downloads 1 MB,
wget talks to nginx on this host, and a process whose command line is hostile markup. The
page is written to a file, Chromium loads it with the network off, and the DOM it
rendered must hold every node of the graph (by DOT name, kind and label), every edge, the
page's script must have run (the CSP let it), and the hostile text must be text, not
elements.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from backends import chromium_binary

from otelpeers.config import DnsConfig
from otelpeers.dns.tracker import DnsTracker
from otelpeers.dns.transactions import DnsTransaction
from otelpeers.events import Counters, Direction, Owner
from otelpeers.graph import GraphSnapshot, RelationshipGraph
from otelpeers.graph.html import dot_names, to_html
from otelpeers.process.table import ProcessInfo
from otelpeers.testing.dns_wire import packet, query_wire, response_wire
from otelpeers.testing.flows import T0, flow, local_pair, owner

pytestmark = pytest.mark.e2e

MB = 1_048_576
MS = 10**6
HOSTILE = '<img src=x onerror="document.title=1"><b>bold</b>'
CURL = owner(4242, "curl")


def lookup(name: str, cname: str, address: str, who: Owner) -> DnsTransaction:
    tracker = DnsTracker(DnsConfig())
    tracker.handle(packet(query_wire(name, "A", 0x77), time_ns=T0, owner=who))
    (txn,) = tracker.handle(packet(
        response_wire(name, "A", 0x77, cnames=[cname], addresses=[address]),
        time_ns=T0 + 3 * MS, outbound=False))
    return txn


def process_info(pid: int, comm: str, command_line: str) -> ProcessInfo:
    return ProcessInfo(
        pid=pid, ppid=1, start_time_ticks=777, comm=comm, exe_path=f"/usr/bin/{comm}",
        exe_name=comm, command_line=command_line, command_line_truncated=False, uid=1000,
        euid=1000, gid=1000, egid=1000, user_name="alice", real_user_name="alice",
        group_name="alice", vpid=None, creation_time_ns=T0, cgroup_path="/",
        cgroup_line="0::/", container_id=None, container_runtime=None, pid_ns=None,
        net_ns=None, mnt_ns=None, exe_sha256=None, ancestry=((1, "systemd"),))


def traffic_graph() -> GraphSnapshot:
    g = RelationshipGraph()
    g.add_dns(lookup("download.otelpeers.test", "cdn.otelpeers.test", "10.203.0.2", CURL))
    download = flow("10", proc=CURL, peer="10.203.0.2", peer_port=80, start_ns=T0 + 5 * MS,
                    counters=Counters(packets_out=8, bytes_out=600, payload_out=112,
                                      packets_in=760, bytes_in=MB + 40_000,
                                      payload_in=MB))
    g.add_flow(download, process_info(4242, "curl", "curl -o /dev/null "
                                                    "http://download.otelpeers.test/1M"))
    client, server = local_pair()
    g.add_flow(client)
    g.add_flow(server)
    odd = owner(5151, "python3")
    g.add_flow(flow("20", proc=odd, peer="10.203.0.3", peer_port=9, direction=Direction.OUTBOUND),
               process_info(5151, "python3", f"python3 -c '{HOSTILE}'"))
    g.flush_pending()
    return g.snapshot()


class DomReader(HTMLParser):
    """SVG node and edge groups (data-key, title text, label texts) and element ids."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.groups: dict[str, dict] = {}  # data-key -> {"class", "title", "texts"}
        self.tags: list[str] = []
        self.attrs_by_id: dict[str, dict[str, str | None]] = {}
        self.title = ""  # the document's <title> (the first one)
        self._titles = 0
        self._group: dict | None = None
        self._depth = 0
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a and a["id"]:
            self.attrs_by_id[a["id"]] = a
        if tag == "g" and a.get("class") in ("node", "edge") and a.get("data-key"):
            self._group = {"class": a["class"], "title": "", "texts": []}
            self.groups[a["data-key"]] = self._group
            self._depth = 0
        elif tag == "g" and self._group is not None:
            self._depth += 1
        if tag in ("title", "text"):
            self._in = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == "g" and self._group is not None:
            if self._depth == 0:
                self._group = None
            else:
                self._depth -= 1
        if tag in ("title", "text"):
            self._in = None
        if tag == "title":
            self._titles += 1

    def handle_data(self, data: str) -> None:
        if self._group is not None and self._in == "title":
            self._group["title"] += data
        elif self._group is not None and self._in == "text":
            self._group["texts"].append(data)
        elif self._in == "title" and self._titles == 0:
            self.title += data


def render_in_chromium(page: Path, profile: Path) -> str:
    """The DOM Chromium built from the page (after its scripts ran), network off."""
    cmd = [str(chromium_binary()), "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
           "--dump-dom", page.as_uri()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        # Chromium's helper processes share its session: none may outlive the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def test_chromium_renders_every_node_of_the_graph(tmp_path: Path) -> None:
    snap = traffic_graph()
    page = tmp_path / "graph.html"
    page.write_text(to_html(snap, title="otelpeers e2e graph"))

    dom = DomReader()
    dom.feed(render_in_chromium(page, tmp_path / "chromium-profile"))

    names = dot_names(snap)
    nodes = {k: v for k, v in dom.groups.items() if v["class"] == "node"}
    assert set(nodes) == set(names), "every node of the graph is in the rendered page"
    for dot_name, node_id in names.items():
        node = next(n for n in snap.nodes if n.id == node_id)
        shown = nodes[dot_name]
        assert shown["title"].startswith(f"{node.kind.value}: {node.label}"), shown["title"]
        assert node.kind.value in shown["texts"], shown["texts"]
    edges = [v for v in dom.groups.values() if v["class"] == "edge"]
    assert len(edges) == len(snap.edges)

    # What the run was: the name curl asked for, its CNAME, the address, the 1 MB, the
    # processes on both ends of the local connection.
    labels = " ".join(t for v in dom.groups.values() for t in v["texts"])
    for wanted in ("download.otelpeers.test", "cdn.otelpeers.test", "10.203.0.2",
                   "curl [4242]", "nginx [77]", "1MiB in"):
        assert wanted in labels, wanted

    # The inline script ran (the page's CSP allowed it by hash) and saw every group.
    graph_div = dom.attrs_by_id["graph"]
    assert graph_div.get("data-interactive") == str(len(nodes) + len(edges))
    # Hostile command line: shown as text in the tooltip, never parsed into elements.
    assert "img" not in dom.tags and "b" not in dom.tags
    assert any(HOSTILE in v["title"] for v in nodes.values())
    assert dom.title == "otelpeers e2e graph"

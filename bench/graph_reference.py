"""The relationship graph's per-flow implementation as it was before the fast paths, kept
unchanged as the reference: bench/graph_cost.py times it against otelpeers.graph, and
tests/unit/test_graph_fastpath.py checks that both build identical snapshots.

A copy of otelpeers/graph/model.py's RelationshipGraph (and GraphSink.consume) at commit
7c3c15e. When the graph's behaviour is changed on purpose, change this copy the same way.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from otelpeers.dns.transactions import DnsTransaction
from otelpeers.events import Direction, Kind, Owner
from otelpeers.flows import FlowRecord
from otelpeers.graph.model import (
    DEFAULT_MAX_EDGES,
    DEFAULT_MAX_NODES,
    DEFAULT_MAX_PENDING_PAIRS,
    DEFAULT_PAIR_WAIT_NS,
    DESCRIBE_EVERY_NS,
    MAX_ATTR,
    MAX_KEY,
    MIN_EDGES,
    MIN_NODES,
    STAT_NAMES,
    TRAFFIC_EDGES,
    AttrValue,
    EdgeKey,
    EdgeKind,
    GraphEdge,
    GraphNode,
    GraphSnapshot,
    NodeKind,
    endpoint_key,
)
from otelpeers.pipeline import Outputs
from otelpeers.process.table import ProcessInfo


class _Node:
    __slots__ = ("kind", "label", "first", "last", "count", "attrs")

    def __init__(self, kind: NodeKind, label: str, t0: int, t1: int) -> None:
        self.kind = kind
        self.label = label
        self.first = t0
        self.last = t1
        self.count = 1
        self.attrs: dict[str, AttrValue] = {}


class _Edge:
    __slots__ = ("seq", "first", "last", "count", "sent", "recv", "attrs")

    def __init__(self, seq: int, t0: int, t1: int) -> None:
        self.seq = seq
        self.first = t0
        self.last = t1
        self.count = 1
        self.sent = 0
        self.recv = 0
        self.attrs: dict[str, AttrValue] | None = None



class ReferenceGraph:
    def __init__(self, *, max_nodes: int = DEFAULT_MAX_NODES,
                 max_edges: int = DEFAULT_MAX_EDGES,
                 max_pending_pairs: int = DEFAULT_MAX_PENDING_PAIRS,
                 pair_wait_ns: int = DEFAULT_PAIR_WAIT_NS) -> None:
        if max_nodes < MIN_NODES or max_edges < MIN_EDGES:
            raise ValueError(f"RelationshipGraph: max_nodes and max_edges must be at least "
                             f"{MIN_NODES} and {MIN_EDGES}, got {max_nodes} and {max_edges}")
        if max_pending_pairs < 1 or pair_wait_ns < 0:
            raise ValueError("RelationshipGraph: max_pending_pairs must be >= 1 and "
                             "pair_wait_ns >= 0")
        self.max_nodes = max_nodes
        self.max_edges = max_edges
        self.max_pending_pairs = max_pending_pairs
        self.pair_wait_ns = pair_wait_ns
        self._lock = threading.Lock()
        self._nodes: OrderedDict[str, _Node] = OrderedDict()  # least recently touched first
        self._edges: OrderedDict[EdgeKey, _Edge] = OrderedDict()
        self._adj: dict[str, set[EdgeKey]] = {}  # node id -> keys of its edges
        self._proc_by_tgid: dict[int, tuple[str, str]] = {}  # tgid -> (node id, comm)
        # Process node -> (what described it, event time): a process's binary, user,
        # container and ancestry edges are refreshed at most every DESCRIBE_EVERY_NS, not for
        # every flow it makes (they say nothing per flow, and cost most of add_flow).
        self._described: dict[str, tuple[object, int]] = {}
        # One end of a connection between two local processes, waiting for the other end.
        self._pending: OrderedDict[str, tuple[FlowRecord, ProcessInfo | None]] = OrderedDict()
        self._seq = 0
        self._now = 0
        self._stats = dict.fromkeys(STAT_NAMES, 0)

    # ---- queries ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def edge_count(self) -> int:
        return len(self._edges)

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return self._stats_locked()

    def _stats_locked(self) -> dict[str, int]:
        return {**self._stats, "nodes": len(self._nodes), "edges": len(self._edges),
                "local_pairs_pending": len(self._pending)}

    def snapshot(self, since_ns: int | None = None) -> GraphSnapshot:
        """A frozen copy: edges last seen at or after since_ns, the nodes they join, and
        nodes last seen at or after since_ns (everything when since_ns is None)."""
        with self._lock:
            edges = [(k, e.seq, e.first, e.last, e.count, e.sent, e.recv,
                      tuple(e.attrs.items()) if e.attrs else ())
                     for k, e in self._edges.items() if since_ns is None or e.last >= since_ns]
            wanted = {nid for nid, n in self._nodes.items()
                      if since_ns is None or n.last >= since_ns}
            for k, *_ in edges:
                wanted.add(k[1])
                wanted.add(k[2])
            nodes = [GraphNode(nid, n.kind, n.label, n.first, n.last, n.count,
                               tuple(n.attrs.items()))
                     for nid in wanted if (n := self._nodes.get(nid)) is not None]
            stats = tuple(sorted(self._stats_locked().items()))
        edges.sort(key=lambda x: (x[2], x[1]))
        nodes.sort(key=lambda n: (n.first_seen_ns, n.id))
        return GraphSnapshot(
            since_ns=since_ns,
            nodes=tuple(nodes),
            edges=tuple(GraphEdge(k[0], k[1], k[2], first, last, count,
                                  sent if k[0] in TRAFFIC_EDGES else None,
                                  recv if k[0] in TRAFFIC_EDGES else None, attrs)
                        for k, _, first, last, count, sent, recv, attrs in edges),
            stats=stats, max_nodes=self.max_nodes, max_edges=self.max_edges)

    # ---- input --------------------------------------------------------------------------
    def add_flow(self, record: FlowRecord, process_info: ProcessInfo | None = None) -> None:
        """One completed flow. The two ends of a connection between local processes (linked
        by local_peer_flow_id) become one process -> process edge once both have arrived."""
        with self._lock:
            self._stats["flows"] += 1
            self._now = max(self._now, record.end_ns)
            self._expire_pending(record.end_ns)
            if record.local_peer_flow_id is None:
                self._add_single(record, process_info)
                return
            other = self._pending.pop(record.local_peer_flow_id, None)
            if other is None:
                self._pending[record.flow_id] = (record, process_info)
                if len(self._pending) > self.max_pending_pairs:
                    _, (r, info) = self._pending.popitem(last=False)
                    self._stats["local_pairs_evicted"] += 1
                    self._add_single(r, info)
                return
            self._add_pair(record, process_info, *other)

    def flush_pending(self) -> int:
        """End of input: local flow ends still waiting for their other end are added as
        ordinary flows; returns how many."""
        with self._lock:
            n = len(self._pending)
            while self._pending:
                _, (r, info) = self._pending.popitem(last=False)
                self._stats["local_pairs_unmatched"] += 1
                self._add_single(r, info)
            return n

    def add_dns(self, txn: DnsTransaction, process_info: ProcessInfo | None = None) -> None:
        with self._lock:
            self._stats["dns_transactions"] += 1
            t0, t1 = txn.start_ns, max(txn.start_ns, txn.end_ns)
            self._now = max(self._now, t1)
            proc = self._owner_process(txn.owner, process_info, t0, t1)
            if proc is None:
                self._stats["dns_without_owner"] += 1
            question = self._node(NodeKind.DOMAIN, txn.question_name, t0, t1)
            if proc is not None:
                failed = txn.rcode != "NOERROR"
                e = self._edge(EdgeKind.RESOLVED, proc, question, t0, t1,
                               attrs={"qtype": txn.qtype, "rcode": txn.rcode})
                if e is not None and e.attrs is not None:
                    e.attrs["failures"] = int(e.attrs.get("failures") or 0) + failed
            prev = question
            chain = txn.cname_chain
            if chain and chain[0] == txn.question_name:
                chain = chain[1:]
            for name in chain:  # question -> first target -> ... -> final name
                cur = self._node(NodeKind.DOMAIN, name, t0, t1)
                self._edge(EdgeKind.CNAME_OF, prev, cur, t0, t1)
                prev = cur
            for addr in txn.addresses:
                a = self._node(NodeKind.REMOTE_ENDPOINT, endpoint_key(addr), t0, t1)
                self._edge(EdgeKind.RESOLVES_TO, prev, a, t0, t1)

    def add_process(self, info: ProcessInfo, time_ns: int | None = None) -> str:
        """A process, its binary, user, container and ancestry; returns its node id.
        time_ns defaults to the process's creation time, else the latest time seen."""
        with self._lock:
            self._stats["processes"] += 1
            t = time_ns if time_ns is not None else (info.creation_time_ns or self._now)
            uid = info.uid if info.uid is not None else -1
            return self._process(info.pid, info.comm, uid, info, t, t)

    def add_file_access(self, tgid: int, path: str, time_ns: int, comm: str = "") -> None:
        """A process opened a file (file events feed this; the process may be known from
        earlier records, else it is named by tgid and comm)."""
        with self._lock:
            self._stats["file_accesses"] += 1
            self._now = max(self._now, time_ns)
            known = self._proc_by_tgid.get(tgid)
            if known is not None and known[0] in self._nodes and (not comm or comm == known[1]):
                proc = known[0]
                self._touch(proc, time_ns, time_ns)
            else:
                proc = self._process_node(tgid, comm or "?", None, time_ns, time_ns)
            f = self._node(NodeKind.FILE, path, time_ns, time_ns)
            self._edge(EdgeKind.ACCESSED_FILE, proc, f, time_ns, time_ns)

    # ---- flows --------------------------------------------------------------------------
    def _expire_pending(self, now_ns: int) -> None:
        while self._pending:
            fid, (r, info) = next(iter(self._pending.items()))
            if r.end_ns + self.pair_wait_ns >= now_ns:
                break
            del self._pending[fid]
            self._stats["local_pairs_unmatched"] += 1
            self._add_single(r, info)

    def _add_single(self, r: FlowRecord, info: ProcessInfo | None) -> None:
        t0, t1 = r.start_ns, max(r.start_ns, r.end_ns)
        proc = self._owner_process(r.owner, info, t0, t1)
        if proc is None:
            self._stats["flows_without_owner"] += 1
        c = r.counters
        if r.direction != Direction.INBOUND:
            if proc is None:
                return  # an endpoint joined to nothing says nothing
            remote = self._node(NodeKind.REMOTE_ENDPOINT,
                                endpoint_key(r.peer_addr, r.peer_port, r.transport), t0, t1)
            e = self._edge(EdgeKind.CONNECTED_TO, proc, remote, t0, t1,
                           c.payload_out, c.payload_in)
            self._flow_attrs(e, r)
            return
        local = self._listener_node(r, proc, t0, t1)
        # The peer's port of an accepted connection is ephemeral: the address names it.
        remote = self._node(NodeKind.REMOTE_ENDPOINT, endpoint_key(r.peer_addr), t0, t1)
        e = self._edge(EdgeKind.ACCEPTED_FROM, local, remote, t0, t1,
                       c.payload_out, c.payload_in)
        self._flow_attrs(e, r)

    def _listener_node(self, r: FlowRecord, proc: str | None, t0: int, t1: int) -> str:
        lst = r.listener
        addr, port = (lst.local_addr, lst.local_port) if lst else (r.local_addr, r.local_port)
        local = self._node(NodeKind.LOCAL_ENDPOINT, endpoint_key(addr, port, r.transport),
                           t0, t1)
        if proc is not None:
            e = self._edge(EdgeKind.LISTENED_ON, proc, local, t0, t1)
            if e is not None and lst is not None:
                self._set_attrs(e, {"listening": lst.listen_ns is not None})
        return local

    def _add_pair(self, r1: FlowRecord, i1: ProcessInfo | None,
                  r2: FlowRecord, i2: ProcessInfo | None) -> None:
        if r1.direction == Direction.INBOUND:
            r1, i1, r2, i2 = r2, i2, r1, i1
        client, server = r1, r2
        if (client.direction == Direction.INBOUND or server.direction != Direction.INBOUND
                or client.owner is None or server.owner is None):
            self._stats["local_pairs_unmatched"] += 2
            self._add_single(r1, i1)
            self._add_single(r2, i2)
            return
        t0 = min(client.start_ns, server.start_ns)
        t1 = max(t0, client.end_ns, server.end_ns)
        cproc = self._owner_process(client.owner, i1, t0, t1)
        sproc = self._owner_process(server.owner, i2, t0, t1)
        assert cproc is not None and sproc is not None
        self._listener_node(server, sproc, t0, t1)
        c = client.counters
        e = self._edge(EdgeKind.CONNECTED_TO, cproc, sproc, t0, t1, c.payload_out, c.payload_in)
        self._flow_attrs(e, client)
        if e is not None:
            self._set_attrs(e, {"server_port": server.local_port, "local": True})
        self._stats["local_pairs_merged"] += 1

    def _flow_attrs(self, e: _Edge | None, r: FlowRecord) -> None:
        if e is None:
            return
        attrs: dict[str, AttrValue] = {"transport": r.transport}
        if r.failed:
            attrs["failures"] = int((e.attrs or {}).get("failures") or 0) + 1
        if r.dns is not None and r.dns.resolved:
            attrs["domain"] = r.dns.question_name
        self._set_attrs(e, attrs)

    # ---- processes ----------------------------------------------------------------------
    def _owner_process(self, owner: Owner | None, info: ProcessInfo | None,
                       t0: int, t1: int) -> str | None:
        if owner is None:
            return None
        if info is not None and info.pid != owner.tgid:
            self._stats["process_info_mismatch"] += 1
            info = None
        return self._process(owner.tgid, owner.comm, owner.uid, info, t0, t1)

    def _process(self, tgid: int, comm: str, uid: int, info: ProcessInfo | None,
                 t0: int, t1: int) -> str:
        proc = self._process_node(tgid, comm, info, t0, t1)
        what = (info.exe_path, info.uid, info.container_id) if info is not None else comm
        seen = self._described.get(proc)
        if (seen is not None and seen[0] == what and t1 - seen[1] < DESCRIBE_EVERY_NS
                and all(n in self._nodes for n in seen[2])):
            # Recently described: keep its binary and user fresh, skip the ancestry walk.
            for kind, nid in zip((EdgeKind.EXECUTED, EdgeKind.RUNS_AS), seen[2], strict=False):
                self._touch(nid, t0, t1)
                self._edge(kind, proc, nid, t0, t1)
            return proc
        exe = (info.exe_path if info is not None and info.exe_path else None) or comm
        binary = self._node(NodeKind.BINARY, exe, t0, t1)
        self._edge(EdgeKind.EXECUTED, proc, binary, t0, t1)
        direct = [binary]
        if info is not None and info.uid is not None:
            uid = info.uid
        if uid >= 0:
            user = self._node(NodeKind.USER, str(uid), t0, t1,
                              label=info.real_user_name if info is not None else None)
            self._edge(EdgeKind.RUNS_AS, proc, user, t0, t1)
            direct.append(user)
        if len(self._described) >= self.max_nodes:
            self._described.clear()  # bounded; entries are only a shortcut
        self._described[proc] = (what, t1, tuple(direct))
        if info is None:
            return proc
        if info.container_id:
            ctr = self._node(NodeKind.CONTAINER, info.container_id, t0, t1,
                             attrs={"runtime": info.container_runtime})
            self._edge(EdgeKind.IN_CONTAINER, proc, ctr, t0, t1)
        child = proc
        for ppid, name in info.ancestry:  # parent first
            known = self._proc_by_tgid.get(ppid)
            if known is not None and known[0] in self._nodes:
                parent = known[0]
                self._touch(parent, t0, t1)
            else:
                parent = self._process_node(ppid, name, None, t0, t1)
            self._edge(EdgeKind.SPAWNED, parent, child, t0, t1)
            child = parent
        return proc

    def _process_node(self, tgid: int, comm: str, info: ProcessInfo | None,
                      t0: int, t1: int) -> str:
        """Keyed by tgid and start time when the process table knows it, else tgid and
        comm; a later record without context reuses the keyed node when the comm agrees."""
        attrs: dict[str, AttrValue] = {"pid": tgid, "comm": comm}
        if info is not None:
            key = f"{tgid}@{info.start_time_ticks}"
            attrs.update(start_time_ticks=info.start_time_ticks, ppid=info.ppid,
                         exe_path=info.exe_path, command_line=info.command_line,
                         uid=info.uid, container_id=info.container_id)
        else:
            known = self._proc_by_tgid.get(tgid)
            if known is not None and known[1] == comm and known[0] in self._nodes:
                self._touch(known[0], t0, t1)
                return known[0]
            key = f"{tgid}:{comm}"
        name = (info.name if info is not None else comm) or "?"
        nid = self._node(NodeKind.PROCESS, key, t0, t1, label=f"{name} [{tgid}]", attrs=attrs)
        self._proc_by_tgid[tgid] = (nid, comm)
        return nid

    # ---- storage ------------------------------------------------------------------------
    def _bound(self, s: str, limit: int) -> str:
        if len(s) <= limit:
            return s
        self._stats["strings_truncated"] += 1
        return s[: limit - 1] + "…"

    def _set_attrs(self, obj: _Node | _Edge, attrs: dict[str, AttrValue]) -> None:
        if obj.attrs is None:
            obj.attrs = {}
        for k, v in attrs.items():
            obj.attrs[k] = self._bound(v, MAX_ATTR) if isinstance(v, str) else v

    def _touch(self, nid: str, t0: int, t1: int) -> None:
        n = self._nodes[nid]
        self._nodes.move_to_end(nid)
        n.first = min(n.first, t0)
        n.last = max(n.last, t1)
        n.count += 1

    def _node(self, kind: NodeKind, key: str, t0: int, t1: int, *, label: str | None = None,
              attrs: dict[str, AttrValue] | None = None) -> str:
        key = self._bound(key, MAX_KEY)
        nid = f"{kind.value}:{key}"
        n = self._nodes.get(nid)
        if n is None:
            while len(self._nodes) >= self.max_nodes:
                self._evict_node()
            n = _Node(kind, key, t0, t1)
            self._nodes[nid] = n
        else:
            self._touch(nid, t0, t1)
        if label:
            n.label = self._bound(label, MAX_KEY)
        if attrs:
            self._set_attrs(n, {k: v for k, v in attrs.items() if v is not None})
        return nid

    def _edge(self, kind: EdgeKind, src: str, dst: str, t0: int, t1: int,
              sent: int = 0, recv: int = 0, attrs: dict[str, AttrValue] | None = None
              ) -> _Edge | None:
        if src not in self._nodes or dst not in self._nodes:
            # Only when one record touches more nodes than the graph holds.
            self._stats["edges_dropped"] += 1
            return None
        key = (kind, src, dst)
        e = self._edges.get(key)
        if e is None:
            while len(self._edges) >= self.max_edges:
                self._evict_edge()
            self._seq += 1
            e = _Edge(self._seq, t0, t1)
            self._edges[key] = e
            self._adj.setdefault(src, set()).add(key)
            self._adj.setdefault(dst, set()).add(key)
        else:
            self._edges.move_to_end(key)
            e.first = min(e.first, t0)
            e.last = max(e.last, t1)
            e.count += 1
        e.sent += sent
        e.recv += recv
        if attrs:
            self._set_attrs(e, attrs)
        return e

    def _evict_node(self) -> None:
        nid, n = self._nodes.popitem(last=False)
        self._stats["nodes_evicted"] += 1
        for key in self._adj.pop(nid, ()):
            if self._edges.pop(key, None) is not None:
                self._stats["edges_removed_with_node"] += 1
            other = key[2] if key[1] == nid else key[1]
            peers = self._adj.get(other)
            if peers is not None:
                peers.discard(key)
        if n.kind == NodeKind.PROCESS:
            pid = n.attrs.get("pid")
            if isinstance(pid, int) and self._proc_by_tgid.get(pid, ("",))[0] == nid:
                del self._proc_by_tgid[pid]

    def _evict_edge(self) -> None:
        key, _ = self._edges.popitem(last=False)
        self._stats["edges_evicted"] += 1
        for nid in (key[1], key[2]):
            peers = self._adj.get(nid)
            if peers is not None:
                peers.discard(key)


class ReferenceSink:
    """GraphSink.consume as it was: one add_* call (one lock, one lookup) per record."""

    def __init__(self, graph: ReferenceGraph,
                 process_lookup: Callable[[int], ProcessInfo | None] | None = None) -> None:
        self.graph = graph
        self.process_lookup = process_lookup

    def _info(self, owner: Owner | None) -> ProcessInfo | None:
        if owner is None or self.process_lookup is None:
            return None
        return self.process_lookup(owner.tgid)

    def consume(self, out: Outputs) -> None:
        g = self.graph
        for ev in out.process:
            if ev.kind == Kind.FILE_OPEN and ev.path:
                g.add_file_access(ev.tgid, ev.path, ev.time_ns, comm=ev.comm)
        for lk in out.dns:
            g.add_dns(lk.txn, self._info(lk.txn.owner))
        for r in out.flows:
            g.add_flow(r, self._info(r.owner))

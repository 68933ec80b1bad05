"""The relationship graph: processes, binaries, users, containers, endpoints and names.

Built from completed flows (FlowRecord), DNS transactions (DnsTransaction) and process
context (ProcessInfo). Pure and synchronous apart from one lock (the graph socket's server
thread takes snapshots while the pipeline adds): no clocks, time comes from the records.

Bounded: at most max_nodes nodes and max_edges edges. When full, the least recently
touched node (or edge) goes first; for records that arrive in time order that is the least
recently seen one. An evicted node takes its edges with it. Every eviction is counted.

Cost: a flow that repeats an earlier one (same process, same peer) takes a remembered fast
path ("plans", below) that touches the same nodes and edges without re-deriving them; the
graph is the same either way (tests/unit/test_graph_fastpath.py, bench/graph_cost.py).
"""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from otelpeers.dns.transactions import DnsTransaction
from otelpeers.events import Direction, Owner
from otelpeers.flows import CloseReason, FlowRecord
from otelpeers.process.table import ProcessInfo

MAX_KEY = 1024  # characters of a node key (paths, names); longer keys are cut and counted
MAX_ATTR = 1024  # characters of a string attribute value
MIN_NODES = 128  # one record touches up to ~70 nodes (ancestry, CNAME chain, addresses)
MIN_EDGES = 128
DEFAULT_MAX_NODES = 50_000
DEFAULT_MAX_EDGES = 200_000
DEFAULT_MAX_PENDING_PAIRS = 10_000
DEFAULT_PAIR_WAIT_NS = 300 * 10**9

AttrValue = str | int | bool | None


DESCRIBE_EVERY_NS = 10 * 10**9


class NodeKind(enum.StrEnum):
    PROCESS = "process"
    BINARY = "binary"
    USER = "user"
    CONTAINER = "container"
    LOCAL_ENDPOINT = "local_endpoint"
    REMOTE_ENDPOINT = "remote_endpoint"
    DOMAIN = "domain"
    FILE = "file"


class EdgeKind(enum.StrEnum):
    SPAWNED = "spawned"  # parent process -> child process
    EXECUTED = "executed"  # process -> binary
    RUNS_AS = "runs_as"  # process -> user
    IN_CONTAINER = "in_container"  # process -> container
    CONNECTED_TO = "connected_to"  # process -> remote_endpoint, or client -> server process
    LISTENED_ON = "listened_on"  # process -> local_endpoint
    ACCEPTED_FROM = "accepted_from"  # local_endpoint -> remote_endpoint (peer address)
    RESOLVED = "resolved"  # process -> domain (the question it asked)
    CNAME_OF = "cname_of"  # alias domain -> its CNAME target, in chain order
    RESOLVES_TO = "resolves_to"  # the chain's final domain -> remote_endpoint (address)
    ACCESSED_FILE = "accessed_file"  # process -> file


TRAFFIC_EDGES = frozenset({EdgeKind.CONNECTED_TO, EdgeKind.ACCEPTED_FROM})


@dataclass(frozen=True, slots=True)
class GraphNode:
    id: str  # "<kind>:<key>", unique
    kind: NodeKind
    label: str
    first_seen_ns: int
    last_seen_ns: int
    count: int  # records that referred to it
    attrs: tuple[tuple[str, AttrValue], ...] = ()


@dataclass(frozen=True, slots=True)
class GraphEdge:
    kind: EdgeKind
    source: str  # node id
    target: str  # node id
    first_seen_ns: int
    last_seen_ns: int
    count: int
    bytes_sent: int | None = None  # payload bytes source -> target; None: not a traffic edge
    bytes_received: int | None = None
    attrs: tuple[tuple[str, AttrValue], ...] = ()


@dataclass(frozen=True, slots=True)
class GraphSnapshot:
    since_ns: int | None
    nodes: tuple[GraphNode, ...]  # ordered by first_seen_ns
    edges: tuple[GraphEdge, ...]  # ordered by first_seen_ns (ties: order of creation)
    stats: tuple[tuple[str, int], ...]
    max_nodes: int
    max_edges: int


class _Node:
    __slots__ = ("kind", "label", "first", "last", "count", "attrs", "src")

    def __init__(self, kind: NodeKind, label: str, t0: int, t1: int) -> None:
        self.kind = kind
        self.label = label
        self.first = t0
        self.last = t1
        self.count = 1
        self.attrs: dict[str, AttrValue] = {}
        self.src: object = None  # the plan that last set label and attrs (None: another path)


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


EdgeKey = tuple[EdgeKind, str, str]

STAT_NAMES = (
    "flows", "dns_transactions", "processes", "file_accesses",
    "flows_without_owner", "dns_without_owner", "process_info_mismatch",
    "local_pairs_merged", "local_pairs_unmatched", "local_pairs_evicted",
    "nodes_evicted", "edges_evicted", "edges_removed_with_node", "edges_dropped",
    "strings_truncated",
)

# Fast paths (below) remembered per kind; a full table is emptied: they are only shortcuts.
MAX_PLANS = 4096
_CONNECT_FAILED = CloseReason.CONNECT_FAILED  # FlowRecord.failed, without the call


def endpoint_key(addr: str, port: int = 0, transport: str = "") -> str:
    """10.0.0.1:443/tcp, [2001:db8::1]:53/udp, 192.0.2.7/icmp, or the bare address."""
    host = f"[{addr}]" if ":" in addr and port else addr
    base = f"{host}:{port}" if port else host
    return f"{base}/{transport}" if transport else base


def _cut(s: str, limit: int) -> str:
    return s if len(s) <= limit else s[: limit - 1] + "…"


# ---- fast paths -------------------------------------------------------------------------
# Most flows repeat one seen before: the same process, the same peer. Resolving such a
# flow the general way formats the same node ids again, looks them up, re-describes the
# process and bounds the same strings. A plan remembers what one resolution touched (the
# node and edge objects, in order) and the bounded strings it set, so that a repeat only
# touches them. A plan is used only while the general path would do exactly the same:
# its objects are still the graph's (nothing evicted since, else each is checked), and for
# a process, the description it relied on is still current. A touch of an existing node or
# edge changes its recency, times and count only. Those touches are deferred and applied
# together (RelationshipGraph._flush) before anything else reads or changes the graph, in
# an order that leaves it exactly as touching them flow by flow would.
# One-off keys (a new peer, a short-lived process) are only noted: a plan is made the
# second time a key is seen, so the flows that never repeat pay for a dict entry only.

class _Plan:
    """Touches of existing nodes and edges, in the general path's order. The touches of a
    round are deferred: a use only counts itself and widens its time range (n, t0, t1,
    last: the order of its last use), and RelationshipGraph._flush applies them."""

    __slots__ = ("nodes", "edges", "stamp", "n", "t0", "t1", "last")

    def __init__(self, nodes: tuple[tuple[str, _Node], ...],
                 edges: tuple[tuple[EdgeKey, _Edge], ...], stamp: int) -> None:
        self.nodes = nodes
        self.edges = edges
        self.stamp = stamp  # RelationshipGraph._evictions when last found whole
        self.n = 0
        self.t0 = 0
        self.t1 = 0
        self.last = 0

    def whole(self, nodes: OrderedDict[str, _Node], edges: OrderedDict[EdgeKey, _Edge],
              evictions: int) -> bool:
        """Are all its nodes and edges still the graph's? (Looked up only when something
        was evicted since it last was.)"""
        if self.stamp == evictions:
            return True
        for nid, n in self.nodes:
            if nodes.get(nid) is not n:
                return False
        for k, e in self.edges:
            if edges.get(k) is not e:
                return False
        self.stamp = evictions
        return True


class _ProcPlan(_Plan):
    """_owner_process for one (tgid, comm, ProcessInfo object) on its recently-described
    path: touch the process node (with context: reset its label and attributes, point the
    tgid at it), then its binary and user nodes and edges."""

    __slots__ = ("info", "tgid", "nid", "node", "label", "attrs", "entry", "seen",
                 "mismatch", "ntrunc", "counted")

    def __init__(self, nodes: tuple[tuple[str, _Node], ...],
                 edges: tuple[tuple[EdgeKey, _Edge], ...], stamp: int,
                 info: ProcessInfo | None, tgid: int, label: str | None,
                 attrs: dict[str, AttrValue] | None, entry: tuple[str, str], seen: tuple,
                 mismatch: int, ntrunc: int) -> None:
        super().__init__(nodes, edges, stamp)
        self.info = info  # held: id(info) is part of the plan's key
        self.tgid = tgid
        self.nid, self.node = nodes[0]
        self.label = label  # None: no context, the node is only touched
        self.attrs = attrs
        self.entry = entry  # _proc_by_tgid[tgid]: written with context, else required
        self.seen = seen  # the _described entry the shortcut relies on
        self.mismatch = mismatch
        self.ntrunc = ntrunc
        self.counted = bool(mismatch or ntrunc)


class _LinkPlan(_Plan):
    """What a flow adds after its process(es): endpoint nodes, the listened_on edge and the
    traffic edge (connected_to or accepted_from, the last edge) with its attributes."""

    __slots__ = ("traffic", "listen_edge", "listening", "transport", "server_port",
                 "ntrunc", "sent", "recv")

    def __init__(self, nodes: tuple[tuple[str, _Node], ...],
                 edges: tuple[tuple[EdgeKey, _Edge], ...], stamp: int,
                 listen_edge: _Edge | None, listening: bool, transport: str,
                 server_port: int | None, ntrunc: int) -> None:
        super().__init__(nodes, edges, stamp)
        self.traffic = edges[-1][1]
        self.listen_edge = listen_edge  # set "listening" on it (a flow with a listener)
        self.listening = listening
        self.transport = transport  # bounded
        self.server_port = server_port  # not None: a local pair (server_port, local)
        self.ntrunc = ntrunc
        self.sent = 0  # deferred, like n
        self.recv = 0


def _last_use(plan: _Plan) -> int:
    return plan.last


_P = TypeVar("_P", bound=_Plan)


class RelationshipGraph:
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
        # Process node -> (what described it, event time, its binary and user node ids): a
        # process's binary, user, container and ancestry edges are refreshed at most every
        # DESCRIBE_EVERY_NS, not for every flow it makes (they say nothing per flow, and
        # cost most of add_flow).
        self._described: dict[str, tuple[object, int, tuple[str, ...]]] = {}
        # One end of a connection between two local processes, waiting for the other end.
        self._pending: OrderedDict[str, tuple[FlowRecord, ProcessInfo | None]] = OrderedDict()
        self._seq = 0
        self._now = 0
        self._stats = dict.fromkeys(STAT_NAMES, 0)
        # Fast paths: (tgid, comm, id(info)) -> _ProcPlan; (tag, node ids, endpoint) ->
        # _LinkPlan; and the keys seen once (a plan is made on the second sighting). Each
        # is emptied when full: they are only shortcuts.
        self._proc_plans: dict[tuple, _ProcPlan] = {}
        self._link_plans: dict[tuple, _LinkPlan] = {}
        self._seen_once: set[tuple] = set()
        self._evictions = 0  # nodes and edges removed so far: a plan's objects may be gone
        self._deferred: list[_Plan] = []  # plans used since the last _flush
        self._uses = 0  # plan uses so far (their order, and for tests)

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
            try:
                self._add_flow(record, process_info)
            finally:
                self._flush()

    def add_flows(self, flows: Iterable[tuple[FlowRecord, ProcessInfo | None]]) -> None:
        """Completed flows with their process context, in order, under one lock: the same
        graph as add_flow for each in turn."""
        with self._lock:
            add = self._add_flow
            try:
                for record, process_info in flows:
                    add(record, process_info)
            finally:
                self._flush()

    def flush_pending(self) -> int:
        """End of input: local flow ends still waiting for their other end are added as
        ordinary flows; returns how many."""
        with self._lock:
            n = len(self._pending)
            try:
                while self._pending:
                    _, (r, info) = self._pending.popitem(last=False)
                    self._stats["local_pairs_unmatched"] += 1
                    self._add_single(r, info)
            finally:
                self._flush()
            return n

    def add_dns(self, txn: DnsTransaction, process_info: ProcessInfo | None = None) -> None:
        with self._lock:
            self._stats["dns_transactions"] += 1
            t0, t1 = txn.start_ns, max(txn.start_ns, txn.end_ns)
            self._now = max(self._now, t1)
            proc = self._owner_process(txn.owner, process_info, t0, t1)
            self._flush()
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
    def _add_flow(self, record: FlowRecord, process_info: ProcessInfo | None) -> None:
        self._stats["flows"] += 1
        end = record.end_ns
        if end > self._now:
            self._now = end
        pending = self._pending
        if pending and next(iter(pending.values()))[0].end_ns + self.pair_wait_ns < end:
            self._expire_pending(end)
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

    def _expire_pending(self, now_ns: int) -> None:
        while self._pending:
            fid, (r, info) = next(iter(self._pending.items()))
            if r.end_ns + self.pair_wait_ns >= now_ns:
                break
            del self._pending[fid]
            self._stats["local_pairs_unmatched"] += 1
            self._add_single(r, info)

    def _add_single(self, r: FlowRecord, info: ProcessInfo | None) -> None:
        t0 = r.start_ns
        t1 = r.end_ns if r.end_ns > t0 else t0
        proc = self._owner_process(r.owner, info, t0, t1)
        if proc is None:
            self._stats["flows_without_owner"] += 1
        if r.direction != Direction.INBOUND:
            if proc is None:
                return  # an endpoint joined to nothing says nothing
            key: tuple = (proc, r.transport, r.peer_addr, r.peer_port)
            plan = self._link_plans.get(key)
            if plan is not None and (
                    plan.stamp == self._evictions
                    or plan.whole(self._nodes, self._edges, self._evictions)):
                self._run_link_plan(plan, r, t0, t1)
                return
            self._flush()
            rkey = endpoint_key(r.peer_addr, r.peer_port, r.transport)
            remote = self._node(NodeKind.REMOTE_ENDPOINT, rkey, t0, t1)
            c = r.counters
            e = self._edge(EdgeKind.CONNECTED_TO, proc, remote, t0, t1,
                           c.payload_out, c.payload_in)
            self._flow_attrs(e, r)
            self._remember_link(key, plan, (remote,), ((EdgeKind.CONNECTED_TO, proc, remote),),
                                None, False, r.transport, None, len(rkey) > MAX_KEY)
            return
        lst = r.listener
        listening = lst is not None and lst.listen_ns is not None
        key = (1, proc, r.transport, lst.local_addr if lst else r.local_addr,
               lst.local_port if lst else r.local_port, lst is None, listening, r.peer_addr)
        plan = self._link_plans.get(key)
        if plan is not None and (
                plan.stamp == self._evictions
                or plan.whole(self._nodes, self._edges, self._evictions)):
            self._run_link_plan(plan, r, t0, t1)
            return
        self._flush()
        local, listen_key, cut = self._listener_node(r, proc, t0, t1)
        # The peer's port of an accepted connection is ephemeral: the address names it.
        rkey = endpoint_key(r.peer_addr)
        remote = self._node(NodeKind.REMOTE_ENDPOINT, rkey, t0, t1)
        c = r.counters
        e = self._edge(EdgeKind.ACCEPTED_FROM, local, remote, t0, t1,
                       c.payload_out, c.payload_in)
        self._flow_attrs(e, r)
        traffic = (EdgeKind.ACCEPTED_FROM, local, remote)
        self._remember_link(key, plan, (local, remote),
                            (listen_key, traffic) if listen_key else (traffic,),
                            listen_key if lst is not None else None, listening, r.transport,
                            None, cut + (len(rkey) > MAX_KEY))

    def _listener_node(self, r: FlowRecord, proc: str | None, t0: int, t1: int
                       ) -> tuple[str, EdgeKey | None, int]:
        """The local endpoint's node id, the key of the listened_on edge (with proc), and
        whether the endpoint's key was cut (1) or not (0)."""
        lst = r.listener
        addr, port = (lst.local_addr, lst.local_port) if lst else (r.local_addr, r.local_port)
        key = endpoint_key(addr, port, r.transport)
        local = self._node(NodeKind.LOCAL_ENDPOINT, key, t0, t1)
        cut = int(len(key) > MAX_KEY)
        if proc is None:
            return local, None, cut
        e = self._edge(EdgeKind.LISTENED_ON, proc, local, t0, t1)
        if e is not None and lst is not None:
            self._set_attrs(e, {"listening": lst.listen_ns is not None})
        return local, (EdgeKind.LISTENED_ON, proc, local), cut

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
        t0 = client.start_ns if client.start_ns < server.start_ns else server.start_ns
        t1 = client.end_ns if client.end_ns > server.end_ns else server.end_ns
        if t0 > t1:
            t1 = t0
        cproc = self._owner_process(client.owner, i1, t0, t1)
        sproc = self._owner_process(server.owner, i2, t0, t1)
        assert cproc is not None and sproc is not None
        self._stats["local_pairs_merged"] += 1
        lst = server.listener
        listening = lst is not None and lst.listen_ns is not None
        key = (2, cproc, sproc, client.transport, server.transport,
               lst.local_addr if lst else server.local_addr,
               lst.local_port if lst else server.local_port, lst is None, listening,
               server.local_port)
        plan = self._link_plans.get(key)
        if plan is not None and (
                plan.stamp == self._evictions
                or plan.whole(self._nodes, self._edges, self._evictions)):
            self._run_link_plan(plan, client, t0, t1)
            return
        self._flush()
        local, listen_key, cut = self._listener_node(server, sproc, t0, t1)
        c = client.counters
        e = self._edge(EdgeKind.CONNECTED_TO, cproc, sproc, t0, t1, c.payload_out, c.payload_in)
        self._flow_attrs(e, client)
        if e is not None:
            self._set_attrs(e, {"server_port": server.local_port, "local": True})
        assert listen_key is not None
        self._remember_link(key, plan, (local,),
                            (listen_key, (EdgeKind.CONNECTED_TO, cproc, sproc)),
                            listen_key if lst is not None else None, listening,
                            client.transport, server.local_port, cut)

    def _flow_attrs(self, e: _Edge | None, r: FlowRecord) -> None:
        if e is None:
            return
        attrs: dict[str, AttrValue] = {"transport": r.transport}
        if r.failed:
            attrs["failures"] = int((e.attrs or {}).get("failures") or 0) + 1
        if r.dns is not None and r.dns.resolved:
            attrs["domain"] = r.dns.question_name
        self._set_attrs(e, attrs)

    # ---- link plans (see "fast paths" above) --------------------------------------------
    def _seen_before(self, key: tuple, plan: _Plan | None) -> bool:
        """Is this the second (or a later) sighting of key? Notes a first one."""
        if plan is not None:
            return True
        seen = self._seen_once
        if key in seen:
            return True
        if len(seen) >= MAX_PLANS:
            seen.clear()
        seen.add(key)
        return False

    @staticmethod
    def _keep(plans: dict[tuple, _P], key: tuple, plan: _P | None) -> None:
        if plan is None:
            plans.pop(key, None)
            return
        if len(plans) >= MAX_PLANS and key not in plans:
            plans.clear()
        plans[key] = plan

    def _remember_link(self, key: tuple, old: _LinkPlan | None, node_ids: tuple[str, ...],
                       edge_keys: tuple[EdgeKey, ...], listen_key: EdgeKey | None,
                       listening: bool, transport: str, server_port: int | None,
                       keys_cut: int) -> None:
        """After the general path added a flow: from the second sighting of key on, make
        what it touched (nodes and edges, in order) the key's plan. keys_cut: how many of
        the node keys _node cut (each touch counts it again)."""
        if not self._seen_before(key, old):
            return
        nodes, edges = self._nodes, self._edges
        ns = tuple((nid, nodes.get(nid)) for nid in node_ids)
        es = tuple((k, edges.get(k)) for k in edge_keys)
        plan = None
        if all(n is not None for _, n in ns) and all(e is not None for _, e in es):
            # (else a tiny graph evicted part of this very flow)
            plan = _LinkPlan(ns, es, self._evictions,  # type: ignore[arg-type]
                             edges[listen_key] if listen_key is not None else None,
                             listening, _cut(transport, MAX_ATTR), server_port,
                             keys_cut + (len(transport) > MAX_ATTR))
        self._keep(self._link_plans, key, plan)

    def _run_link_plan(self, plan: _LinkPlan, r: FlowRecord, t0: int, t1: int) -> None:
        """What the general path does for a flow whose endpoint nodes and edges exist: the
        touches and bytes are deferred (see _flush), the attributes set now."""
        c = r.counters
        if plan.n:
            plan.n += 1
            if t0 < plan.t0:
                plan.t0 = t0
            if t1 > plan.t1:
                plan.t1 = t1
            plan.sent += c.payload_out
            plan.recv += c.payload_in
        else:
            plan.n = 1
            plan.t0 = t0
            plan.t1 = t1
            plan.sent = c.payload_out
            plan.recv = c.payload_in
            self._deferred.append(plan)
        self._uses += 1
        plan.last = self._uses
        # The attributes, as the general path sets them (their keys exist since the plan
        # was made: a new key can only be failures or domain, added in the same order).
        le = plan.listen_edge
        if le is not None:
            le.attrs["listening"] = plan.listening  # type: ignore[index]
        a: dict[str, AttrValue] = plan.traffic.attrs  # type: ignore[assignment]
        a["transport"] = plan.transport  # _flow_attrs, in its order
        if r.close_reason == _CONNECT_FAILED:
            a["failures"] = int(a.get("failures") or 0) + 1
        dns = r.dns
        if dns is not None and dns.resolved:
            a["domain"] = self._bound(dns.question_name, MAX_ATTR)
        if plan.server_port is not None:
            a["server_port"] = plan.server_port
            a["local"] = True
        if plan.ntrunc:
            self._stats["strings_truncated"] += plan.ntrunc

    def _flush(self) -> None:
        """Apply the deferred touches: each plan used since the last flush once, in order of
        its last use, with its uses' count, time range and bytes. Between two flushes only
        plans touch anything (any other path flushes first) and each plan touches the same
        objects in the same order every time, so an object's last touch is in the plan,
        among those holding it, that was used last: replaying the plans in that order
        leaves the recency order the flow-by-flow touches would. Counts and bytes are
        sums, times minima and maxima: the order of the uses does not matter for them."""
        plans = self._deferred
        if not plans:
            return
        if len(plans) > 1:
            plans.sort(key=_last_use)
        move_node = self._nodes.move_to_end
        move_edge = self._edges.move_to_end
        for p in plans:
            n, t0, t1 = p.n, p.t0, p.t1
            for nid, node in p.nodes:
                move_node(nid)
                if t0 < node.first:
                    node.first = t0
                if t1 > node.last:
                    node.last = t1
                node.count += n
            for k, e in p.edges:
                move_edge(k)
                if t0 < e.first:
                    e.first = t0
                if t1 > e.last:
                    e.last = t1
                e.count += n
            if isinstance(p, _LinkPlan):
                e = p.traffic
                e.sent += p.sent
                e.recv += p.recv
            p.n = 0
        plans.clear()

    # ---- processes ----------------------------------------------------------------------
    def _owner_process(self, owner: Owner | None, info: ProcessInfo | None,
                       t0: int, t1: int) -> str | None:
        if owner is None:
            return None
        tgid = owner.tgid
        key = (tgid, owner.comm, id(info))
        p = self._proc_plans.get(key)
        # id(info) in the key is safe: a plan holds its info, so the id is not reused.
        if p is not None:
            seen = p.seen
            if (self._described.get(p.nid) is seen
                    and t1 - seen[1] < DESCRIBE_EVERY_NS  # else _process describes again
                    # without context: only while the tgid names the same node
                    and (p.label is not None or self._proc_by_tgid.get(tgid) == p.entry)
                    and (p.stamp == self._evictions
                         or p.whole(self._nodes, self._edges, self._evictions))):
                if p.n:  # touches deferred, see _flush
                    p.n += 1
                    if t0 < p.t0:
                        p.t0 = t0
                    if t1 > p.t1:
                        p.t1 = t1
                else:
                    p.n = 1
                    p.t0 = t0
                    p.t1 = t1
                    self._deferred.append(p)
                self._uses += 1
                p.last = self._uses
                if p.label is not None:
                    node = p.node
                    if node.src is not p:  # else label and attributes are already these
                        node.label = p.label
                        node.attrs.update(p.attrs)  # type: ignore[arg-type]
                        node.src = p
                    self._proc_by_tgid[tgid] = p.entry
                if p.counted:
                    self._stats["process_info_mismatch"] += p.mismatch
                    self._stats["strings_truncated"] += p.ntrunc
                return p.nid
        self._flush()
        raw = info
        if info is not None and info.pid != owner.tgid:
            self._stats["process_info_mismatch"] += 1
            info = None
        proc = self._process(owner.tgid, owner.comm, owner.uid, info, t0, t1)
        if self._seen_before(key, p):
            self._keep(self._proc_plans, key,
                       self._proc_plan(owner.tgid, owner.comm, raw, info, proc))
        return proc

    def _proc_plan(self, tgid: int, comm: str, raw: ProcessInfo | None,
                   info: ProcessInfo | None, proc: str) -> _ProcPlan | None:
        """The plan of what _owner_process(tgid, comm, raw) just did, if a repeat would
        take the recently-described path (else None)."""
        nodes, edges = self._nodes, self._edges
        node = nodes.get(proc)
        if node is None:
            return None
        label = attrs = None
        ntrunc = 0
        if info is not None:  # _process_node's keyed branch: _node with label and attrs
            key, label, attrs = self._process_desc(tgid, comm, info)
            ntrunc = (len(key) > MAX_KEY) + (len(label) > MAX_KEY)
            label = _cut(label, MAX_KEY)
            attrs = {k: v for k, v in attrs.items() if v is not None}
            for k, v in attrs.items():
                if isinstance(v, str):
                    ntrunc += len(v) > MAX_ATTR
                    attrs[k] = _cut(v, MAX_ATTR)
            entry = (proc, comm)
            what: object = (info.exe_path, info.uid, info.container_id)
        else:  # the tgid's known node, only touched
            known = self._proc_by_tgid.get(tgid)
            if known is None or known[0] != proc or known[1] != comm:
                return None
            entry = known
            what = comm
        seen = self._described.get(proc)
        if seen is None or seen[0] != what:
            return None
        ns = [(proc, node)]
        es = []
        for kind, nid in zip((EdgeKind.EXECUTED, EdgeKind.RUNS_AS), seen[2], strict=False):
            n = nodes.get(nid)
            e = edges.get((kind, proc, nid))
            if n is None or e is None:
                return None
            ns.append((nid, n))
            es.append(((kind, proc, nid), e))
        return _ProcPlan(tuple(ns), tuple(es), self._evictions, raw, tgid, label, attrs,
                         entry, seen, int(raw is not None and info is None), ntrunc)

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

    @staticmethod
    def _process_desc(tgid: int, comm: str, info: ProcessInfo | None
                      ) -> tuple[str, str, dict[str, AttrValue]]:
        """A process node's key (unbounded), label and attributes."""
        attrs: dict[str, AttrValue] = {"pid": tgid, "comm": comm}
        if info is not None:
            key = f"{tgid}@{info.start_time_ticks}"
            attrs.update(start_time_ticks=info.start_time_ticks, ppid=info.ppid,
                         exe_path=info.exe_path, command_line=info.command_line,
                         uid=info.uid, container_id=info.container_id)
        else:
            key = f"{tgid}:{comm}"
        name = (info.name if info is not None else comm) or "?"
        return key, f"{name} [{tgid}]", attrs

    def _process_node(self, tgid: int, comm: str, info: ProcessInfo | None,
                      t0: int, t1: int) -> str:
        """Keyed by tgid and start time when the process table knows it, else tgid and
        comm; a later record without context reuses the keyed node when the comm agrees."""
        if info is None:
            known = self._proc_by_tgid.get(tgid)
            if known is not None and known[1] == comm and known[0] in self._nodes:
                self._touch(known[0], t0, t1)
                return known[0]
        key, label, attrs = self._process_desc(tgid, comm, info)
        nid = self._node(NodeKind.PROCESS, key, t0, t1, label=label, attrs=attrs)
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
        if t0 < n.first:
            n.first = t0
        if t1 > n.last:
            n.last = t1
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
            self._nodes.move_to_end(nid)
            if t0 < n.first:
                n.first = t0
            if t1 > n.last:
                n.last = t1
            n.count += 1
        if label:
            n.label = self._bound(label, MAX_KEY)
            n.src = None
        if attrs:
            self._set_attrs(n, {k: v for k, v in attrs.items() if v is not None})
            n.src = None
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
            if t0 < e.first:
                e.first = t0
            if t1 > e.last:
                e.last = t1
            e.count += 1
        e.sent += sent
        e.recv += recv
        if attrs:
            self._set_attrs(e, attrs)
        return e

    def _evict_node(self) -> None:
        nid, n = self._nodes.popitem(last=False)
        self._evictions += 1
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
        self._evictions += 1
        self._stats["edges_evicted"] += 1
        for nid in (key[1], key[2]):
            peers = self._adj.get(nid)
            if peers is not None:
                peers.discard(key)

"""The graph's fast paths (plans, deferred touches, one lock per round) build exactly the
graph the per-flow implementation built: a seeded random stream of flows (local pairs in
either order, late or missing ends, outbound, inbound, failed, DNS-annotated), DNS lookups,
file opens and process records, with process context that changes, pids whose info does not
match, times that jump and go backwards, strings over the bounds and graphs small enough to
evict all the time, goes through the reference (bench/graph_reference.py, the code as it
was) and through otelpeers.graph; every snapshot along the way must be equal."""

from __future__ import annotations

import dataclasses
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the bench package

from bench.graph_reference import ReferenceGraph, ReferenceSink  # noqa: E402
from otelpeers.dns.lookups import DnsLookup  # noqa: E402
from otelpeers.dns.transactions import DnsTransaction  # noqa: E402
from otelpeers.events import Counters, Direction, Kind, Owner, ProcessEvent  # noqa: E402
from otelpeers.flows import CloseReason, DnsAnnotation, FlowRecord, Listener  # noqa: E402
from otelpeers.graph import GraphSink, RelationshipGraph  # noqa: E402
from otelpeers.graph.model import DESCRIBE_EVERY_NS, MIN_EDGES, MIN_NODES  # noqa: E402
from otelpeers.pipeline import Outputs  # noqa: E402
from otelpeers.process.table import ProcessInfo  # noqa: E402

S = 10**9
MS = 10**6
T0 = 1_700_000_000 * S
LONG = 1100  # over MAX_KEY and MAX_ATTR

BOUNDS = {
    # evicts nodes and edges all the time; pending local ends expire and are evicted
    "tiny": {"max_nodes": MIN_NODES, "max_edges": MIN_EDGES, "max_pending_pairs": 3,
             "pair_wait_ns": 2 * S},
    "small": {"max_nodes": 400, "max_edges": 600, "max_pending_pairs": 40,
              "pair_wait_ns": 30 * S},
    "default": {},
}
ONE_OFF = {"tiny": 0.3, "small": 0.1, "default": 0.05}


@dataclasses.dataclass
class Item:
    """One input: what it is and the arguments of its add_* call."""

    kind: str  # flow | dns | file | process
    args: tuple


class Stream:
    """A repeat-heavy random input: few processes, few peers, some one-off ones."""

    def __init__(self, seed: int, one_off: float = 0.05) -> None:
        self.rng = random.Random(seed)
        self.one_off = one_off  # share of peers never seen before
        self.t = T0
        self.next_id = 0
        self.tgids = [100 + i for i in range(6)]
        self.infos = {t: self._infos(t) for t in self.tgids}
        self.peers = ["192.0.2.1", "192.0.2.2", "198.51.100.7", "2001:db8::1", "127.0.0.1"]
        self.names = ["a.example", "cdn.example.net", "b.example", "d" * LONG]
        self.late: list[tuple[int, FlowRecord]] = []  # local ends that arrive later
        self.rare = 1000  # processes seen in one burst only, then aging out

    def _infos(self, tgid: int) -> list[ProcessInfo]:
        other = self.tgids[(tgid - 99) % len(self.tgids)]
        base = ProcessInfo(
            pid=tgid, ppid=1, start_time_ticks=5000 + tgid, comm=f"app{tgid}",
            exe_path=f"/usr/bin/app{tgid}", exe_name=f"app{tgid}",
            command_line=f"app{tgid} --serve", command_line_truncated=False, uid=1000,
            euid=1000, gid=1000, egid=1000, user_name="alice", real_user_name="alice",
            group_name="alice", vpid=None, creation_time_ns=T0, cgroup_path="/",
            cgroup_line="0::/", container_id=None, container_runtime=None, pid_ns=None,
            net_ns=None, mnt_ns=None, exe_sha256=None, ancestry=((1, "systemd"),))
        return [
            base,
            # the same process (same node) seen with a new command line and a container
            dataclasses.replace(base, command_line="x" * LONG, container_id="c" * 64,
                                container_runtime="containerd"),
            # the pid reused by another process (another node), unknown uid, other parent
            dataclasses.replace(base, start_time_ticks=9000 + tgid, uid=None,
                                exe_path=None, exe_name=None, ancestry=((other, "x"),)),
            # context for another pid: must be ignored and counted
            dataclasses.replace(base, pid=other),
            # the same process, described the same way, under another name and command line
            dataclasses.replace(base, exe_name=f"renamed{tgid}", command_line="-"),
        ]

    # ---- pieces -------------------------------------------------------------------------
    def tick(self) -> int:
        r = self.rng.random()
        if r < 0.01:
            self.t += DESCRIBE_EVERY_NS + 3 * S  # processes are described again
        elif r < 0.04:
            self.t -= 2 * S  # out of order
        else:
            self.t += self.rng.choice((MS, 10 * MS, 100 * MS))
        return self.t

    def owner(self) -> Owner | None:
        if self.rng.random() < 0.03:
            return None
        tgid = self.rng.choice(self.tgids)
        comm = f"app{tgid}" if self.rng.random() < 0.9 else f"app{tgid}-w"
        uid = 1000 if self.rng.random() < 0.9 else -1
        return Owner(tgid, tgid, uid, uid, 1, comm)

    def info(self, owner: Owner | None) -> ProcessInfo | None:
        if owner is None or owner.tgid not in self.infos or self.rng.random() < 0.3:
            return None
        infos = self.infos[owner.tgid]
        i = self.rng.choices(range(5), weights=(60, 10, 10, 3, 10))[0]
        if self.rng.random() < 0.02:  # equal, but another object
            return dataclasses.replace(infos[i])
        return infos[i]

    def peer(self) -> str:
        r = self.rng.random()
        if r < self.one_off:
            return f"10.9.{self.rng.randrange(256)}.{self.rng.randrange(256)}"
        if r < self.one_off + 0.01:
            return "z" * LONG
        return self.rng.choice(self.peers)

    def flow(self, direction: Direction, owner: Owner | None, *, peer: str | None = None,
             peer_port: int = 0, local_port: int = 0, listener: Listener | None = None,
             pair: str | None = None, flow_id: str | None = None,
             transport: str | None = None) -> FlowRecord:
        rng = self.rng
        start = self.tick()
        end = start + rng.choice((0, MS, 30 * MS)) if rng.random() > 0.02 else start - MS
        dns = None
        if direction == Direction.OUTBOUND and rng.random() < 0.2:
            dns = DnsAnnotation(resolved=rng.random() < 0.8,
                                question_name=rng.choice(self.names))
        failed = rng.random() < 0.05
        self.next_id += 1
        return FlowRecord(
            flow_id=flow_id or f"f{self.next_id}", cookie=self.next_id,
            transport=transport or rng.choice(("tcp", "tcp", "tcp", "udp")), family=2, sock_type=1,
            direction=direction, local_addr="10.0.0.1",
            local_port=local_port or rng.choice((40000, 40001, 8080)),
            peer_addr=peer or self.peer(), peer_port=peer_port or rng.choice((443, 53, 80)),
            start_ns=start, end_ns=end, owner=owner, netns_cookie=1,
            counters=Counters(1, 100, rng.randrange(1000), 1, 100, rng.randrange(1000)),
            tcp=None, close_reason=CloseReason.CONNECT_FAILED if failed else CloseReason.CLOSED,
            listener=listener, local_peer_flow_id=pair, dns=dns)

    def listener(self, owner: Owner | None) -> Listener | None:
        if self.rng.random() < 0.2:
            return None
        port = self.rng.choice((80, 8080))
        listen = None if self.rng.random() < 0.1 else T0
        return Listener("0.0.0.0" if port == 80 else "127.0.0.1", port, T0, listen, owner)

    def local_pair(self) -> list[FlowRecord]:
        client, server = self.owner(), self.owner()
        self.next_id += 1
        cid, sid = f"c{self.next_id}", f"s{self.next_id}"
        lst = self.listener(server)
        port = lst.local_port if lst else 9000
        cdir = Direction.OUTBOUND if self.rng.random() > 0.02 else Direction.INBOUND
        c = self.flow(cdir, client, peer="127.0.0.1", peer_port=port, pair=sid, flow_id=cid)
        s = self.flow(Direction.INBOUND, server, peer="127.0.0.1",
                      peer_port=c.local_port, local_port=port, listener=lst, pair=cid,
                      flow_id=sid)
        ends = [s, c] if self.rng.random() < 0.6 else [c, s]
        r = self.rng.random()
        if r < 0.08:
            return ends[:1]  # the other end never comes
        if r < 0.25:
            self.late.append((self.rng.randrange(1, 20), ends[1]))
            return ends[:1]
        return ends

    def burst(self) -> list[FlowRecord]:
        """Two new processes, each to its own new peer, taking turns: their plans are used
        A B A B A, so the deferred touches must be replayed B then A (order of last use),
        which decides what a small graph evicts later."""
        a, b = (Owner(t, t, 1000, 1000, 1, f"rare{t}") for t in (self.rare, self.rare + 1))
        pa, pb = (f"10.7.{t % 256}.{t // 256 % 256}" for t in (self.rare, self.rare + 1))
        self.rare += 2
        return [self.flow(Direction.OUTBOUND, o, peer=p, peer_port=443, local_port=40000,
                          transport="tcp") for o, p in [(a, pa), (b, pb)] * 4 + [(a, pa)]]

    def dns(self) -> DnsTransaction:
        rng = self.rng
        name = rng.choice(self.names)
        chain = rng.choice(((), (name, "edge.example.org"), ("alias.example",)))
        rcode = rng.choice(("NOERROR", "NOERROR", "NXDOMAIN", "TIMEOUT"))
        addrs = tuple(rng.sample(self.peers[:4], rng.randrange(3))) if rcode == "NOERROR" else ()
        start = self.tick()
        self.next_id += 1
        return DnsTransaction(
            txn_id=f"d{self.next_id}", cookie=self.next_id, owner=self.owner(),
            resolver_addr="127.0.0.53", resolver_port=53, client_addr="127.0.0.1",
            client_port=5353, question_name=name, qtype="A", rcode=rcode, answers=(),
            addresses=addrs, cname_chain=chain, ttl_min=None, start_ns=start,
            end_ns=start + MS, retries=0, truncated=False, timed_out=rcode == "TIMEOUT",
            protocol="udp")

    # ---- the stream ---------------------------------------------------------------------
    def items(self, n: int) -> list[Item]:
        out: list[Item] = []
        rng = self.rng
        while len(out) < n:
            due = [r for k, r in self.late if k <= 0]
            self.late = [(k - 1, r) for k, r in self.late if k > 0]
            out += [Item("flow", (r,)) for r in due]
            x = rng.random()
            if x < 0.35:
                o = self.owner()
                out.append(Item("flow", (self.flow(Direction.OUTBOUND, o),)))
            elif x < 0.50:
                o = self.owner()
                out.append(Item("flow", (self.flow(Direction.INBOUND, o,
                                                   listener=self.listener(o)),)))
            elif x < 0.78:
                out += [Item("flow", (r,)) for r in self.local_pair()]
            elif x < 0.80:
                out += [Item("flow", (r,)) for r in self.burst()]
            elif x < 0.90:
                out.append(Item("dns", (self.dns(),)))
            elif x < 0.97:
                tgid = rng.choice((*self.tgids, 555))
                path = rng.choice(("/etc/passwd", "/etc/shadow", "/p/" + "q" * LONG))
                comm = rng.choice(("", f"app{tgid}", "other"))
                out.append(Item("file", (tgid, path, self.tick(), comm)))
            else:
                info = rng.choice(self.infos[rng.choice(self.tgids)][:3])
                out.append(Item("process", (info, rng.choice((None, self.tick())))))
        return out


def feed(g: ReferenceGraph | RelationshipGraph, item: Item, info: ProcessInfo | None) -> None:
    if item.kind == "flow":
        g.add_flow(item.args[0], info)
    elif item.kind == "dns":
        g.add_dns(item.args[0], info)
    elif item.kind == "file":
        tgid, path, t, comm = item.args
        g.add_file_access(tgid, path, t, comm=comm)
    else:
        g.add_process(*item.args)


def owner_of(item: Item) -> Owner | None:
    return item.args[0].owner if item.kind in ("flow", "dns") else None


def assert_same(ref: ReferenceGraph, new: RelationshipGraph, since: int) -> None:
    assert new.snapshot() == ref.snapshot()
    assert new.snapshot(since) == ref.snapshot(since)


def assert_covered(g: RelationshipGraph, bounds: str) -> None:
    """The stream exercised what it is meant to (else an equal result proves little)."""
    st = g.stats
    assert g._uses > st["flows"] // 3  # the fast paths were taken (uses: per process/link)
    for name in ("local_pairs_merged", "local_pairs_unmatched", "process_info_mismatch",
                 "strings_truncated", "flows_without_owner"):
        assert st[name] > 0, name
    if bounds == "tiny":
        assert st["nodes_evicted"] > 0 and st["edges_evicted"] > 0
        assert st["local_pairs_evicted"] > 0


@pytest.mark.parametrize("bounds", BOUNDS)
@pytest.mark.parametrize("seed", range(3))
def test_add_flow_one_by_one_matches_the_reference(seed: int, bounds: str) -> None:
    stream = Stream(seed, ONE_OFF[bounds])
    ref, new = ReferenceGraph(**BOUNDS[bounds]), RelationshipGraph(**BOUNDS[bounds])
    for i, item in enumerate(stream.items(4000)):
        info = stream.info(owner_of(item))
        feed(ref, item, info)
        feed(new, item, info)
        if i % 50 == 0:
            assert_same(ref, new, stream.t - 5 * S)
    assert_same(ref, new, stream.t - 5 * S)
    assert ref.flush_pending() == new.flush_pending()
    assert_same(ref, new, stream.t - 5 * S)
    assert_covered(new, bounds)


@pytest.mark.parametrize("bounds", BOUNDS)
@pytest.mark.parametrize("seed", range(3))
def test_sink_rounds_match_the_reference(seed: int, bounds: str) -> None:
    """GraphSink.consume (one lock and one lookup per tgid per round, add_flows) against
    the old consume (add_* per record, a lookup per record)."""
    stream = Stream(100 + seed, ONE_OFF[bounds])
    table: dict[int, ProcessInfo | None] = {}
    ref = ReferenceSink(ReferenceGraph(**BOUNDS[bounds]), table.get)
    new = GraphSink(RelationshipGraph(**BOUNDS[bounds]), table.get)
    items = stream.items(4000)
    k = 0
    while k < len(items):
        n = stream.rng.randrange(1, 60)
        batch, k = items[k:k + n], k + n
        for tgid in stream.tgids:  # the process table changes between rounds
            o = Owner(tgid, tgid, 1000, 1000, 1, f"app{tgid}")
            table[tgid] = stream.info(o)
        out = Outputs()
        for item in batch:
            if item.kind == "flow":
                out.flows.append(item.args[0])
            elif item.kind == "dns":
                out.dns.append(DnsLookup(item.args[0]))
            elif item.kind == "file":
                tgid, path, t, comm = item.args
                out.process.append(ProcessEvent(Kind.FILE_OPEN, t, tgid, tgid, 0, 0, 1, comm,
                                                path=path))
            else:
                ref.graph.add_process(*item.args)
                new.graph.add_process(*item.args)
        ref.consume(out)
        new.consume(out)
        assert_same(ref.graph, new.graph, stream.t - 5 * S)
    ref.graph.flush_pending()
    new.close()
    assert_same(ref.graph, new.graph, stream.t - 5 * S)
    assert_covered(new.graph, bounds)


def test_add_flows_equals_add_flow_in_turn() -> None:
    stream = Stream(7)
    flows = [(it.args[0], stream.info(it.args[0].owner))
             for it in stream.items(3000) if it.kind == "flow"]
    one, batch = RelationshipGraph(**BOUNDS["small"]), RelationshipGraph(**BOUNDS["small"])
    for r, info in flows:
        one.add_flow(r, info)
    for k in range(0, len(flows), 100):
        batch.add_flows(flows[k:k + 100])
    assert one.snapshot() == batch.snapshot()
    assert batch._deferred == []  # nothing left unapplied once the lock is released

"""The flow table: socket lifecycle events in, one completed FlowRecord per flow out.

A flow is one TCP connection (keyed by socket cookie) or one (socket, peer) pair of a UDP,
ICMP or raw socket, since one unconnected socket can talk to many peers. Pure and
synchronous: no threads, no clocks (time comes from events and from the caller), so it is
tested with synthetic and replayed events.

A short TCP connection arrives as one complete record (TCP_CLOSE with its start) and becomes
a FlowRecord without ever being stored; a long one is announced by the kernel source's scan
(TCP_OPEN), kept open, refreshed (SOCK_STATS) and ended by its record. Connections whose
records the kernel could not deliver come back, counted exactly, in per-pair aggregates
(PAIR_STATS): they become summary records (FlowRecord.summary = how many). Format-1
recordings (CONNECT, ESTABLISHED, ..., TCP_CLOSE) replay through the same table.
"""

from __future__ import annotations

import enum
import operator
import socket
from collections import OrderedDict
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING

from otelpeers.events import (
    ZERO_COUNTERS,
    Counters,
    Direction,
    Kind,
    Owner,
    PairStats,
    SocketEvent,
    TcpInfo,
)
from otelpeers.oldest import eviction_batch, oldest_keys

if TYPE_CHECKING:
    from otelpeers.detect.model import Detection

TCP_SYN_SENT = 2
TCP_SYN_RECV = 3
TCP_ESTABLISHED = 1
TCP_CLOSE_WAIT = 8

TRANSPORTS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp"}
SOCK_TYPES = {socket.IPPROTO_TCP: socket.SOCK_STREAM, socket.IPPROTO_UDP: socket.SOCK_DGRAM}
GONE_PENDING_NS = 60 * 10**9  # how long a flow ended by SOCK_GONE waits for its pair's count

FlowKey = int | tuple[int, str, int]  # TCP: the cookie; else (cookie, peer address, peer port)
ListenerKey = tuple[int, int]  # (netns cookie, local port), as the kernel keys them
# (netns, tgid, family, protocol, direction, peer address, server port): the kernel's
# aggregate key, in user-space terms
PairKey = tuple[int, int, int, int, int, str, int]


class CloseReason(enum.StrEnum):
    CLOSED = "closed"                  # orderly close (FIN), or a non-TCP socket released
    RESET = "reset"                    # TCP aborted from ESTABLISHED/SYN_RECV/CLOSE_WAIT
    CONNECT_FAILED = "connect_failed"  # refused, unreachable or timed out before established
    IDLE_TIMEOUT = "idle_timeout"      # UDP/ICMP: no traffic for the configured timeout
    RELEASED = "released"              # TCP socket gone, CLOSE never seen within the grace period
    SHUTDOWN = "shutdown"              # still open when the agent stopped
    EVICTED = "evicted"                # flow table full: the oldest flow was pushed out


@dataclass(frozen=True, slots=True)
class Listener:
    """A bound (and possibly listening) TCP socket, attached to inbound flows it accepted."""

    local_addr: str
    local_port: int
    bind_ns: int
    listen_ns: int | None
    owner: Owner | None


@dataclass(frozen=True, slots=True)
class DnsAnnotation:
    """What DNS said about a flow's peer address, set by the DNS stage before export."""

    resolved: bool  # False: no resolution seen for this address (direct-IP connection)
    question_name: str = ""  # the name the application asked for
    cname_chain: tuple[str, ...] = ()
    how: str = ""  # same_process | host
    txn_id: str = ""  # the DNS transaction; its span (otelpeers.ids) is linked


@dataclass(frozen=True, slots=True)
class FileAccess:
    """A sensitive file the flow's process opened before the flow began."""

    time_ns: int
    path: str
    flags: int


@dataclass(slots=True, unsafe_hash=True)  # immutable by convention: see events.hot
class FlowRecord:
    flow_id: str
    cookie: int
    transport: str  # tcp | udp | icmp
    family: int     # the socket's family
    sock_type: int
    direction: Direction
    local_addr: str
    local_port: int
    peer_addr: str
    peer_port: int
    start_ns: int
    end_ns: int
    owner: Owner | None
    netns_cookie: int
    counters: Counters
    tcp: TcpInfo | None
    close_reason: CloseReason
    listener: Listener | None = None
    local_peer_flow_id: str | None = None  # the other end, when both ends are on this host
    complete: bool = True  # False when exported at shutdown or eviction while still open
    dns: DnsAnnotation | None = None  # outbound flows, once the DNS stage has looked
    files: tuple[FileAccess, ...] = ()  # sensitive opens by the owner before start_ns
    # > 0: this record stands for that many connections of one pair and interval whose own
    # records the kernel could not deliver (counted exactly by its aggregates); start_ns and
    # end_ns are the interval, counters their total volume, cookie 0.
    summary: int = 0
    adopted: bool = False  # the flow was already open when the agent found it
    # The counters of this flow's previous record (a progress snapshot), None on its first:
    # consumers take deltas from the record alone, with no table of open flows of their own.
    reported: Counters | None = None
    detections: tuple[Detection, ...] = ()  # rules that fired on this flow (span events)

    @property
    def network_type(self) -> str:
        return "ipv6" if ":" in self.peer_addr else "ipv4"

    @property
    def failed(self) -> bool:
        return self.close_reason == CloseReason.CONNECT_FAILED

    def with_dns(self, dns: DnsAnnotation | None) -> FlowRecord:
        """A copy with dns set: replace() for the one field every completed flow gets,
        about 3x cheaper (positional construction from one attrgetter call)."""
        values = list(_flow_values(self))
        values[_DNS_INDEX] = dns
        return FlowRecord(*values)


_flow_values = operator.attrgetter(*(f.name for f in fields(FlowRecord)))
_DNS_INDEX = [f.name for f in fields(FlowRecord)].index("dns")


@dataclass(slots=True, unsafe_hash=True)  # hashable only to be a shared default below
class _Rare:
    """What few flows need, kept apart so that the many do not pay a slot for each."""

    base: Counters = ZERO_COUNTERS  # counts that belonged to an earlier, expired flow
    generation: int = 0  # how many flows of this (socket, peer) expired before
    released_ns: int | None = None  # format-1: released, waiting for CLOSE
    local_peer_flow_id: str | None = None  # format-1 recordings pair ends in user space
    adopted: bool = False  # the connection existed before the agent (FlowRecord.adopted)


_NO_RARE = _Rare()  # shared by every flow that has none of it; never written


@dataclass(frozen=True, slots=True)
class _Shape:
    """What kind of flow it is. A handful of combinations exist: every flow shares one of
    them, a slot per flow instead of four."""

    protocol: int
    family: int
    sock_type: int
    direction: Direction


_SHAPES: dict[tuple[int, int, int, Direction], _Shape] = {}
MAX_SHAPES = 256  # kernel values are small, but bounded all the same: past this, not shared


def _shape(protocol: int, family: int, sock_type: int, direction: Direction) -> _Shape:
    key = (protocol, family, sock_type, direction)
    shape = _SHAPES.get(key)
    if shape is None:
        shape = _Shape(*key)
        if len(_SHAPES) < MAX_SHAPES:
            _SHAPES[key] = shape
    return shape


@dataclass(slots=True)
class _Flow:
    """An open flow. Kept small: a long-lived connection holds one for its whole life."""

    cookie: int
    shape: _Shape
    start_ns: int
    last_activity_ns: int
    owner: Owner | None
    netns_cookie: int
    local_addr: str = ""
    local_port: int = 0
    peer_addr: str = ""
    peer_port: int = 0
    counters: Counters = ZERO_COUNTERS
    established: bool = False
    listener: Listener | None = None
    peer_cookie: int = 0  # the other end's cookie (the kernel paired them): its flow id
    rare: _Rare = _NO_RARE
    reported: Counters | None = None  # counters at the last progress record (None: none yet)

    @property
    def protocol(self) -> int:
        return self.shape.protocol

    @property
    def family(self) -> int:
        return self.shape.family

    @property
    def sock_type(self) -> int:
        return self.shape.sock_type

    @property
    def direction(self) -> Direction:
        return self.shape.direction

    def edit(self) -> _Rare:
        """The flow's own _Rare, made on first write."""
        if self.rare is _NO_RARE:
            self.rare = _Rare()
        return self.rare

    @property
    def key(self) -> FlowKey:
        if self.protocol == socket.IPPROTO_TCP:
            return self.cookie
        return (self.cookie, self.peer_addr, self.peer_port)

    @property
    def flow_id(self) -> str:
        if self.protocol == socket.IPPROTO_TCP:
            base = f"{self.cookie:x}"
        else:
            base = f"{self.cookie:x}/{self.peer_addr}/{self.peer_port}"
        gen = self.rare.generation
        return base if gen == 0 else f"{base}#{gen}"

    @property
    def peer_flow_id(self) -> str | None:
        if self.rare.local_peer_flow_id is not None:
            return self.rare.local_peer_flow_id
        return f"{self.peer_cookie:x}" if self.peer_cookie else None


@dataclass(slots=True)
class _Socket:
    owner: Owner | None
    family: int
    protocol: int
    sock_type: int
    netns_cookie: int
    bind: tuple[str, int, int] | None = None  # (addr, port, time)
    flows: set[FlowKey] = field(default_factory=set)


@dataclass
class FlowTableStats:
    flows_started: int = 0
    flows_completed: int = 0
    flows_evicted: int = 0
    sockets_evicted: int = 0
    orphan_events: int = 0  # events for sockets or flows the table never saw begin
    summary_records: int = 0  # summary records emitted
    summarized_connections: int = 0  # connections they stand for
    gone_reconciled: int = 0  # lost records already reported as flows ended by SOCK_GONE


def _subtract(a: Counters, b: Counters) -> Counters:
    return Counters(*(max(0, x - y) for x, y in zip(a.as_tuple(), b.as_tuple(), strict=True)))


class FlowTable:
    """Turns socket events into completed flow records; bounded in every dimension."""

    def __init__(
        self,
        *,
        udp_idle_timeout_ns: int = 60 * 10**9,
        icmp_idle_timeout_ns: int = 30 * 10**9,
        tcp_close_grace_ns: int = 120 * 10**9,
        max_flows: int = 100_000,
        max_sockets: int = 100_000,
    ) -> None:
        self.udp_idle_timeout_ns = udp_idle_timeout_ns
        self.icmp_idle_timeout_ns = icmp_idle_timeout_ns
        self.tcp_close_grace_ns = tcp_close_grace_ns
        self.max_flows = max_flows
        self.max_sockets = max_sockets
        self.stats = FlowTableStats()
        # Open flows, oldest first (a dict keeps insertion order and costs half an
        # OrderedDict per entry: eviction only needs the first key).
        self._flows: dict[FlowKey, _Flow] = {}
        self._sockets: OrderedDict[int, _Socket] = OrderedDict()
        self._listeners: dict[ListenerKey, Listener] = {}
        # Non-TCP flows that expired while their socket lives on: counts at expiry, so a
        # later burst of traffic starts a new flow with only its own volume.
        self._expired: OrderedDict[FlowKey, tuple[Counters, int]] = OrderedDict()
        # Outbound TCP flows by (local addr, local port, peer addr, peer port), to find the
        # client end of an inbound connection made on this host (format-1 recordings; the
        # kernel pairs the two ends itself now: SocketEvent.peer_cookie).
        self._by_tuple: dict[tuple[str, int, str, int], FlowKey] = {}
        # Flows that started or changed since the last take_progress().
        self._progress: set[FlowKey] = set()
        # Flows ended by SOCK_GONE (their CLOSE record was lost) per pair, with the time: the
        # pair's aggregate counts them among its lost records, so its summary leaves them out.
        self._gone: dict[PairKey, list[int]] = {}

    # ---- queries -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._flows)

    def live_flows(self) -> list[FlowRecord]:
        """Snapshot of open flows (for the live view and the graph); nothing is removed."""
        return [self._record(f, f.last_activity_ns, CloseReason.SHUTDOWN, complete=False)
                for f in self._flows.values()]

    def take_progress(self) -> list[FlowRecord]:
        """Open flows that started or whose counters changed since the previous call, as
        snapshots: complete=False, end_ns = last activity, counters cumulative (consumers
        take deltas). Flows that ended meanwhile are not here: they were completed."""
        flows = self._flows
        record = self._record
        out = []
        for key in self._progress:
            if (f := flows.get(key)) is not None:
                out.append(record(f, f.last_activity_ns, CloseReason.SHUTDOWN, complete=False))
                f.reported = f.counters  # the next record's baseline (FlowRecord.reported)
        self._progress = set()
        return out

    # ---- input ---------------------------------------------------------------------
    def process(self, ev: SocketEvent | PairStats) -> list[FlowRecord]:
        """Apply one event; return the flows it completed (usually none)."""
        handler = self._HANDLERS.get(ev.kind)
        return handler(self, ev) if handler else []

    def expire(self, now_ns: int) -> list[FlowRecord]:
        """End idle UDP/ICMP flows and TCP flows released without a CLOSE."""
        done: list[FlowRecord] = []
        for key, f in list(self._flows.items()):
            if f.protocol == socket.IPPROTO_TCP:
                released = f.rare.released_ns
                if released is not None and now_ns - released > self.tcp_close_grace_ns:
                    done.append(self._complete(key, released, CloseReason.RELEASED))
                continue
            timeout = (self.udp_idle_timeout_ns if f.protocol == socket.IPPROTO_UDP
                       else self.icmp_idle_timeout_ns)
            if now_ns - f.last_activity_ns > timeout:
                self._remember_expired(key, f)
                done.append(self._complete(key, f.last_activity_ns, CloseReason.IDLE_TIMEOUT))
        for pair, times in list(self._gone.items()):
            times[:] = [t for t in times if now_ns - t <= GONE_PENDING_NS]
            if not times:
                del self._gone[pair]
        return done

    def drain(self, now_ns: int) -> list[FlowRecord]:
        """Agent shutdown: every open flow, ended now and marked incomplete."""
        done = [self._complete(key, now_ns, CloseReason.SHUTDOWN, complete=False)
                for key in list(self._flows)]
        self._sockets.clear()
        return done

    # ---- handlers ------------------------------------------------------------------
    def _on_bind(self, ev: SocketEvent) -> list[FlowRecord]:
        s = self._socket(ev)
        s.bind = (ev.local_addr, ev.local_port, ev.time_ns)
        if ev.protocol == socket.IPPROTO_TCP:
            self._listeners[(ev.netns_cookie, ev.local_port)] = Listener(
                ev.local_addr, ev.local_port, ev.time_ns, None, ev.owner or s.owner)
            self._bound_listeners()
        return []

    def _on_listen(self, ev: SocketEvent) -> list[FlowRecord]:
        key = (ev.netns_cookie, ev.local_port)
        prev = self._listeners.get(key)
        if prev is None and ev.netns_cookie == 0:
            # Format-1 recordings: LISTEN came from a tracepoint without the netns; it belongs
            # to the bind of the same port by the same process.
            tgid = ev.owner.tgid if ev.owner else None
            for k, lst in self._listeners.items():
                if k[1] == ev.local_port and lst.owner is not None and lst.owner.tgid == tgid:
                    key, prev = k, lst
                    break
        if prev is not None:
            self._listeners[key] = replace(prev, listen_ns=ev.time_ns)
        else:  # listen() on a socket bound implicitly: no BIND came before
            self._listeners[key] = Listener(
                ev.local_addr, ev.local_port, ev.time_ns, ev.time_ns, ev.owner)
            self._bound_listeners()
        return []

    def _on_connect(self, ev: SocketEvent) -> list[FlowRecord]:
        """Format-1 recordings only: the kernel keeps connect() in its socket map now."""
        s = self._socket(ev)
        if ev.protocol != socket.IPPROTO_TCP:
            return []  # UDP connect sends nothing; the flow starts with the first packet
        key: FlowKey = ev.cookie
        done: list[FlowRecord] = []
        if key in self._flows:  # connect() again on the same socket: a new attempt
            done.append(self._complete(key, ev.time_ns, CloseReason.CONNECT_FAILED))
        f = self._new_flow(key, ev, s, Direction.OUTBOUND)
        f.peer_addr, f.peer_port = ev.peer_addr, ev.peer_port
        return done + self._evict_if_full()

    def _on_established(self, ev: SocketEvent) -> list[FlowRecord]:
        """Format-1 recordings only (see TCP_OPEN for what replaced it)."""
        key: FlowKey = ev.cookie
        f = self._flows.get(key)
        done: list[FlowRecord] = []
        if f is None:
            s = self._sockets.get(ev.cookie)
            f = self._new_flow(key, ev, s, ev.direction)
            done = self._evict_if_full()
        f.established = True
        f.local_addr, f.local_port = ev.local_addr, ev.local_port
        f.peer_addr, f.peer_port = ev.peer_addr, ev.peer_port
        f.last_activity_ns = ev.time_ns
        if f.owner is None or (ev.owner is not None and not ev.owner.joined):
            f.owner = ev.owner or f.owner
        tup = (f.local_addr, f.local_port, f.peer_addr, f.peer_port)
        if f.direction == Direction.OUTBOUND:
            self._by_tuple[tup] = key
        else:
            f.listener = self._listener_for(f.netns_cookie, f.local_port)
            client_key = self._by_tuple.get((f.peer_addr, f.peer_port, f.local_addr, f.local_port))
            client = self._flows.get(client_key) if client_key else None
            if client is not None:
                f.edit().local_peer_flow_id = client.flow_id
                client.edit().local_peer_flow_id = f.flow_id
        return done

    def _on_tcp_open(self, ev: SocketEvent) -> list[FlowRecord]:
        """A connection older than the scan threshold, found in the kernel's socket map."""
        key: FlowKey = ev.cookie
        if key in self._flows:
            return []
        f = self._new_flow(key, ev, self._sockets.get(ev.cookie), ev.direction)
        f.start_ns = ev.start_ns or ev.time_ns
        f.established = ev.new_state == TCP_ESTABLISHED
        f.local_addr, f.local_port = ev.local_addr, ev.local_port
        f.peer_addr, f.peer_port = ev.peer_addr, ev.peer_port
        f.counters = ev.counters
        f.peer_cookie = ev.peer_cookie
        if ev.adopted:
            f.edit().adopted = True
        if f.direction == Direction.INBOUND:
            f.listener = self._listener_for(f.netns_cookie, f.local_port)
        return self._evict_if_full()

    def _on_tcp_close(self, ev: SocketEvent) -> list[FlowRecord]:
        key: FlowKey = ev.cookie
        f = self._flows.get(key)
        s = self._sockets.get(ev.cookie)
        if s is not None and s.bind is None:
            # Tracked TCP sockets send no release: CLOSE is their last word.
            del self._sockets[ev.cookie]
        if ev.old_state == TCP_SYN_SENT:
            reason = CloseReason.CONNECT_FAILED
        elif ev.old_state in (TCP_ESTABLISHED, TCP_SYN_RECV, TCP_CLOSE_WAIT):
            reason = CloseReason.RESET
        else:
            reason = CloseReason.CLOSED
        if f is None:
            if not ev.start_ns:
                self.stats.orphan_events += 1
                return []
            return [self._whole_connection(ev, reason)]
        f.counters = f.counters.merged_max(ev.counters)
        if ev.peer_cookie and not f.peer_cookie:
            f.peer_cookie = ev.peer_cookie
        if f.owner is None and ev.owner is not None:
            f.owner = ev.owner  # adopted at traffic: user space found its owner meanwhile
        return [self._complete(key, ev.time_ns, reason, tcp=ev.tcp)]

    def _whole_connection(self, ev: SocketEvent, reason: CloseReason) -> FlowRecord:
        """One complete record is the whole connection: it never enters the table."""
        self.stats.flows_started += 1
        self.stats.flows_completed += 1
        listener = None
        if ev.direction == Direction.INBOUND:
            listener = self._listener_for(ev.netns_cookie, ev.local_port)
        return FlowRecord(
            flow_id=f"{ev.cookie:x}", cookie=ev.cookie,
            transport=TRANSPORTS.get(ev.protocol, "icmp"), family=ev.family,
            sock_type=ev.sock_type, direction=ev.direction, local_addr=ev.local_addr,
            local_port=ev.local_port, peer_addr=ev.peer_addr, peer_port=ev.peer_port,
            start_ns=ev.start_ns, end_ns=max(ev.time_ns, ev.start_ns), owner=ev.owner,
            netns_cookie=ev.netns_cookie, counters=ev.counters, tcp=ev.tcp,
            close_reason=reason, listener=listener,
            local_peer_flow_id=f"{ev.peer_cookie:x}" if ev.peer_cookie else None,
            adopted=ev.adopted)

    def _on_kernel_reply(self, ev: SocketEvent) -> list[FlowRecord]:
        """The kernel answered a packet no socket took (a RST for a closed TCP port, an ICMP
        error): one complete inbound flow, failed, owned by the kernel. The kernel sends one
        such record per (peer, local port) and aggregate interval; its aggregates count all."""
        self.stats.flows_started += 1
        self.stats.flows_completed += 1
        transport = TRANSPORTS.get(ev.protocol, "icmp")
        return [FlowRecord(
            flow_id=f"kernel/{ev.netns_cookie:x}/{transport}/{ev.peer_addr}/{ev.peer_port}/"
                    f"{ev.local_port}/{ev.time_ns:x}",
            cookie=0, transport=transport, family=ev.family, sock_type=ev.sock_type,
            direction=Direction.INBOUND, local_addr=ev.local_addr, local_port=ev.local_port,
            peer_addr=ev.peer_addr, peer_port=ev.peer_port, start_ns=ev.start_ns or ev.time_ns,
            end_ns=ev.time_ns, owner=ev.owner, netns_cookie=ev.netns_cookie,
            counters=ev.counters, tcp=None, close_reason=CloseReason.CONNECT_FAILED)]

    def _on_peer(self, ev: SocketEvent) -> list[FlowRecord]:
        # TCP connections are flows of their own; a raw socket sending TCP (a SYN scanner)
        # has no connection: its peers are flows like UDP's.
        if ev.protocol == socket.IPPROTO_TCP and ev.sock_type != socket.SOCK_RAW:
            return []
        key: FlowKey = (ev.cookie, ev.peer_addr, ev.peer_port)
        if key in self._flows:
            return []
        s = self._socket(ev)
        f = self._new_flow(key, ev, s, ev.direction)
        f.local_addr, f.local_port = ev.local_addr, ev.local_port
        f.peer_addr, f.peer_port = ev.peer_addr, ev.peer_port
        s.flows.add(key)
        return self._evict_if_full()

    def _on_peer_stats(self, ev: SocketEvent) -> list[FlowRecord]:
        key: FlowKey = (ev.cookie, ev.peer_addr, ev.peer_port)
        f = self._flows.get(key)
        if f is None:
            expired = self._expired.get(key)
            if expired is None or ev.counters.as_tuple() == expired[0].as_tuple():
                return []
            # Traffic after an idle expiry: a new flow with only the new volume.
            del self._expired[key]
            s = self._socket(ev)
            f = self._new_flow(key, ev, s, ev.direction)
            f.local_addr, f.local_port = ev.local_addr, ev.local_port
            f.peer_addr, f.peer_port = ev.peer_addr, ev.peer_port
            rare = f.edit()
            rare.base, rare.generation = expired[0], expired[1] + 1
            s.flows.add(key)
        self._update_counters(f, ev)
        return self._evict_if_full()

    def _on_sock_gone(self, ev: SocketEvent) -> list[FlowRecord]:
        key: FlowKey = ev.cookie
        f = self._flows.get(key)
        if f is None:
            return []
        if ev.released:
            # The live source sends this only once the ring buffer was read past the moment
            # the entry was found gone: the CLOSE record was lost. The pair's aggregate counts
            # the loss too; remember the flow so the summary does not count it twice.
            self._gone.setdefault(self._pair_of(f), []).append(ev.time_ns)
            return [self._complete(key, ev.time_ns, CloseReason.RELEASED)]
        if f.rare.released_ns is None:
            f.edit().released_ns = ev.time_ns  # ends after the grace period unless CLOSE
        return []

    def _on_sock_stats(self, ev: SocketEvent) -> list[FlowRecord]:
        f = self._flows.get(ev.cookie)
        if f is not None:
            self._update_counters(f, ev)
        return []

    def _on_release(self, ev: SocketEvent) -> list[FlowRecord]:
        s = self._sockets.pop(ev.cookie, None)
        done: list[FlowRecord] = []
        if ev.protocol == socket.IPPROTO_TCP:
            f = self._flows.get(ev.cookie)
            if f is not None:
                f.counters = f.counters.merged_max(ev.counters)
                if not f.established or ev.start_ns:
                    done.append(self._complete(f.key, ev.time_ns, CloseReason.CONNECT_FAILED))
                else:
                    f.edit().released_ns = ev.time_ns  # TCP may still be closing: wait
            elif ev.start_ns:  # connect() failed before a SYN left: the whole attempt
                done.append(self._whole_connection(ev, CloseReason.CONNECT_FAILED))
            self._drop_listener(s)
            return done
        keys = sorted(s.flows) if s else [k for k in self._flows
                                          if type(k) is tuple and k[0] == ev.cookie]
        live = [k for k in keys if k in self._flows]
        if len(live) == 1:  # one peer: the socket's totals are that flow's totals
            f = self._flows[live[0]]
            f.counters = f.counters.merged_max(_subtract(ev.counters, f.rare.base))
        for key in live:
            done.append(self._complete(key, ev.time_ns, CloseReason.CLOSED))
        for key in keys:
            self._expired.pop(key, None)
        return done

    def _on_pair_stats(self, ev: PairStats) -> list[FlowRecord]:
        """Connections whose own records were lost become one summary record per pair and
        interval (flows already ended by SOCK_GONE are among them: left out)."""
        if ev.lost <= 0:
            return []
        n = ev.lost
        gone = self._gone.get(self._pair_of_stats(ev))
        while gone and n:
            gone.pop(0)
            n -= 1
            self.stats.gone_reconciled += 1
        if n <= 0:
            return []
        self.stats.summary_records += 1
        self.stats.summarized_connections += n
        inbound = ev.direction == Direction.INBOUND
        tag = "overflow" if ev.overflow else f"{ev.peer_addr}/{ev.port}"
        tgid = ev.owner.tgid if ev.owner else 0
        return [FlowRecord(
            flow_id=f"summary/{ev.netns_cookie:x}/{tgid}/{ev.direction.name.lower()}/"
                    f"{ev.transport}/{tag}/{ev.time_ns:x}",
            cookie=0, transport=TRANSPORTS.get(ev.protocol, "icmp"), family=ev.family,
            sock_type=SOCK_TYPES.get(ev.protocol, socket.SOCK_RAW), direction=ev.direction,
            local_addr="", local_port=ev.port if inbound else 0, peer_addr=ev.peer_addr,
            peer_port=0 if inbound else ev.port, start_ns=ev.start_ns,
            end_ns=max(ev.time_ns, ev.start_ns), owner=ev.owner, netns_cookie=ev.netns_cookie,
            counters=ev.lost_volume, tcp=None, close_reason=CloseReason.CLOSED, summary=n)]

    _HANDLERS = {
        Kind.BIND: _on_bind,
        Kind.LISTEN: _on_listen,
        Kind.CONNECT: _on_connect,
        Kind.ESTABLISHED: _on_established,
        Kind.TCP_OPEN: _on_tcp_open,
        Kind.TCP_CLOSE: _on_tcp_close,
        Kind.PEER: _on_peer,
        Kind.PEER_STATS: _on_peer_stats,
        Kind.SOCK_STATS: _on_sock_stats,
        Kind.SOCK_GONE: _on_sock_gone,
        Kind.RELEASE: _on_release,
        Kind.PAIR_STATS: _on_pair_stats,
        Kind.KERNEL_REPLY: _on_kernel_reply,
    }

    # ---- internals -----------------------------------------------------------------
    @staticmethod
    def _pair_of(f: _Flow) -> PairKey:
        port = f.local_port if f.direction == Direction.INBOUND else f.peer_port
        tgid = f.owner.tgid if f.owner is not None else 0
        return (f.netns_cookie, tgid, f.family, f.protocol, int(f.direction), f.peer_addr, port)

    @staticmethod
    def _pair_of_stats(ev: PairStats) -> PairKey:
        tgid = ev.owner.tgid if ev.owner is not None else 0
        return (ev.netns_cookie, tgid, ev.family, ev.protocol, int(ev.direction), ev.peer_addr,
                ev.port)

    def _listener_for(self, netns_cookie: int, port: int) -> Listener | None:
        lst = self._listeners.get((netns_cookie, port))
        if lst is None and netns_cookie:
            lst = self._listeners.get((0, port))  # format-1 recordings: listen without netns
        return lst

    def _socket(self, ev: SocketEvent) -> _Socket:
        s = self._sockets.get(ev.cookie)
        if s is None:
            s = _Socket(ev.owner, ev.family, ev.protocol, ev.sock_type, ev.netns_cookie)
            self._sockets[ev.cookie] = s
            while len(self._sockets) > self.max_sockets:
                self._sockets.popitem(last=False)
                self.stats.sockets_evicted += 1
        elif ev.owner is not None and not ev.owner.joined:
            s.owner = ev.owner  # the most recent process-context owner wins
        return s

    def _new_flow(self, key: FlowKey, ev: SocketEvent, s: _Socket | None,
                  direction: Direction) -> _Flow:
        owner = ev.owner or (s.owner if s else None)
        f = _Flow(cookie=ev.cookie,
                  shape=_shape(ev.protocol, ev.family, ev.sock_type, direction),
                  start_ns=ev.time_ns,
                  last_activity_ns=ev.time_ns, owner=owner,
                  netns_cookie=ev.netns_cookie or (s.netns_cookie if s else 0))
        self._flows[key] = f
        self._progress.add(key)
        self.stats.flows_started += 1
        return f

    def _update_counters(self, f: _Flow, ev: SocketEvent) -> None:
        new = f.counters.merged_max(_subtract(ev.counters, f.rare.base))
        if new.as_tuple() != f.counters.as_tuple():
            f.counters = new
            f.last_activity_ns = ev.time_ns
            self._progress.add(f.key)

    def _remember_expired(self, key: FlowKey, f: _Flow) -> None:
        pairs = zip(f.counters.as_tuple(), f.rare.base.as_tuple(), strict=True)
        total = Counters(*(a + b for a, b in pairs))
        self._expired[key] = (total, f.rare.generation)
        while len(self._expired) > self.max_flows:
            self._expired.popitem(last=False)

    def _bound_listeners(self) -> None:
        excess = len(self._listeners) - self.max_sockets
        if excess > 0:
            for key in oldest_keys(self._listeners, eviction_batch(self.max_sockets, excess)):
                del self._listeners[key]

    def _drop_listener(self, s: _Socket | None) -> None:
        if s is not None and s.bind is not None:
            key = (s.netns_cookie, s.bind[1])
            lst = self._listeners.get(key)
            if lst is not None and lst.bind_ns == s.bind[2]:
                del self._listeners[key]

    def _evict_if_full(self) -> list[FlowRecord]:
        """A full table ends its oldest flows as EVICTED, a batch at a time (otelpeers.oldest:
        one at a time would walk the dict's holes at every new flow)."""
        excess = len(self._flows) - self.max_flows
        if excess <= 0:
            return []
        done = []
        for oldest in oldest_keys(self._flows, eviction_batch(self.max_flows, excess)):
            f = self._flows[oldest]
            done.append(self._complete(oldest, f.last_activity_ns, CloseReason.EVICTED,
                                       complete=False))
            self.stats.flows_evicted += 1
        return done

    def _complete(self, key: FlowKey, end_ns: int, reason: CloseReason,
                  complete: bool = True, tcp: TcpInfo | None = None) -> FlowRecord:
        f = self._flows.pop(key)
        if f.direction == Direction.OUTBOUND and f.local_port:
            self._by_tuple.pop((f.local_addr, f.local_port, f.peer_addr, f.peer_port), None)
        s = self._sockets.get(f.cookie)
        if s is not None:
            s.flows.discard(key)
        self.stats.flows_completed += 1
        return self._record(f, max(end_ns, f.start_ns), reason, complete, tcp)

    @staticmethod
    def _record(f: _Flow, end_ns: int, reason: CloseReason, complete: bool,
                tcp: TcpInfo | None = None) -> FlowRecord:
        shape = f.shape
        return FlowRecord(
            flow_id=f.flow_id, cookie=f.cookie,
            transport=TRANSPORTS.get(shape.protocol, "icmp"),
            family=shape.family, sock_type=shape.sock_type, direction=shape.direction,
            local_addr=f.local_addr, local_port=f.local_port,
            peer_addr=f.peer_addr, peer_port=f.peer_port,
            start_ns=f.start_ns, end_ns=end_ns, owner=f.owner, netns_cookie=f.netns_cookie,
            counters=f.counters, tcp=tcp, close_reason=reason, listener=f.listener,
            local_peer_flow_id=f.peer_flow_id, complete=complete, adopted=f.rare.adopted,
            reported=f.reported,
        )


def flow_to_dict(r: FlowRecord) -> dict[str, object]:
    """A flow record as plain JSON-ready data: the schema of --print-flows lines, which
    otelpeers.flowjson writes without building this dict (tests keep the two equal)."""
    o = r.owner
    return {
        "flow_id": r.flow_id, "cookie": r.cookie, "transport": r.transport,
        "network_type": r.network_type, "direction": r.direction.name.lower(),
        "local_addr": r.local_addr, "local_port": r.local_port,
        "peer_addr": r.peer_addr, "peer_port": r.peer_port,
        "start_ns": r.start_ns, "end_ns": r.end_ns,
        "owner": None if o is None else {"pid": o.tgid, "comm": o.comm, "uid": o.uid,
                                         "gid": o.gid, "cgroup_id": o.cgroup_id,
                                         "joined": o.joined},
        "netns_cookie": r.netns_cookie,
        "packets_sent": r.counters.packets_out, "packets_received": r.counters.packets_in,
        "bytes_sent": r.counters.payload_out, "bytes_received": r.counters.payload_in,
        "wire_bytes_sent": r.counters.bytes_out, "wire_bytes_received": r.counters.bytes_in,
        "tcp": None if r.tcp is None else {
            "bytes_acked": r.tcp.bytes_acked, "bytes_received": r.tcp.bytes_received,
            "retransmits": r.tcp.total_retrans, "srtt_us": r.tcp.srtt_us},
        "close_reason": r.close_reason.value, "complete": r.complete,
        "listener": None if r.listener is None else {
            "addr": r.listener.local_addr, "port": r.listener.local_port,
            "listening": r.listener.listen_ns is not None},
        "local_peer_flow_id": r.local_peer_flow_id,
        "dns": None if r.dns is None else {
            "resolved": r.dns.resolved, "question_name": r.dns.question_name,
            "cname_chain": list(r.dns.cname_chain), "how": r.dns.how, "txn_id": r.dns.txn_id},
        "files": [{"time_ns": f.time_ns, "path": f.path, "flags": f.flags} for f in r.files],
        "summary": r.summary,
        "adopted": r.adopted,
    }

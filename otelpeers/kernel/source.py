"""The live event source: the ring buffer read in batches, and batched reads of kernel tables.

Records are read straight from the ring buffer's memory map (otelpeers/kernel/ringbuf.py) and
decoded with struct, many per wake-up, without a callback per record. Every
kernel.stats_interval_s the source also:

1. swaps the two aggregate tables (the kernel waits for running programs on that update),
   reads and empties the one no program reaches any more (BPF_MAP_LOOKUP_AND_DELETE_BATCH),
   and emits one PairStats per (process, peer) pair: exact counts, and how many connection
   records the ring buffer could not take;
2. scans the socket map (BPF_MAP_LOOKUP_BATCH): TCP connections older than the open-flow
   threshold are announced (TCP_OPEN), announced ones that changed report their volume
   (SOCK_STATS), announced ones whose entry is gone end (SOCK_GONE); and reads the (socket,
   peer) volumes of UDP/ICMP flows the same way (PEER_STATS);
3. reads the kernel's drop counters.

The ring buffer is then read up to the position it had after these reads before the scan's
events go out, so a SOCK_GONE always comes after the connection's own record, had there been
one. Losses are counted at every step.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from otelpeers import abi
from otelpeers.events import (
    Counters,
    DecodeError,
    Direction,
    Event,
    Interner,
    Kind,
    Owner,
    PairStats,
    SocketEvent,
    decode_record,
)
from otelpeers.kernel.adopt import AdoptionStats
from otelpeers.kernel.bpfsys import sum_percpu
from otelpeers.kernel.loader import KernelSensors
from otelpeers.kernel.owner_resolver import OwnerResolver
from otelpeers.kernel.ringbuf import MappedRingBuffer

log = logging.getLogger(__name__)

BATCH_RECORDS = 4096  # records decoded per batch handed to the pipeline
BUSY_WAIT_S = 0.2  # longest wait for a record another CPU is still writing
# After a wake-up with less than a full round waiting, let the round fill this long: each
# round costs the pipeline and both helper processes a fixed amount (frames, wake-ups,
# flushes), and the kernel wakes this reader every 64 records per CPU, so under load rounds
# were ~100 records. Latency added: at most this, far below the export interval.
ROUND_LINGER_S = 0.01
LINGER_BELOW_BYTES = BATCH_RECORDS * abi.EVENT_SIZE // 4
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_CONN_OPEN = abi.S_CONN
_DIRECTIONS = {0: Direction.UNKNOWN, 1: Direction.OUTBOUND, 2: Direction.INBOUND}


RESERVED_TYPES = frozenset({abi.EventType.SOCK_CREATE, abi.EventType.CONNECT,
                            abi.EventType.ESTABLISHED})  # the kernel sends none of these


def drop_slot_names() -> dict[int, str]:
    """slot -> name of the kernel's drop counters the agent reports, stable from the start."""
    names = {int(t): "ringbuf_" + t.name.lower() for t in abi.EventType
             if t not in RESERVED_TYPES}
    names[abi.DROP_PEER_TABLE_FULL] = "peer_table_full"
    names[abi.DROP_SOCK_EVICTED] = "sock_evicted"
    return names


DROP_NAMES = drop_slot_names()


@dataclass
class SourceStats:
    records: int = 0
    decode_errors: int = 0
    kernel_drops: dict[str, int] = field(default_factory=dict)  # by slot name
    tracked_evicted: int = 0  # live flows the source stopped following (its bounds)
    scans: int = 0
    scan_entries: int = 0  # socket map entries read by the last scan
    open_flows_announced: int = 0
    aggregate_intervals: int = 0
    aggregate_pairs: int = 0  # pairs read, all intervals
    aggregate_overflow_opened: int = 0  # connections counted in the overflow entry
    connections_opened: int = 0  # from aggregates: exact, whatever was dropped
    connections_ended: int = 0
    records_lost: int = 0  # connection records the ring buffer could not take (aggregates)

    def kernel_drops_total(self) -> int:
        return sum(self.kernel_drops.values())


def _raw_addr(family: int, addr: str) -> bytes:
    """The kernel's 16 address bytes for an address text (IPv4 in the first 4 bytes; an
    IPv4-mapped IPv6 address, shown as IPv4, back in its mapped form)."""
    packed = ipaddress.ip_address(addr).packed
    if family == socket.AF_INET6 and len(packed) == 4:
        return b"\0" * 10 + b"\xff\xff" + packed
    return packed.ljust(16, b"\0")


CLOCK_MONOTONIC_COARSE = 6  # Linux; the clock of bpf_ktime_get_coarse_ns()


def _coarse_ns() -> int:
    return time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)


class KernelSource:
    """Yields batches of decoded events until stop() is called."""

    def __init__(self, sensors: KernelSensors, *, stats_interval_s: float,
                 max_tracked: int = 262_144, open_after_s: float | None = None) -> None:
        self._sensors = sensors
        self._maps = sensors.maps
        self._stats_interval_ns = int(stats_interval_s * 1e9)
        self._open_after_ns = int((min(1.0, stats_interval_s) if open_after_s is None
                                   else open_after_s) * 1e9)
        self._max_tracked = max_tracked
        ring_size = self._ring_size(sensors.ringbuf_fd)
        self._ring = MappedRingBuffer(sensors.ringbuf_fd, ring_size)
        self._clock_offset = time.time_ns() - time.monotonic_ns()
        self._intern = Interner()
        self._counters_cache: dict[tuple[int, ...], Counters] = {}
        self.stats = SourceStats(kernel_drops=dict.fromkeys(DROP_NAMES.values(), 0))
        self._out: list[Event] = []
        # TCP connections announced as open -> the parity of the last scan that saw them
        # (a dict of small ints: no set of every live cookie built per scan). Bounded by
        # max_tracked: none announced beyond.
        self._announced: dict[int, int] = {}
        self._parity = 0
        # Non-TCP (socket, peer) flows: raw peers-map key -> what the PEER record said.
        self._peers: OrderedDict[bytes, tuple[int, int, str, int, int, str, int, Direction,
                                              int]] = OrderedDict()
        self._peers_by_cookie: dict[int, set[bytes]] = {}
        self._agg_active = sensors.agg_active
        self._agg_since_ns = time.time_ns()
        self._last_scan_coarse = _coarse_ns()
        self._next_interval_ns = time.monotonic_ns() + self._stats_interval_ns
        self._stopped = False
        self._ring_closed = False
        self._out.extend(self._seeded_listeners())
        # Owners of connections the kernel adopted at their first packet (kernel/owner_resolver.py).
        self._owners: OwnerResolver | None = None
        if "owners_found" in self._maps:
            self._owners = OwnerResolver(self._maps["owners_found"])

    def _seeded_listeners(self) -> list[SocketEvent]:
        """The listeners seeded at start (kernel/adopt.py) as LISTEN events at the snapshot's
        time, so that the flow table knows them as it knows the ones the programs saw."""
        adoption = getattr(self._sensors, "adoption", None)
        if adoption is None:
            return []
        out = []
        for s in adoption.listeners:
            o = s.owner
            owner = None if o is None else Owner(o.tgid, o.tgid, s.uid if o.uid is None else o.uid,
                                                 o.gid or 0, o.cgroup_id or s.cgroup_id or 0,
                                                 o.comm)
            out.append(SocketEvent(
                kind=Kind.LISTEN, time_ns=adoption.started_ns, cookie=s.cookie,
                netns_cookie=s.netns_cookie or 0, owner=owner, family=s.family,
                protocol=socket.IPPROTO_TCP, sock_type=socket.SOCK_STREAM,
                new_state=10, local_addr=s.local_addr, local_port=s.local_port, adopted=True))
        return out

    @staticmethod
    def _ring_size(fd: int) -> int:
        from otelpeers.kernel.bpfsys import map_info

        return map_info(fd).max_entries

    def stop(self) -> None:
        self._stopped = True

    def counters(self) -> dict[str, int]:
        """Every counter of the source and the kernel, under stable names."""
        st = self.stats
        out = {
            "records": st.records, "decode_errors": st.decode_errors,
            "kernel_drops": st.kernel_drops_total(), "tracked_evicted": st.tracked_evicted,
            "scans": st.scans, "scan_entries": st.scan_entries,
            "open_flows_announced": st.open_flows_announced,
            "aggregate_intervals": st.aggregate_intervals,
            "aggregate_pairs": st.aggregate_pairs,
            "aggregate_overflow_opened": st.aggregate_overflow_opened,
            "connections_opened": st.connections_opened,
            "connections_ended": st.connections_ended, "records_lost": st.records_lost,
            "ringbuf_pending_bytes": self._pending_bytes(),
        }
        out.update({f"kernel_drops.{k}": v for k, v in st.kernel_drops.items()})
        adoption = getattr(self._sensors, "adoption", None) or AdoptionStats()
        out.update({f"adoption.{k}": v for k, v in adoption.counters().items()})
        if self._owners is not None:
            out.update({f"adoption.owners.{k}": v for k, v in self._owners.counters().items()})
        return out

    def _counters(self, *values: int) -> Counters:
        """Equal readings share one object: idle connections have the same few counters."""
        c = self._counters_cache.get(values)
        if c is None:
            if len(self._counters_cache) >= 4096:
                self._counters_cache.clear()
            c = self._counters_cache[values] = Counters(*values)
        return c

    def _pending_bytes(self) -> int:
        """Bytes written by the kernel and not read yet (0 once the source has ended)."""
        return 0 if self._ring_closed else max(0, self._ring.layout.pending_bytes())

    # ---- ring buffer --------------------------------------------------------------------
    def _on_record(self, buf: memoryview, off: int, length: int) -> None:
        self.stats.records += 1
        try:
            ev = decode_record(buf, self._clock_offset, off, length, self._intern)
        except DecodeError as exc:
            self.stats.decode_errors += 1
            log.debug("undecodable record: %s", exc)
            return
        if type(ev) is SocketEvent:
            k = ev.kind
            if k == Kind.TCP_CLOSE:
                self._announced.pop(ev.cookie, None)
            elif k == Kind.PEER:
                self._track_peer(ev)
            elif k == Kind.RELEASE and ev.protocol != socket.IPPROTO_TCP:
                # Final per-peer volume goes out before the release that ends the flows.
                for ref in sorted(self._peers_by_cookie.pop(ev.cookie, ())):
                    self._final_peer_stats(ref, ev.time_ns)
        self._out.append(ev)

    def _consume(self, max_records: int = BATCH_RECORDS, until: int | None = None) -> int:
        return self._ring.layout.consume(self._on_record, max_records, until)

    def _consume_until(self, pos: int) -> Iterator[list[Event]]:
        """Everything the kernel wrote before pos, in batches (a record still being written
        by another CPU is waited for, briefly)."""
        deadline = time.monotonic() + BUSY_WAIT_S
        layout = self._ring.layout
        while layout.get_consumer() < pos:
            if self._consume(BATCH_RECORDS, pos) == 0:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.0005)
                continue
            if len(self._out) >= BATCH_RECORDS:
                yield self._take()

    def _take(self) -> list[Event]:
        out, self._out = self._out, []
        return out

    # ---- non-TCP peers ------------------------------------------------------------------
    def _peer_key(self, ev: SocketEvent) -> bytes:
        return abi.PEER_KEY.struct.pack(ev.cookie, _raw_addr(ev.family, ev.peer_addr),
                                        ev.peer_port, ev.protocol, ev.family)

    def _track_peer(self, ev: SocketEvent) -> None:
        if ev.protocol == socket.IPPROTO_TCP:
            return
        ref = self._peer_key(ev)
        self._peers[ref] = (ev.cookie, ev.family, ev.peer_addr, ev.peer_port, ev.protocol,
                            ev.local_addr, ev.local_port, ev.direction, ev.sock_type)
        self._peers_by_cookie.setdefault(ev.cookie, set()).add(ref)
        while len(self._peers) > self._max_tracked:
            old, meta = self._peers.popitem(last=False)
            refs = self._peers_by_cookie.get(meta[0])
            if refs is not None:
                refs.discard(old)
                if not refs:
                    del self._peers_by_cookie[meta[0]]
            self.stats.tracked_evicted += 1

    def _peer_stats(self, ref: bytes, raw: bytes, time_ns: int) -> SocketEvent | None:
        meta = self._peers.get(ref)
        if meta is None:
            return None
        cookie, family, peer, pport, proto, laddr, lport, direction, sock_type = meta
        c = abi.PEER.struct.unpack_from(raw, 0)
        return SocketEvent(kind=Kind.PEER_STATS, time_ns=time_ns, cookie=cookie, family=family,
                           protocol=proto, sock_type=sock_type, direction=direction,
                           local_addr=laddr, local_port=lport, peer_addr=peer, peer_port=pport,
                           counters=Counters(*c[:6]))

    def _final_peer_stats(self, ref: bytes, time_ns: int) -> None:
        peers = self._maps["peers"]
        raw = peers.lookup(ref)
        if raw is not None:
            ev = self._peer_stats(ref, raw, time_ns)
            if ev is not None:
                self._out.append(ev)
            peers.delete(ref)
        self._peers.pop(ref, None)

    # ---- interval work ------------------------------------------------------------------
    def _interval_batches(self, final: bool) -> Iterator[list[Event]]:
        """Aggregates, scans and drops, then the ring buffer up to where it was after them,
        then the scan's events (minus what the records read meanwhile made stale)."""
        aggs = self._drain_aggregates()
        coarse = _coarse_ns()
        changed_after = self._last_scan_coarse - 20_000_000  # the coarse clock ticks in ms
        self._last_scan_coarse = coarse
        scan, gone = self._scan_sockets(final, changed_after)
        scan += self._scan_peers(changed_after)
        self._read_drops()
        yield from self._consume_until(self._ring.layout.producer_pos())
        announced = self._announced
        stale = (Kind.TCP_OPEN, Kind.SOCK_STATS)
        self._out.extend(e for e in scan if e.kind not in stale or e.cookie in announced)
        now = time.time_ns()
        for cookie in gone:
            if cookie in announced:  # no CLOSE record came: it was lost
                del announced[cookie]
                self._out.append(SocketEvent(kind=Kind.SOCK_GONE, time_ns=now, cookie=cookie,
                                             released=True))
        self._out.extend(aggs)
        batch = self._take()
        for i in range(0, len(batch), BATCH_RECORDS):  # bounded batches: bounded peaks
            yield batch[i:i + BATCH_RECORDS]
        if not batch:
            yield batch

    def _drain_aggregates(self) -> list[Event]:
        now = time.time_ns()
        tables = (self._maps["agg_a"], self._maps["agg_b"])
        old, new = self._agg_active, 1 - self._agg_active
        # Swap: once this update returns, no program can still be writing the old table
        # (the kernel runs synchronize_rcu() on updates of an array of maps).
        self._maps["agg_current"].update(_U32.pack(0), _U32.pack(tables[new].fd))
        self._agg_active = new
        self._sensors.agg_active = new
        drained = tables[old]
        since, self._agg_since_ns = self._agg_since_ns, now
        out: list[Event] = []
        ks, vs = abi.AGG_KEY.size, abi.AGG.size
        st = self.stats
        st.aggregate_intervals += 1
        unpack_value, unpack_key = abi.AGG.struct.unpack_from, abi.AGG_KEY.struct.unpack_from
        for keys, values, n in drained.batches(delete=True):
            for i in range(n):
                (tgid, pid, uid, gid, cgroup_id, comm, opened, failed, closed, lost,
                 *vol) = unpack_value(values, i * vs)
                if not (opened or failed or closed or lost):
                    continue
                overflow = keys[i * ks:(i + 1) * ks] == abi.AGG_OVERFLOW_KEY
                netns, _tgid, port, family, proto, direction, raddr = unpack_key(keys, i * ks)
                owner = None  # the overflow mixes processes: no owner
                if not overflow and (tgid or comm[:1] != b"\0"):
                    owner = self._intern.owner(tgid, pid, uid, gid, cgroup_id, comm, False)
                peer = ""
                if not overflow and family in (socket.AF_INET, socket.AF_INET6):
                    peer = self._intern.addr(family, raddr)
                st.aggregate_pairs += 1
                st.connections_opened += opened
                st.connections_ended += failed + closed
                st.records_lost += lost
                if overflow:
                    st.aggregate_overflow_opened += opened
                out.append(PairStats(
                    time_ns=now, start_ns=since, netns_cookie=0 if overflow else netns,
                    owner=owner, family=0 if overflow else family,
                    protocol=0 if overflow else proto,
                    direction=Direction.UNKNOWN if overflow else _DIRECTIONS.get(
                        direction, Direction.UNKNOWN),
                    peer_addr=peer, port=0 if overflow else port, opened=opened,
                    failed=failed, closed=closed, lost=lost, volume=Counters(*vol[:6]),
                    lost_volume=Counters(*vol[6:12]), overflow=overflow))
        drained.update(abi.AGG_OVERFLOW_KEY, bytes(abi.AGG.size))  # re-arm for its next turn
        return out

    def _scan_sockets(self, final: bool, changed_after: int) -> tuple[list[SocketEvent],
                                                                       list[int]]:
        """TCP connections in the socket map: announce long ones, refresh changed ones; and
        the announced ones no longer there (candidates for SOCK_GONE)."""
        now_mono = time.monotonic_ns()
        now = now_mono + self._clock_offset
        open_before = now_mono if final else now_mono - self._open_after_ns
        st = self.stats
        st.scans += 1
        st.scan_entries = 0
        out: list[SocketEvent] = []
        announced = self._announced
        parity = self._parity = 1 - self._parity
        unpack, size = abi.SOCK.struct.unpack_from, abi.SOCK.size
        intern, offset = self._intern, self._clock_offset
        counters = self._counters
        tcp = socket.IPPROTO_TCP
        for keys, values, n in self._maps["sockets"].batches():
            st.scan_entries += n
            for i in range(n):
                (tgid, pid, uid, gid, cgroup_id, comm, p_out, b_out, pl_out, p_in, b_in, pl_in,
                 netns, start, peer_cookie, last, flags, _bound, lport, rport, family, proto,
                 sock_type, direction, laddr, raddr, *_tcp) = unpack(values, i * size)
                if not flags & _CONN_OPEN or proto != tcp:
                    continue
                cookie = _U64.unpack_from(keys, i * 8)[0]
                if cookie in announced:
                    announced[cookie] = parity
                    if last >= changed_after:
                        out.append(SocketEvent(
                            kind=Kind.SOCK_STATS, time_ns=now, cookie=cookie,
                            counters=counters(p_out, b_out, pl_out, p_in, b_in, pl_in)))
                    continue
                if start > open_before or family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                if len(announced) >= self._max_tracked:
                    st.tracked_evicted += 1
                    continue
                owner = None
                if flags & abi.F_OWNER:
                    owner = intern.owner(tgid, pid, uid, gid, cgroup_id, comm,
                                         bool(flags & abi.F_OWNER_JOINED))
                dir_ = _DIRECTIONS.get(direction, Direction.UNKNOWN)
                if not flags & abi.F_OWNER and flags & abi.F_ADOPTED and \
                        self._owners is not None and not final:
                    # Adopted at its first packet, owner unknown there: announced once the
                    # resolver has looked (its next round, about 2 s), with what it found.
                    found = self._owners.answer(cookie)
                    if found is None and self._owners.want(cookie):
                        continue
                    if found is not None:
                        owner = found.owner
                        if dir_ == Direction.UNKNOWN:
                            dir_ = found.direction
                announced[cookie] = parity
                st.open_flows_announced += 1
                num = intern.num  # these stay in the flow table as long as the connection
                out.append(SocketEvent(
                    kind=Kind.TCP_OPEN, time_ns=now, cookie=cookie, netns_cookie=num(netns),
                    owner=owner, family=family, protocol=proto, sock_type=sock_type or 1,
                    direction=dir_, new_state=1 if flags & abi.S_ESTABLISHED else 2,
                    local_addr=intern.addr(family, laddr), local_port=num(lport),
                    peer_addr=intern.addr(family, raddr), peer_port=num(rport),
                    counters=counters(p_out, b_out, pl_out, p_in, b_in, pl_in),
                    start_ns=start + offset, peer_cookie=peer_cookie,
                    adopted=bool(flags & abi.F_ADOPTED)))
        return out, [c for c, p in announced.items() if p != parity]

    def _scan_peers(self, changed_after: int) -> list[SocketEvent]:
        if not self._peers:
            return []
        now = time.time_ns()
        ks, vs = abi.PEER_KEY.size, abi.PEER.size
        out: list[SocketEvent] = []
        for keys, values, n in self._maps["peers"].batches():
            for i in range(n):
                ref = bytes(keys[i * ks:(i + 1) * ks])
                if ref not in self._peers:
                    continue
                if _U64.unpack_from(values, i * vs + 48)[0] < changed_after:
                    continue
                ev = self._peer_stats(ref, bytes(values[i * vs:(i + 1) * vs]), now)
                if ev is not None:
                    out.append(ev)
        return out

    def _read_drops(self) -> dict[str, int]:
        """Kernel-side losses, summed over CPUs: records not reserved, tables full."""
        drops = self._maps["drops"]
        keys, values, n = drops.read_all()
        out = dict.fromkeys(DROP_NAMES.values(), 0)
        for i in range(n):
            name = DROP_NAMES.get(_U32.unpack_from(keys, i * 4)[0])
            if name is not None:
                raw = values[i * drops.value_size:(i + 1) * drops.value_size]
                out[name] = sum_percpu(raw, drops.value_stride, "<Q")[0]
        self.stats.kernel_drops = out
        return out

    def read_drops(self) -> dict[str, int]:
        """Non-zero kernel drop counters, read now."""
        return {k: v for k, v in self._read_drops().items() if v}

    # ---- iteration ------------------------------------------------------------------------
    def batches(self, poll_timeout_ms: int = 100) -> Iterator[list[Event]]:
        """Yield batches of events (possibly empty, so the caller can do periodic work)."""
        timeout = poll_timeout_ms / 1000
        while not self._stopped:
            # The kernel wakes this reader only every so many records (see submit() in
            # bpf/sockets.bpf.c): read after every wake-up and every timeout alike.
            if self._ring.poll(timeout) and \
                    self._ring.layout.pending_bytes() < LINGER_BELOW_BYTES:
                time.sleep(ROUND_LINGER_S)
            self._consume()
            if time.monotonic_ns() >= self._next_interval_ns:
                self._next_interval_ns = time.monotonic_ns() + self._stats_interval_ns
                yield from self._interval_batches(final=False)
            else:
                yield self._take()
        # Stop: everything in the ring buffer, then a last interval that announces every
        # connection still open (the pipeline ends them as incomplete).
        yield from self._consume_until(self._ring.layout.producer_pos())
        yield from self._interval_batches(final=True)
        batch = self._take()
        if batch:
            yield batch
        self._ring_closed = True
        self._ring.close()
        if self._owners is not None:
            self._owners.close()

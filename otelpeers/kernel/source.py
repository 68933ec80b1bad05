"""The live event source: ring buffer records and reads of the kernel's volume tables.

One thread polls; callbacks only decode and append, and the pipeline consumes batches, so
a slow exporter never blocks the ring buffer (the exporter has its own bounded queue).
Losses are counted at every step: the kernel counts records it could not reserve, this
source counts records it could not decode.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from otelpeers import abi
from otelpeers.events import (
    Counters,
    DecodeError,
    Direction,
    Event,
    Kind,
    SocketEvent,
    decode_record,
)
from otelpeers.kernel.loader import KernelSensors

log = logging.getLogger(__name__)

PeerRef = tuple[int, int, bytes, int, int]  # cookie, family, raw address, port, protocol


@dataclass
class SourceStats:
    records: int = 0
    decode_errors: int = 0
    kernel_drops: dict[str, int] = field(default_factory=dict)  # by event type / slot
    tracked_evicted: int = 0

    def kernel_drops_total(self) -> int:
        return sum(self.kernel_drops.values())


def _raw_addr(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed.ljust(16, b"\0")


class KernelSource:
    """Yields decoded events in batches until stop() is called."""

    def __init__(self, sensors: KernelSensors, *, stats_interval_s: float,
                 max_tracked: int = 262_144) -> None:
        self._sensors = sensors
        self._bpf: Any = sensors.bpf
        self._stats_interval_ns = int(stats_interval_s * 1e9)
        self._max_tracked = max_tracked
        self._pending: list[Event] = []
        self._clock_offset = time.time_ns() - time.monotonic_ns()
        self.stats = SourceStats()
        # What is alive, so volume can be read without walking the kernel tables.
        self._tcp_live: OrderedDict[int, None] = OrderedDict()
        self._peers: OrderedDict[PeerRef, tuple[str, int, Direction, int]] = OrderedDict()
        self._peers_by_cookie: dict[int, set[PeerRef]] = {}
        self._next_stats_ns = time.monotonic_ns() + self._stats_interval_ns
        self._stopped = False
        self._bpf[b"events"].open_ring_buffer(self._on_record)

    def stop(self) -> None:
        self._stopped = True

    # ---- ring buffer --------------------------------------------------------------
    def _on_record(self, _ctx: Any, data: Any, size: int) -> int:
        self.stats.records += 1
        try:
            ev = decode_record(ctypes.string_at(data, size), self._clock_offset)
        except DecodeError as exc:
            self.stats.decode_errors += 1
            log.debug("undecodable record: %s", exc)
            return 0
        if isinstance(ev, SocketEvent):
            self._track(ev)
        else:
            self._pending.append(ev)
        return 0

    def _track(self, ev: SocketEvent) -> None:
        if ev.kind == Kind.PEER:
            ref = (ev.cookie, ev.family, _raw_addr(ev.peer_addr), ev.peer_port, ev.protocol)
            self._peers[ref] = (ev.local_addr, ev.local_port, ev.direction, ev.sock_type)
            self._peers_by_cookie.setdefault(ev.cookie, set()).add(ref)
            self._bound()
        elif ev.kind == Kind.ESTABLISHED:
            self._tcp_live[ev.cookie] = None
            self._bound()
        elif ev.kind == Kind.TCP_CLOSE:
            self._tcp_live.pop(ev.cookie, None)
        elif ev.kind == Kind.RELEASE and ev.protocol != socket.IPPROTO_TCP:
            # Final per-peer volume goes out before the release that ends the flows.
            for ref in sorted(self._peers_by_cookie.pop(ev.cookie, ())):
                self._emit_peer_stats(ref, ev.time_ns, delete=True)
        self._pending.append(ev)

    def _bound(self) -> None:
        while len(self._tcp_live) > self._max_tracked:
            self._tcp_live.popitem(last=False)
            self.stats.tracked_evicted += 1
        while len(self._peers) > self._max_tracked:
            ref, _ = self._peers.popitem(last=False)
            refs = self._peers_by_cookie.get(ref[0])
            if refs is not None:
                refs.discard(ref)
                if not refs:
                    del self._peers_by_cookie[ref[0]]
            self.stats.tracked_evicted += 1

    # ---- volume reads -------------------------------------------------------------
    def _peer_key(self, ref: PeerRef) -> Any:
        table = self._bpf[b"peers"]
        key = table.Key()
        key.cookie = ref[0]
        ctypes.memmove(ctypes.addressof(key.raddr), ref[2], 16)
        key.rport, key.protocol, key.family = ref[3], ref[4], ref[1]
        return key

    def _emit_peer_stats(self, ref: PeerRef, time_ns: int, delete: bool) -> None:
        meta = self._peers.pop(ref, None) if delete else self._peers.get(ref)
        if meta is None:
            return
        table = self._bpf[b"peers"]
        key = self._peer_key(ref)
        try:
            v = table[key]
        except KeyError:
            return
        if delete:
            with contextlib.suppress(KeyError):
                del table[key]
        local_addr, local_port, direction, sock_type = meta
        fam = ref[1]
        peer = str(ipaddress.ip_address(ref[2][:4] if fam == socket.AF_INET else ref[2]))
        self._pending.append(SocketEvent(
            kind=Kind.PEER_STATS, time_ns=time_ns, cookie=ref[0], family=fam,
            protocol=ref[4], sock_type=sock_type, direction=direction,
            local_addr=local_addr, local_port=local_port, peer_addr=peer, peer_port=ref[3],
            counters=Counters(v.packets_out, v.bytes_out, v.payload_out,
                              v.packets_in, v.bytes_in, v.payload_in)))

    def read_volumes(self) -> None:
        """Read the volume of every live flow (long-lived flows, idle detection)."""
        now = time.time_ns()
        sockets = self._bpf[b"sockets"]
        for cookie in list(self._tcp_live):
            try:
                s = sockets[ctypes.c_uint64(cookie)]
            except KeyError:
                # Closed, and its CLOSE is still in the ring buffer or was lost: the flow
                # table waits a grace period for the CLOSE before ending the flow.
                del self._tcp_live[cookie]
                self._pending.append(SocketEvent(kind=Kind.SOCK_GONE, time_ns=now,
                                                 cookie=cookie))
                continue
            c = s.c
            self._pending.append(SocketEvent(
                kind=Kind.SOCK_STATS, time_ns=now, cookie=cookie,
                counters=Counters(c.packets_out, c.bytes_out, c.payload_out,
                                  c.packets_in, c.bytes_in, c.payload_in)))
        for ref in list(self._peers):
            self._emit_peer_stats(ref, now, delete=False)

    def read_drops(self) -> dict[str, int]:
        """Kernel-side losses, summed over CPUs: records not reserved, peers not tracked."""
        drops = self._bpf[b"drops"]
        out: dict[str, int] = {}
        for slot in range(abi.DROP_SLOTS):
            total = sum(int(v) for v in drops[ctypes.c_int(slot)])
            if slot == abi.DROP_PEER_TABLE_FULL:
                name = "peer_table_full"
            else:
                try:
                    name = "ringbuf_" + abi.EventType(slot).name.lower()
                except ValueError:
                    continue
            if total:
                out[name] = total
        self.stats.kernel_drops = out
        return out

    # ---- iteration ----------------------------------------------------------------
    def batches(self, poll_timeout_ms: int = 100) -> Iterator[list[Event]]:
        """Yield batches of events (possibly empty, so the caller can do periodic work)."""
        while not self._stopped:
            self._bpf.ring_buffer_poll(poll_timeout_ms)
            if time.monotonic_ns() >= self._next_stats_ns:
                self.read_volumes()
                self.read_drops()
                self._next_stats_ns = time.monotonic_ns() + self._stats_interval_ns
            batch, self._pending = self._pending, []
            yield batch
        self._bpf.ring_buffer_consume()  # what is left in the buffer at stop
        self.read_drops()
        batch, self._pending = self._pending, []
        if batch:
            yield batch

"""Owners of connections the kernel adopted at their first packet (issue 11).

A TCP connection the kernel's tables do not know (older than the agent and missed by the
start-up snapshot, or evicted from the LRU) is adopted by cgroup_skb when its next packet
passes (bpf/sockets.bpf.c, adopt_at_traffic). Packets run in no process's context, so its
owner is unknown there unless a listener of its namespace has the local port. The source's
periodic scan asks this resolver about such connections; a background thread looks them up
with sock_diag and the /proc fd walk (kernel/sockdiag.py, the snapshot's own machinery) at
most every interval, and writes each owner it finds into the kernel's `owners_found` map,
from which the connection's end record takes it; the direction (inbound when a listener of
the connection's namespace has its local port) goes with the announcement. The scan waits
for one attempt before it announces the connection, so its span usually carries the owner
from the start.

Bounded: at most max_pending connections wait (more are counted, not resolved), and the
answers kept are an LRU of the same size. Never raises into the agent (errors counted).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from otelpeers.events import Direction, Owner
from otelpeers.kernel.adopt import SEED_LIMITS, Enumerate, kernel_owner
from otelpeers.kernel.sockdiag import enumerate_sockets

log = logging.getLogger(__name__)

_TCP_STATES = (1 << 1) | (1 << 8) | (1 << 10)  # ESTABLISHED, CLOSE_WAIT; LISTEN: direction
TCP_LISTEN = 10


@dataclass(frozen=True, slots=True)
class Found:
    owner: Owner | None
    direction: Direction  # inbound when a listener of its namespace has the local port


_NOT_FOUND = Found(None, Direction.UNKNOWN)


class OwnerResolver:
    """want(cookie) from the source; answer(cookie) -> Found (None: not looked up yet)."""

    def __init__(self, owners_map: Any, *, enumerate_fn: Enumerate = enumerate_sockets,
                 interval_s: float = 2.0, max_pending: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._map = owners_map
        self._enumerate = enumerate_fn
        self._interval_s = interval_s
        self._max = max_pending
        self._clock = clock
        self._lock = threading.Condition()
        self._pending: set[int] = set()
        self._answers: OrderedDict[int, Found] = OrderedDict()
        self._closed = False
        self.stats = {"wanted": 0, "found": 0, "not_found": 0, "lookups": 0, "errors": 0,
                      "pending_dropped": 0}
        self._thread = threading.Thread(target=self._run, name="otelpeers-owners",
                                        daemon=True)
        self._thread.start()

    # ---- the source's side --------------------------------------------------------------
    def want(self, cookie: int) -> bool:
        """Ask for cookie's owner; False when it will not be looked up (too many waiting)."""
        with self._lock:
            if cookie in self._pending or cookie in self._answers:
                return True
            if len(self._pending) >= self._max:
                self.stats["pending_dropped"] += 1
                return False
            self._pending.add(cookie)
            self.stats["wanted"] += 1
            self._lock.notify()
            return True

    def answer(self, cookie: int) -> Found | None:
        """What the lookup found (owner None: no process holds it), None: not looked yet."""
        with self._lock:
            return self._answers.get(cookie)

    def wait(self, cookie: int, timeout_s: float) -> Found | None:
        """answer(cookie), waiting up to timeout_s for the lookup that answers it."""
        with self._lock:
            self._lock.wait_for(lambda: cookie in self._answers, timeout_s)
            return self._answers.get(cookie)

    def wait_idle(self, timeout_s: float) -> bool:
        """Until no connection waits for the worker to take it (a lookup may be running)."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._pending, timeout_s)

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {**self.stats, "pending": len(self._pending)}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(10)

    # ---- the worker -----------------------------------------------------------------------
    def _run(self) -> None:
        last = -self._interval_s
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                # Rate limit; more cookies may arrive meanwhile (and wake this wait).
                while (left := last + self._interval_s - self._clock()) > 0 \
                        and not self._closed:
                    self._lock.wait(left)
                if self._closed:
                    return
                batch, self._pending = self._pending, set()
                self._lock.notify_all()
            last = self._clock()
            found = self._lookup(batch)
            with self._lock:
                for cookie in batch:
                    self._answers[cookie] = found.get(cookie, _NOT_FOUND)
                    self._answers.move_to_end(cookie)
                while len(self._answers) > self._max:
                    self._answers.popitem(last=False)
                self._lock.notify_all()

    def _lookup(self, cookies: set[int]) -> dict[int, Found]:
        self.stats["lookups"] += 1
        out: dict[int, Found] = {}
        try:
            snap = self._enumerate(protocols=("tcp",), tcp_info=False,
                                   tcp_states=_TCP_STATES, limits=SEED_LIMITS)
        except Exception as exc:  # the connection stays unowned; counted
            self.stats["errors"] += 1
            log.warning("cannot look up the owners of adopted connections: %s", exc)
            return out
        listening = {(s.netns_cookie, s.local_port) for s in snap.sockets
                     if s.state == TCP_LISTEN}
        for s in snap.sockets:
            if s.cookie not in cookies or s.owner is None or s.protocol != socket.IPPROTO_TCP:
                continue
            o = kernel_owner(s)
            try:
                self._map.update(s.cookie.to_bytes(8, "little"), bytes(o))
            except OSError as exc:
                self.stats["errors"] += 1
                log.debug("owners_found update failed: %s", exc)
            inbound = (s.netns_cookie, s.local_port) in listening
            out[s.cookie] = Found(
                Owner(o.tgid, o.pid, o.uid, o.gid, o.cgroup_id,
                      o.comm.decode("utf-8", "replace"), False),
                Direction.INBOUND if inbound else Direction.OUTBOUND)
        self.stats["found"] += len(out)
        self.stats["not_found"] += len(cookies) - len(out)
        return out

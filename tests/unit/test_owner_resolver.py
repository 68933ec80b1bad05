"""The owners of connections the kernel adopted at their first packet (kernel/owner_resolver.py),
against a fake sock_diag snapshot and an in-memory map. The real thing:
tests/kernel/test_adopt_at_traffic.py."""

from __future__ import annotations

import threading
from typing import Any

from test_adopt import CLIENT_END, LISTENER, SERVER_END, FakeMap, snapshot

from otelpeers import abi
from otelpeers.events import Direction
from otelpeers.kernel.owner_resolver import OwnerResolver
from otelpeers.kernel.sockdiag import SnapshotResult


class Enumerate:
    """The same snapshot (or error) at every call."""

    def __init__(self, snap: SnapshotResult | Exception) -> None:
        self.snap = snap

    def __call__(self, **kwargs: Any) -> SnapshotResult:
        if isinstance(self.snap, Exception):
            raise self.snap
        return self.snap


def wait_answer(r: OwnerResolver, cookie: int) -> Any:
    found = r.wait(cookie, 10)
    assert found is not None, "no answer"
    return found


def test_owner_and_direction_are_found_and_written_for_the_kernel() -> None:
    m = FakeMap()
    enum = Enumerate(snapshot(LISTENER, SERVER_END, CLIENT_END))
    r = OwnerResolver(m, enumerate_fn=enum, interval_s=0.0)
    try:
        assert r.answer(SERVER_END.cookie) is None  # not asked yet
        assert r.want(SERVER_END.cookie) and r.want(CLIENT_END.cookie)
        server, client = wait_answer(r, SERVER_END.cookie), wait_answer(r, CLIENT_END.cookie)
        assert server.owner.tgid == 200 and server.owner.comm == "nginx"
        assert server.direction == Direction.INBOUND  # a listener has its local port
        assert client.owner.tgid == 300 and client.direction == Direction.OUTBOUND
        raw = m.items[SERVER_END.cookie.to_bytes(8, "little")]
        o = abi.COwner.from_buffer_copy(raw)
        assert (o.tgid, o.uid, o.comm) == (200, 33, b"nginx")
        assert r.counters()["found"] == 2
    finally:
        r.close()


def test_a_socket_nobody_holds_is_answered_without_owner() -> None:
    r = OwnerResolver(FakeMap(), enumerate_fn=Enumerate(snapshot(LISTENER)), interval_s=0.0)
    try:
        r.want(99)
        found = wait_answer(r, 99)
        assert found.owner is None and found.direction == Direction.UNKNOWN
        assert r.counters()["not_found"] == 1
    finally:
        r.close()


def test_lookup_errors_are_counted_and_answered() -> None:
    r = OwnerResolver(FakeMap(), enumerate_fn=Enumerate(OSError("netlink")), interval_s=0.0)
    try:
        r.want(5)
        assert wait_answer(r, 5).owner is None
        assert r.counters()["errors"] == 1
    finally:
        r.close()


def test_waiting_connections_are_bounded() -> None:
    gate = threading.Event()

    def blocked(**kwargs: Any) -> SnapshotResult:
        gate.wait(10)
        return snapshot()

    r = OwnerResolver(FakeMap(), enumerate_fn=blocked, interval_s=0.0, max_pending=2)
    try:
        assert r.want(1)
        assert r.wait_idle(10)  # the worker took cookie 1 and is blocked in its lookup
        assert r.want(2) and r.want(3)
        assert not r.want(4)  # beyond max_pending: the source announces it unowned now
        assert r.counters()["pending_dropped"] == 1
    finally:
        gate.set()
        r.close()

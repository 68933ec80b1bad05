"""Packets the kernel sends on its own (RST for a closed port, ICMP errors): decoded into
inbound failed flows owned by the kernel, never by `unknown` (docs/existing-sockets.md)."""

from __future__ import annotations

import ctypes
import socket

from opentelemetry.sdk.resources import Resource

from otelpeers import abi
from otelpeers import attributes as A
from otelpeers.events import Direction, Kind, Owner, decode_record
from otelpeers.flows import CloseReason, FlowTable
from otelpeers.otel.mapping import flow_attributes
from otelpeers.otel.resources import ResourceCache


def kernel_reply(protocol: int, lport: int, rport: int, ts: int = 1_000) -> bytes:
    """A record as kernel_reply() in bpf/sockets.bpf.c writes it."""
    c = abi.CEvent()
    c.type = int(abi.EventType.KERNEL_REPLY)
    c.family = socket.AF_INET
    c.protocol = protocol
    c.sock_type = socket.SOCK_STREAM if protocol == socket.IPPROTO_TCP else socket.SOCK_DGRAM
    c.direction = int(abi.Direction.INBOUND)
    c.flags = abi.F_OWNER | abi.F_KERNEL
    c.owner.comm = b"kernel"
    c.ts_ns = c.start_ns = ts
    c.old_state = 1 if protocol == socket.IPPROTO_TCP else 3
    c.lport, c.rport = lport, rport
    ctypes.memmove(ctypes.addressof(c.laddr), socket.inet_aton("10.0.0.1"), 4)
    ctypes.memmove(ctypes.addressof(c.raddr), socket.inet_aton("192.0.2.7"), 4)
    return bytes(c)


def test_rst_for_a_closed_port_is_a_failed_inbound_flow_of_the_kernel() -> None:
    ev = decode_record(kernel_reply(socket.IPPROTO_TCP, 9, 40000), clock_offset_ns=5_000)
    assert ev.kind == Kind.KERNEL_REPLY
    assert ev.owner is not None and ev.owner.is_kernel and ev.owner.tgid == 0
    [rec] = FlowTable().process(ev)
    assert rec.direction == Direction.INBOUND and rec.transport == "tcp"
    assert (rec.local_addr, rec.local_port) == ("10.0.0.1", 9)
    assert (rec.peer_addr, rec.peer_port) == ("192.0.2.7", 40000)
    assert rec.close_reason == CloseReason.CONNECT_FAILED and rec.failed
    assert rec.start_ns == rec.end_ns == 6_000
    attrs = flow_attributes(rec)
    assert attrs[A.OWNER_KERNEL] is True
    assert attrs[A.CLIENT_ADDRESS] == "192.0.2.7" and attrs[A.NETWORK_LOCAL_PORT] == 9


def test_port_unreachable_is_a_udp_flow_and_flow_ids_differ() -> None:
    table = FlowTable()
    [a] = table.process(decode_record(kernel_reply(socket.IPPROTO_UDP, 53, 5353, 1_000), 0))
    [b] = table.process(decode_record(kernel_reply(socket.IPPROTO_UDP, 53, 5353, 2_000), 0))
    assert a.transport == "udp" and a.owner is not None and a.owner.is_kernel
    assert a.flow_id != b.flow_id  # span ids come from flow ids
    assert len(table) == 0  # complete records: nothing stays in the table


def test_kernel_owner_resource_is_the_kernel_not_a_process_lookup() -> None:
    looked_up: list[int] = []

    def attrs(owner: Owner) -> dict[str, str]:
        looked_up.append(owner.tgid)
        return {A.SERVICE_NAME: owner.comm}

    cache = ResourceCache(Resource({A.SERVICE_NAME: "host"}), attrs, 10)
    res = cache.get(Owner(0, 0, 0, 0, 0, "kernel"))
    assert res.attributes[A.SERVICE_NAME] == "kernel"
    assert res.attributes[A.OWNER_KERNEL] is True and res.attributes[A.PROCESS_PID] == 0
    assert looked_up == []
    # A process that calls itself "kernel" is still a process.
    res = cache.get(Owner(77, 77, 0, 0, 0, "kernel"))
    assert A.OWNER_KERNEL not in res.attributes and looked_up == [77]



def test_a_recording_replays_the_kernel_owner() -> None:
    from otelpeers.recording import event_from_json, event_to_json

    ev = decode_record(kernel_reply(socket.IPPROTO_TCP, 9, 40000), 0)
    back = event_from_json(event_to_json(ev))
    assert back == ev and back.owner is not None and back.owner.is_kernel

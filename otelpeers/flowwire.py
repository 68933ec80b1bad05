"""FlowRecords as columns of plain values, for the agent's helper processes.

pack_flows() turns a round's flows into a tuple that `marshal` can write: one row of scalar
fields per flow (one C-level attrgetter call each), plus columns for the nested values
(owner, counters) and the enums (as ints), and a short list of the rare ones (TCP info,
listener, DNS annotation, files) by index. unpack_flows() rebuilds equal FlowRecords,
positionally (detections are not carried: they are the other side's answer). Measured on
the bench host (marshal included, 5,000 TCP flows): packing about 3.9 us per flow (the
pipeline thread, or the span worker, pays it), unpacking about 3.0 us (a per-flow tuple
rebuilt with keywords took 8.4).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import fields
from operator import attrgetter
from typing import Any

from otelpeers.events import Counters, Direction, Owner, TcpInfo
from otelpeers.flows import CloseReason, DnsAnnotation, FileAccess, FlowRecord, Listener

_NESTED = ("family", "sock_type", "direction", "owner", "counters", "tcp", "close_reason",
           "listener", "dns", "files", "detections")
_SCALAR_NAMES = tuple(f.name for f in fields(FlowRecord) if f.name not in _NESTED)
_scalars = attrgetter(*_SCALAR_NAMES)
_owner_of = attrgetter("owner")
_counters_of = attrgetter("counters")
_owner_values = attrgetter("tgid", "pid", "uid", "gid", "cgroup_id", "comm", "joined")
_counter_values = attrgetter("packets_out", "bytes_out", "payload_out", "packets_in",
                             "bytes_in", "payload_in")
_family_of = attrgetter("family")
_sock_type_of = attrgetter("sock_type")
_direction_of = attrgetter("direction")
_reason_of = attrgetter("close_reason.value")
_tcp_values = attrgetter("bytes_acked", "bytes_received", "total_retrans", "srtt_us")
_dns_values = attrgetter("resolved", "question_name", "cname_chain", "how", "txn_id")

Packed = tuple[Any, ...]


def _owner_tuple(o: Owner | None) -> tuple[Any, ...] | None:
    return None if o is None else _owner_values(o)


def _rare(i: int, r: FlowRecord) -> tuple[Any, ...]:
    lst = r.listener
    return (i, None if r.tcp is None else _tcp_values(r.tcp),
            None if lst is None else (lst.local_addr, lst.local_port, lst.bind_ns,
                                      lst.listen_ns, _owner_tuple(lst.owner)),
            None if r.dns is None else _dns_values(r.dns),
            tuple((f.time_ns, f.path, f.flags) for f in r.files))


def pack_flows(flows: Sequence[FlowRecord]) -> Packed:
    """flows -> a marshal-able tuple (see the module docstring)."""
    if not flows:
        return ()
    return (
        list(map(_scalars, flows)),
        [None if o is None else _owner_values(o) for o in map(_owner_of, flows)],
        list(map(_counter_values, map(_counters_of, flows))),
        list(map(int, map(_family_of, flows))),
        list(map(int, map(_sock_type_of, flows))),
        list(map(int, map(_direction_of, flows))),
        list(map(_reason_of, flows)),
        [_rare(i, r) for i, r in enumerate(flows)
         if r.tcp is not None or r.listener is not None or r.dns is not None or r.files],
    )


# unpack_flows builds records positionally (keywords cost almost three times as much), so it
# depends on FlowRecord's whole field order: this module refuses to load if that changed.
_FIELD_ORDER = (
    "flow_id", "cookie", "transport", "family", "sock_type", "direction", "local_addr",
    "local_port", "peer_addr", "peer_port", "start_ns", "end_ns", "owner", "netns_cookie",
    "counters", "tcp", "close_reason", "listener", "local_peer_flow_id", "complete", "dns",
    "files", "summary", "adopted", "detections")
if tuple(f.name for f in fields(FlowRecord)) != _FIELD_ORDER:
    raise ImportError("otelpeers.flowwire: FlowRecord's fields changed; update unpack_flows "
                      "and _FIELD_ORDER to match")
_DIRECTIONS = {int(d): d for d in Direction}
_REASONS = {r.value: r for r in CloseReason}
_FAMILIES = {int(f): f for f in (socket.AF_INET, socket.AF_INET6)}


def unpack_flows(packed: Packed) -> list[FlowRecord]:
    """The inverse of pack_flows (detections empty)."""
    if not packed:
        return []
    rows, owners, counters, families, sock_types, directions, reasons, rare = packed
    by_index = {t[0]: t for t in rare}
    out = []
    for i, row in enumerate(rows):
        (flow_id, cookie, transport, laddr, lport, paddr, pport, start, end, netns, peer_id,
         complete, summary, adopted) = row
        o = owners[i]
        extra = by_index.get(i)
        tcp = lst = dns = None
        files: tuple[FileAccess, ...] = ()
        if extra is not None:
            _, t, li, d, fs = extra
            tcp = None if t is None else TcpInfo(*t)
            lst = None if li is None else Listener(
                li[0], li[1], li[2], li[3], None if li[4] is None else Owner(*li[4]))
            dns = None if d is None else DnsAnnotation(d[0], d[1], tuple(d[2]), d[3], d[4])
            files = tuple(FileAccess(*f) for f in fs)
        family = families[i]
        out.append(FlowRecord(
            flow_id, cookie, transport, _FAMILIES.get(family, family), sock_types[i],
            _DIRECTIONS[directions[i]], laddr, lport, paddr, pport, start, end,
            None if o is None else Owner(*o), netns, Counters(*counters[i]), tcp,
            _REASONS[reasons[i]], lst, peer_id, complete, dns, files, summary, adopted))
    return out

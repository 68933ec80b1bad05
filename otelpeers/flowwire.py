"""FlowRecords as columns of plain values, for the agent's helper processes.

pack_flows() turns a round's flows into a tuple that `marshal` can write: one row of scalar
fields per flow (one C-level attrgetter call each), plus columns for the nested values
(owner, counters, TCP info, listener, DNS annotation, the previous record's counters) and
the enums (as ints), and a short list of the rare ones (files) by index. unpack_flows()
rebuilds equal FlowRecords, positionally (detections are not carried: they are the other
side's answer). Measured on the bench host (marshal included, 3,750 TCP flows, median of
9): packing about 1.7 us per flow (the pipeline thread, or the span worker, pays it),
unpacking about 2.2 us (a per-flow tuple rebuilt with keywords took 8.4). Every TCP flow
has TCP info and every inbound one a listener, so those are columns, not rare values.
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
           "listener", "dns", "files", "reported", "detections")
_SCALAR_NAMES = tuple(f.name for f in fields(FlowRecord) if f.name not in _NESTED)
_scalars = attrgetter(*_SCALAR_NAMES)
_owner_of = attrgetter("owner")
_counters_of = attrgetter("counters")
_reported_of = attrgetter("reported")
_tcp_of = attrgetter("tcp")
_listener_of = attrgetter("listener")
_dns_of = attrgetter("dns")
_owner_values = attrgetter("tgid", "pid", "uid", "gid", "cgroup_id", "comm", "joined")
_counter_values = attrgetter("packets_out", "bytes_out", "payload_out", "packets_in",
                             "bytes_in", "payload_in")
_family_of = attrgetter("family")
_sock_type_of = attrgetter("sock_type")
_direction_of = attrgetter("direction")
_reason_of = attrgetter("close_reason")
# An enum's .value is a property (about 180 ns); a dict lookup by member is about 40.
_REASON_VALUE = {r: r.value for r in CloseReason}
_tcp_values = attrgetter("bytes_acked", "bytes_received", "total_retrans", "srtt_us")
_dns_values = attrgetter("resolved", "question_name", "cname_chain", "how", "txn_id")

Packed = tuple[Any, ...]


def _owner_tuple(o: Owner | None) -> tuple[Any, ...] | None:
    return None if o is None else _owner_values(o)


def _listener_tuple(li: Listener | None) -> tuple[Any, ...] | None:
    return None if li is None else (li.local_addr, li.local_port, li.bind_ns, li.listen_ns,
                                    _owner_tuple(li.owner))


def pack_flows(flows: Sequence[FlowRecord]) -> Packed:
    """flows -> a marshal-able tuple (see the module docstring)."""
    if not flows:
        return ()
    return (
        list(map(_scalars, flows)),
        [None if o is None else _owner_values(o) for o in map(_owner_of, flows)],
        list(map(_counter_values, map(_counters_of, flows))),
        [None if t is None else _tcp_values(t) for t in map(_tcp_of, flows)],
        list(map(_listener_tuple, map(_listener_of, flows))),
        [None if d is None else _dns_values(d) for d in map(_dns_of, flows)],
        list(map(int, map(_family_of, flows))),
        list(map(int, map(_sock_type_of, flows))),
        list(map(int, map(_direction_of, flows))),
        list(map(_REASON_VALUE.__getitem__, map(_reason_of, flows))),
        [None if c is None else _counter_values(c) for c in map(_reported_of, flows)],
        [(i, tuple((f.time_ns, f.path, f.flags) for f in r.files))
         for i, r in enumerate(flows) if r.files],
    )


# unpack_flows builds records positionally (keywords cost almost three times as much), so it
# depends on FlowRecord's whole field order: this module refuses to load if that changed.
_FIELD_ORDER = (
    "flow_id", "cookie", "transport", "family", "sock_type", "direction", "local_addr",
    "local_port", "peer_addr", "peer_port", "start_ns", "end_ns", "owner", "netns_cookie",
    "counters", "tcp", "close_reason", "listener", "local_peer_flow_id", "complete", "dns",
    "files", "summary", "adopted", "reported", "detections")
if tuple(f.name for f in fields(FlowRecord)) != _FIELD_ORDER:
    raise ImportError("otelpeers.flowwire: FlowRecord's fields changed; update unpack_flows "
                      "and _FIELD_ORDER to match")
_DIRECTIONS = {int(d): d for d in Direction}
_REASONS = {r.value: r for r in CloseReason}
_FAMILIES = {int(f): f for f in (socket.AF_INET, socket.AF_INET6)}


MAX_OWNERS = 4096  # Owners kept for reuse by unpack_flows (then it starts over): ~1 MB
_owners: dict[tuple[Any, ...], Owner] = {}


def _owner(values: tuple[Any, ...]) -> Owner:
    """One Owner per distinct process across rounds: a frozen dataclass costs about a
    microsecond to build, and a round's flows come from few processes."""
    o = _owners.get(values)
    if o is None:
        if len(_owners) >= MAX_OWNERS:
            _owners.clear()
        o = _owners[values] = Owner(*values)
    return o


def unpack_flows(packed: Packed) -> list[FlowRecord]:
    """The inverse of pack_flows (detections empty)."""
    if not packed:
        return []
    (rows, owners, counters, tcps, listeners, dnss, families, sock_types, directions, reasons,
     reported, rare) = packed
    files_at = dict(rare)
    owner = _owner
    out = []
    for i, row in enumerate(rows):
        (flow_id, cookie, transport, laddr, lport, paddr, pport, start, end, netns, peer_id,
         complete, summary, adopted) = row
        o = owners[i]
        t, li, d, rc = tcps[i], listeners[i], dnss[i], reported[i]
        fs = files_at.get(i)
        family = families[i]
        out.append(FlowRecord(
            flow_id, cookie, transport, _FAMILIES.get(family, family), sock_types[i],
            _DIRECTIONS[directions[i]], laddr, lport, paddr, pport, start, end,
            None if o is None else owner(o), netns, Counters(*counters[i]),
            None if t is None else TcpInfo(*t),
            _REASONS[reasons[i]],
            None if li is None else Listener(li[0], li[1], li[2], li[3],
                                             None if li[4] is None else owner(li[4])),
            peer_id, complete,
            None if d is None else DnsAnnotation(d[0], d[1], tuple(d[2]), d[3], d[4]),
            () if fs is None else tuple(FileAccess(*f) for f in fs), summary, adopted,
            None if rc is None else Counters(*rc)))
    return out

"""Synthetic FlowRecords for tests and benchmarks of the export path (no kernel needed)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace

from otelpeers.events import Counters, Direction, Owner, TcpInfo
from otelpeers.flows import CloseReason, FlowRecord, Listener

T0 = 1_700_000_000_000_000_000  # a fixed epoch time, ns
_DEFAULT_OWNER = object()


def owner(tgid: int = 4242, comm: str = "curl", uid: int = 1000) -> Owner:
    return Owner(tgid=tgid, pid=tgid, uid=uid, gid=uid, cgroup_id=1, comm=comm)


def flow(flow_id: str = "2a", *, direction: Direction = Direction.OUTBOUND,
         transport: str = "tcp", proc: Owner | None | object = _DEFAULT_OWNER,
         peer: str = "93.184.216.34",
         peer_port: int = 443, local: str = "10.0.0.2", local_port: int = 40000,
         close_reason: CloseReason = CloseReason.CLOSED, complete: bool = True,
         listener: Listener | None = None, local_peer_flow_id: str | None = None,
         start_ns: int = T0, duration_ns: int = 5_000_000, cookie: int | None = None,
         counters: Counters | None = None, tcp: TcpInfo | None = None) -> FlowRecord:
    """One flow record; defaults describe a curl HTTPS connection."""
    family = socket.AF_INET6 if ":" in peer else socket.AF_INET
    proto_type = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    if tcp is None and transport == "tcp":
        tcp = TcpInfo(bytes_acked=1201, bytes_received=5301, total_retrans=1, srtt_us=850)
    return FlowRecord(
        flow_id=flow_id,
        cookie=cookie if cookie is not None else int(flow_id.split("/")[0].split("#")[0], 16),
        transport=transport, family=family, sock_type=proto_type, direction=direction,
        local_addr=local, local_port=local_port, peer_addr=peer, peer_port=peer_port,
        start_ns=start_ns, end_ns=start_ns + duration_ns,
        owner=owner() if proc is _DEFAULT_OWNER else proc, netns_cookie=4096,
        counters=counters or Counters(packets_out=10, bytes_out=1800, payload_out=1200,
                                      packets_in=12, bytes_in=6000, payload_in=5300),
        tcp=tcp if transport == "tcp" else None, close_reason=close_reason,
        listener=listener, local_peer_flow_id=local_peer_flow_id, complete=complete)


def local_pair(client_cookie: int = 0x100, server_cookie: int = 0x101
               ) -> tuple[FlowRecord, FlowRecord]:
    """Both ends of one loopback TCP connection: (client record, server record)."""
    cid, sid = f"{client_cookie:x}", f"{server_cookie:x}"
    lst = Listener("127.0.0.1", 8080, T0 - 10**9, T0 - 10**9 + 1000, owner(77, "nginx", 33))
    client = flow(cid, proc=owner(100, "curl"), peer="127.0.0.1", peer_port=8080,
                  local="127.0.0.1", local_port=51000, local_peer_flow_id=sid)
    server = flow(sid, direction=Direction.INBOUND, proc=owner(77, "nginx", 33),
                  peer="127.0.0.1", peer_port=51000, local="127.0.0.1", local_port=8080,
                  listener=lst, local_peer_flow_id=cid, start_ns=T0 + 1000)
    return client, server


def many(n: int, processes: int = 50, start_cookie: int = 0x1000) -> Iterator[FlowRecord]:
    """n distinct outbound/inbound TCP and UDP flows spread over `processes` processes."""
    for i in range(n):
        p = owner(1000 + i % processes, f"proc{i % processes}")
        kind = i % 4
        direction = Direction.INBOUND if kind == 1 else Direction.OUTBOUND
        transport = "udp" if kind == 3 else "tcp"
        yield flow(f"{start_cookie + i:x}", direction=direction, transport=transport,
                   proc=p, peer=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                   peer_port=443 if direction == Direction.OUTBOUND else 30000 + i % 30000,
                   local_port=40000 + i % 20000, start_ns=T0 + i * 1000)


class Snapshots:
    """Sets FlowRecord.reported on hand-made records the way the flow table does: a
    progress record carries the counters of the same flow's previous progress record (None
    on its first), and so does the record that completes it."""

    def __init__(self) -> None:
        self._last: dict[str, Counters] = {}

    def progress(self, r: FlowRecord) -> FlowRecord:
        before = self._last.get(r.flow_id)
        self._last[r.flow_id] = r.counters
        return replace(r, reported=before)

    def final(self, r: FlowRecord) -> FlowRecord:
        return replace(r, reported=self._last.pop(r.flow_id, None))

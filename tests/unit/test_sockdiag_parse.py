"""sock_diag without a kernel: hand-built netlink messages, a fake /proc tree.

The layouts are checked against the system's UAPI headers (compiled with cc), so the
hand-built messages here are the kernel's format, not a copy of the parser's assumptions.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otelpeers.kernel import diagwire as W
from otelpeers.kernel import sockdiag as S
from otelpeers.kernel.netns import DiscoveryStats, discover_namespaces, parse_net_link
from otelpeers.kernel.sockowners import OwnerResolver, walk_fds
from otelpeers.testing.fakeproc import FakeProc

SEQ = 7


# ---- building messages as the kernel does ------------------------------------------------
def nlattr(atype: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), atype) + data
    return raw + b"\0" * (W.nlmsg_align(len(raw)) - len(raw))


def diag_payload(*, family: int = socket.AF_INET, state: int = 10, sport: int = 8080,
                 dport: int = 0, src: str = "127.0.0.1", dst: str = "0.0.0.0",
                 cookie: int = 0x0000_0001_8000_0002, uid: int = 1000, inode: int = 4242,
                 ifindex: int = 0, rqueue: int = 0, wqueue: int = 0,
                 attrs: bytes = b"") -> bytes:
    fam_len = 4 if family == socket.AF_INET else 16
    s = socket.inet_pton(family, src)[:fam_len].ljust(16, b"\0")
    d = socket.inet_pton(family, dst)[:fam_len].ljust(16, b"\0")
    body = struct.pack("=BBBB", family, state, 0, 0)
    body += struct.pack("!HH", sport, dport) + s + d
    body += struct.pack("=III", ifindex, cookie & 0xFFFFFFFF, cookie >> 32)
    body += struct.pack("=IIIII", 0, rqueue, wqueue, uid, inode)
    assert len(body) == 72
    return body + attrs


def nlmsg(mtype: int, payload: bytes, *, seq: int = SEQ, flags: int = W.NLM_F_MULTI) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(payload), mtype, flags, seq, 1234) + payload
    return raw + b"\0" * (W.nlmsg_align(len(raw)) - len(raw))


def done(status: int = 0) -> bytes:
    return nlmsg(W.NLMSG_DONE, struct.pack("=i", status))


def tcp_info_bytes(size: int = 232, **values: int) -> bytes:
    buf = bytearray(size)
    for name, offset, code in W.TCP_INFO_FIELDS:
        if name in values:
            struct.pack_into("=" + code, buf, offset, values[name])
    return bytes(buf)


def parse(chunk: bytes) -> tuple[list[W.DiagMessage], W.DumpCounters, bool]:
    out: list[W.DiagMessage] = []
    counters = W.DumpCounters()
    finished = W.parse_dump_chunk(chunk, SEQ, out, counters)
    return out, counters, finished


# ---- layouts against the system headers --------------------------------------------------
def _c_offsets(tmp_path: Path, lines: list[str]) -> dict[str, int]:
    src = tmp_path / "layout.c"
    src.write_text("\n".join(["#include <stdio.h>", "#include <stddef.h>",
                              "#include <linux/tcp.h>", "#include <linux/inet_diag.h>",
                              "#include <linux/sock_diag.h>", "#include <linux/netlink.h>",
                              "int main(void) {", *lines, "return 0; }"]))
    exe = tmp_path / "layout"
    subprocess.run(["cc", "-o", str(exe), str(src)], check=True, capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_layouts_match_uapi_headers(tmp_path: Path) -> None:
    lines = [f'printf("tcpi_{n} %zu\\n", offsetof(struct tcp_info, tcpi_{n}));'
             for n, _, _ in W.TCP_INFO_FIELDS
             if not n.endswith(("_us", "_ms"))]
    # Fields renamed with their unit here keep the kernel's name in C.
    renamed = {"rto_us": "rto", "ato_us": "ato", "last_data_sent_ms": "last_data_sent",
               "last_data_recv_ms": "last_data_recv", "last_ack_recv_ms": "last_ack_recv",
               "rtt_us": "rtt", "rttvar_us": "rttvar", "rcv_rtt_us": "rcv_rtt",
               "min_rtt_us": "min_rtt", "busy_time_us": "busy_time",
               "rwnd_limited_us": "rwnd_limited", "sndbuf_limited_us": "sndbuf_limited"}
    lines += [f'printf("tcpi_{ours} %zu\\n", offsetof(struct tcp_info, tcpi_{c}));'
              for ours, c in renamed.items()]
    sizes = {"B": 1, "I": 4, "Q": 8}
    lines += [f'printf("size_{n} %zu\\n", sizeof(((struct tcp_info *)0)->tcpi_{c}));'
              for n, _, _ in W.TCP_INFO_FIELDS for c in [renamed.get(n, n)]]
    lines += [
        'printf("diag_msg %zu\\n", sizeof(struct inet_diag_msg));',
        'printf("req_v2 %zu\\n", sizeof(struct inet_diag_req_v2));',
        'printf("cookie %zu\\n", offsetof(struct inet_diag_msg, id.idiag_cookie));',
        'printf("inode %zu\\n", offsetof(struct inet_diag_msg, idiag_inode));',
        'printf("uid %zu\\n", offsetof(struct inet_diag_msg, idiag_uid));',
        'printf("nlmsghdr %zu\\n", sizeof(struct nlmsghdr));',
        'printf("INET_DIAG_INFO %d\\n", INET_DIAG_INFO);',
        'printf("INET_DIAG_SKMEMINFO %d\\n", INET_DIAG_SKMEMINFO);',
        'printf("INET_DIAG_CGROUP_ID %d\\n", INET_DIAG_CGROUP_ID);',
        'printf("INET_DIAG_PROTOCOL %d\\n", INET_DIAG_PROTOCOL);',
        'printf("INET_DIAG_SHUTDOWN %d\\n", INET_DIAG_SHUTDOWN);',
        'printf("SOCK_DIAG_BY_FAMILY %d\\n", SOCK_DIAG_BY_FAMILY);',
        'printf("NLM_F_DUMP_INTR %d\\n", NLM_F_DUMP_INTR);',
    ]
    c = _c_offsets(tmp_path, lines)
    for name, offset, code in W.TCP_INFO_FIELDS:
        assert c[f"tcpi_{name}"] == offset, name
        assert c[f"size_{name}"] == sizes[code], name
    assert c["diag_msg"] == W.DIAG_MSG_LEN == 72
    assert c["req_v2"] == W.REQ_V2.size
    assert c["cookie"] == 44 and c["uid"] == 64 and c["inode"] == 68
    assert c["nlmsghdr"] == W.NLMSGHDR.size
    assert c["INET_DIAG_INFO"] == W.INET_DIAG_INFO
    assert c["INET_DIAG_SKMEMINFO"] == W.INET_DIAG_SKMEMINFO
    assert c["INET_DIAG_CGROUP_ID"] == W.INET_DIAG_CGROUP_ID
    assert c["INET_DIAG_PROTOCOL"] == W.INET_DIAG_PROTOCOL
    assert c["INET_DIAG_SHUTDOWN"] == W.INET_DIAG_SHUTDOWN
    assert c["SOCK_DIAG_BY_FAMILY"] == W.SOCK_DIAG_BY_FAMILY
    assert c["NLM_F_DUMP_INTR"] == W.NLM_F_DUMP_INTR


def test_dump_request_layout() -> None:
    req = W.dump_request(socket.AF_INET6, socket.IPPROTO_TCP, seq=9,
                         ext=W.ext_bit(W.INET_DIAG_INFO), states=1 << 10)
    assert len(req) == 72
    mlen, mtype, flags, seq, pid = struct.unpack_from("=IHHII", req)
    assert (mlen, mtype, seq, pid) == (72, W.SOCK_DIAG_BY_FAMILY, 9, 0)
    assert flags == W.NLM_F_REQUEST | W.NLM_F_DUMP
    family, proto, ext, pad, states = struct.unpack_from("=BBBBI", req, 16)
    assert (family, proto, ext, pad, states) == (socket.AF_INET6, socket.IPPROTO_TCP, 2, 0,
                                                 1 << 10)
    assert req[24:] == b"\0" * 48  # the socket id: no filter
    raw = W.dump_request(socket.AF_INET, 255, seq=1, raw_protocol=255)
    assert raw[19] == 255  # sdiag_raw_protocol sits in the pad byte


# ---- messages ----------------------------------------------------------------------------
def test_cookie_is_low_word_first() -> None:
    cookie = 0x1234_5678_9ABC_DEF0
    out, counters, finished = parse(nlmsg(W.SOCK_DIAG_BY_FAMILY, diag_payload(cookie=cookie))
                                    + done())
    assert finished and counters.messages == 1
    assert out[0].cookie == cookie
    assert W.cookie_from_words(0x9ABC_DEF0, 0x1234_5678) == cookie


def test_fields_and_attributes() -> None:
    info = tcp_info_bytes(280, state=1, rtt_us=321, total_retrans=4, bytes_acked=10**10,
                          bytes_received=77, segs_out=12, segs_in=11, snd_wnd=65535)
    attrs = (nlattr(W.INET_DIAG_SHUTDOWN, b"\x02") + nlattr(W.INET_DIAG_INFO, info)
             + nlattr(W.INET_DIAG_CGROUP_ID, struct.pack("=Q", 9876))
             + nlattr(W.INET_DIAG_SKMEMINFO, struct.pack("=9I", *range(1, 10)))
             + nlattr(99, b"unknown attribute, skipped"))
    payload = diag_payload(family=socket.AF_INET6, state=1, sport=443, dport=50123,
                           src="2001:db8::1", dst="::ffff:10.0.0.9", uid=33, inode=99,
                           ifindex=3, rqueue=5, wqueue=6, attrs=attrs)
    out, counters, _ = parse(nlmsg(W.SOCK_DIAG_BY_FAMILY, payload))
    m = out[0]
    assert (m.family, m.state, m.local_port, m.remote_port) == (socket.AF_INET6, 1, 443, 50123)
    assert (m.uid, m.inode, m.interface, m.rqueue, m.wqueue) == (33, 99, 3, 5, 6)
    assert S.format_addr(m.family, m.local_raw) == "2001:db8::1"
    assert S.format_addr(m.family, m.remote_raw) == "10.0.0.9"  # v4-mapped shown as IPv4
    assert m.shutdown == 2 and m.cgroup_id == 9876
    assert m.tcp_info is not None and m.tcp_info.size == 280
    assert (m.tcp_info.rtt_us, m.tcp_info.total_retrans, m.tcp_info.bytes_acked) == (
        321, 4, 10**10)
    assert (m.tcp_info.segs_out, m.tcp_info.segs_in, m.tcp_info.snd_wnd) == (12, 11, 65535)
    assert m.meminfo == W.SkMemInfo(*range(1, 10))
    assert counters.bad_attributes == counters.truncated == 0


def test_tcp_info_fields_bounded_by_attribute_length() -> None:
    full = tcp_info_bytes(232, total_retrans=3, pacing_rate=5, bytes_acked=6)
    short = W.parse_tcp_info(full[:104])  # ends right after total_retrans
    assert short.size == 104 and short.total_retrans == 3
    assert short.pacing_rate is None and short.bytes_acked is None
    assert W.parse_tcp_info(full[:111]).pacing_rate is None  # 7 of its 8 bytes: not read
    assert W.parse_tcp_info(full[:112]).pacing_rate == 5
    assert W.parse_tcp_info(b"").state is None
    assert W.parse_tcp_info(full).bytes_acked == 6


def test_truncated_message_is_counted_and_the_next_one_parsed() -> None:
    short = nlmsg(W.SOCK_DIAG_BY_FAMILY, diag_payload()[:40])
    good = nlmsg(W.SOCK_DIAG_BY_FAMILY, diag_payload(inode=5))
    out, counters, finished = parse(short + good + done())
    assert finished
    assert counters.truncated == 1 and counters.messages == 2
    assert [m.inode for m in out] == [5]


def test_bad_attribute_ends_attributes_but_keeps_the_socket() -> None:
    attrs = (nlattr(W.INET_DIAG_SHUTDOWN, b"\x01")
             + struct.pack("=HH", 400, W.INET_DIAG_INFO) + b"\0" * 8)  # claims 400 bytes
    out, counters, _ = parse(nlmsg(W.SOCK_DIAG_BY_FAMILY, diag_payload(attrs=attrs)))
    assert counters.bad_attributes == 1
    assert out[0].shutdown == 1 and out[0].tcp_info is None
    zero_len = struct.pack("=HH", 0, W.INET_DIAG_INFO)  # would loop forever if accepted
    out, counters, _ = parse(nlmsg(W.SOCK_DIAG_BY_FAMILY, diag_payload(attrs=zero_len)))
    assert counters.bad_attributes == 1 and len(out) == 1


def test_short_fixed_size_attribute_is_ignored() -> None:
    attrs = nlattr(W.INET_DIAG_CGROUP_ID, b"\1\2\3") + nlattr(W.INET_DIAG_SHUTDOWN, b"")
    out, counters, _ = parse(nlmsg(W.SOCK_DIAG_BY_FAMILY, diag_payload(attrs=attrs)))
    assert out[0].cgroup_id is None and out[0].shutdown is None
    assert counters.short_attributes == 2


def test_malformed_header_stops_the_read() -> None:
    good = nlmsg(W.SOCK_DIAG_BY_FAMILY, diag_payload(inode=1))
    bad_len = struct.pack("=IHHII", 8, W.SOCK_DIAG_BY_FAMILY, 0, SEQ, 0)  # < header size
    out, counters, finished = parse(good + bad_len + good)
    assert not finished and counters.malformed == 1 and len(out) == 1
    too_long = struct.pack("=IHHII", 4000, W.SOCK_DIAG_BY_FAMILY, 0, SEQ, 0) + b"\0" * 72
    out, counters, _ = parse(too_long)
    assert counters.malformed == 1 and out == []
    out, counters, _ = parse(good + b"\1\2\3")  # trailing bytes shorter than a header
    assert counters.malformed == 1 and len(out) == 1


def test_foreign_sequence_and_interrupted_dump_are_counted() -> None:
    foreign = nlmsg(W.SOCK_DIAG_BY_FAMILY, diag_payload(inode=1), seq=SEQ + 1)
    intr = nlmsg(W.SOCK_DIAG_BY_FAMILY, diag_payload(inode=2),
                 flags=W.NLM_F_MULTI | W.NLM_F_DUMP_INTR)
    odd = nlmsg(0x55, b"")
    out, counters, finished = parse(foreign + intr + odd + done())
    assert finished and [m.inode for m in out] == [2]
    assert counters.foreign_seq == 1 and counters.interrupted == 1
    assert counters.unknown_type == 1


def test_no_cookie() -> None:
    out, counters, _ = parse(nlmsg(W.SOCK_DIAG_BY_FAMILY, diag_payload(cookie=(1 << 64) - 1)))
    assert out[0].cookie == 0 and counters.no_cookie == 1


def test_errors_from_the_kernel() -> None:
    err = nlmsg(W.NLMSG_ERROR, struct.pack("=i", -2) + b"\0" * 16)
    with pytest.raises(W.DumpError) as exc:
        parse(err)
    assert exc.value.errno == 2
    with pytest.raises(W.DumpError) as exc:  # no diag handler: the dump ends with ENOENT
        parse(done(-2))
    assert exc.value.errno == 2
    ack = nlmsg(W.NLMSG_ERROR, struct.pack("=i", 0) + b"\0" * 16)
    assert parse(ack + done())[2] is True


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 600))
def test_garbage_never_raises_anything_but_dump_error(blob: bytes, cut: int) -> None:
    good = nlmsg(W.SOCK_DIAG_BY_FAMILY,
                 diag_payload(attrs=nlattr(W.INET_DIAG_INFO, tcp_info_bytes(232))))
    for chunk in (blob, good[:cut] + blob, good + blob):
        with contextlib.suppress(W.DumpError):
            parse(chunk)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_attributes_never_raise(attrs: bytes) -> None:
    out, _, _ = parse(nlmsg(W.SOCK_DIAG_BY_FAMILY, diag_payload(attrs=attrs)))
    assert len(out) == 1


def test_format_addr() -> None:
    v4 = socket.inet_pton(socket.AF_INET, "10.1.2.3") + b"\0" * 12
    assert S.format_addr(socket.AF_INET, v4) == "10.1.2.3"
    assert S.format_addr(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "fe80::1")) == \
        "fe80::1"


# ---- namespaces --------------------------------------------------------------------------
def test_parse_net_link() -> None:
    assert parse_net_link("net:[4026531840]") == 4026531840
    assert parse_net_link("net:[]") is None
    assert parse_net_link("mnt:[4026531840]") is None
    assert parse_net_link("socket:[1]") is None


def test_discover_namespaces_dedups_by_inode(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path / "proc")
    fake.add(1, ns={"net": 100})
    fake.add(2, ns={"net": 200})
    fake.add(3, ns={"net": 200})  # same namespace as 2
    fake.add(4, ns={"net": 300})
    fake.add(5)
    fake.remove(5, "ns/net")  # unreadable (gone)
    run = tmp_path / "netns"
    run.mkdir()
    (run / "b").write_text("")
    (run / "a").write_text("")
    dev = os.stat(run / "a").st_dev
    stats = DiscoveryStats()
    refs = discover_namespaces(proc_root=str(fake.root), run_netns_dir=str(run),
                               self_inode=100, nsfs_dev=dev, stats=stats)
    assert refs[0].source == "self" and refs[0].inode == 100
    by_inode = {r.inode: r for r in refs}
    assert sorted(by_inode) == sorted({100, 200, 300, os.stat(run / "a").st_ino,
                                       os.stat(run / "b").st_ino})
    assert by_inode[200].path.endswith("/2/ns/net") and by_inode[200].source == "proc"
    assert by_inode[os.stat(run / "a").st_ino].source == "run-netns"
    assert stats.unreadable == 1 and stats.processes == 5
    # An entry on another device is a leftover file, not a namespace.
    stats = DiscoveryStats()
    refs = discover_namespaces(proc_root=str(fake.root), run_netns_dir=str(run),
                               self_inode=100, nsfs_dev=dev + 1, stats=stats)
    assert stats.stale_run_netns == 2 and len(refs) == 3
    stats = DiscoveryStats()
    refs = discover_namespaces(proc_root=str(fake.root), run_netns_dir=str(run),
                               self_inode=100, nsfs_dev=dev, max_namespaces=2, stats=stats)
    assert len(refs) == 2 and stats.cut == 3


# ---- /proc/*/fd --------------------------------------------------------------------------
def add_fds(fake: FakeProc, pid: int, targets: list[str]) -> None:
    d = fake.root / str(pid) / "fd"
    d.mkdir(exist_ok=True)
    for n, target in enumerate(targets):
        os.symlink(target, d / str(n))


def test_walk_fds_maps_sockets_to_holders(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fake.add(10)
    fake.add(11)
    fake.add(12)
    fake.add(13)
    add_fds(fake, 10, ["/dev/null", "socket:[500]", "socket:[501]", "socket:[500]",
                       "anon_inode:[eventfd]", "net:[4026532000]", "socket:[bad]"])
    add_fds(fake, 11, ["socket:[500]", "pipe:[7]"])
    add_fds(fake, 12, ["net:[4026532000]", "net:[4026532001]"])
    # 13 has no fd directory (a zombie, or not permitted)
    walk = walk_fds(str(tmp_path))
    assert walk.holders == {500: [10, 11], 501: [10]}  # dup'ed fd counted once
    assert set(walk.netns_fds) == {4026532000, 4026532001}
    assert walk.netns_fds[4026532001] == f"{tmp_path}/12/fd/1"
    st = walk.stats
    assert st.processes == 3 and st.unreadable == 1 and st.socket_fds == 4
    assert st.fds == 11 and not st.out_of_time


def test_walk_fds_bounds_are_counted(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    for pid in range(20, 30):
        fake.add(pid)
        add_fds(fake, pid, [f"socket:[{pid}{n}]" for n in range(5)])
    walk = walk_fds(str(tmp_path), max_processes=4, max_fds_per_process=3)
    assert walk.stats.processes == 4 and walk.stats.processes_cut == 6
    assert walk.stats.fd_lists_cut == 4 and walk.stats.socket_fds == 12
    ticks = iter(range(100))
    walk = walk_fds(str(tmp_path), deadline=3, clock=lambda: next(ticks))
    assert walk.stats.out_of_time
    assert walk.stats.processes == 3 and walk.stats.processes_cut == 7


def test_owner_resolver_prefers_the_oldest_holder(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path / "proc")
    fake.add(300, comm="nginx", start_ticks=500, uid=0, gid=0,
             cgroup="0::/system.slice/nginx.service\n")
    fake.add(301, comm="nginx", start_ticks=900, uid=33, gid=33,
             cgroup="0::/system.slice/nginx.service\n")
    fake.add(90, comm="worker", start_ticks=1000, uid=5, gid=6, cgroup="0::/gone\n")
    cg = tmp_path / "cgroup" / "system.slice" / "nginx.service"
    cg.mkdir(parents=True)
    r = OwnerResolver(str(fake.root), cgroup_root=str(tmp_path / "cgroup"))
    # pid order would pick 90 or 300 by number; age picks the master (300), then pid.
    assert r.order([301, 90, 300, 301]) == (300, 301, 90)
    owner = r.owner((300, 301))
    assert owner is not None
    assert (owner.tgid, owner.comm, owner.uid, owner.gid) == (300, "nginx", 0, 0)
    assert owner.cgroup_id == os.stat(cg).st_ino
    assert owner.cgroup_path == "/system.slice/nginx.service"
    assert owner.start_boot_ns == 500 * 1_000_000_000 // r.hz
    other = r.read(90)
    assert other is not None and other.cgroup_id is None and r.stats.cgroup_unknown == 1
    # A holder that is gone is skipped; the next one owns.
    fake.remove(300)
    r2 = OwnerResolver(str(fake.root), cgroup_root=str(tmp_path / "cgroup"))
    assert r2.order([300, 301]) == (301, 300)
    assert r2.owner((301, 300)).tgid == 301  # type: ignore[union-attr]
    assert r2.owner((300,)) is None and r2.stats.vanished == 1


def test_owner_resolver_detects_pid_reuse(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fake.add(40, start_ticks=100)
    r = OwnerResolver(str(tmp_path))
    assert r.order([40, 41]) == (40, 41)  # 41 unknown: last
    fake.add(40, start_ticks=999)  # exited and the pid was reused before it was read
    assert r.read(40) is None and r.stats.vanished == 1


# ---- from messages to ExistingSocket -----------------------------------------------------
def _found(ns: S.NamespaceReport, spec: S.DumpSpec, **kw: object) -> S._Found:
    out, _, _ = parse(nlmsg(W.SOCK_DIAG_BY_FAMILY, diag_payload(**kw)))  # type: ignore[arg-type]
    return S._Found(ns, spec, out[0])


def test_build_owners_duplicates_and_listener_join(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fake.add(700, comm="master", start_ticks=10)
    fake.add(701, comm="worker", start_ticks=20)
    resolver = OwnerResolver(str(tmp_path))
    ns = S.NamespaceReport(4026531840, "self", "", cookie=1)
    other = S.NamespaceReport(4026532999, "proc", "/proc/9/ns/net", cookie=2)
    tcp4 = S.DUMPS["tcp"][0]
    found = [
        _found(ns, tcp4, state=10, sport=80, src="0.0.0.0", cookie=11, inode=1000),
        # accepted, not yet accept()ed: no inode; takes the listener's owner
        _found(ns, tcp4, state=1, sport=80, dport=5000, src="10.0.0.1", dst="10.0.0.2",
               cookie=12, inode=0),
        # same port in another namespace: not joined
        _found(other, tcp4, state=1, sport=80, dport=5001, src="10.0.0.1", dst="10.0.0.3",
               cookie=13, inode=0),
        _found(ns, tcp4, state=6, sport=80, dport=5002, cookie=14, inode=0),  # TIME_WAIT
        _found(ns, tcp4, state=1, sport=80, dport=5000, src="10.0.0.1", dst="10.0.0.2",
               cookie=12, inode=0),  # reported twice (rehash during the dump)
    ]
    stats = S.SnapshotStats()
    socks = S._build(found, {1000: [701, 700]}, resolver, stats)
    by = {s.cookie: s for s in socks}
    assert len(socks) == 4 and stats.duplicates == 1
    lst = by[11]
    assert lst.is_listener and lst.state_name == "LISTEN" and lst.holders == (700, 701)
    assert lst.owner is not None and lst.owner.comm == "master" and not lst.owner_joined
    assert lst.netns_cookie == 1 and lst.netns_inode == 4026531840
    acc = by[12]
    assert acc.owner_joined and acc.owner == lst.owner and acc.local_addr == "10.0.0.1"
    assert by[13].owner is None and by[14].owner is None
    assert stats.owner_joined == 1 and stats.with_owner == 2 and stats.without_owner == 2


def test_udp_and_raw_names() -> None:
    ns = S.NamespaceReport(1, "self", "")
    found = [_found(ns, S.DUMPS["udp"][1], family=socket.AF_INET6, state=7, src="::1",
                    dst="::", cookie=21, inode=0),
             _found(ns, S.DUMPS["raw"][0], state=7, cookie=22, inode=0,
                    attrs=nlattr(W.INET_DIAG_PROTOCOL, b"\x01"))]
    socks = {s.cookie: s for s in S._build(found, {}, None, S.SnapshotStats())}
    assert socks[21].transport == "udp" and socks[21].state_name == "BOUND"
    assert socks[22].transport == "icmp" and socks[22].sock_type == socket.SOCK_RAW


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="sctp"):
        S.enumerate_sockets(protocols=("tcp", "sctp"))

"""Processes for tests/kernel/test_detect_dns.py (run as scripts, in or out of a namespace).

    dns_threat_peers.py zone ADDR PORT
        an authoritative server for dnsmasq to forward to: any name under tunnel-test.net
        gets a TXT answer carrying 90 random bytes (base64), as a tunnel server would;
        login.flux-test.com gets five addresses from all over the IPv4 space with a TTL of
        120 s, new ones every time (a botnet's fast-flux answers); prints READY <port>.
    dns_threat_peers.py tunnel SERVER COUNT
        a tunnel client: COUNT TXT queries of 150 base32 characters in three labels under
        tunnel-test.net, one after another; prints DONE <answers with data>.
    dns_threat_peers.py resolve SERVER NAME COUNT
        asks SERVER for NAME's A records COUNT times; prints DONE <distinct addresses>.
"""

from __future__ import annotations

import base64
import os
import random
import socket
import sys

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset

TUNNEL_ZONE = "tunnel-test.net."
FLUX_NAME = "login.flux-test.com."
_FIRSTS = (24, 31, 41, 46, 59, 62, 71, 77, 82, 89, 95, 101, 112, 117, 151, 177, 186, 190)


def zone(addr: str, port: int) -> None:
    r = random.Random(os.getpid())
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    print(f"READY {s.getsockname()[1]}", flush=True)
    while True:
        data, peer = s.recvfrom(4096)
        try:
            q = dns.message.from_wire(data)
        except Exception:
            continue
        resp = dns.message.make_response(q)
        question = q.question[0]
        name = question.name.to_text().lower()
        if name.endswith(TUNNEL_ZONE) and question.rdtype == dns.rdatatype.TXT:
            payload = base64.b64encode(r.randbytes(90)).decode()
            resp.answer.append(dns.rrset.from_text(question.name, 0, "IN", "TXT",
                                                   f'"{payload}"'))
        elif name == FLUX_NAME and question.rdtype == dns.rdatatype.A:
            addrs = [f"{r.choice(_FIRSTS)}.{r.randrange(256)}.{r.randrange(256)}."
                     f"{r.randrange(1, 255)}" for _ in range(5)]
            resp.answer.append(dns.rrset.from_text(question.name, 120, "IN", "A", *addrs))
        else:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        s.sendto(resp.to_wire(), peer)


def tunnel(server: str, count: int) -> None:
    r = random.Random(os.getpid())
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    with_data = 0
    for _ in range(count):
        data = "".join(r.choice(alphabet) for _ in range(150))
        name = ".".join(data[i:i + 50] for i in range(0, 150, 50)) + "." + TUNNEL_ZONE
        resp = dns.query.udp(dns.message.make_query(name, "TXT"), server, timeout=5)
        with_data += bool(resp.answer)
    print(f"DONE {with_data}", flush=True)


def resolve(server: str, name: str, count: int) -> None:
    seen: set[str] = set()
    for _ in range(count):
        resp = dns.query.udp(dns.message.make_query(name, "A"), server, timeout=5)
        for rrset in resp.answer:
            seen.update(rd.to_text() for rd in rrset if rrset.rdtype == dns.rdatatype.A)
    print(f"DONE {len(seen)}", flush=True)


def dga(server: str, count: int) -> None:
    """An infected process hunting for its C2: random names under cheap TLDs, one A query
    each, most of them answered NXDOMAIN by the zone server."""
    r = random.Random(os.getpid())
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    nx = 0
    for _ in range(count):
        name = "".join(r.choice(letters) for _ in range(r.randint(10, 16)))
        name += r.choice((".biz", ".xyz", ".top"))
        resp = dns.query.udp(dns.message.make_query(name, "A"), server, timeout=5)
        nx += resp.rcode() == dns.rcode.NXDOMAIN
    print(f"DONE {nx}", flush=True)


def main(argv: list[str]) -> None:
    mode, args = argv[0], argv[1:]
    if mode == "zone":
        zone(args[0], int(args[1]))
    elif mode == "tunnel":
        tunnel(args[0], int(args[1]))
    elif mode == "dga":
        dga(args[0], int(args[1]))
    elif mode == "resolve":
        resolve(args[0], args[1], int(args[2]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

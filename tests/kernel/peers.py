"""Real test peers, run as separate processes (often inside a test network namespace).

Each server prints "READY <port>" once it listens, so tests wait on that line instead of
sleeping. Usage: python peers.py MODE [args]; see main().
"""

from __future__ import annotations

import socket
import sys


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _recv_exact(conn: socket.socket, n: int) -> int:
    got = 0
    while got < n:
        chunk = conn.recv(min(65536, n - got))
        if not chunk:
            break
        got += len(chunk)
    return got


def tcp_server(addr: str, expect: int, reply: int) -> None:
    """Accept one connection, read `expect` bytes, send `reply` bytes, close."""
    srv = socket.socket(_family(addr), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, 0))
    srv.listen(8)
    print(f"READY {srv.getsockname()[1]}", flush=True)
    conn, _ = srv.accept()
    _recv_exact(conn, expect)
    conn.sendall(b"s" * reply)
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)  # wait for the client's close so both ends end cleanly
    conn.close()
    srv.close()


def tcp_client(addr: str, port: int, send: int, expect: int) -> None:
    c = socket.create_connection((addr, port), timeout=10)
    c.sendall(b"c" * send)
    got = _recv_exact(c, expect)
    c.close()
    print(f"DONE {got}", flush=True)


def udp_echo(addr: str, count: int) -> None:
    """Echo `count` datagrams back to their senders (unconnected server socket)."""
    s = socket.socket(_family(addr), socket.SOCK_DGRAM)
    s.bind((addr, 0))
    print(f"READY {s.getsockname()[1]}", flush=True)
    for _ in range(count):
        data, peer = s.recvfrom(65536)
        s.sendto(data, peer)
    s.close()


def udp_client(addr: str, port: int, count: int, size: int, connected: str) -> None:
    s = socket.socket(_family(addr), socket.SOCK_DGRAM)
    s.settimeout(10)
    if connected == "connected":
        s.connect((addr, port))
    for _ in range(count):
        if connected == "connected":
            s.send(b"u" * size)
            s.recv(65536)
        else:
            s.sendto(b"u" * size, (addr, port))
            s.recvfrom(65536)
    s.close()
    print("DONE", flush=True)


def dns_servfail(addr: str, port: int) -> None:
    """An upstream resolver that answers SERVFAIL to everything (for dnsmasq to relay)."""
    import dns.message
    import dns.rcode

    s = socket.socket(_family(addr), socket.SOCK_DGRAM)
    s.bind((addr, port))
    print(f"READY {s.getsockname()[1]}", flush=True)
    while True:
        data, peer = s.recvfrom(4096)
        try:
            q = dns.message.from_wire(data)
        except Exception:
            continue
        r = dns.message.make_response(q)
        r.set_rcode(dns.rcode.SERVFAIL)
        s.sendto(r.to_wire(), peer)


def tcp_sink(addr: str, port: int) -> None:
    """Accept connections one after another forever; read each until the client closes."""
    srv = socket.socket(_family(addr), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(64)
    print(f"READY {srv.getsockname()[1]}", flush=True)
    while True:
        conn, _ = srv.accept()
        while conn.recv(1 << 20):
            pass
        conn.close()


def tcp_connect_each(port: int, send: int, addrs: list[str]) -> None:
    """Connect to each address on port in turn, send `send` bytes, close; wait for the
    server to see the close (it reads to EOF) so each connection ends cleanly."""
    for addr in addrs:
        c = socket.create_connection((addr, port), timeout=10)
        if send:
            c.sendall(b"x" * send)
        c.shutdown(socket.SHUT_WR)
        c.recv(1)
        c.close()
    print("DONE", flush=True)


def connect_closed(transport: str, addr: str, port: int, count: int) -> None:
    """count attempts at a closed port: TCP connect() (refused by the peer kernel's RST), or
    a connected UDP datagram whose ICMP port unreachable fails the next recv()."""
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    for _ in range(count):
        s = socket.socket(_family(addr), kind)
        s.settimeout(10)
        try:
            s.connect((addr, port))
            if kind == socket.SOCK_DGRAM:
                s.send(b"probe")
                s.recv(64)
            print("ANSWERED", flush=True)
        except ConnectionRefusedError:
            print("REFUSED", flush=True)
        finally:
            s.close()


def _accept_one(addr: str) -> tuple[socket.socket, socket.socket]:
    """Listen ("READY <port>"), accept one connection ("ACCEPTED": this process holds it)."""
    srv = socket.socket(_family(addr), socket.SOCK_STREAM)
    srv.bind((addr, 0))
    srv.listen(8)
    print(f"READY {srv.getsockname()[1]}", flush=True)
    conn, _ = srv.accept()
    print("ACCEPTED", flush=True)
    return srv, conn


def tcp_server_accepted(addr: str, expect: int, reply: int) -> None:
    """tcp_server that also says when it has accepted (the connection is then held by this
    process): "READY <port>", then "ACCEPTED"."""
    srv, conn = _accept_one(addr)
    _recv_exact(conn, expect)
    conn.sendall(b"s" * reply)
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)
    conn.close()
    srv.close()


def tcp_client_on_signal(addr: str, port: int, send: int, expect: int) -> None:
    """Connect now ("READY <local port>"), transfer only on SIGUSR1, then close."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    c = socket.create_connection((addr, port), timeout=30)
    print(f"READY {c.getsockname()[1]}", flush=True)
    signal.sigwait({signal.SIGUSR1})
    c.sendall(b"c" * send)
    got = _recv_exact(c, expect)
    c.close()
    print(f"DONE {got}", flush=True)


def tcp_echo_accepted(addr: str) -> None:
    """Accept one connection ("READY <port>", then "ACCEPTED"), echo it until EOF, close."""
    srv, conn = _accept_one(addr)
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.close()
    srv.close()


def tcp_client_phases(addr: str, port: int, size: int) -> None:
    """Connect ("READY <local port>"); on each SIGUSR1 send `size` bytes and read them back
    ("SENT"); on SIGUSR2 close ("DONE")."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})
    c = socket.create_connection((addr, port), timeout=30)
    print(f"READY {c.getsockname()[1]}", flush=True)
    while signal.sigwait({signal.SIGUSR1, signal.SIGUSR2}) == signal.SIGUSR1:
        c.sendall(b"p" * size)
        got = _recv_exact(c, size)
        print(f"SENT {got}", flush=True)
    c.close()
    print("DONE", flush=True)


def main(argv: list[str]) -> None:
    mode, args = argv[0], argv[1:]
    if mode == "tcp-server":
        tcp_server(args[0], int(args[1]), int(args[2]))
    elif mode == "tcp-client":
        tcp_client(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif mode == "udp-echo":
        udp_echo(args[0], int(args[1]))
    elif mode == "udp-client":
        udp_client(args[0], int(args[1]), int(args[2]), int(args[3]), args[4])
    elif mode == "tcp-server-accepted":
        tcp_server_accepted(args[0], int(args[1]), int(args[2]))
    elif mode == "tcp-client-on-signal":
        tcp_client_on_signal(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif mode == "tcp-echo-accepted":
        tcp_echo_accepted(args[0])
    elif mode == "tcp-client-phases":
        tcp_client_phases(args[0], int(args[1]), int(args[2]))
    elif mode == "tcp-sink":
        tcp_sink(args[0], int(args[1]))
    elif mode == "tcp-connect-each":
        tcp_connect_each(int(args[0]), int(args[1]), args[2:])
    elif mode == "connect-closed":
        connect_closed(args[0], args[1], int(args[2]), int(args[3]))
    elif mode == "dns-servfail":
        dns_servfail(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""A process that holds sockets until its stdin closes: for tests/kernel/test_sockdiag_kernel.py.

Usage: python sockdiag_peer.py ADDR [--fork]
Opens a TCP listener on ADDR, an established connection to it (both ends), and a bound UDP
socket; with --fork, a child process that inherits the listener (a pre-fork server's
worker). Prints one line "READY pid=P child=C listen=L client=CP udp=U" and exits when
stdin closes (the child too).
"""

from __future__ import annotations

import os
import socket
import sys


def main() -> None:
    addr = sys.argv[1]
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    lst = socket.socket(family, socket.SOCK_STREAM)
    lst.bind((addr, 0))
    lst.listen(16)
    port = lst.getsockname()[1]
    cli = socket.create_connection((addr, port))
    srv, _ = lst.accept()
    cli.sendall(b"c" * 3000)
    got = 0
    while got < 3000:
        got += len(srv.recv(65536))
    srv.sendall(b"s" * 1000)
    got = 0
    while got < 1000:
        got += len(cli.recv(65536))
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.bind((addr, 0))
    child = 0
    if "--fork" in sys.argv:
        child = os.fork()
        if child == 0:  # the worker: keeps the inherited listener until stdin closes
            sys.stdin.read()
            os._exit(0)
    print(f"READY pid={os.getpid()} child={child} listen={port} "
          f"client={cli.getsockname()[1]} udp={udp.getsockname()[1]}", flush=True)
    sys.stdin.read()
    if child:
        os.waitpid(child, 0)


if __name__ == "__main__":
    main()

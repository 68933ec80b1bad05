"""The live graph on a local Unix socket, and the client that queries it.

Protocol: the client sends one JSON line, {"since_ns": N} or {"since_ns": null}, at most
MAX_REQUEST bytes; the server answers with one JSON line (the graph document of
docs/graph.md, or {"error": "..."}) and closes. The socket is for root only: its directory is
made mode 0700, the socket itself 0600, and peers other than root or the agent's own user
are refused (SO_PEERCRED) even if the modes were loosened.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import socketserver
import stat
import struct
import threading
from typing import Any

from otelpeers.graph.model import RelationshipGraph
from otelpeers.graph.render import to_json

DEFAULT_SOCKET_PATH = "/run/otelpeers/graph.sock"
MAX_REQUEST = 4096
MAX_RESPONSE = 512 * 1024 * 1024
REQUEST_TIMEOUT_S = 5.0

log = logging.getLogger("otelpeers.graph")


class GraphServerError(RuntimeError):
    """The graph socket cannot be served (path taken, unsafe directory, ...)."""


class GraphClientError(RuntimeError):
    """The live graph cannot be fetched; the message says why and what to do."""


def parse_request(line: bytes) -> int | None:
    """since_ns from one request line; ValueError with the reason when it is not valid."""
    if len(line) > MAX_REQUEST:
        raise ValueError(f"request longer than {MAX_REQUEST} bytes")
    try:
        req = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"request is not JSON: {exc}") from None
    if not isinstance(req, dict):
        raise ValueError('request must be a JSON object like {"since_ns": null}')
    extra = sorted(set(req) - {"since_ns"})
    if extra:
        raise ValueError(f"unknown request keys {extra}; only 'since_ns' is accepted")
    since = req.get("since_ns")
    if since is not None and (not isinstance(since, int) or isinstance(since, bool)
                              or since < 0):
        raise ValueError("since_ns must be null or a non-negative integer (epoch ns)")
    return since


def _peer_uid(sock: socket.socket) -> int | None:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    return struct.unpack("3i", raw)[1]


class _Handler(socketserver.StreamRequestHandler):
    timeout = REQUEST_TIMEOUT_S
    server: _Server

    def handle(self) -> None:
        srv = self.server
        uid = _peer_uid(self.connection)
        if uid is not None and uid not in (0, os.geteuid()):
            srv.count("refused")
            self._reply({"error": "the graph socket is for root only"})
            return
        try:
            line = self.rfile.readline(MAX_REQUEST + 1)
            since = parse_request(line)
        except (OSError, ValueError) as exc:  # timeouts are OSErrors
            srv.count("bad_requests")
            self._reply({"error": f"bad request: {exc}"})
            return
        srv.count("requests")
        self._reply(to_json(srv.graph.snapshot(since)))

    def _reply(self, doc: dict[str, Any]) -> None:
        try:
            self.wfile.write(json.dumps(doc, separators=(",", ":")).encode() + b"\n")
        except OSError:
            self.server.count("reply_errors")  # the client went away


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, graph: RelationshipGraph) -> None:
        self.graph = graph
        self.stats = {"requests": 0, "bad_requests": 0, "refused": 0, "reply_errors": 0}
        self._stats_lock = threading.Lock()
        super().__init__(path, _Handler)

    def count(self, name: str) -> None:
        with self._stats_lock:
            self.stats[name] += 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.count("reply_errors")
        log.debug("graph socket: request failed", exc_info=True)


class GraphServer:
    """Handle of a running graph socket; close() stops it and removes the socket file."""

    def __init__(self, server: _Server, path: str) -> None:
        self._server = server
        self.path = path
        self._ino = os.lstat(path).st_ino
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="otelpeers-graph", daemon=True)
        self._thread.start()
        self._closed = False

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._server.stats)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        try:  # remove it only if it is still ours (not replaced by a newer agent)
            if os.lstat(self.path).st_ino == self._ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> GraphServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prepare_directory(directory: str) -> None:
    if not os.path.isdir(directory):
        with contextlib.suppress(FileExistsError):
            os.makedirs(directory, mode=0o700)
        os.chmod(directory, 0o700)  # makedirs' mode is filtered by the umask
        return
    st = os.stat(directory)
    # Someone else able to write here could replace the socket under us.
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise GraphServerError(
            f"graph socket directory {directory} is writable by others; use a private "
            f"directory (e.g. the default {os.path.dirname(DEFAULT_SOCKET_PATH)})")


def _remove_stale(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise GraphServerError(f"{path} exists and is not a socket; remove it or choose "
                               "another graph socket path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # left behind by an agent that did not stop cleanly
        return
    except OSError as exc:
        raise GraphServerError(f"cannot check the existing socket {path}: {exc}") from exc
    finally:
        probe.close()
    raise GraphServerError(f"another otelpeers agent already serves the graph at {path}; "
                           "stop it or choose another graph socket path")


def start_graph_server(graph: RelationshipGraph, path: str = DEFAULT_SOCKET_PATH
                       ) -> GraphServer:
    """Serve graph snapshots on a Unix socket at path (in a thread) until close()."""
    path = os.path.abspath(path)
    try:
        _prepare_directory(os.path.dirname(path))
        _remove_stale(path)
        server = _Server(path, graph)
        os.chmod(path, 0o600)
    except PermissionError as exc:
        raise GraphServerError(f"cannot create the graph socket {path}: {exc.strerror}; "
                               "the agent runs as root") from exc
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise GraphServerError(f"{path} is in use; stop the other agent") from exc
        raise GraphServerError(f"cannot create the graph socket {path}: {exc}") from exc
    return GraphServer(server, path)


def query_graph(path: str = DEFAULT_SOCKET_PATH, since_ns: int | None = None,
                timeout_s: float = 30.0) -> dict[str, Any]:
    """Ask the agent's socket for the graph; GraphClientError says what went wrong."""
    hint = "" if os.geteuid() == 0 else " (you are not root: try `sudo otelpeers graph`)"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise GraphClientError(
                f"no otelpeers agent serves the graph at {path}{hint}: start the agent as "
                "root (`sudo otelpeers run`), pass --socket PATH if it uses another path, or "
                "build the graph from a recording with --recording FILE") from None
        except PermissionError:
            raise GraphClientError(
                f"permission denied on {path}: the graph socket is for root only; run "
                "`sudo otelpeers graph`") from None
        except ConnectionRefusedError:
            raise GraphClientError(
                f"{path} exists but no agent is listening (an agent stopped uncleanly); "
                "start the agent as root (`sudo otelpeers run`) or use --recording FILE"
            ) from None
        sock.sendall(json.dumps({"since_ns": since_ns}).encode() + b"\n")
        chunks, size = [], 0
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_RESPONSE:
                raise GraphClientError(f"the graph from {path} is larger than "
                                       f"{MAX_RESPONSE} bytes; narrow it with --since")
            chunks.append(chunk)
    except TimeoutError:
        raise GraphClientError(f"the agent at {path} did not answer within {timeout_s:g} s"
                               ) from None
    except OSError as exc:
        raise GraphClientError(f"reading the graph from {path} failed: {exc}") from None
    finally:
        sock.close()
    try:
        doc = json.loads(b"".join(chunks))
    except ValueError:
        raise GraphClientError(f"the agent at {path} sent a reply that is not JSON (is it "
                               "an otelpeers graph socket?)") from None
    if isinstance(doc, dict) and "error" in doc:
        raise GraphClientError(f"the agent refused the request: {doc['error']}")
    if not isinstance(doc, dict):
        raise GraphClientError(f"the agent at {path} sent an unexpected reply")
    return doc

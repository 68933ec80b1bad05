"""The graph socket: round trip, modes, bad requests, stale sockets, clean shutdown."""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest
from test_graph_model import T0, S, outbound_flow

from otelpeers.flows import FlowTable
from otelpeers.graph import RelationshipGraph, from_json, start_graph_server
from otelpeers.graph.server import (
    MAX_REQUEST,
    GraphClientError,
    GraphServerError,
    parse_request,
    query_graph,
)


def graph() -> RelationshipGraph:
    g = RelationshipGraph()
    t = FlowTable()
    g.add_flow(outbound_flow(t, 1, "192.0.2.1", at=1))
    g.add_flow(outbound_flow(t, 2, "192.0.2.2", at=100, lport=40001))
    return g


def raw_request(path: str, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


def test_round_trip_modes_and_cleanup(tmp_path) -> None:
    g = graph()
    path = str(tmp_path / "run" / "graph.sock")
    server = start_graph_server(g, path)
    try:
        assert stat.S_IMODE(os.stat(tmp_path / "run").st_mode) == 0o700
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        doc = query_graph(path)
        assert from_json(doc) == g.snapshot()
        recent = from_json(query_graph(path, since_ns=T0 + 50 * S))
        assert recent == g.snapshot(T0 + 50 * S) and len(recent.edges) < len(doc["edges"])
        assert server.stats["requests"] == 2
    finally:
        server.close()
    assert not os.path.exists(path)
    server.close()  # idempotent


def test_bad_requests_are_answered_and_counted(tmp_path) -> None:
    path = str(tmp_path / "g.sock")
    with start_graph_server(graph(), path) as server:
        assert "not JSON" in raw_request(path, b"hello\n")["error"]
        assert "since_ns" in raw_request(path, b'{"since_ns": "yesterday"}\n')["error"]
        assert "unknown request keys" in raw_request(path, b'{"x": 1}\n')["error"]
        too_long = b'{"since_ns": null' + b" " * MAX_REQUEST + b"}\n"
        assert "longer than" in raw_request(path, too_long)["error"]
        assert server.stats["bad_requests"] == 4 and server.stats["requests"] == 0
        # Still serving after all that.
        assert raw_request(path, b'{"since_ns": null}\n')["version"] == 1


def test_parse_request() -> None:
    assert parse_request(b'{"since_ns": null}\n') is None
    assert parse_request(b'{"since_ns": 5}') == 5
    assert parse_request(b"{}") is None
    for bad in (b"[]", b'{"since_ns": true}', b'{"since_ns": -1}', b'{"since_ns": 1.5}'):
        with pytest.raises(ValueError):
            parse_request(bad)


def test_stale_socket_is_replaced_and_live_one_refused(tmp_path) -> None:
    path = str(tmp_path / "g.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: what a killed agent leaves
    with start_graph_server(graph(), path):
        assert query_graph(path)["version"] == 1
        with pytest.raises(GraphServerError, match="already serves"):
            start_graph_server(graph(), path)
    assert not os.path.exists(path)


def test_path_that_is_not_a_socket_is_refused(tmp_path) -> None:
    path = tmp_path / "g.sock"
    path.write_text("precious")
    with pytest.raises(GraphServerError, match="not a socket"):
        start_graph_server(graph(), str(path))
    assert path.read_text() == "precious"


def test_world_writable_directory_is_refused(tmp_path) -> None:
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(d, 0o777)
    with pytest.raises(GraphServerError, match="writable by others"):
        start_graph_server(graph(), str(d / "g.sock"))


def test_client_errors_name_the_fix(tmp_path) -> None:
    with pytest.raises(GraphClientError, match="no otelpeers agent serves the graph") as exc:
        query_graph(str(tmp_path / "missing.sock"))
    assert "--recording" in str(exc.value)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()
    with pytest.raises(GraphClientError, match="no agent is listening"):
        query_graph(str(tmp_path / "stale.sock"))


def test_other_users_are_kept_out(tmp_path) -> None:
    path = str(tmp_path / "run" / "graph.sock")
    with start_graph_server(graph(), path):
        if os.geteuid() != 0:
            os.chmod(tmp_path / "run", 0)  # as another user sees the 0700 directory
            try:
                with pytest.raises(GraphClientError, match="for root only"):
                    query_graph(path)
            finally:
                os.chmod(tmp_path / "run", 0o700)
            return
        import subprocess
        import sys

        import otelpeers

        root = os.path.dirname(os.path.dirname(os.path.abspath(otelpeers.__file__)))
        code = ("import sys; from otelpeers.graph.server import query_graph, GraphClientError\n"
                "try:\n    query_graph(sys.argv[1])\nexcept GraphClientError as e:\n"
                "    print(e); sys.exit(3)\n")
        out = subprocess.run([sys.executable, "-c", code, path], user="nobody",
                             capture_output=True, text=True, cwd="/", timeout=60,
                             env={**os.environ, "PYTHONPATH": root})
        assert out.returncode == 3, out.stderr
        assert "for root only" in out.stdout and "sudo otelpeers graph" in out.stdout

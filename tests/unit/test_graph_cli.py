"""`otelpeers graph`: from a recording (real pipeline and DNS stage) and from a live socket."""

from __future__ import annotations

import json
import socket

import pytest
from test_graph_model import CURL, NGINX, T0, S

from otelpeers.cli import main
from otelpeers.commands.graph import parse_duration
from otelpeers.events import Counters, Direction, Kind, Owner, ProcessEvent, SocketEvent
from otelpeers.graph import GraphSink, RelationshipGraph, from_json, start_graph_server
from otelpeers.pipeline import Outputs
from otelpeers.recording import RecordingWriter
from otelpeers.testing.dns_wire import packet, query_wire, response_wire

MS = 10**6


def sev(kind: Kind, t: float, cookie: int, **kw: object) -> SocketEvent:
    return SocketEvent(kind=kind, time_ns=T0 + int(t * S), cookie=cookie, **kw)  # type: ignore[arg-type]


def write_recording(path) -> None:  # noqa: ANN001
    """curl looks up www.example.com (CNAME cdn.example.net -> 192.0.2.7), connects to it,
    then connects to nginx on this host; ten minutes later it connects to 192.0.2.99."""
    w = RecordingWriter(path)
    events = [
        sev(Kind.SOCK_CREATE, 0, 50, owner=NGINX),
        sev(Kind.BIND, 0.1, 50, owner=NGINX, local_addr="0.0.0.0", local_port=80),
        sev(Kind.LISTEN, 0.2, 0, owner=NGINX, local_addr="0.0.0.0", local_port=80),
        packet(query_wire("www.example.com", "A", 7), time_ns=T0 + 1 * S, cookie=9,
               owner=CURL),
        packet(response_wire("www.example.com", "A", 7, cnames=["cdn.example.net"],
                             addresses=["192.0.2.7"]),
               time_ns=T0 + 1 * S + 4 * MS, cookie=9, outbound=False),
        sev(Kind.CONNECT, 2, 1, owner=CURL, peer_addr="192.0.2.7", peer_port=443,
            direction=Direction.OUTBOUND),
        sev(Kind.ESTABLISHED, 2.05, 1, owner=CURL, local_addr="10.0.0.1", local_port=40000,
            peer_addr="192.0.2.7", peer_port=443, direction=Direction.OUTBOUND),
        sev(Kind.SOCK_STATS, 2.5, 1, counters=Counters(4, 400, 150, 4, 5000, 4800)),
        sev(Kind.TCP_CLOSE, 3, 1, old_state=4, new_state=7),
        sev(Kind.CONNECT, 4, 2, owner=CURL, peer_addr="127.0.0.1", peer_port=80,
            direction=Direction.OUTBOUND),
        sev(Kind.ESTABLISHED, 4.01, 2, owner=CURL, local_addr="127.0.0.1", local_port=40001,
            peer_addr="127.0.0.1", peer_port=80, direction=Direction.OUTBOUND),
        sev(Kind.ESTABLISHED, 4.02, 51, local_addr="127.0.0.1", local_port=80,
            peer_addr="127.0.0.1", peer_port=40001, direction=Direction.INBOUND,
            owner=Owner(200, 200, 33, 33, 8, "nginx", joined=True)),
        sev(Kind.TCP_CLOSE, 5, 51, old_state=9, new_state=7),
        sev(Kind.TCP_CLOSE, 5.1, 2, old_state=6, new_state=7),
        sev(Kind.CONNECT, 600, 3, owner=CURL, peer_addr="192.0.2.99", peer_port=443,
            direction=Direction.OUTBOUND),
        sev(Kind.ESTABLISHED, 600.1, 3, owner=CURL, local_addr="10.0.0.1", local_port=40002,
            peer_addr="192.0.2.99", peer_port=443, direction=Direction.OUTBOUND),
        sev(Kind.TCP_CLOSE, 601, 3, old_state=4, new_state=7),
    ]
    for e in events:
        w.write(e)
    w.close()


def run(capsys, *argv: str) -> tuple[int, str, str]:  # noqa: ANN001
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_graph_from_recording_json(tmp_path, capsys) -> None:
    rec = tmp_path / "events.jsonl"
    write_recording(rec)
    rc, out, err = run(capsys, "graph", "--recording", str(rec))
    assert rc == 0, err
    doc = json.loads(out)
    snap = from_json(doc)
    edges = {(e.kind.value, e.source, e.target): e for e in snap.edges}
    assert ("resolved", "process:100:curl", "domain:www.example.com") in edges
    assert ("cname_of", "domain:www.example.com", "domain:cdn.example.net") in edges
    assert ("resolves_to", "domain:cdn.example.net", "remote_endpoint:192.0.2.7") in edges
    conn = edges[("connected_to", "process:100:curl", "remote_endpoint:192.0.2.7:443/tcp")]
    assert conn.bytes_received == 4800
    assert dict(conn.attrs)["domain"] == "www.example.com"  # the DNS stage named the flow
    assert ("connected_to", "process:100:curl", "process:200:nginx") in edges
    assert not any(e.target.startswith("remote_endpoint:127.0.0.1") for e in snap.edges)
    assert "nodes" in err and "edges" in err


def test_missing_recording_is_a_clear_error(tmp_path, capsys) -> None:
    rc, out, err = run(capsys, "graph", "--recording", str(tmp_path / "nope.jsonl"))
    assert rc == 1 and out == "" and "cannot read the recording" in err


def test_graph_from_recording_since_and_dot(tmp_path, capsys) -> None:
    rec = tmp_path / "events.jsonl"
    write_recording(rec)
    rc, out, _ = run(capsys, "graph", "--recording", str(rec), "--since", "5m")
    assert rc == 0
    snap = from_json(json.loads(out))
    targets = {e.target for e in snap.edges if e.kind.value == "connected_to"}
    assert targets == {"remote_endpoint:192.0.2.99:443/tcp"}  # the last event is at +601s
    rc, out, _ = run(capsys, "graph", "--recording", str(rec), "--format", "dot")
    assert rc == 0 and out.startswith("digraph otelpeers {") and "cdn.example.net" in out


def test_bad_duration_is_a_clear_usage_error(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["graph", "--since", "5 fortnights", "--recording", "x"])
    assert exc.value.code == 2
    assert "e.g. 30s, 5m, 2h" in capsys.readouterr().err
    assert parse_duration("30s") == 30 * S and parse_duration("2h") == 7200 * S
    assert parse_duration("250ms") == 250 * MS and parse_duration("1.5m") == 90 * S
    for bad in ("", "5", "-5s", "0s", "5y", "400d"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_live_graph_through_the_socket(tmp_path, capsys) -> None:
    g = RelationshipGraph()
    GraphSink(g).consume(Outputs(process=[ProcessEvent(
        Kind.FILE_OPEN, T0, 100, 100, 1000, 1000, 7, "curl", path="/etc/ssl/private/key.pem")]))
    path = str(tmp_path / "g.sock")
    with start_graph_server(g, path):
        rc, out, _ = run(capsys, "graph", "--socket", path)
        assert rc == 0
        assert from_json(json.loads(out)) == g.snapshot()
        rc, out, _ = run(capsys, "graph", "--socket", path, "--format", "dot")
        assert rc == 0 and "key.pem" in out and "accessed_file" in out


def test_live_graph_without_agent_names_the_fix(tmp_path, capsys) -> None:
    rc, out, err = run(capsys, "graph", "--socket", str(tmp_path / "none.sock"))
    assert rc == 1 and out == ""
    assert "no otelpeers agent serves the graph" in err and "otelpeers run" in err


def test_live_graph_reply_that_is_not_a_graph(tmp_path, capsys) -> None:
    path = str(tmp_path / "other.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    import threading

    def answer() -> None:
        conn, _ = srv.accept()
        conn.recv(4096)
        conn.sendall(b'{"version": 99, "nodes": []}\n')
        conn.close()

    t = threading.Thread(target=answer)
    t.start()
    rc, _, err = run(capsys, "graph", "--socket", path, "--format", "dot")
    t.join()
    srv.close()
    assert rc == 1 and "version 99 is not supported" in err

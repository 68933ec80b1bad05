"""Live terminal view: aggregation and rendering."""

from __future__ import annotations

import io
from dataclasses import replace

from otelpeers.events import Counters, Direction
from otelpeers.otel.liveview import CLEAR_HOME, LiveView, PeerRow, PeerTable, render
from otelpeers.pipeline import Outputs
from otelpeers.testing.flows import flow, owner


def c(out, inn):
    return Counters(payload_out=out, payload_in=inn)


def test_aggregates_per_process_and_peer_with_live_flows():
    t = PeerTable()
    t.add_completed([flow("1", counters=c(100, 1000)), flow("2", counters=c(50, 500)),
                     flow("3", proc=owner(9, "wget"), counters=c(1, 1)),
                     flow("4", direction=Direction.INBOUND, proc=owner(7, "nginx"),
                          peer="10.0.0.7", peer_port=5555, local_port=8080,
                          counters=c(9000, 10))])
    live = [flow("5", counters=c(10, 10), peer_port=443)]
    rows = t.snapshot(live)
    assert rows[0] == PeerRow("nginx", "in", "10.0.0.7 -> :8080", "tcp", 9000, 10, 1, 0)
    assert rows[1] == PeerRow("curl", "out", "93.184.216.34:443", "tcp", 160, 1510, 3, 1)
    assert rows[2].process == "wget"
    assert len(t) == 3  # live flows are not stored
    assert t.snapshot()[1].connections == 2


def test_table_is_bounded():
    t = PeerTable(max_entries=5)
    t.add_completed(flow(f"{i + 1:x}", peer=f"10.0.0.{i}") for i in range(12))
    assert len(t) == 5 and t.evicted == 7
    assert {r.peer for r in t.snapshot()} == {f"10.0.0.{i}:443" for i in range(7, 12)}


def test_render_fits_width_and_refreshes_in_place():
    rows = [PeerRow("a-very-long-process-name", "out", "[2001:db8::1234:5678:9abc]:443",
                    "tcp", 5 * 1024**3, 1536, 12, 2),
            PeerRow("dns", "out", "10.0.0.53:53", "udp", 40, 120, 3)]
    for width in (40, 80, 200):
        text = render(rows, width)
        assert text.startswith(CLEAR_HOME)
        lines = text[len(CLEAR_HOME):].splitlines()
        assert all(len(line) <= width for line in lines), width
    text = render(rows, 120)
    assert "5.0 GiB" in text and "1.5 KiB" in text and "12*" in text and "40 B" in text
    assert "a-very-long-pro" in text and "10.0.0.53:53" in text
    assert "(no flows yet)" in render([], 80)


def test_liveview_writes_a_screen():
    out = io.StringIO()
    now = [100.0]
    v = LiveView(out, refresh_s=2.0, clock=lambda: now[0])
    v.consume(Outputs(flows=[flow("1", counters=c(2048, 0))]))  # first round: a screen
    assert out.getvalue().count(CLEAR_HOME) == 1 and "2.0 KiB" in out.getvalue()
    open_flow = replace(flow("2", counters=c(4096, 0)), complete=False)
    v.consume(Outputs(progress=[open_flow]))  # within refresh_s: no new screen
    assert out.getvalue().count(CLEAR_HOME) == 1
    now[0] += 2.5
    v.consume(Outputs(progress=[replace(open_flow, counters=c(8192, 0))]))
    screen = out.getvalue().split(CLEAR_HOME)[-1]
    # the completed 2 KiB plus the open flow's latest 8 KiB, one of two connections open
    assert "10.0 KiB" in screen and "2*" in screen
    v.consume(Outputs(flows=[replace(open_flow, counters=c(9000, 0), complete=True)]))
    assert v.counters()["open_flows_live"] == 0

"""The process stage: sensitive opens attached to the owner's later flows, bounded."""

from __future__ import annotations

from otelpeers.config import ProcessConfig
from otelpeers.events import Counters, Direction, Kind, Owner, ProcessEvent
from otelpeers.flows import CloseReason, FlowRecord
from otelpeers.pipeline import Outputs
from otelpeers.process.stage import ProcessStage

OWNER = Owner(10, 10, 0, 0, 1, "curl")


def opened(tgid: int, t: int, path: str) -> ProcessEvent:
    return ProcessEvent(kind=Kind.FILE_OPEN, time_ns=t, tgid=tgid, pid=tgid, uid=0, gid=0,
                        cgroup_id=1, comm="curl", path=path)


def flow(start: int, owner: Owner | None = OWNER) -> FlowRecord:
    return FlowRecord(flow_id="1", cookie=1, transport="tcp", family=2, sock_type=1,
                      direction=Direction.OUTBOUND, local_addr="10.0.0.1", local_port=1,
                      peer_addr="10.0.0.2", peer_port=443, start_ns=start, end_ns=start + 5,
                      owner=owner, netns_cookie=0, counters=Counters(), tcp=None,
                      close_reason=CloseReason.CLOSED)


def feed(st: ProcessStage, *events: ProcessEvent) -> Outputs:
    out = Outputs()
    for ev in events:
        st.on_event(ev, out)
    return out


def test_files_before_the_flow_are_attached() -> None:
    st = ProcessStage(ProcessConfig(), table=None)
    feed(st, opened(10, 100, "/root/.ssh/id_rsa"), opened(10, 300, "/etc/shadow"),
         opened(99, 50, "/etc/shadow"))  # after the flow began; another process
    out = Outputs(flows=[flow(200), flow(200, owner=None)])
    st.process(out)
    assert [f.path for f in out.flows[0].files] == ["/root/.ssh/id_rsa"]
    assert out.flows[1].files == ()


def test_per_process_and_process_count_bounds() -> None:
    st = ProcessStage(ProcessConfig(max_file_events_per_process=3), table=None,
                      max_processes_with_files=5)
    feed(st, *(opened(10, i, f"/etc/ssh/k{i}") for i in range(10)))
    (r,) = st.annotate([flow(100)])
    assert [f.path for f in r.files] == ["/etc/ssh/k7", "/etc/ssh/k8", "/etc/ssh/k9"]
    feed(st, *(opened(tgid, 1, "/etc/shadow") for tgid in range(100, 110)))
    assert st.stats["file_processes_evicted"] == 6  # 11 processes seen, 5 kept
    assert st.annotate([flow(100)])[0].files == ()  # pid 10 was the least recent


def test_every_process_event_is_an_output() -> None:
    st = ProcessStage(ProcessConfig(), table=None)
    ev = ProcessEvent(kind=Kind.EXEC, time_ns=1, tgid=5, pid=5, uid=0, gid=0, cgroup_id=1,
                      comm="sh", path="/bin/sh")
    assert feed(st, ev).process == [ev] and st.stats["exec"] == 1

"""The process stage: sensitive opens attached to the owner's later flows, bounded."""

from __future__ import annotations

from otelpeers.config import ProcessConfig
from otelpeers.events import Counters, Direction, Kind, Owner, ProcessEvent
from otelpeers.flows import CloseReason, FlowRecord
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


def test_files_before_the_flow_are_attached() -> None:
    st = ProcessStage(ProcessConfig(), table=None)
    st.on_process_event(opened(10, 100, "/root/.ssh/id_rsa"))
    st.on_process_event(opened(10, 300, "/etc/shadow"))  # after the flow began
    st.on_process_event(opened(99, 50, "/etc/shadow"))  # another process
    (r,) = st.annotate([flow(200)])
    assert [f.path for f in r.files] == ["/root/.ssh/id_rsa"]
    assert st.annotate([flow(200, owner=None)])[0].files == ()


def test_per_process_and_process_count_bounds() -> None:
    st = ProcessStage(ProcessConfig(max_file_events_per_process=3), table=None,
                      max_processes_with_files=5)
    for i in range(10):
        st.on_process_event(opened(10, i, f"/etc/ssh/k{i}"))
    (r,) = st.annotate([flow(100)])
    assert [f.path for f in r.files] == ["/etc/ssh/k7", "/etc/ssh/k8", "/etc/ssh/k9"]
    for tgid in range(100, 110):
        st.on_process_event(opened(tgid, 1, "/etc/shadow"))
    assert st.stats["file_processes_evicted"] == 6  # 11 processes seen, 5 kept
    assert st.annotate([flow(100)])[0].files == ()  # pid 10 was the least recent


def test_listeners_see_every_process_event() -> None:
    st = ProcessStage(ProcessConfig(), table=None)
    seen: list[ProcessEvent] = []
    st.listeners.append(seen.append)
    ev = ProcessEvent(kind=Kind.EXEC, time_ns=1, tgid=5, pid=5, uid=0, gid=0, cgroup_id=1,
                      comm="sh", path="/bin/sh")
    st.on_process_event(ev)
    assert seen == [ev] and st.stats["exec"] == 1

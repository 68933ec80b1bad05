"""The compiler child: bcc compiles and loads the sensors here, the agent gets file descriptors.

`python -m otelpeers.kernel.compiler FD` runs as a short-lived child of the agent (see
KernelSensors in loader.py). It reads one request from the unix socket FD (the C text, the
cflags, the programs to load with their expected attach types), compiles and loads with bcc,
and answers with the file descriptors (SCM_RIGHTS) of every map, every program and every
tracepoint perf event bcc attached, then exits without letting bcc clean up, because the
descriptors now belong to the agent: maps and programs live while it holds them, and a
tracepoint stays attached while its perf event fd is open. So LLVM, clang and libbcc are
mapped only in this child for about a second, never in the long-running agent.

Protocol (SOCK_SEQPACKET, one message each way, then an ack):
    agent -> child  {"text": str, "cflags": [str], "programs": [[name, bcc type, attach]]}
    child -> agent  {"maps": [names], "programs": [names], "tracepoints": [names]} + fds,
                    in that order; or {"error": message, "stage": compile|tracepoint|program}
    agent -> child  b"ok" (the child exits; its copies of the fds close with it)
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import traceback
from typing import Any

MAX_MESSAGE = 1 << 20
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _send(sock: socket.socket, msg: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(msg).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.sendall(data)


def _table_names(b: Any) -> list[str]:
    """Every map of the module (bcc's Python API only opens the ones asked for by name)."""
    from bcc import lib  # type: ignore[import-not-found]

    lib.bpf_num_tables.restype = ctypes.c_size_t
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    n = lib.bpf_num_tables(b.module)
    return [lib.bpf_table_name(b.module, i).decode() for i in range(n)]


def build(request: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """Compile and load; (answer, fds) or raises with the stage that failed."""
    try:
        from bcc import BPF, lib
    except ImportError as exc:
        raise StageError("import", str(exc)) from exc
    try:
        b = BPF(text=request["text"].encode(), cflags=list(request["cflags"]))
    except Exception as exc:
        stage = "tracepoint" if "Failed to load BPF program" in str(exc) else "compile"
        raise StageError(stage, str(exc)) from exc
    maps, fds = [], []
    for name in _table_names(b):
        fd = lib.bpf_table_fd(b.module, name.encode())
        if fd >= 0:
            maps.append(name)
            fds.append(fd)
    programs = []
    for name, prog_type, attach in request["programs"]:
        try:
            fn = b.load_func(name.encode(), getattr(BPF, prog_type), attach_type=attach)
        except Exception as exc:
            raise StageError("program", str(exc), name) from exc
        programs.append(name)
        fds.append(fn.fd)
    tracepoints = []
    for tp, perf_fd in b.tracepoint_fds.items():
        tracepoints.append(tp.decode() if isinstance(tp, bytes) else str(tp))
        fds.append(perf_fd)
    for name, fn in b.funcs.items():  # the tracepoint programs themselves
        key = name.decode() if isinstance(name, bytes) else str(name)
        if key not in programs:
            programs.append(key)
            fds.append(fn.fd)
    n = len(request["programs"])
    answer = {"maps": maps, "programs": programs[:n], "tracepoints": tracepoints,
              "tracepoint_programs": programs[n:]}
    return answer, fds


class StageError(Exception):
    def __init__(self, stage: str, message: str, program: str = "") -> None:
        super().__init__(message)
        self.stage = stage
        self.program = program


def main(argv: list[str]) -> int:
    _die_with_parent()
    sock = socket.socket(fileno=int(argv[1]))
    try:
        request = json.loads(sock.recv(MAX_MESSAGE))
        try:
            answer, fds = build(request)
        except StageError as exc:
            _send(sock, {"error": str(exc), "stage": exc.stage, "program": exc.program})
            return 1
        except Exception as exc:  # anything else still reaches the agent as a message
            _send(sock, {"error": f"{type(exc).__name__}: {exc}", "stage": "internal",
                         "program": "", "traceback": traceback.format_exc()[-2000:]})
            return 1
        _send(sock, answer, fds)
        sock.recv(16)  # the agent holds its copies now (or is gone)
        return 0
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


if __name__ == "__main__":
    # os._exit: no atexit handlers, no destructors. bcc's cleanup would disable the
    # tracepoint perf events, which the agent now shares.
    os._exit(main(sys.argv))

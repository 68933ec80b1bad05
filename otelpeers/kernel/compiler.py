"""The compiler child: bcc compiles and loads the sensors here, the agent gets file descriptors.

`python -m otelpeers.kernel.compiler FD` runs as a short-lived child of the agent (see
KernelSensors in loader.py). It reads one request from the unix socket FD (the C text, the
cflags, the programs to load with their expected attach types), compiles and loads with bcc,
and answers with the file descriptors (SCM_RIGHTS) of every map, every program and every
tracepoint perf event bcc attached, then exits without letting bcc clean up, because the
descriptors now belong to the agent: maps and programs live while it holds them, and a
tracepoint stays attached while its perf event fd is open. So LLVM, clang and libbcc are
mapped only in this child for about a second, never in the long-running agent.

With a program cache directory set (kernel.program_cache), the child first looks there
for an earlier compile of the same text, cflags and kernel (progcache.py) and loads it
without bcc (objload.py); only a miss compiles, and records what it compiled for next time.

Protocol (SOCK_SEQPACKET, one message each way, then an ack):
    agent -> child  {"text": str, "cflags": [str], "programs": [[name, bcc type, attach]],
                     "cache_dir": str ("" for none)}
    child -> agent  {"maps": [names], "programs": [names], "tracepoints": [names],
                     "tracepoint_programs": [names], "cache": hit|compiled,
                     "cache_kept": bool (this compile was written for the next start),
                     "cache_problems": [messages for the agent's log]} + fds, in that
                    order; or {"error": message, "stage": compile|tracepoint|program}
    agent -> child  b"ok" (the child exits; its copies of the fds close with it)
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import socket
import sys
import traceback
from typing import Any

from otelpeers.kernel import bpfsys, objload, progcache

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


def build(request: dict[str, Any]) -> tuple[dict[str, Any], list[int], Any]:
    """Compile and load; (answer, fds, bcc's module object) or raises with the stage that
    failed."""
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
    return answer, fds, b


_MAP_OF_MAPS = re.compile(r'BPF_(?:ARRAY|HASH)_OF_MAPS\(\s*(\w+)\s*,\s*"(\w+)"')
TRACEPOINT_PREFIX = "tracepoint__"


def capture(b: Any, request: dict[str, Any], answer: dict[str, Any],
            fds: list[int], key: str) -> progcache.Entry:
    """What a later start needs to load the same programs without compiling (progcache)."""
    from bcc import BPF, lib

    inner_of = dict(_MAP_OF_MAPS.findall(request["text"]))
    map_defs, fd_index = [], {}
    for i, (name, fd) in enumerate(zip(answer["maps"], fds, strict=False)):
        info = bpfsys.map_info(fd)
        inner = inner_of.get(name, "")
        of_maps = info.map_type in (bpfsys.MAP_TYPE_ARRAY_OF_MAPS, bpfsys.MAP_TYPE_HASH_OF_MAPS)
        if of_maps and not inner:
            raise progcache.CacheRefused(f"map {name}: its template map is not known")
        map_defs.append(progcache.MapDef(name, info.map_type, info.key_size, info.value_size,
                                         info.max_entries, info.flags, inner))
        fd_index[fd] = i
    lib.bpf_function_start.restype = ctypes.c_void_p
    lib.bpf_function_size.restype = ctypes.c_size_t
    lib.bpf_module_license.restype = ctypes.c_char_p
    lib.bpf_module_kern_version.restype = ctypes.c_uint
    license_ = (lib.bpf_module_license(b.module) or b"GPL").decode()
    kern_version = int(lib.bpf_module_kern_version(b.module))
    kinds = {name: (getattr(BPF, t), max(attach, 0)) for name, t, attach in request["programs"]}
    progs = []
    for name in answer["programs"] + answer["tracepoint_programs"]:
        start = lib.bpf_function_start(b.module, name.encode())
        size = lib.bpf_function_size(b.module, name.encode())
        if not start or not size:
            raise progcache.CacheRefused(f"program {name}: bcc has no instructions for it")
        insns = ctypes.string_at(start, size)
        if name in kinds:
            prog_type, attach, tracepoint = *kinds[name], ""
        elif name.startswith(TRACEPOINT_PREFIX):
            prog_type, attach = BPF.TRACEPOINT, 0
            tracepoint = name[len(TRACEPOINT_PREFIX):].replace("__", ":", 1)
        else:
            raise progcache.CacheRefused(f"program {name}: not a cgroup or tracepoint program")
        progs.append(progcache.ProgDef(name, prog_type, attach, license_, kern_version, insns,
                                       progcache.relocations(insns, fd_index), tracepoint))
    return progcache.Entry(key, tuple(map_defs), tuple(progs))


class StageError(Exception):
    def __init__(self, stage: str, message: str, program: str = "") -> None:
        super().__init__(message)
        self.stage = stage
        self.program = program


def from_cache(request: dict[str, Any], key: str
               ) -> tuple[dict[str, Any] | None, list[int], str]:
    """(answer, fds, problem): the answer from the program cache, or None; problem is ""
    when there was nothing to use (no cache, no entry), else what was wrong with the entry
    (the agent reports it)."""
    directory = request.get("cache_dir") or ""
    if not directory:
        return None, [], ""
    try:
        entry = progcache.read(directory, key)
    except progcache.NoEntry:
        return None, [], ""
    except progcache.CacheRefused as exc:
        return None, [], f"entry not used: {exc}"
    try:
        answer, fds = objload.instantiate(entry)
    except progcache.CacheRefused as exc:
        progcache.discard(directory, key)  # compiled again by the caller, and rewritten
        return None, [], f"entry did not load and was removed: {exc}"
    return answer, fds, ""


def compile_and_keep(request: dict[str, Any], key: str
                     ) -> tuple[dict[str, Any], list[int], bool, str]:
    """Compile with bcc; record the result for the next start where a cache is set.
    (answer, fds, kept: written to the cache, problem: why not written, "" when no cache)."""
    answer, fds, b = build(request)
    directory = request.get("cache_dir") or ""
    if not directory:
        return answer, fds, False, ""
    try:
        progcache.write(directory, capture(b, request, answer, fds, key))
    except (progcache.CacheRefused, OSError) as exc:
        return answer, fds, False, f"not written: {exc}"
    return answer, fds, True, ""


def main(argv: list[str]) -> int:
    _die_with_parent()
    sock = socket.socket(fileno=int(argv[1]))
    try:
        request = json.loads(sock.recv(MAX_MESSAGE))
        try:
            key = progcache.cache_key(request["text"], request["cflags"])
            cached, fds, unused = from_cache(request, key)
            if cached is not None:
                answer = cached | {"cache": "hit"}
            else:
                answer, fds, kept, unwritten = compile_and_keep(request, key)
                answer |= {"cache": "compiled", "cache_kept": kept,
                           "cache_problems": [p for p in (unused, unwritten) if p]}
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

"""The C header and its two Python mirrors (ctypes and struct layouts) must agree on every
offset and size. This is the main guard of the kernel/user ABI: without a C compiler it
skips on a developer machine but fails in CI (CI=true)."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from otelpeers import abi, events


def _ctypes_fields(cls: type[ctypes.Structure], prefix: str = "") -> list[tuple[str, int]]:
    """(C designator, offset) of every field, nested structs walked."""
    out: list[tuple[str, int]] = []
    for name, typ, *_ in cls._fields_:
        off = getattr(cls, name).offset
        out.append((prefix + name, off))
        if isinstance(typ, type) and issubclass(typ, ctypes.Structure):
            out += [(n, off + o) for n, o in _ctypes_fields(typ, f"{prefix}{name}.")]
    return out


def _c_layout(tmp_path: Path) -> dict[str, int]:
    """Compile a program that prints sizeof/offsetof of every mirrored struct and field."""
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/types.h>",
             f'#include "{abi.HEADER_PATH}"', "int main(void) {"]
    names: set[tuple[str, str]] = set()
    for cname, cls in abi.CTYPES.items():
        lines.append(f'printf("{cname} %zu\\n", sizeof(struct {cname}));')
        names.update((cname, n) for n, _ in _ctypes_fields(cls))
    for layout in abi.LAYOUTS:
        names.update((layout.cname, n) for n in layout.offsets())
    for cname, fname in sorted(names):
        lines.append(f'printf("{cname}.{fname} %zu\\n", offsetof(struct {cname}, {fname}));')
    for const in ("OP_EV_MAX", "OP_ABI_VERSION", "OP_DNS_PAYLOAD_CAP", "OP_DROP_SLOTS",
                  "OP_DROP_PEER_TABLE_FULL", "OP_DROP_SOCK_EVICTED", "OP_F_OWNER",
                  "OP_F_OWNER_JOINED", "OP_F_RELEASED", "OP_F_ADOPTED", "OP_F_KERNEL",
                  "OP_F_TCP_INFO", "OP_S_TCP_TRACKED",
                  "OP_S_TCP_CLOSED", "OP_S_CONN", "OP_S_ESTABLISHED", "OP_S_ENDED",
                  "OP_AGG_OVERFLOW_BYTE", "OP_DIR_OUTBOUND", "OP_DIR_INBOUND"):
        lines.append(f'printf("{const} %d\\n", (int)({const}));')
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run(["cc", "-o", str(exe), str(src)], check=True, capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    if shutil.which("cc") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no C compiler in CI: the ABI check cannot run; install gcc "
                        "(scripts/setup.sh does)")
        pytest.skip("no C compiler")
    return _c_layout(tmp_path_factory.mktemp("abi"))


def test_ctypes_mirrors_agree_with_the_header(c_layout: dict[str, int]) -> None:
    for cname, cls in abi.CTYPES.items():
        assert c_layout[cname] == ctypes.sizeof(cls), cname
        for fname, off in _ctypes_fields(cls):
            assert c_layout[f"{cname}.{fname}"] == off, f"{cname}.{fname}"


def test_struct_layouts_agree_with_the_header(c_layout: dict[str, int]) -> None:
    """The struct formats the hot paths decode with: every field, padding included."""
    for layout in abi.LAYOUTS:
        assert c_layout[layout.cname] == layout.size, layout.cname
        for fname, off in layout.offsets().items():
            assert c_layout[f"{layout.cname}.{fname}"] == off, f"{layout.cname}.{fname}"
        # and the layout covers the struct to its end (no field forgotten at the tail)
        assert layout.size == ctypes.sizeof(abi.CTYPES[layout.cname])


def test_constants_agree_with_the_header(c_layout: dict[str, int]) -> None:
    assert c_layout["op_event"] == abi.EVENT_SIZE
    assert c_layout["OP_EV_MAX"] == abi.EVENT_TYPE_SLOTS
    assert c_layout["OP_ABI_VERSION"] == abi.ABI_VERSION
    assert c_layout["OP_DNS_PAYLOAD_CAP"] == abi.DNS_PAYLOAD_CAP
    assert c_layout["OP_DROP_SLOTS"] == abi.DROP_SLOTS
    assert c_layout["OP_DROP_PEER_TABLE_FULL"] == abi.DROP_PEER_TABLE_FULL
    assert c_layout["OP_DROP_SOCK_EVICTED"] == abi.DROP_SOCK_EVICTED
    for name in ("F_OWNER", "F_OWNER_JOINED", "F_RELEASED", "F_ADOPTED", "F_KERNEL",
                 "F_TCP_INFO", "S_TCP_TRACKED",
                 "S_TCP_CLOSED", "S_CONN", "S_ESTABLISHED", "S_ENDED", "AGG_OVERFLOW_BYTE"):
        assert c_layout[f"OP_{name}"] == getattr(abi, name), name
    assert c_layout["OP_DIR_OUTBOUND"] == abi.Direction.OUTBOUND
    assert c_layout["OP_DIR_INBOUND"] == abi.Direction.INBOUND


def test_event_types_match_header() -> None:
    text = abi.HEADER_PATH.read_text()
    declared = dict(re.findall(r"OP_EV_([A-Z_]+) = (\d+)", text))
    declared.pop("MAX")
    assert {k: int(v) for k, v in declared.items()} == {t.name: t.value for t in abi.EventType}


def test_event_kinds_are_derived_from_the_abi() -> None:
    """events.Kind is EventType plus the kinds made in user space, never re-listed."""
    for t in abi.EventType:
        assert events.Kind[t.name] == t.value
    user = {k.name: k.value for k in events.Kind if k.name not in abi.EventType.__members__}
    assert user == events.USER_KINDS
    assert min(user.values()) > max(abi.EventType)  # no collision with kernel types

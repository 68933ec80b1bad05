"""The C header and its ctypes mirror must agree on every offset and size."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from otelpeers import abi

STRUCTS = {
    "op_owner": abi.COwner,
    "op_counters": abi.CCounters,
    "op_event": abi.CEvent,
    "op_dns_event": abi.CDnsEvent,
    "op_proc_event": abi.CProcEvent,
    "op_path_prefix": abi.CPathPrefix,
    "op_basename": abi.CBasename,
}


def _c_layout(tmp_path: Path) -> dict[str, int]:
    """Compile a program that prints sizeof/offsetof of every mirrored struct."""
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/types.h>",
             f'#include "{abi.HEADER_PATH}"', "int main(void) {"]
    for cname, pycls in STRUCTS.items():
        lines.append(f'printf("{cname} %zu\\n", sizeof(struct {cname}));')
        for fname, *_ in pycls._fields_:
            lines.append(f'printf("{cname}.{fname} %zu\\n", offsetof(struct {cname}, {fname}));')
    lines.append('printf("OP_EV_MAX %d\\n", OP_EV_MAX);')
    lines.append('printf("OP_ABI_VERSION %d\\n", OP_ABI_VERSION);')
    lines.append('printf("OP_DNS_PAYLOAD_CAP %d\\n", OP_DNS_PAYLOAD_CAP);')
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run(["cc", "-o", str(exe), str(src)], check=True, capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_header_and_mirror_agree(tmp_path: Path) -> None:
    c = _c_layout(tmp_path)
    for cname, pycls in STRUCTS.items():
        assert c[cname] == ctypes.sizeof(pycls), cname
        for fname, *_ in pycls._fields_:
            assert c[f"{cname}.{fname}"] == getattr(pycls, fname).offset, f"{cname}.{fname}"
    assert c["op_event"] == abi.EVENT_SIZE
    assert c["OP_EV_MAX"] == abi.EVENT_TYPE_SLOTS
    assert c["OP_ABI_VERSION"] == abi.ABI_VERSION
    assert c["OP_DNS_PAYLOAD_CAP"] == abi.DNS_PAYLOAD_CAP


def test_event_types_match_header() -> None:
    text = abi.HEADER_PATH.read_text()
    declared = dict(re.findall(r"OP_EV_([A-Z_]+) = (\d+)", text))
    declared.pop("MAX")
    assert {k: int(v) for k, v in declared.items()} == {t.name: t.value for t in abi.EventType}

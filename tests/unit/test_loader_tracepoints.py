"""The kernel-reply probes are built only where the tracepoints have the fields they read."""

from __future__ import annotations

from pathlib import Path

from otelpeers.kernel.loader import kernel_reply_tracepoints

RESET_6_18 = """name: tcp_send_reset
format:
\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[28];\toffset:60;\tsize:28;\tsigned:0;
"""
# Linux 6.1 (Debian 12): the same tracepoint, IPv4/IPv6 addresses apart, no reason.
RESET_6_1 = """name: tcp_send_reset
format:
\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
"""
ICMP = """name: icmp_send
format:
\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int type;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int code;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u8 saddr[4];\toffset:24;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u16 sport;\toffset:32;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:34;\tsize:2;\tsigned:0;
"""


def tracefs(root: Path, reset: str | None, icmp: str | None) -> tuple[str, ...]:
    for name, text in (("tcp/tcp_send_reset", reset), ("icmp/icmp_send", icmp)):
        if text is not None:
            (root / name).mkdir(parents=True)
            (root / name / "format").write_text(text)
    return (str(root / "missing"), str(root))


def test_this_kernels_layout_builds_both(tmp_path: Path) -> None:
    assert kernel_reply_tracepoints(tracefs(tmp_path, RESET_6_18, ICMP)) == (True, True)


def test_older_reset_layout_is_left_out_not_a_compile_error(tmp_path: Path) -> None:
    assert kernel_reply_tracepoints(tracefs(tmp_path, RESET_6_1, ICMP)) == (False, True)


def test_missing_tracepoints_are_left_out(tmp_path: Path) -> None:
    assert kernel_reply_tracepoints(tracefs(tmp_path, None, None)) == (False, False)

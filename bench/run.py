"""Run the otelpeers benchmarks: `python -m bench.run [--quick] [--only NAME] [--out DIR]`.

Needs root (BPF, network namespaces, sysctl). Writes DIR/latest.json and DIR/summary.md and
splices the summary into docs/benchmarks.md. Each benchmark is isolated: one that fails is
reported as such and the others still run. Nothing is left behind: namespaces are deleted,
agents stopped, kernel.bpf_stats_enabled restored, and the cgroup tree is checked at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import host
from bench.figures import BENCHES, Ctx
from bench.report import Figure, splice, summary_markdown

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (about 2 minutes)")
    ap.add_argument("--only", action="append", choices=sorted(BENCHES), metavar="NAME",
                    help=f"run only this benchmark (repeatable): {', '.join(BENCHES)}")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"), metavar="DIR",
                    help="where latest.json and summary.md go (default bench/results)")
    ap.add_argument("--agent-root", default=str(REPO), metavar="DIR",
                    help="checkout whose agent is measured (default: this one)")
    ap.add_argument("--no-doc", action="store_true",
                    help="do not update docs/benchmarks.md")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (BPF programs, network namespaces, sysctl); run "
              "`sudo make bench`", file=sys.stderr)
        return 2
    names = [n for n in BENCHES if not args.only or n in args.only]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    meta = host.host_meta() | {"mode": "quick" if args.quick else "full", "only": names}
    figures: list[Figure] = []
    details: dict[str, object] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="otelpeers-bench-") as tmp:
        ctx = Ctx(quick=args.quick, workdir=Path(tmp), agent_root=Path(args.agent_root))
        for name in names:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            t = time.monotonic()
            try:
                res = BENCHES[name](ctx)
            except Exception as exc:  # one broken benchmark must not hide the others
                errors[name] = f"{type(exc).__name__}: {exc}"
                details[name] = {"traceback": traceback.format_exc()[-4000:]}
                print(f"bench: {name} FAILED: {exc}", file=sys.stderr, flush=True)
                continue
            figures += res.figures
            details[name] = res.details | {"wall_s": round(time.monotonic() - t, 1)}
            print(f"bench: {name} done in {time.monotonic() - t:.0f} s", file=sys.stderr,
                  flush=True)
    leftover = host.attached_cgroup_programs()
    if leftover:
        errors["cleanup"] = f"otelp programs still attached after the run: {leftover}"
    meta["duration_s"] = round(time.monotonic() - t0)
    md = summary_markdown(meta, figures, errors, ctx.notes)
    result = {"meta": meta, "figures": [f.to_dict() for f in figures], "errors": errors,
              "notes": ctx.notes, "details": details}
    (out / "latest.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "summary.md").write_text(md)
    if not args.no_doc and DOC.exists():
        DOC.write_text(splice(DOC.read_text(), md))
    print(md)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

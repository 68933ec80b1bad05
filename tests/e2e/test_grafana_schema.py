"""The shipped dashboard against Grafana's own schema: npm @grafana/schema + TypeScript.

The dashboard JSON becomes `(<json>) satisfies Dashboard` in a .ts file, and each panel's
options, field config and queries are checked against that panel's and that datasource's
own types from the same package (string enums accepted as their literal values; panel
options may leave out what Grafana fills in with defaults). `tsc --noEmit` must pass.

Deliberately broken copies (a wrong type at the top, a missing required field, an unknown
variable type, a misspelled panel option, a query with the wrong type) go through the
same run and must each FAIL, so the check is proven able to fail.

Needs the checker installed by scripts/test-backends.sh (skipped without it, failed when
CI=true). No root needed.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grafana_dashboard as g
import pytest
from backends import GRAFANA_SCHEMA, tsc_binary

pytestmark = pytest.mark.e2e

COMPOSABLE = "@grafana/schema/dist/esm/raw/composable"
# panel type -> (module, has a FieldConfig type)
PANEL_TYPES = {
    "timeseries": ("timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen", True),
    "bargauge": ("bargauge/panelcfg/x/BarGaugePanelCfg_types.gen", False),
    "logs": ("logs/panelcfg/x/LogsPanelCfg_types.gen", False),
    "table": ("table/panelcfg/x/TablePanelCfg_types.gen", True),
}
# datasource plugin -> (module, query type)
QUERY_TYPES = {
    "prometheus": ("prometheus/dataquery/x/PrometheusDataQuery_types.gen", "PrometheusDataQuery"),
    "loki": ("loki/dataquery/x/LokiDataQuery_types.gen", "LokiDataQuery"),
    "tempo": ("tempo/dataquery/x/TempoDataQuery_types.gen", "TempoQuery"),
}

PRELUDE = f"""\
import type {{ Dashboard }} from "@grafana/schema";
{chr(10).join(f'import type * as panel_{k} from "{COMPOSABLE}/{m}";'
              for k, (m, _) in PANEL_TYPES.items())}
{chr(10).join(f'import type * as query_{k} from "{COMPOSABLE}/{m}";'
              for k, (m, _) in QUERY_TYPES.items())}

// JSON has no enums: a string enum member is written as its value.
type Lit<T> = T extends string ? `${{T}}` : T extends readonly (infer U)[] ? Lit<U>[]
  : T extends object ? {{ [K in keyof T]: Lit<T[K]> }} : T;
// Stored options may leave out anything Grafana fills in with its default.
type Loose<T> = T extends string ? `${{T}}` : T extends readonly (infer U)[] ? Loose<U>[]
  : T extends object ? {{ [K in keyof T]?: Loose<T[K]> }} : T;
"""


def typescript_for(dashboard: dict[str, Any]) -> str:
    """The dashboard as TypeScript that type-checks only if it follows Grafana's schema."""
    out = [PRELUDE, f"export const dashboard = ({json.dumps(dashboard, indent=1)}) "
                    "satisfies Dashboard;\n"]
    for i, p in enumerate(g.panels(dashboard)):
        kind = p["type"]
        if kind not in PANEL_TYPES:
            raise AssertionError(f"panel {p['title']!r}: type {kind!r} has no schema check "
                                 f"here; add it to PANEL_TYPES")
        out.append(f"export const p{i}_options = ({json.dumps(p.get('options', {}))}) "
                   f"satisfies Loose<panel_{kind}.Options>;\n")
        if PANEL_TYPES[kind][1]:
            custom = p.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
            out.append(f"export const p{i}_custom = ({json.dumps(custom)}) "
                       f"satisfies Loose<panel_{kind}.FieldConfig>;\n")
        for j, t in enumerate(p.get("targets", [])):
            plugin = (t.get("datasource") or p.get("datasource") or {}).get("type")
            if plugin not in QUERY_TYPES:
                raise AssertionError(f"panel {p['title']!r}: no schema for {plugin!r} queries")
            module, qtype = QUERY_TYPES[plugin]
            out.append(f"export const p{i}_q{j} = ({json.dumps(t)}) "
                       f"satisfies Lit<query_{plugin}.{qtype}>;\n")
    return "".join(out)


def _first_timeseries(d: dict[str, Any]) -> dict[str, Any]:
    return next(p for p in g.panels(d) if p["type"] == "timeseries")


# name -> (how the copy is broken, what tsc must say about it)
BROKEN: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "schema_version_string": (lambda d: d.update(schemaVersion="38"),
                              "not assignable to type 'number'"),
    "grid_without_width": (lambda d: d["panels"][1]["gridPos"].pop("w"),
                           "Property 'w' is missing"),
    "unknown_variable_type": (lambda d: d["templating"]["list"][0].update(type="datasrc"),
                              "not assignable to type 'VariableType'"),
    "misspelled_legend_option": (
        lambda d: _first_timeseries(d)["options"]["legend"].update(placment="bottom"),
        'placment"\' does not exist'),
    "legend_mode_not_an_enum_value": (
        lambda d: _first_timeseries(d)["options"]["legend"].update(displayMode="tabular"),
        "not assignable"),
    "query_expr_not_a_string": (lambda d: _first_timeseries(d)["targets"][0].update(expr=42),
                                "not assignable to type 'string'"),
}

_ERROR = re.compile(r"^(?P<file>[\w.]+)\(\d+,\d+\): error TS\d+: (?P<msg>.*)$")


def run_tsc(files: dict[str, str], workdir: Path) -> dict[str, list[str]]:
    """tsc --noEmit over the files (one run: it takes seconds); errors per file."""
    (workdir / "node_modules").symlink_to(GRAFANA_SCHEMA / "node_modules")
    for name, text in files.items():
        (workdir / name).write_text(text)
    # types: [] keeps tsc from loading every @types package it can find.
    (workdir / "tsconfig.json").write_text(json.dumps({
        "compilerOptions": {"noEmit": True, "strict": True, "skipLibCheck": True,
                            "types": [], "module": "commonjs", "moduleResolution": "node",
                            "target": "es2020"},
        "files": sorted(files)}))
    proc = subprocess.run([str(tsc_binary()), "-p", str(workdir)], cwd=workdir,
                          capture_output=True, text=True, timeout=300, check=False)
    errors: dict[str, list[str]] = {name: [] for name in files}
    current: list[str] | None = None
    for line in proc.stdout.splitlines():
        m = _ERROR.match(line)
        if m:
            current = errors.setdefault(m["file"], [])
            current.append(m["msg"])
        elif current is not None and line.startswith(" "):
            current[-1] += " " + line.strip()  # tsc continues long messages indented
    if proc.returncode not in (0, 1, 2) or (proc.returncode and not any(errors.values())):
        raise AssertionError(f"tsc failed to run (status {proc.returncode}): "
                             f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return errors


def test_dashboard_satisfies_grafana_schema_and_broken_copies_do_not(tmp_path: Path) -> None:
    dashboard = g.load()
    files = {"dashboard.ts": typescript_for(dashboard)}
    for name, (breaks, _) in BROKEN.items():
        broken = copy.deepcopy(dashboard)
        breaks(broken)
        files[f"broken_{name}.ts"] = typescript_for(broken)
    errors = run_tsc(files, tmp_path)

    assert errors["dashboard.ts"] == [], "the dashboard does not satisfy Grafana's schema:\n" \
        + "\n".join(errors["dashboard.ts"])
    for name, (_, expected) in BROKEN.items():
        got = errors[f"broken_{name}.ts"]
        assert got, f"the broken copy {name!r} passed the schema check"
        assert any(expected in e for e in got), f"{name}: tsc said {got}, not {expected!r}"


def test_typescript_covers_every_panel_and_query() -> None:
    dashboard = g.load()
    ts = typescript_for(dashboard)
    n_panels = len(list(g.panels(dashboard)))
    n_queries = len(list(g.queries(dashboard)))
    assert len(re.findall(r"_options = ", ts)) == n_panels
    assert len(re.findall(r"_q\d+ = ", ts)) == n_queries

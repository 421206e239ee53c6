"""``python -m benchmarks fastprof``: where the ``fast`` solver's time goes at N = 1e6.

Two measurements of ``solve(Scenario.default(devices=N, seed=0), solver="fast")``:

* **warm**: in one process, after a first solve; the unprofiled wall and CPU times of
  ``repeats`` solves (min and median), then the same solve under :mod:`cProfile` split into
  phases (of ``repeats`` profiled runs, the one with the median total);
* **first call**: in fresh processes, ``import sflam_opt`` plus the first ``solve()`` (the
  scenario is built in between and not counted), unprofiled (min and median of ``repeats``
  processes) and once profiled into the same phases plus the imports.

A phase is the time of the named calls made by ``solve`` or by ``run_fast`` (see
:data:`PHASES`); "other" is the rest of the total. Profiling adds a few percent.
This module only needs the standard library and sflam_opt, so that the child processes measure
sflam_opt's own import.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["PHASES", "draw", "first_call", "headlines", "phase_table", "report", "run", "warm"]

#: Devices and repeats per benchmark profile ("quick" is for CI).
PLANS: dict[str, tuple[int, int]] = {"all": (1_000_000, 5), "quick": (100_000, 2)}

#: Phase name -> (callers, callee): the calls of function ``callee`` made by any of ``callers``.
PHASES: dict[str, tuple[str, str]] = {
    "solver lookup (first call: imports every solver module)": ("solve", "solver_for"),
    "target check": ("solve", "target_infeasibility"),
    "reference (equal baseline)": ("run_fast", "reference"),
    "feasibility diagnosis": ("run_fast", "diagnose"),
    "bits problem setup": ("run_fast", "__init__"),
    "first continuous solve": ("run_fast", "_first_incumbent"),
    "Dinkelbach steps": ("run_fast", "run"),
    "polish": ("run_fast", "_polish"),
    "allocation from the split": ("solve_fast", "row_allocation"),
    "evaluate": ("solve", "evaluate"),
}

#: Sub-phases of "Dinkelbach steps" (same rule, callers inside the step).
STEP_PHASES: dict[str, tuple[str, str]] = {
    "  of which: level choice (lagrangian_bits)": ("step <listcomp>", "lagrangian_bits"),
    "  of which: continuous solves": ("step", "better"),
}


def _caller_times(stats: pstats.Stats, rules: Mapping[str, tuple[str, str]]) -> dict[str, float]:
    """Cumulative seconds of ``callee`` when called from ``caller``, per rule."""
    out = dict.fromkeys(rules, 0.0)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (_, _, callee), (_, _, _, _, callers) in raw.items():
        for (_, _, caller), (_, _, _, ct) in callers.items():
            for phase, (want_caller, want_callee) in rules.items():
                if callee == want_callee and caller in want_caller.split():
                    out[phase] += ct
    return out


def phase_table(stats: pstats.Stats, total_s: float) -> list[dict[str, Any]]:
    """Rows ``{"phase", "seconds", "share"}`` of one profiled solve, "other" and "total" last."""
    top = _caller_times(stats, PHASES)
    sub = _caller_times(stats, STEP_PHASES)
    rows = []
    for name, sec in top.items():
        rows.append({"phase": name, "seconds": sec, "share": sec / total_s})
        if name == "Dinkelbach steps":
            rows += [{"phase": k, "seconds": v, "share": v / total_s} for k, v in sub.items()]
    other = total_s - sum(top.values())
    rows.append({"phase": "other", "seconds": other, "share": other / total_s})
    rows.append({"phase": "total", "seconds": total_s, "share": 1.0})
    return rows


def _profiled_solve(scenario: Any) -> tuple[list[dict[str, Any]], Any]:
    from sflam_opt import solve

    prof = cProfile.Profile(time.perf_counter)
    t0 = time.perf_counter()
    prof.enable()
    res = solve(scenario, solver="fast")
    prof.disable()
    total = time.perf_counter() - t0
    return phase_table(pstats.Stats(prof), total), res


def _timed_solve(scenario: Any) -> tuple[float, float, Any]:
    from sflam_opt import solve

    w0, c0 = time.perf_counter(), time.process_time()
    res = solve(scenario, solver="fast")
    return time.perf_counter() - w0, time.process_time() - c0, res


def _total(rows: list[dict[str, Any]]) -> float:
    return float(rows[-1]["seconds"])


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values)}


def warm(devices: int, seed: int = 0, repeats: int = 5) -> dict[str, Any]:
    """Warm solves in this process: timings and the profile of median total."""
    from sflam_opt import Scenario

    scenario = Scenario.default(devices=devices, seed=seed)
    *_, res = _timed_solve(scenario)  # the first call is measured by first_call()
    walls, cpus = [], []
    for _ in range(repeats):
        w, c, res = _timed_solve(scenario)
        walls.append(w)
        cpus.append(c)
    tables = sorted((_profiled_solve(scenario)[0] for _ in range(repeats)), key=_total)
    rows = tables[(len(tables) - 1) // 2]  # the profiled run of median total (lower median)
    return {
        "devices": devices,
        "seed": seed,
        "repeats": repeats,
        "wall_s": _spread(walls),
        "cpu_s": _spread(cpus),
        "objective": res.objective,
        "status": res.status,
        "phases": rows,
    }


_CHILD = """
import json, sys, time
w0, c0 = time.perf_counter(), time.process_time()
import sflam_opt
imp_w, imp_c = time.perf_counter() - w0, time.process_time() - c0
from benchmarks import fast_profile as fp
scenario = sflam_opt.Scenario.default(devices=int(sys.argv[1]), seed=int(sys.argv[2]))
if sys.argv[3] == "profile":
    rows, res = fp._profiled_solve(scenario)
    print(json.dumps({"import_s": imp_w, "phases": rows}))
else:
    w, c, res = fp._timed_solve(scenario)
    print(json.dumps({"wall_s": imp_w + w, "cpu_s": imp_c + c, "import_s": imp_w,
                      "solve_s": w, "objective": res.objective}))
"""


def _child(devices: int, seed: int, mode: str) -> dict[str, Any]:
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(devices), str(seed), mode],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def first_call(devices: int, seed: int = 0, repeats: int = 3) -> dict[str, Any]:
    """``import sflam_opt`` plus the first solve, each in a fresh process."""
    runs = [_child(devices, seed, "time") for _ in range(repeats)]
    prof = _child(devices, seed, "profile")
    imp = prof["import_s"]
    rows = [{"phase": "import sflam_opt", "seconds": imp}, *prof["phases"]]
    total = imp + rows[-1]["seconds"]
    for row in rows:
        row["seconds"] = total if row["phase"] == "total" else row["seconds"]
        row["share"] = row["seconds"] / total
    return {
        "devices": devices,
        "seed": seed,
        "repeats": repeats,
        "wall_s": _spread([r["wall_s"] for r in runs]),
        "cpu_s": _spread([r["cpu_s"] for r in runs]),
        "import_s": _spread([r["import_s"] for r in runs]),
        "phases": rows,
    }


def _load() -> dict[str, float]:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return {}
    return {"load_1min": one, "load_5min": five, "cpus": os.cpu_count() or 0}


def run(ctx: Any) -> dict[str, Any]:
    """Measure and write ``figures/fastprof.json``."""
    from benchmarks.common import utc_now

    started, started_utc = time.perf_counter(), utc_now()
    devices, repeats = PLANS.get(ctx.profile.name, PLANS["quick"])
    seed = ctx.profile.seed
    ctx.progress("fastprof: warm solves", 0.0)
    load_before = _load()
    hot = warm(devices, seed, repeats)
    ctx.progress("fastprof: first call in fresh processes", 0.5)
    cold = first_call(devices, seed, repeats)
    ctx.progress("fastprof", 1.0)
    doc = {
        "meta": ctx.meta("fastprof", started, started_utc),
        "load_before": load_before,
        "load_after": _load(),
        "warm": hot,
        "first_call": cold,
    }
    ctx.json("fastprof", doc)
    return doc


def draw(figures: Path) -> list[Path]:
    """No figure: the section is two tables."""
    return []


def _table(rows: list[Mapping[str, Any]]) -> list[str]:
    lines = ["| phase | seconds | share |", "|---|---:|---:|"]
    for r in rows:
        name = f"**{r['phase']}**" if r["phase"] == "total" else r["phase"]
        lines.append(f"| {name} | {r['seconds']:.3f} | {100 * r['share']:.0f} % |")
    return lines


def _times(d: Mapping[str, Any]) -> str:
    w, c = d["wall_s"], d["cpu_s"]
    return (
        f"wall min {w['min']:.3f} s, median {w['median']:.3f} s; "
        f"CPU min {c['min']:.3f} s, median {c['median']:.3f} s ({d['repeats']} runs)"
    )


def report(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """Markdown of the profile tables."""
    hot, cold = doc["warm"], doc["first_call"]
    load = doc.get("load_before") or {}
    load_text = (
        f" Load average before the runs: {load['load_1min']:.1f} on {load['cpus']} CPUs."
        if load
        else ""
    )
    return [
        "## Where `fast` spends its time",
        "",
        f"`solve(Scenario.default(devices={hot['devices']}, seed={hot['seed']}), "
        f'solver="fast")`, profiled with cProfile (phases: `benchmarks/fast_profile.py`).'
        + load_text,
        "",
        f"Warm (a second solve in the same process): {_times(hot)}. The profiled run of "
        "median total:",
        "",
        *_table(hot["phases"]),
        "",
        f"First call in a fresh process (`import sflam_opt` + `solve`, scenario not counted): "
        f"{_times(cold)}. One profiled run:",
        "",
        *_table(cold["phases"]),
        "",
    ]


def headlines(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """Warm and first-call medians."""
    hot, cold = doc["warm"], doc["first_call"]
    return [
        f"`fast` at N = {hot['devices']:,}: warm solve {hot['wall_s']['median']:.2f} s wall "
        f"({hot['cpu_s']['median']:.2f} s CPU, medians), first call in a process "
        f"{cold['wall_s']['median']:.2f} s wall ({cold['cpu_s']['median']:.2f} s CPU) including "
        "the imports."
    ]

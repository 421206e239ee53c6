"""The "faded channels" table: solvers on Rayleigh-faded draws of the default scenario.

Each draw replaces every device's gain by ``gain_db + 10 log10(X)``, ``X ~ Exp(1)`` drawn with
``numpy.random.default_rng(seed)`` (one draw per device), on ``Scenario.default(N, profile.seed)``.
The draw seeds start at :data:`EVAL_SEED0`; seeds below it were used to design the scaled cone
blocks (:data:`DESIGN_SEEDS`) and are never evaluated here.

Per N and method: median and worst solve time, draws with a cone-solver fallback or failure, the
gap of J to ``fast`` (``bcd-pure`` is pure block descent, so its gap is the pure-BCD gap), outer
iterations, and the worst ratio of a run's slowest cone solve to its median one.

``python -m benchmarks faded`` runs it (into ``figures/faded.json``), as its own section of
``all``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import BenchContext, median, read_csv, run_spawned, utc_now
from benchmarks.markdown import num, pct, table
from sflam_opt.scenario import Scenario

__all__ = [
    "DESIGN_SEEDS",
    "draw_rows",
    "EVAL_SEED0",
    "FADED_COLUMNS",
    "draw",
    "faded",
    "faded_scenario",
    "headlines",
    "report",
    "run",
]

#: Draw seeds looked at while designing the cone blocks and the bits blocks, never evaluated:
#: 1-3 (the first scaling), 1000-1060 (the table's earlier evaluation range, whose draws 1005,
#: 1006, 1027 and 1050 were then studied to fix the blocks) and 1100-1139 (checked while fixing).
DESIGN_SEEDS = (1, 2, 3, *range(1000, 1061), *range(1100, 1140))
#: First evaluation draw seed (above every design seed).
EVAL_SEED0 = 2000
#: (N, draws) per profile name; other profile names (tests) use :data:`OTHER_SIZES`. ``all`` has
#: the draw counts the faded-channel targets are stated on (200 at N = 1,000, 50 at N = 10,000).
SIZES: dict[str, tuple[tuple[int, int], ...]] = {
    "all": ((100, 20), (1000, 200), (10_000, 50)),
    "quick": ((30, 3),),
}
OTHER_SIZES = ((8, 2),)
#: Methods of the table (names of :data:`benchmarks.solve.VARIANTS` or solvers).
METHODS = ("fast", "bcd", "bcd-pure")
FADED_COLUMNS = (
    "n_devices",
    "draw_seed",
    "solver",
    "status",
    "objective",
    "gap_to_fast",
    "solve_time_s",
    "cpu_s",
    "outer_iterations",
    "fallbacks",
    "failures",
    "cone_solves",
    "cone_max_over_median",
    "final_step",
    "error",
)
SUMMARY_COLUMNS = (
    "n_devices",
    "solver",
    "draws",
    "median_s",
    "worst_s",
    "draws_with_fallback",
    "draws_with_failure",
    "median_gap",
    "worst_gap",
    "median_iterations",
    "worst_cone_ratio",
)


def faded_scenario(n: int, draw_seed: int, base_seed: int = 0) -> Scenario:
    """``Scenario.default(n, base_seed)`` with one Rayleigh power draw per device's gain."""
    scn = Scenario.default(devices=n, seed=base_seed)
    rng = np.random.default_rng(draw_seed)
    gain = scn.devices.gain_db + 10.0 * np.log10(rng.exponential(size=n))
    return scn.with_gains(dict(zip(scn.devices.ids, gain.tolist(), strict=True)))


def _row(rec: Mapping[str, Any], j_fast: float | None, cpu: float) -> dict[str, Any]:
    info = rec.get("info", {})
    cone = info.get("cone_solve_s") or {}
    ratio = cone["max"] / cone["median"] if cone.get("median") else None
    j = rec["objective"]
    gap = j / j_fast - 1.0 if j_fast and np.isfinite(j_fast) and np.isfinite(j) else None
    return {
        "solver": rec["solver"],
        "status": rec["status"],
        "objective": j,
        "gap_to_fast": gap,
        "solve_time_s": rec["solve_time_s"],
        "cpu_s": cpu,
        "outer_iterations": info.get("outer_iterations"),
        "fallbacks": len(info.get("fallbacks", [])) if "fallbacks" in info else None,
        "failures": len(info.get("failures", [])) if "failures" in info else None,
        "cone_solves": info.get("cone_solves"),
        "cone_max_over_median": ratio,
        "final_step": info.get("final_step"),
        "error": rec.get("error"),
    }


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for n in sorted({r["n_devices"] for r in rows}):
        for s in METHODS:
            mine = [r for r in rows if r["n_devices"] == n and r["solver"] == s]
            if not mine:
                continue
            gaps = [r["gap_to_fast"] for r in mine if r["gap_to_fast"] is not None]
            ratios = [r["cone_max_over_median"] for r in mine if r["cone_max_over_median"]]
            out.append(
                {
                    "n_devices": n,
                    "solver": s,
                    "draws": len(mine),
                    "median_s": median(r["solve_time_s"] for r in mine),
                    "worst_s": max(r["solve_time_s"] for r in mine),
                    "draws_with_fallback": sum(1 for r in mine if r["fallbacks"]),
                    "draws_with_failure": sum(1 for r in mine if r["failures"]),
                    "median_gap": median(gaps) if gaps else None,
                    "worst_gap": max(gaps) if gaps else None,
                    "median_iterations": median(
                        r["outer_iterations"] for r in mine if r["outer_iterations"] is not None
                    ),
                    "worst_cone_ratio": max(ratios) if ratios else None,
                }
            )
    return out


def draw_rows(n: int, seed: int, base_seed: int) -> list[dict[str, Any]]:
    """Every method of :data:`METHODS` on one faded draw (one row each, ``fast`` first)."""
    from benchmarks.solve import _record

    scn = faded_scenario(n, seed, base_seed)
    j_fast: float | None = None
    rows = []
    for method in METHODS:
        c0 = time.process_time()
        rec = _record(scn, method)
        row = _row(rec, j_fast, time.process_time() - c0)
        if method == "fast" and rec["status"] != "error":
            j_fast = rec["objective"]
        rows.append({"n_devices": n, "draw_seed": seed, **row})
    return rows


def faded(ctx: BenchContext) -> dict[str, Any]:
    """Measure every method of :data:`METHODS` on the faded draws; writes ``solve_faded*.csv``.

    The draws are independent: they are spread over ``profile.train_workers`` processes (spawned,
    so each solves as a fresh single process would); rows come back in draw order.
    """
    sizes = SIZES.get(ctx.profile.name, OTHER_SIZES)
    tasks = [(n, seed) for n, draws in sizes for seed in range(EVAL_SEED0, EVAL_SEED0 + draws)]
    # Largest N first, so the pool does not end waiting on one slow draw.
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i][0])
    workers = max(1, ctx.profile.train_workers)
    label = "faded: N={} draw {}"
    done = run_spawned(
        draw_rows,
        [(*task, ctx.profile.seed) for task in tasks],
        workers,
        lambda i: ctx.progress(label.format(*tasks[i]), 1.0 / len(tasks)),
        order,
    )
    rows = [r for draw in done for r in draw]
    summary = _summary(rows)
    ctx.csv("solve_faded", rows, FADED_COLUMNS)
    ctx.csv("solve_faded_summary", summary, SUMMARY_COLUMNS)
    return {
        "sizes": [list(s) for s in sizes],
        "eval_seed0": EVAL_SEED0,
        "design_seeds": list(DESIGN_SEEDS),
        "workers": workers,
        "summary": summary,
    }


def _seed_ranges(seeds: Any) -> str:
    """``1-3, 1000-1060`` for the sorted runs of consecutive seeds."""
    runs: list[list[int]] = []
    for s in sorted(set(seeds)):
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def faded_table(figures: Path, doc: Mapping[str, Any], cmd: str) -> list[str]:
    """Markdown of the faded-channels table (from ``solve_faded_summary.csv``)."""
    path = figures / "solve_faded_summary.csv"
    if not path.exists():
        return []
    rows = read_csv(path)
    design = doc.get("design_seeds", DESIGN_SEEDS)
    out = ["### Faded channels", ""]
    out.append(
        "Default scenario with every gain faded by `10 log10(Exp(1))` dB, one draw per device, "
        f"draw seeds from {doc.get('eval_seed0', EVAL_SEED0)} on ({_seed_ranges(design)} were "
        "used to design the blocks and are excluded). `bcd-pure` is "
        "pure block descent, so its gap is the pure-BCD gap. Fallback / failure: draws with at "
        "least one cone solve that needed a second backend / failed. Cone ratio: the worst "
        "over draws of a run's slowest cone solve divided by its median one. "
        f"The draws ran in {doc.get('workers', 1)} process(es) at once, one draw per process."
    )
    out.append("")
    out.append(
        table(
            [
                "N",
                "solver",
                "draws",
                "median s",
                "worst s",
                "fallback",
                "failure",
                "median gap to fast",
                "worst gap",
                "median iterations",
                "cone ratio",
            ],
            [
                [
                    r["n_devices"],
                    r["solver"],
                    r["draws"],
                    num(r["median_s"]),
                    num(r["worst_s"]),
                    r["draws_with_fallback"],
                    r["draws_with_failure"],
                    pct(r["median_gap"]),
                    pct(r["worst_gap"]),
                    num(r["median_iterations"]),
                    num(r["worst_cone_ratio"]),
                ]
                for r in rows
            ],
        )
    )
    out += ["", f"`{cmd}`", ""]
    return out


# ------------------------------------------------------------------ the sub-section on its own
def run(ctx: BenchContext) -> dict[str, Any]:
    """``python -m benchmarks faded``: the faded table alone, into ``figures/faded.json``."""
    started, started_utc = time.perf_counter(), utc_now()
    doc = faded(ctx)
    ctx.json("faded", {"meta": ctx.meta("faded", started, started_utc), **doc})
    return doc


def draw(figures: Path) -> list[Path]:
    """No figures: the table is the result."""
    return []


def report(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """Markdown of the sub-section (the table under its own heading)."""
    return [
        "## Solvers under faded channels",
        "",
        *faded_table(figures, doc, doc["meta"]["command"]),
    ]


def headlines(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """One sentence: fallbacks of bcd over all faded draws."""
    rows = [r for r in doc.get("summary", []) if r["solver"] == "bcd"]
    if not rows:
        return []
    draws = sum(int(r["draws"]) for r in rows)
    fb = sum(int(r["draws_with_fallback"]) for r in rows)
    return [f"On {draws} faded draws `bcd` needed a cone-solver fallback on {fb}."]

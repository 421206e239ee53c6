"""Solver benchmarks: speed ladder, optimality gap, savings, Pareto front, BCD behaviour.

Everything is measured on the formulation's default scenario (docs/formulation.md §7,
``Scenario.default(N, seed)``) or on random small instances from
:func:`sflam_opt.testing.small_instance`, through
the public :func:`sflam_opt.solve` entry point, so what is timed is exactly what a user calls
(argument checks, the target check and the final evaluation included).

``bcd`` is measured twice: as shipped, and as pure block descent (``bcd-pure``: ``escape=False,
warm_start=False``), which starts from the equal split and moves only by its joint CVXPY
continuous block and its bits block. The shipped ``bcd`` starts from the best baseline and, when the
blocks stall, steps to the exact continuous optimum (the closed form ``fast`` uses), so its final
J says little about block descent itself.

Solve times are reported warm (median over repeated solves in one process, after one untimed
call) and cold (the first solve in a fresh process, imports and CVXPY canonicalization included;
:mod:`benchmarks.cold`), which is what a one-shot ``sflam-opt solve`` pays.

Outputs in ``<out>/figures/``: ``solve_speed.{csv,png}``, ``solve_optimality.csv`` (one row per
instance and method), ``solve_optimality_summary.csv``, ``solve_optimality.png``,
``solve_savings.csv``, ``solve_pareto.{csv,png}``, ``solve_bcd_trace.{csv,png}`` and
``solve.json`` (metadata, summaries, fitted exponents, stall-escape counts).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from benchmarks.cold import cold_solve
from benchmarks.common import BenchContext, median, peak_memory, rss_peak, utc_now
from benchmarks.plots import solve_figures as draw
from benchmarks.solve_report import headlines, report
from sflam_opt.costs import breakdown, equal_allocation
from sflam_opt.scenario import Scenario
from sflam_opt.solvers import available_solvers, solve
from sflam_opt.testing import small_instance

__all__ = [
    "GAP_TOLERANCE",
    "VARIANTS",
    "bcd_trace",
    "draw",
    "fit_exponent",
    "gap_summary",
    "headlines",
    "optimality",
    "pareto",
    "report",
    "run",
    "savings",
    "speed_ladder",
    "stall_escapes",
]

logger = logging.getLogger(__name__)

#: "Within tolerance" of the optimum: relative gap in J at most 0.1 %.
GAP_TOLERANCE = 1e-3

#: Parts of a BCD run timed separately (keys of ``SolveResult.timings``).
BCD_BLOCKS = ("warm_start", "continuous_block", "bits_block", "escape")

#: Benchmarked methods that are a registered solver with options: name -> (solver, options).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "bcd-pure": ("bcd", {"escape": False, "warm_start": False}),
    "exact-cvxpy": ("exact", {"continuous": "cvxpy"}),
}

SPEED_COLUMNS = (
    "solver",
    "n_devices",
    "status",
    "objective",
    "repeats",
    "median_s",
    "min_s",
    "max_s",
    "times_s",
    "median_cpu_s",
    "first_s",
    "cold_s",
    "cold_import_s",
    "cold_call_s",
    "traced_peak_mib",
    "rss_peak_delta_mib",
    "iterations",
    "seed",
    "error",
)
OPT_COLUMNS = (
    "seed",
    "n_devices",
    "latency_weight",
    "constraint",
    "levels",
    "solver",
    "status",
    "objective",
    "exact_status",
    "exact_objective",
    "gap",
    "solve_time_s",
    "stall_escapes",
    "error",
)
OPT_SUMMARY_COLUMNS = (
    "solver",
    "instances",
    "feasible",
    "median_gap",
    "p95_gap",
    "worst_gap",
    "best_gap",
    "within_tol",
    "median_time_s",
)
SAVINGS_COLUMNS = (
    "n_devices",
    "solver",
    "status",
    "objective",
    "rounds",
    "round_latency_s",
    "round_energy_j",
    "total_latency_s",
    "total_energy_j",
    "solve_time_s",
    "seed",
    "error",
)
PARETO_COLUMNS = (
    "kind",
    "solver",
    "latency_weight",
    "status",
    "objective",
    "total_latency_s",
    "total_energy_j",
    "rounds",
    "seed",
    "n_devices",
)
TRACE_COLUMNS = (
    "scenario",
    "solver",
    "n_devices",
    "iteration",
    "objective",
    "status",
    "stall_escapes",
)
RUN_COLUMNS = (
    "scenario",
    "solver",
    "status",
    "iterations",
    "objective",
    "fast_status",
    "fast_objective",
    "gap_to_fast",
    "stall_escapes",
    "warm_start",
    "solve_time_s",
    *(f"{b}_s" for b in BCD_BLOCKS),
    "error",
)
BITS_COLUMNS = ("n_devices", "method", "status", "time_s", "steps", "objective")


# ------------------------------------------------------------------------------- helpers
def resolve(method: str) -> tuple[str, dict[str, Any]]:
    """The registered solver and options behind a benchmarked method name (:data:`VARIANTS`)."""
    solver, options = VARIANTS.get(method, (method, {}))
    return solver, dict(options)


def _has(method: str) -> bool:
    return resolve(method)[0] in available_solvers()


def _record(scenario: Scenario, method: str) -> dict[str, Any]:
    """Solve with a method and flatten the result; a solver exception becomes ``status="error"``.

    A benchmark run takes many minutes, so one crashing solver must not lose every other number;
    the error text is recorded and shown in the report instead.
    """
    solver, options = resolve(method)
    try:
        res = solve(scenario, solver=solver, **options)
    except Exception as exc:  # noqa: BLE001 - recorded, reported, never hidden
        logger.warning("solver %s raised on N=%d: %s", method, scenario.n_devices, exc)
        return {
            "solver": method,
            "status": "error",
            "objective": math.inf,
            "error": f"{type(exc).__name__}: {exc}",
            "solve_time_s": math.nan,
            "iterations": [],
            "info": {},
        }
    ev = res.evaluation
    out: dict[str, Any] = {
        "solver": method,
        "status": res.status,
        "objective": res.objective,
        "solve_time_s": res.solve_time_s,
        "iterations": list(res.iterations),
        "info": dict(res.info),
        "timings": dict(res.timings),
        "message": res.message,
        "error": None,
    }
    if ev is not None and res.success:
        out.update(
            rounds=ev.rounds,
            round_latency_s=ev.round_latency_s,
            round_energy_j=ev.round_energy_j,
            total_latency_s=ev.total_latency_s,
            total_energy_j=ev.total_energy_j,
        )
    return out


def stall_escapes(info: Mapping[str, Any]) -> int | None:
    """Number of stall escapes a BCD run reported in ``info`` (None if it reports none)."""
    v = info.get("stall_escapes")
    return None if v is None else int(v)


def fit_exponent(sizes: Sequence[float], times: Sequence[float]) -> dict[str, Any] | None:
    """Least-squares slope of log(time) on log(N): time ~ c N^k.

    Fitted on the three largest N >= 100 when there are at least two such points (small N
    measures fixed overhead, not growth), else on all finite points. None when fewer than two
    points remain.
    """
    pts = sorted(
        (float(n), float(t))
        for n, t in zip(sizes, times, strict=True)
        if t is not None and math.isfinite(t) and t > 0
    )
    big = [p for p in pts if p[0] >= 100][-3:]
    use = big if len(big) >= 2 else pts
    if len(use) < 2:
        return None
    x = np.log([p[0] for p in use])
    y = np.log([p[1] for p in use])
    k, logc = np.polyfit(x, y, 1)
    return {
        "exponent": float(k),
        "coefficient_s": float(np.exp(logc)),
        "fit_sizes": [p[0] for p in use],
    }


# ------------------------------------------------------------------------------- speed
def speed_ladder(ctx: BenchContext) -> dict[str, Any]:
    """Warm and cold solve times and peak memory of each method over the profile's N ladder.

    Each point: one untimed solve (``first_s``: the first in this process at that size, which
    builds and canonicalizes the CVXPY problems), then ``repeats`` timed solves (warm: median,
    min, max of ``SolveResult.solve_time_s``, and the median process CPU time of the call, which
    other load on the machine inflates much less than wall time; the resident-set rise is
    recorded during them at no cost), then one more solve under
    :func:`~benchmarks.common.peak_memory` for the traced peak (timed runs are not traced), then
    the cold solve in a fresh process (:func:`benchmarks.cold.cold_solve`). A point whose first
    solve takes longer than ``speed_time_cap_s`` is not repeated (its one time is the first
    solve's) and gets no traced run, so that ``python -m benchmarks all`` stays within its budget.
    """
    p = ctx.profile
    plan = [(m, n) for m in p.bcd_methods for n in p.bcd_sizes] + [
        ("fast", n) for n in p.fast_sizes
    ]
    rows: list[dict[str, Any]] = []
    for method, n in plan:
        ctx.progress(f"speed: {method} N={n}", 0.0)
        rows.append(_speed_point(ctx, method, n))
        ctx.progress(f"speed: {method} N={n}", 1.0 / len(plan))
    fits = {}
    for method in (*p.bcd_methods, "fast"):
        pts = [r for r in rows if r["solver"] == method and r.get("median_s") is not None]
        fits[method] = fit_exponent([r["n_devices"] for r in pts], [r["median_s"] for r in pts])
    ctx.csv("solve_speed", rows, SPEED_COLUMNS)
    return {"rows": rows, "fits": fits}


def _speed_point(ctx: BenchContext, method: str, n: int) -> dict[str, Any]:
    p = ctx.profile
    row: dict[str, Any] = {"solver": method, "n_devices": n, "seed": p.seed, "repeats": 0}
    if not _has(method):
        row.update(status="unavailable", error=f"solver {method!r} is not registered")
        return row
    scn = Scenario.default(devices=n, seed=p.seed)
    rec = _record(scn, method)
    first = rec["solve_time_s"]
    times: list[float] = []
    cpu: list[float] = []
    rss: list[float] = []
    if rec["status"] == "error" or first > p.speed_time_cap_s:
        times.append(first)
    else:
        for _ in range(p.repeats):
            c0 = time.process_time()
            rec, mem = rss_peak(lambda: _record(scn, method))
            cpu.append(time.process_time() - c0)
            times.append(rec["solve_time_s"])
            if mem is not None:
                rss.append(mem)
            if rec["status"] == "error" or rec["solve_time_s"] > p.speed_time_cap_s:
                break
    row.update(
        status=rec["status"],
        objective=rec["objective"],
        repeats=len(times),
        median_s=median(times),
        min_s=min(times),
        max_s=max(times),
        times_s=times,
        median_cpu_s=median(cpu) if cpu else None,
        first_s=first,
        rss_peak_delta_mib=max(rss) if rss else None,
        iterations=len(rec["iterations"]),
        error=rec.get("error"),
    )
    if rec["status"] == "error":
        return row
    solver, options = resolve(method)
    if max(times) <= p.speed_time_cap_s:
        # A separate traced run: tracemalloc slows allocation-heavy code, so it never
        # overlaps the timed runs; skipped where one solve already exceeds the cap.
        _, mem = peak_memory(lambda: solve(scn, solver=solver, **options))
        row["traced_peak_mib"] = mem["traced_peak_mib"]
    if p.cold_runs:
        cold = cold_solve(solver, n, p.seed, options)
        row.update(
            cold_s=cold.get("cold_s"),
            cold_import_s=cold.get("import_s"),
            cold_call_s=cold.get("call_s"),
        )
        if cold.get("error"):
            row["error"] = cold["error"]
    return row


# ------------------------------------------------------------------------------- optimality
def _quantile(values: np.ndarray, q: float) -> float:
    # Empirical quantile without interpolation, so infinite gaps (infeasible baselines) give inf
    # instead of nan.
    return float(np.quantile(values, q, method="inverted_cdf")) if values.size else math.nan


def gap_summary(rows: Sequence[Mapping[str, Any]], solvers: Sequence[str]) -> list[dict[str, Any]]:
    """Per solver: median, 95th percentile, worst and best gap, share within 0.1 %, median time.

    Only instances where ``exact`` proved an optimum count. A method that returns no feasible
    allocation on such an instance has gap = inf there (it counts against the share).
    """
    out = []
    for s in solvers:
        mine = [r for r in rows if r["solver"] == s and r.get("exact_status") == "optimal"]
        gaps = np.array(
            [math.inf if r.get("gap") is None else float(r["gap"]) for r in mine], dtype=float
        )
        feasible = int(np.isfinite(gaps).sum())
        out.append(
            {
                "solver": s,
                "instances": len(mine),
                "feasible": feasible,
                "median_gap": _quantile(gaps, 0.5),
                "p95_gap": _quantile(gaps, 0.95),
                "worst_gap": float(gaps.max()) if gaps.size else math.nan,
                "best_gap": float(gaps.min()) if gaps.size else math.nan,
                "within_tol": float(np.mean(gaps <= GAP_TOLERANCE)) if gaps.size else math.nan,
                "median_time_s": median(r.get("solve_time_s") for r in mine),
            }
        )
    return out


def optimality(ctx: BenchContext) -> dict[str, Any]:
    """Gap ``J / J_exact - 1`` of every solver and baseline over random small instances."""
    p = ctx.profile
    seeds = list(range(p.seed, p.seed + p.optimality_instances))
    solvers = [s for s in p.optimality_solvers if _has(s)]
    missing = [s for s in p.optimality_solvers if not _has(s)]
    rows: list[dict[str, Any]] = []
    have_exact = _has("exact")
    for seed in seeds:
        ctx.progress(f"optimality: instance seed {seed}", 0.0)
        scn, kind = small_instance(seed)
        ref = _record(scn, "exact") if have_exact else {"status": "unavailable", "objective": None}
        common = _instance_columns(seed, scn, kind, ref)
        if have_exact:
            rows.append({**common, **_opt_row(ref, ref)})
        for s in solvers:
            rows.append({**common, **_opt_row(_record(scn, s), ref)})
        ctx.progress(f"optimality: instance seed {seed}", 1.0 / len(seeds))
    ctx.csv("solve_optimality", rows, OPT_COLUMNS)
    summary = gap_summary(rows, solvers)
    ctx.csv("solve_optimality_summary", summary, OPT_SUMMARY_COLUMNS)
    exact_status: dict[str, int] = {}
    for r in rows:
        if r["solver"] == "exact":
            exact_status[r["status"]] = exact_status.get(r["status"], 0) + 1
    escapes = [r["stall_escapes"] for r in rows if r["solver"] == "bcd"]
    independent = independent_exact(ctx, seeds)
    return {
        "seeds": seeds,
        "summary": summary,
        "independent": independent,
        "unavailable": missing + ([] if have_exact else ["exact"]),
        "exact_status_counts": exact_status,
        "bcd_stall_escapes": _escape_stats(escapes),
    }


#: Optimality instances (the first ones) also solved by the independent ``exact-cvxpy``, per
#: profile name, none for other profiles (its continuous block is a CVXPY search, about 1,000
#: times slower than the kernel's).
INDEPENDENT_INSTANCES = {"all": 30, "quick": 1}
INDEPENDENT_SOLVERS = ("fast", "bcd", "bcd-pure", "exact")


def independent_exact(ctx: BenchContext, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """Gap of ``fast``, ``bcd``, ``bcd-pure`` and the kernel ``exact`` to ``exact-cvxpy``.

    ``exact-cvxpy`` (``solve(s, "exact", continuous="cvxpy")``) scores every bit vector with the
    joint CVXPY block, which shares no code with ``fast``'s kernel: an independent optimum.
    Writes ``solve_independent.csv`` (one row per instance and method) and returns the summary.
    """
    if not _has("exact-cvxpy"):
        return []
    count = INDEPENDENT_INSTANCES.get(ctx.profile.name, 0)
    if count == 0:
        return []
    rows: list[dict[str, Any]] = []
    for seed in list(seeds)[:count]:
        ctx.progress(f"optimality: independent exact, seed {seed}", 0.0)
        scn, kind = small_instance(seed)
        ref = _record(scn, "exact-cvxpy")
        common = _instance_columns(seed, scn, kind, ref)
        rows.append({**common, **_opt_row(ref, ref)})
        for s in INDEPENDENT_SOLVERS:
            if _has(s):
                rows.append({**common, **_opt_row(_record(scn, s), ref)})
    ctx.csv("solve_independent", rows, OPT_COLUMNS)
    summary = gap_summary(rows, [s for s in INDEPENDENT_SOLVERS if _has(s)])
    ctx.csv("solve_independent_summary", summary, OPT_SUMMARY_COLUMNS)
    return summary


def _instance_columns(
    seed: int, scn: Scenario, kind: str, ref: Mapping[str, Any]
) -> dict[str, Any]:
    """The per-instance columns of an optimality row (``ref``: the exact solve's record)."""
    return {
        "seed": seed,
        "n_devices": scn.n_devices,
        "latency_weight": scn.objective.latency_weight,
        "constraint": kind,
        "levels": list(scn.bits.levels),
        "exact_status": ref["status"],
        "exact_objective": ref["objective"],
    }


def _opt_row(rec: Mapping[str, Any], ref: Mapping[str, Any]) -> dict[str, Any]:
    gap = None
    j, j0 = rec.get("objective"), ref.get("objective")
    ok = rec["status"] in ("optimal", "converged", "max_iter")
    if ok and ref.get("status") == "optimal" and j0 and math.isfinite(j0) and math.isfinite(j):
        gap = j / j0 - 1.0
    return {
        "solver": rec["solver"],
        "status": rec["status"],
        "objective": j if ok else None,
        "gap": gap,
        "solve_time_s": rec.get("solve_time_s"),
        "stall_escapes": stall_escapes(rec.get("info", {})),
        "error": rec.get("error"),
    }


def _escape_stats(escapes: Sequence[int | None]) -> dict[str, Any]:
    known = [e for e in escapes if e is not None]
    return {
        "runs": len(escapes),
        "reported": len(known),
        "runs_with_escape": int(sum(1 for e in known if e > 0)),
        "total_escapes": int(sum(known)),
    }


# ------------------------------------------------------------------------------- savings
def savings(ctx: BenchContext) -> dict[str, Any]:
    """J, total latency and total energy of each solver and baseline on the default scenario."""
    p = ctx.profile
    methods = [*p.savings_solvers, *p.savings_baselines]
    plan = [
        (n, m)
        for n in p.savings_sizes
        for m in methods
        if not (m == "bcd" and n > p.bcd_max_savings_n)
    ]
    skipped = [
        {
            "n_devices": n,
            "solver": "bcd",
            "reason": f"N > bcd_max_savings_n = {p.bcd_max_savings_n}",
        }
        for n in p.savings_sizes
        if "bcd" in methods and n > p.bcd_max_savings_n
    ]
    rows: list[dict[str, Any]] = []
    cache: dict[int, Scenario] = {}
    for n, m in plan:
        ctx.progress(f"savings: {m} N={n}", 0.0)
        scn = cache.setdefault(n, Scenario.default(devices=n, seed=p.seed))
        if _has(m):
            rec = _record(scn, m)
        else:
            rec = {"status": "unavailable", "error": f"solver {m!r} is not registered"}
        rows.append({"n_devices": n, "seed": p.seed, **rec, "solver": m})
        ctx.progress(f"savings: {m} N={n}", 1.0 / len(plan))
    ctx.csv("solve_savings", rows, SAVINGS_COLUMNS)
    return {
        "skipped": skipped,
        "table": savings_table(rows, p.savings_solvers, p.savings_baselines),
    }


def savings_table(
    rows: Sequence[Mapping[str, Any]], solvers: Sequence[str], baselines: Sequence[str]
) -> list[dict[str, Any]]:
    """Relative reductions ``1 - solver / baseline`` of J, total latency and total energy."""
    by = {(r["n_devices"], r["solver"]): r for r in rows}
    out = []
    for n in sorted({r["n_devices"] for r in rows}):
        for s in solvers:
            a = by.get((n, s))
            if a is None or a.get("total_latency_s") is None:
                continue
            for b in baselines:
                c = by.get((n, b))
                if c is None or c.get("total_latency_s") is None:
                    continue
                out.append(
                    {
                        "n_devices": n,
                        "solver": s,
                        "baseline": b,
                        "objective_saving": 1.0 - a["objective"] / c["objective"],
                        "latency_saving": 1.0 - a["total_latency_s"] / c["total_latency_s"],
                        "energy_saving": 1.0 - a["total_energy_j"] / c["total_energy_j"],
                    }
                )
    return out


# ------------------------------------------------------------------------------- pareto
def pareto(ctx: BenchContext) -> dict[str, Any]:
    """Latency-energy front of the Pareto solver over latency weights, baselines marked.

    The front re-solves the default scenario at each weight omega. Baselines are marked at the
    scenario's own weight (0.5), where their J is computed.
    """
    p = ctx.profile
    scn = Scenario.default(devices=p.pareto_devices, seed=p.seed)
    rows: list[dict[str, Any]] = []
    total = len(p.pareto_weights) + len(p.savings_baselines)
    for w in p.pareto_weights:
        ctx.progress(f"pareto: {p.pareto_solver} omega={w:g}", 0.0)
        rec = _record(scn.replace(objective={"latency_weight": float(w)}), p.pareto_solver)
        rows.append({"kind": "front", "latency_weight": w, **rec})
        ctx.progress(f"pareto: {p.pareto_solver} omega={w:g}", 1.0 / total)
    for b in p.savings_baselines:
        if _has(b):
            rows.append(
                {
                    "kind": "baseline",
                    "latency_weight": scn.objective.latency_weight,
                    **_record(scn, b),
                }
            )
        ctx.progress(f"pareto: baseline {b}", 1.0 / total)
    for r in rows:
        r.update(seed=p.seed, n_devices=p.pareto_devices)
    ctx.csv("solve_pareto", rows, PARETO_COLUMNS)
    return {
        "solver": p.pareto_solver,
        "n_devices": p.pareto_devices,
        "weights": list(p.pareto_weights),
    }


# ------------------------------------------------------------------------------- bcd
def trace_scenarios(profile: Any) -> dict[str, Scenario]:
    """Scenarios whose BCD iterations are traced: default N ladder plus variants of N = 10.

    The deadline and energy-cap variants bind: they are 95 % of the round latency and of the
    largest device energy at the unconstrained optimum found by ``fast`` (of the equal baseline
    when ``fast`` is unavailable).
    """
    out = {
        f"default N={n}": Scenario.default(devices=n, seed=profile.seed)
        for n in profile.bcd_trace_sizes
    }
    base = Scenario.default(devices=10, seed=profile.seed)
    bd = breakdown(base, equal_allocation(base))
    ref = "equal"
    if _has("fast"):
        res = solve(base, solver="fast")
        if res.success and res.evaluation is not None:
            bd, ref = res.evaluation.breakdown, "fast optimum"
    t_ref, e_ref = float(bd.latency_s.max()), float(bd.energy_j.max())
    out[f"N=10, deadline 0.98 T ({ref})"] = base.replace(
        constraints={"round_deadline_s": float(np.round(0.98 * t_ref, 3))}
    )
    out[f"N=10, energy cap 0.98 max E_n ({ref})"] = base.replace(
        constraints={"device_energy_j": float(np.round(0.98 * e_ref, 3))}
    )
    out["N=10, latency only (omega = 1)"] = base.replace(objective={"latency_weight": 1.0})
    return out


def bcd_trace(ctx: BenchContext) -> dict[str, Any]:
    """J after every outer iteration of each BCD method on a few scenarios, against ``fast``.

    Runs every method of ``profile.bcd_methods`` (``bcd`` as shipped, ``bcd-pure``) per scenario;
    ``gap_to_fast`` is ``J / J_fast - 1`` and ``warm_start`` names the start the run used.
    """
    if not _has("bcd"):
        ctx.csv("solve_bcd_trace", [], TRACE_COLUMNS)
        return {"unavailable": True, "runs": []}
    scns = trace_scenarios(ctx.profile)
    methods = ctx.profile.bcd_methods
    rows: list[dict[str, Any]] = []
    runs = []
    for name, scn in scns.items():
        ctx.progress(f"bcd trace: {name}", 0.0)
        fast = _record(scn, "fast") if _has("fast") else {"status": "unavailable"}
        j_fast = fast.get("objective") if fast["status"] != "error" else None
        for method in methods:
            rec = _record(scn, method)
            esc = stall_escapes(rec.get("info", {}))
            gap = None
            if j_fast and math.isfinite(j_fast) and math.isfinite(rec["objective"]):
                gap = rec["objective"] / j_fast - 1.0
            runs.append(
                {
                    "scenario": name,
                    "solver": method,
                    "status": rec["status"],
                    "iterations": len(rec["iterations"]),
                    "objective": rec["objective"],
                    "fast_status": fast["status"],
                    "fast_objective": j_fast,
                    "gap_to_fast": gap,
                    "stall_escapes": esc,
                    "warm_start": rec.get("info", {}).get("warm_start"),
                    "solve_time_s": rec["solve_time_s"],
                    **{f"{b}_s": rec.get("timings", {}).get(b) for b in BCD_BLOCKS},
                    "error": rec.get("error"),
                }
            )
            rows += [
                {
                    "scenario": name,
                    "solver": method,
                    "n_devices": scn.n_devices,
                    "iteration": i,
                    "objective": j,
                    "status": rec["status"],
                    "stall_escapes": esc,
                }
                for i, j in enumerate(rec["iterations"], start=1)
            ]
            ctx.progress(f"bcd trace: {name}", 1.0 / (len(scns) * len(methods)))
    ctx.csv("solve_bcd_trace", rows, TRACE_COLUMNS)
    ctx.csv("solve_bcd_runs", runs, RUN_COLUMNS)
    shipped = [r["stall_escapes"] for r in runs if r["solver"] == "bcd"]
    from sflam_opt.solvers.bcd import AUTO_MILP_MAX_DEVICES

    return {
        "runs": runs,
        "stall_escapes": _escape_stats(shipped),
        "bits_methods": bits_methods(ctx),
        "auto_milp_max_devices": AUTO_MILP_MAX_DEVICES,
    }


def bits_methods(ctx: BenchContext) -> list[dict[str, Any]]:
    """Time one bits-block solve by each Dinkelbach sub-problem method at the BCD ladder's N.

    The block is solved at ``bcd``'s final bandwidth and power on the default scenario, from the
    widest bits, with the one-hot MILP (HiGHS), the exact round-time sweep and LP relaxation
    with rounding; the MILP is skipped above ``profile.bits_milp_max_devices``. Writes
    ``solve_bits_methods.csv``.
    """
    from sflam_opt.solvers.bits import BITS_METHODS, solve_bits

    p = ctx.profile
    rows: list[dict[str, Any]] = []
    for n in p.bcd_sizes:
        scn = Scenario.default(devices=n, seed=p.seed)
        res = solve(scn, solver="bcd")
        if not res.success or res.allocation is None:
            continue
        alloc = res.allocation
        start = np.full(n, scn.bits.max, dtype=np.int64)
        for method in BITS_METHODS:
            row: dict[str, Any] = {"n_devices": n, "method": method}
            if method == "milp" and n > p.bits_milp_max_devices:
                rows.append({**row, "status": "skipped"})
                continue
            t0 = time.perf_counter()
            out = solve_bits(scn, alloc.bandwidth_hz, alloc.power_w, start, method=method)
            rows.append(
                {
                    **row,
                    "status": out.status,
                    "time_s": time.perf_counter() - t0,
                    "steps": out.steps,
                    "objective": out.objective,
                }
            )
    ctx.csv("solve_bits_methods", rows, BITS_COLUMNS)
    return rows


# ------------------------------------------------------------------------------- driver
#: The faded-channels table is a section of its own (``python -m benchmarks faded``,
#: :mod:`benchmarks.solve_faded`), so ``all`` measures it once.
PARTS = ("speed", "optimality", "savings", "pareto", "bcd")


def run(ctx: BenchContext, parts: Sequence[str] = PARTS) -> dict[str, Any]:
    """Run the solver benchmarks, write their CSV files, figures and ``solve.json``."""
    started, started_utc = time.perf_counter(), utc_now()
    doc: dict[str, Any] = {}
    timings: dict[str, float] = {}
    funcs = {
        "speed": speed_ladder,
        "optimality": optimality,
        "savings": savings,
        "pareto": pareto,
        "bcd": bcd_trace,
    }
    share = 1.0 / max(1, len(parts))

    def scaled(label: str, advance: float) -> None:
        ctx.progress(label, advance * share)

    sub = dataclasses.replace(ctx, progress=scaled)
    for part in parts:
        t0 = time.perf_counter()
        doc[part] = funcs[part](sub)
        timings[part] = time.perf_counter() - t0
    if "speed" in doc:
        doc["speed"].pop("rows", None)
    meta = ctx.meta("solve", started, started_utc, parts=list(parts), part_seconds=timings)
    ctx.json("solve", {"meta": meta, **doc})
    ctx.written.extend(draw(ctx.figures))
    return doc

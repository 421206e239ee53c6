"""Allocator benchmark: ``Allocator.step`` against a fresh ``solve()`` of the same round.

``python -m benchmarks alloc`` runs it at the profile's sizes (:data:`PLANS`) and renders its
section of ``results.md``.

Setup (issue "Allocator for other FL systems"): ``Scenario.default(devices=N, seed)``; every
round each device takes part with probability :data:`SHARE` (0.5), so the number of participants
changes from round to round, and every device's gain fades (block Rayleigh: path loss plus
``10 log10 X``, ``X ~ Exp(1)``). Each round is solved twice: by the allocator's ``step`` (warm
start from the participants' last bits; for ``bcd`` a ``fast`` presolve from those bits gives the
starting bits, and cone programs are compiled once per rung of
``sflam_opt.allocator.padded_size``'s ladder of sizes) and by a fresh
``solve(scenario.for_round(devices, gains))`` in the same process: what a host without the
Allocator runs, building the round's scenario included (as it is in ``step``'s time), with
``bcd``'s cache of compiled problems keyed by the number of devices.

Reported per (N, solver): median and first-round wall time of ``step`` and of the fresh solve,
their ratio, CPU times (less inflated by other jobs on a shared machine), and the largest
relative difference of J between ``step`` and the fresh solve (positive: step is worse). Goals:
``bcd`` step at most half a fresh ``bcd`` solve; ``fast`` step no slower than a fresh ``fast``
solve and under 50 ms at N = 10,000.

:data:`BUDGET_S` caps the time spent per (N, solver): rounds stop once it is exceeded, and the
table says how many rounds ran.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.check import same_code
from benchmarks.common import REPO, BenchContext, read_csv, read_json, utc_now
from benchmarks.markdown import load_note, made_by, num
from benchmarks.sections import SOLVERS
from sflam_opt import Allocator, Scenario, solve

__all__ = ["draw", "headlines", "measure", "report", "rounds", "run", "table"]


def rounds(
    scenario: Scenario, n_rounds: int, share: float, seed: int
) -> Iterator[tuple[dict[Any, float], list[Any]]]:
    """``(gain_db, devices)`` per round: Bernoulli(share) participation, Rayleigh fading."""
    rng = np.random.default_rng(seed)
    ids = list(scenario.devices.ids)
    for _ in range(n_rounds):
        take = np.flatnonzero(rng.random(len(ids)) < share)
        if take.size == 0:
            take = rng.integers(len(ids), size=1)
        fade = 10.0 * np.log10(rng.standard_exponential(len(ids)))
        gains = scenario.devices.gain_db + fade
        devices = [ids[i] for i in take.tolist()]
        yield dict(zip(devices, gains[take].tolist(), strict=True)), devices


def measure(
    n: int, solver: str, n_rounds: int, share: float, seed: int, budget_s: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the rounds for one (N, solver); returns the summary and one row per round."""
    scenario = Scenario.default(devices=n, seed=seed)
    solve(Scenario.default(devices=3, seed=seed), solver)  # imports outside the timing
    alloc = Allocator(scenario, solver)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for r, (gains, devices) in enumerate(rounds(scenario, n_rounds, share, seed + 1)):
        t0, c0 = time.perf_counter(), time.process_time()
        res = alloc.step(gain_db=gains, devices=devices)
        step_s, step_cpu = time.perf_counter() - t0, time.process_time() - c0
        # What a host without the Allocator does: build the round's scenario the one public
        # way, then solve it (step builds its own scenario the same way, inside its timing).
        t0, c0 = time.perf_counter(), time.process_time()
        fresh = solve(scenario.for_round(devices, gains), solver)
        fresh_s, fresh_cpu = time.perf_counter() - t0, time.process_time() - c0
        gap = (
            res.objective / fresh.objective - 1.0
            if np.isfinite(res.objective) and np.isfinite(fresh.objective)
            else float("nan")
        )
        rows.append(
            {
                "n": n,
                "solver": solver,
                "round": r,
                "participants": len(devices),
                "step_status": res.status,
                "fresh_status": fresh.status,
                "step_s": step_s,
                "fresh_s": fresh_s,
                "step_cpu_s": step_cpu,
                "fresh_cpu_s": fresh_cpu,
                "step_j": res.objective,
                "fresh_j": fresh.objective,
                "j_gap": gap,
                "step_iterations": len(res.iterations),
                "fresh_iterations": len(fresh.iterations),
                "step_fallbacks": len(res.info.get("fallbacks", [])),
                "fresh_fallbacks": len(fresh.info.get("fallbacks", [])),
                "round_latency_s": alloc.history[-1].round_latency_s,
                "round_energy_j": alloc.history[-1].round_energy_j,
            }
        )
        print(
            f"  N={n} {solver} round {r}: K={len(devices)} step {step_s:.3f}s "
            f"fresh {fresh_s:.3f}s gap {gap:+.2e} ({res.status}/{fresh.status})",
            file=sys.stderr,
            flush=True,
        )
        if time.perf_counter() - started > budget_s:
            break
    med = statistics.median
    later = rows[1:] or rows  # round 0 holds one-time work (cold start, compiling)
    summary = {
        "n": n,
        "solver": solver,
        "rounds": len(rows),
        "participants_median": med(r["participants"] for r in rows),
        "step_median_s": med(r["step_s"] for r in rows),
        "fresh_median_s": med(r["fresh_s"] for r in rows),
        "step_median_s_after_first": med(r["step_s"] for r in later),
        "step_max_s": max(r["step_s"] for r in rows),
        "fresh_max_s": max(r["fresh_s"] for r in rows),
        "step_first_s": rows[0]["step_s"],
        "fresh_first_s": rows[0]["fresh_s"],
        "step_cpu_median_s": med(r["step_cpu_s"] for r in rows),
        "fresh_cpu_median_s": med(r["fresh_cpu_s"] for r in rows),
        "max_j_gap": max(r["j_gap"] for r in rows),
        "min_j_gap": min(r["j_gap"] for r in rows),
        "statuses_agree": all(r["step_status"] == r["fresh_status"] for r in rows),
    }
    summary["median_ratio"] = summary["step_median_s"] / summary["fresh_median_s"]
    return summary, rows


def table(summaries: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the summaries."""
    head = (
        "| N | solver | rounds | median K | step median s | fresh median s | step / fresh | "
        "step CPU s | fresh CPU s | first step s | first fresh s | slowest step s | "
        "slowest fresh s | J step vs fresh |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {s['n']:,} | {s['solver']} | {s['rounds']} | {s['participants_median']:g} | "
        f"{s['step_median_s']:.4g} | {s['fresh_median_s']:.4g} | {s['median_ratio']:.3f} | "
        f"{s['step_cpu_median_s']:.4g} | {s['fresh_cpu_median_s']:.4g} | "
        f"{s['step_first_s']:.4g} | {s['fresh_first_s']:.4g} | "
        f"{s.get('step_max_s', float('nan')):.4g} | {s.get('fresh_max_s', float('nan')):.4g} | "
        f"{s['min_j_gap']:+.1e} .. {s['max_j_gap']:+.1e} |"
        for s in summaries
    ]
    return head + "\n".join(lines) + "\n"


#: (N, solver) pairs and rounds: ``all`` is the issue's setup.
PLANS: dict[str, tuple[tuple[tuple[int, str], ...], int]] = {
    "all": (((1000, "fast"), (10_000, "fast"), (1000, "bcd"), (10_000, "bcd")), 20),
    "quick": (((200, "fast"), (200, "bcd")), 5),
}
SHARE = 0.5
SEED = 0
#: Seconds per (N, solver); rounds stop once it is spent (the table gives how many ran).
BUDGET_S = 300.0


def run(ctx: BenchContext) -> dict[str, Any]:
    """Measure every planned (N, solver) and write ``figures/alloc.json``."""
    started, started_utc = time.perf_counter(), utc_now()
    plan, n_rounds = PLANS.get(ctx.profile.name, PLANS["quick"])
    summaries = []
    for k, (n, solver) in enumerate(plan):
        ctx.progress(f"alloc: {solver} N={n}", k / len(plan))
        summary, _ = measure(n, solver, n_rounds, SHARE, SEED, BUDGET_S)
        summaries.append(summary)
    ctx.progress("alloc", 1.0)
    doc = {
        "meta": ctx.meta("alloc", started, started_utc),
        "setup": {"rounds": n_rounds, "share": SHARE, "seed": SEED, "budget_s": BUDGET_S},
        "summary": summaries,
    }
    ctx.json("alloc", doc)
    return doc


def draw(figures: Path) -> list[Path]:
    """No figure: the section is one table."""
    return []


def report(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """Markdown of the allocator section."""
    setup = doc["setup"]
    return [
        "## Per-round allocator",
        "",
        f"`Allocator.step` against a fresh `solve(scenario.for_round(devices, gains))` "
        f"of the same round (what a host without the Allocator runs; both times include "
        f"building the round's scenario): `Scenario.default(N, seed={setup['seed']})`, "
        f"{setup['rounds']} rounds, each device taking part with probability "
        f"{setup['share']:g}, block Rayleigh fading redrawn every round. Wall and CPU medians "
        "over the rounds; the first round includes one-time work (for `bcd`, compiling its cone "
        "programs for the rung of sizes the round falls in). J columns: relative difference of "
        "step's J from the fresh solve's (positive: step is worse). The slowest columns are "
        "rounds whose fading draw Clarabel fails on, where bcd falls back to ECOS and SCS "
        "(per-round fallback counts are in the rows `measure` returns; they are not stored).",
        "",
        table(doc["summary"]),
        "",
        made_by(doc["meta"]["command"], ["alloc.json"]),
        "",
    ]


def headlines(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """One sentence per measured (N, solver), and why ``bcd`` differs from the speed ladder."""
    setup = doc["setup"]
    where = (
        f"`Scenario.default(N, seed={setup['seed']})`, each device joining a round with "
        f"probability {setup['share']:g}, block Rayleigh fading redrawn every round; "
        f"{load_note(doc['meta'])}"
    )
    out = []
    for s in doc["summary"]:
        out.append(
            f"Allocator `{s['solver']}` at N = {s['n']:,} ({where}): median step "
            f"{s['step_median_s'] * 1e3:.3g} ms, warm-started from the last round, against "
            f"{s['fresh_median_s'] * 1e3:.3g} ms for a fresh solve of the same round in the same "
            f"process, J within {max(abs(s['min_j_gap']), abs(s['max_j_gap'])):.1e}."
        )
        out += _versus_ladder(figures, doc, s)
    return out


def _versus_ladder(figures: Path, doc: Mapping[str, Any], s: Mapping[str, Any]) -> list[str]:
    """Why a fresh ``bcd`` solve here and the solver speed ladder time it differently."""
    ladder = figures / "solve_speed.csv"
    if s["solver"] != "bcd" or not ladder.exists():
        return []
    row = next(
        (
            r
            for r in read_csv(ladder)
            if r["solver"] == s["solver"] and r["n_devices"] == s["n"] and r.get("median_s")
        ),
        None,
    )
    if row is None:
        return []
    made = read_json(figures / "solve.json")["meta"]["machine"].get("git_commit", "?")
    here = doc["meta"]["machine"].get("git_commit", "?")
    if made == here:
        commits = f"both at commit {here}"
    elif (same := same_code(REPO, made, here, SOLVERS)) is None:
        commits = f"the two were also measured at different commits ({made} and {here})"
    elif same:
        commits = (
            f"commits {made} and {here}, at which they were measured, hold the same solver code"
        )
    else:
        commits = f"the two were also measured on different solver code (commits {made} and {here})"
    return [
        f"`{s['solver']}` at N = {s['n']:,} takes {num(row['median_s'], 3)} s in the solver "
        f"speed ladder but {num(s['fresh_median_s'], 3)} s as a fresh solve here because they "
        "time different problems: the ladder re-solves one fixed default scenario of N devices "
        "without fading (warm, its compiled problems cached by size), while each round here is a "
        f"new scenario of about {round(s['participants_median']):,} participants under fresh fading "
        f"(a size the cache may not hold); {commits}."
    ]

"""``python -m benchmarks alloc``: the per-round Allocator against fresh solves, for results.md.

The measurement is :func:`benchmarks.allocator.measure` (its module docstring gives the setup and
the goals); this module runs it at the profile's sizes and renders the section.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import allocator
from benchmarks.common import BenchContext, utc_now

__all__ = ["draw", "headlines", "report", "run"]

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
        summary, _ = allocator.measure(n, solver, n_rounds, SHARE, SEED, BUDGET_S)
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
        "(`step_fallbacks`, `fresh_fallbacks` in the CSV).",
        "",
        allocator.table(doc["summary"]),
        "",
    ]


def headlines(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """One sentence per measured (N, solver)."""
    return [
        f"Allocator `{s['solver']}` at N = {s['n']:,}: median step {s['step_median_s'] * 1e3:.3g} "
        f"ms against {s['fresh_median_s'] * 1e3:.3g} ms for a fresh solve of the same round "
        f"(warm, in one process), J within {max(abs(s['min_j_gap']), abs(s['max_j_gap'])):.1e}."
        for s in doc["summary"]
    ]

"""Allocator benchmark: ``Allocator.step`` against a fresh ``solve()`` of the same round.

Usage::

    python -m benchmarks.allocator                      # N = 1,000 and 10,000, fast and bcd
    python -m benchmarks.allocator --sizes 1000 --solvers bcd --rounds 5 --out runs/alloc

Setup (issue "Allocator for other FL systems"): ``Scenario.default(devices=N, seed)``; every
round each device takes part with probability ``--share`` (0.5), so the number of participants
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

``--budget-s`` caps the time spent per (N, solver): rounds stop once it is exceeded, and the
table says how many rounds ran.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sflam_opt import Allocator, Scenario, solve

DEFAULT_SIZES = (1000, 10_000)
DEFAULT_SOLVERS = ("fast", "bcd")


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


def run(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    sizes: Sequence[int] = DEFAULT_SIZES,
    solvers: Sequence[str] = DEFAULT_SOLVERS,
    n_rounds: int = 20,
    share: float = 0.5,
    seed: int = 0,
    budget_s: float = 600.0,
) -> list[dict[str, Any]]:
    """Measure every (N, solver); with ``out_dir`` write ``allocator.{json,csv,md}`` there."""
    summaries, all_rows = [], []
    for n in sizes:
        for solver in solvers:
            summary, rows = measure(n, solver, n_rounds, share, seed, budget_s)
            summaries.append(summary)
            all_rows.extend(rows)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "rounds": n_rounds,
            "share": share,
            "seed": seed,
            "budget_s": budget_s,
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        (out / "allocator.json").write_text(
            json.dumps({"setup": meta, "summary": summaries}, indent=1) + "\n"
        )
        with (out / "allocator.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(all_rows[0]))
            writer.writeheader()
            writer.writerows(all_rows)
        (out / "allocator.md").write_text(table(summaries))
    return summaries


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--solvers", nargs="+", default=list(DEFAULT_SOLVERS))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--share", type=float, default=0.5, help="participation probability")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--budget-s", type=float, default=600.0, help="stop a (N, solver) after this long"
    )
    parser.add_argument("--out", type=Path, default=None, help="write allocator.{json,csv,md}")
    args = parser.parse_args(argv)
    summaries = run(
        args.out,
        sizes=args.sizes,
        solvers=args.solvers,
        n_rounds=args.rounds,
        share=args.share,
        seed=args.seed,
        budget_s=args.budget_s,
    )
    print(table(summaries), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

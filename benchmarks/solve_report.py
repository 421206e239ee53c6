"""Markdown of the solver section of ``results.md``: tables and headlines from ``solve_*.csv``.

Reads only the files :mod:`benchmarks.solve` wrote into ``figures/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.common import read_csv
from benchmarks.markdown import figure, load_note, num, pct, table

__all__ = ["BCD_METHODS", "headlines", "report"]

#: What the two BCD methods in the tables are.
BCD_METHODS = (
    "`bcd` is the solver as shipped: it starts from the best baseline and, when its blocks stall, "
    "steps to the exact continuous optimum at the current bits (the closed form `fast` uses) and "
    "tries joint bits steps. `bcd-pure` is pure block descent (`escape=False, "
    "warm_start=False`): from the equal split, only the joint CVXPY continuous block and "
    "the bits block move."
)


def report(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the solver section, from ``solve.json`` and the CSV files."""
    meta = doc["meta"]
    cmd = meta["command"]
    parts = meta.get("parts", [])
    prof = meta["profile"]
    out = ["## Solver benchmarks", ""]
    out.append(
        f"Default scenario of docs/formulation.md §7, `Scenario.default(N, seed={prof['seed']})`; times are "
        "`SolveResult.solve_time_s` of `sflam_opt.solve` (what a user calls), warm: median of "
        f"{prof['repeats']} runs in one process after one untimed run, unless the cold column says "
        "otherwise. " + BCD_METHODS
    )
    out.append("")
    if "speed" in parts:
        out += _speed(figures, doc.get("speed", {}), cmd)
    if "optimality" in parts:
        out += _optimality(figures, doc.get("optimality", {}), cmd)
    if "savings" in parts:
        out += _savings(figures, doc.get("savings", {}), cmd)
    if "pareto" in parts:
        out += _pareto(figures, doc.get("pareto", {}), cmd)
    if "bcd" in parts:
        out += _bcd(figures, doc.get("bcd", {}), doc.get("optimality", {}), cmd)
    return out


def _speed(figures: Path, doc: Mapping[str, Any], cmd: str) -> list[str]:
    rows = read_csv(figures / "solve_speed.csv")
    out = ["### Speed ladder", ""]
    out.append(
        table(
            [
                "solver",
                "N",
                "status",
                "J",
                "warm median (s)",
                "min (s)",
                "max (s)",
                "runs",
                "median CPU (s)",
                "first in process (s)",
                "cold (s)",
                "cold: import (s)",
                "peak traced MiB",
                "peak RSS rise MiB",
            ],
            [
                [
                    r["solver"],
                    num(r["n_devices"]),
                    r["status"],
                    num(r.get("objective")),
                    num(r.get("median_s"), 3),
                    num(r.get("min_s"), 3),
                    num(r.get("max_s"), 3),
                    num(r.get("repeats")),
                    num(r.get("median_cpu_s"), 3),
                    num(r.get("first_s"), 3),
                    num(r.get("cold_s"), 3),
                    num(r.get("cold_import_s"), 3),
                    num(r.get("traced_peak_mib"), 3),
                    num(r.get("rss_peak_delta_mib"), 3),
                ]
                for r in rows
            ],
        )
    )
    out.append("")
    fits = doc.get("fits", {})
    for solver, fit in fits.items():
        if fit:
            sizes = ", ".join(num(n) for n in fit["fit_sizes"])
            out.append(
                f"- `{solver}`: fitted growth time ~ N^{fit['exponent']:.2f} "
                f"(least squares in log-log over the largest sizes, N = {sizes})."
            )
    errors = [r for r in rows if r.get("error")]
    for r in errors:
        out.append(f"- `{r['solver']}` at N = {r['n_devices']}: {r['error']}")
    out += [
        "",
        "Times are wall-clock; the CPU column is the process CPU time of the warm calls (all "
        "threads), which load from other processes inflates much less. 'First in process' is the "
        "untimed first solve at that N in the benchmark process (it builds and canonicalizes the "
        "CVXPY problems of that size). 'Cold' is what a one-shot `sflam-opt solve` pays: "
        "`import sflam_opt` plus the first `solve` call in a fresh Python process (interpreter "
        "start-up and building the scenario excluded); the imports column is its `import "
        "sflam_opt` part (modules the solver imports lazily count in the call). "
        "A point whose first solve exceeds the time cap is not repeated: its one time is that "
        "first solve. "
        "Peak traced memory is `tracemalloc`'s peak of Python and numpy allocations during one "
        "extra, untimed solve (native memory of compiled cone solvers is not traced; not measured "
        "where one solve exceeds the time cap). The RSS column is the largest rise of the "
        "process's resident high-water mark (Linux `VmHWM`) during the timed solves: it sees "
        "native memory but not memory the allocator already held from earlier work.",
        "",
        figure("solve_speed.png", "solve time vs N", cmd, ["solve_speed.csv", "solve.json"]),
        "",
    ]
    return out


def _optimality(figures: Path, doc: Mapping[str, Any], cmd: str) -> list[str]:
    summary = read_csv(figures / "solve_optimality_summary.csv")
    seeds = doc.get("seeds", [])
    out = ["### Optimality gap to `exact`", ""]
    counts = doc.get("exact_status_counts", {})
    out.append(
        f"{len(seeds)} random 3-4 device instances (`sflam_opt.testing.small_instance(seed)`, "
        f"seeds {seeds[0] if seeds else '-'}..{seeds[-1] if seeds else '-'}; random channels, "
        "CPUs, power caps, data sizes, latency weight, target, bit sets; about 15 % with a round "
        "deadline and 15 % with a per-device energy cap). `exact` status counts: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        + ". Gap = J / J_exact - 1 on the instances `exact` proved optimal; a method without a "
        "feasible allocation there counts as an infinite gap."
    )
    out += ["", _gap_table(summary)]
    indep = figures / "solve_independent_summary.csv"
    if indep.exists():
        rows = read_csv(indep)
        n = rows[0]["instances"] if rows else 0
        out += [
            "",
            f'Against the independent `exact` (`continuous="cvxpy"`: every bit vector scored by '
            "the joint CVXPY block, no code shared with `fast`'s kernel), on the first "
            f"{n} of these instances it proved optimal (`solve_independent.csv`):",
            "",
            _gap_table(rows),
        ]
    if doc.get("unavailable"):
        out += [
            "",
            "Not measured (solver not registered): "
            + ", ".join(f"`{s}`" for s in doc["unavailable"]),
        ]
    out += [
        "",
        figure(
            "solve_optimality.png",
            "optimality gap box plot",
            cmd,
            ["solve_optimality.csv", "solve_optimality_summary.csv"],
        ),
        "",
    ]
    return out


def _gap_table(summary: list[dict[str, Any]]) -> str:
    """The gap-summary table (rows of ``gap_summary``)."""
    return table(
        [
            "method",
            "instances",
            "feasible",
            "median gap",
            "95th pct",
            "worst",
            "best",
            "within 0.1 %",
            "median time (s)",
        ],
        [
            [
                f"`{r['solver']}`",
                num(r["instances"]),
                num(r["feasible"]),
                pct(r.get("median_gap")),
                pct(r.get("p95_gap")),
                pct(r.get("worst_gap")),
                pct(r.get("best_gap")),
                pct(r.get("within_tol")),
                num(r.get("median_time_s"), 3),
            ]
            for r in summary
        ],
    )


def _savings(figures: Path, doc: Mapping[str, Any], cmd: str) -> list[str]:
    rows = read_csv(figures / "solve_savings.csv")
    out = ["### Savings on the default scenario", ""]
    out.append(
        table(
            [
                "N",
                "method",
                "status",
                "J",
                "rounds K",
                "total latency K·T (s)",
                "total energy K·E (J)",
                "solve time (s)",
            ],
            [
                [
                    num(r["n_devices"]),
                    f"`{r['solver']}`",
                    r["status"],
                    num(r.get("objective")),
                    num(r.get("rounds")),
                    num(r.get("total_latency_s")),
                    num(r.get("total_energy_j")),
                    num(r.get("solve_time_s"), 3),
                ]
                for r in rows
            ],
        )
    )
    sv = doc.get("table", [])
    if sv:
        baselines = list(dict.fromkeys(r["baseline"] for r in sv))
        by = {(r["n_devices"], r["solver"], r["baseline"]): r for r in sv}
        keys = list(dict.fromkeys((r["n_devices"], r["solver"]) for r in sv))
        out += [
            "",
            "Reduction against each baseline, 1 - solver / baseline, as J / total latency / total "
            "energy in %:",
            "",
        ]
        out.append(
            table(
                ["N", "solver", *(f"vs `{b}`" for b in baselines)],
                [
                    [num(n), f"`{s}`", *(_triple(by.get((n, s, b))) for b in baselines)]
                    for n, s in keys
                ],
            )
        )
    for s in doc.get("skipped", []):
        out.append(f"\n`{s['solver']}` not run at N = {s['n_devices']}: {s['reason']}.")
    out += [
        "",
        figure(
            "solve_savings.png",
            "J, latency, energy per method",
            cmd,
            ["solve_savings.csv", "solve.json"],
        ),
        "",
    ]
    return out


def _shares(r: Mapping[str, Any]) -> str:
    """Percent of a BCD run's time spent in each block and in the stall escape."""
    total = r.get("solve_time_s")
    parts = [r.get(f"{b}_s") for b in ("warm_start", "continuous_block", "bits_block", "escape")]
    if not total or any(p is None for p in parts):
        return "-"
    return " / ".join(f"{100.0 * p / total:.0f} %" for p in parts)


def _triple(r: Mapping[str, Any] | None) -> str:
    if r is None:
        return "-"
    return " / ".join(
        num(100.0 * r[k], 3) for k in ("objective_saving", "latency_saving", "energy_saving")
    )


def _pareto(figures: Path, doc: Mapping[str, Any], cmd: str) -> list[str]:
    rows = read_csv(figures / "solve_pareto.csv")
    front = [r for r in rows if r["kind"] == "front"]
    out = ["### Latency-energy Pareto front", ""]
    out.append(
        f"`{doc.get('solver')}` re-solved at each latency weight ω on the default scenario "
        f"(N = {doc.get('n_devices')}); baselines at the scenario's ω."
    )
    out.append("")
    out.append(
        table(
            ["ω", "status", "J", "rounds K", "total latency (s)", "total energy (J)"],
            [
                [
                    num(r["latency_weight"]),
                    r["status"],
                    num(r.get("objective")),
                    num(r.get("rounds")),
                    num(r.get("total_latency_s")),
                    num(r.get("total_energy_j")),
                ]
                for r in front
            ],
        )
    )
    out += [
        "",
        figure("solve_pareto.png", "Pareto front", cmd, ["solve_pareto.csv"]),
        "",
    ]
    return out


def _bcd(figures: Path, doc: Mapping[str, Any], opt: Mapping[str, Any], cmd: str) -> list[str]:
    out = ["### BCD behaviour", ""]
    if doc.get("unavailable"):
        return [*out, "`bcd` is not registered; nothing measured.", ""]
    path = figures / "solve_bcd_runs.csv"
    runs = read_csv(path) if path.exists() else doc.get("runs", [])
    out.append(
        table(
            [
                "scenario",
                "method",
                "status",
                "start",
                "iterations",
                "final J",
                "`fast` J",
                "J / J_fast - 1",
                "stall escapes",
                "time (s)",
                "time in start / continuous / bits / escape",
            ],
            [
                [
                    r["scenario"],
                    f"`{r.get('solver', 'bcd')}`",
                    r["status"],
                    r.get("warm_start") or "-",
                    num(r["iterations"]),
                    num(r.get("objective")),
                    num(r.get("fast_objective")),
                    pct(r.get("gap_to_fast")),
                    num(r.get("stall_escapes")),
                    num(r.get("solve_time_s"), 3),
                    _shares(r),
                ]
                for r in runs
            ],
        )
    )
    out += [
        "",
        BCD_METHODS + " Where the equal split violates a deadline or an energy cap, both start "
        "from the exact continuous optimum at bits the feasibility diagnosis found (column "
        "'start'). Figure: solid lines `bcd`, dotted `bcd-pure`, dashed `fast`'s J on the same "
        "scenario.",
    ]
    bits_path = figures / "solve_bits_methods.csv"
    if bits_path.exists():
        out += [
            "",
            "One bits-block solve (block iii: Dinkelbach over the bit widths at `bcd`'s final "
            "bandwidth and power, from the widest bits) by each sub-problem method: the one-hot "
            "MILP (HiGHS), the exact round-time sweep (numpy) and LP relaxation with rounding. "
            f"`bcd` uses the MILP up to {doc.get('auto_milp_max_devices', '-')} devices and the "
            "sweep above (`bits_method='auto'`).",
            "",
            table(
                ["N", "method", "status", "time (s)", "Dinkelbach steps", "J"],
                [
                    [
                        num(r["n_devices"]),
                        r["method"],
                        r["status"],
                        num(r.get("time_s"), 3),
                        num(r.get("steps")),
                        num(r.get("objective"), 8),
                    ]
                    for r in read_csv(bits_path)
                ],
            ),
        ]
    esc = opt.get("bcd_stall_escapes")
    if esc and esc.get("runs"):
        if esc.get("reported"):
            out += [
                "",
                f"Stall escape over the {esc['runs']} optimality instances: needed in "
                f"{esc['runs_with_escape']} of {esc['reported']} runs "
                f"({pct(esc['runs_with_escape'] / esc['reported'])}), {esc['total_escapes']} "
                "escapes in total.",
            ]
        else:
            out += ["", "`bcd` does not report stall escapes in `SolveResult.info`."]
    out += [
        "",
        figure(
            "solve_bcd_trace.png",
            "BCD J per iteration",
            cmd,
            # Data of an older run may lack the bits-methods table (its table is then left out).
            [
                name
                for name in ("solve_bcd_trace.csv", "solve_bcd_runs.csv", "solve_bits_methods.csv")
                if (figures / name).exists()
            ],
        ),
        "",
    ]
    return out


def headlines(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """Sentences with the solver numbers a user picks an allocator by."""
    out: list[str] = []
    parts = doc["meta"].get("parts", [])
    if "speed" in parts:
        out += _speed_headlines(read_csv(figures / "solve_speed.csv"), doc)
    if "optimality" in parts:
        summ = read_csv(figures / "solve_optimality_summary.csv")
        prof = doc["meta"]["profile"]
        first, last = prof["seed"], prof["seed"] + prof["optimality_instances"] - 1
        instances = (
            f"random small instances (`sflam_opt.testing.small_instance` seeds {first}-{last}, "
            "3-4 devices, no fading; those `exact` proves an optimum for)"
        )
        for r in summ:
            if r["solver"] in SOLVERS and r["instances"]:
                out.append(
                    f"{SOLVERS[r['solver']]} is within 0.1 % of the proven optimum (`exact`) on "
                    f"{pct(r['within_tol'])} of {r['instances']} {instances}; worst "
                    f"gap {pct(r['worst_gap'])}."
                )
        base = [r for r in summ if r["solver"] not in SOLVERS and r["instances"]]
        if base:
            best = min(base, key=lambda r: r["median_gap"] if r["median_gap"] is not None else 9e9)
            out.append(
                f"The best baseline, `{best['solver']}`, has a median gap of "
                f"{pct(best['median_gap'])} (95th percentile {pct(best['p95_gap'])})."
            )
    if "savings" in parts:
        sv = doc.get("savings", {}).get("table", [])
        fast = [r for r in sv if r["solver"] == "fast"]
        if fast:
            n = max(r["n_devices"] for r in fast)
            at = {r["baseline"]: r for r in fast if r["n_devices"] == n}
            eq = at.get("equal")
            others = [r for b, r in at.items() if b != "equal"]
            text = (
                f"On the default scenario with N = {num(n)} (seed {doc['meta']['profile']['seed']}, "
                "no fading), `fast`"
            )
            if eq:
                text += (
                    f" lowers J by {pct(eq['objective_saving'])} against `equal` (total latency "
                    f"{pct(eq['latency_saving'])}, total energy {pct(eq['energy_saving'])} lower)"
                )
            if others:
                best = min(others, key=lambda r: r["objective_saving"])
                text += (
                    f"{' and' if eq else ''} by {pct(best['objective_saving'])} against the "
                    f"strongest baseline, `{best['baseline']}`"
                )
            out.append(text + ".")
    return out


#: How the headlines name the optimizers (the rest of the methods are baselines).
SOLVERS = {
    "fast": "`fast`",
    "bcd": "`bcd` as shipped",
    "bcd-pure": "Pure block descent (`bcd-pure`)",
}


def _speed_headlines(rows: list[dict[str, Any]], doc: Mapping[str, Any]) -> list[str]:
    out = []
    where = (
        f"re-solves of the same scenario in one process after an untimed first solve; "
        f"`Scenario.default(N, seed={doc['meta']['profile']['seed']})`, static gains, no fading; "
        f"{load_note(doc['meta'])}"
    )
    fits = doc.get("speed", {}).get("fits", {})
    by = {(r["solver"], r["n_devices"]): r for r in rows if r.get("median_s") is not None}
    for method, name in SOLVERS.items():
        pts = [r for (m, _), r in by.items() if m == method]
        if not pts:
            continue
        big = max(pts, key=lambda r: r["n_devices"])
        fit = fits.get(method)
        text = (
            f"{name} solves the default scenario with N = {num(big['n_devices'])} devices in "
            f"{num(big['median_s'], 3)} s warm (median of {big['repeats']} {where})"
        )
        if fit:
            text += f", time growing as N^{fit['exponent']:.2f}"
        if big.get("cold_s") is not None:
            text += (
                f"; {num(big['cold_s'], 3)} s cold (first solve in a fresh process, "
                f"{num(big['cold_import_s'], 3)} s of it imports)"
            )
        ref = by.get(("fast", big["n_devices"]))
        if method != "fast" and ref and ref.get("objective"):
            gap = big["objective"] / ref["objective"] - 1.0
            text += (
                "; the same final J as `fast`"
                if abs(gap) < 1e-9
                else f"; final J {pct(gap)} above `fast`'s"
            )
        out.append(text + ".")
    common = [n for (m, n) in by if m == "bcd" and ("fast", n) in by]
    if common:
        n = max(common)
        b, f = by[("bcd", n)], by[("fast", n)]
        pure = by.get(("bcd-pure", n))
        tail = (
            f"; pure block descent (`bcd-pure`, no escape to `fast`'s step) ends at J "
            f"{num(pure['objective'], 6)} in {num(pure['median_s'], 3)} s"
            if pure and pure.get("objective")
            else ""
        )
        out.append(
            f"At N = {num(n)}, `fast` is {num(b['median_s'] / f['median_s'], 3)}x faster "
            f"than `bcd` as shipped ({num(f['median_s'], 3)} s against {num(b['median_s'], 3)} s, "
            f"warm, same scenario and load) with J {num(f['objective'], 6)} against "
            f"{num(b['objective'], 6)}{tail}."
        )
    return out

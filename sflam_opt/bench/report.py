"""Render ``results.md`` from the benchmark data files (issue 7).

Every number in the report is read from a CSV/JSON file in ``<out>/figures/`` that a benchmark just
wrote; nothing is typed by hand. Each section states the exact command that produced its data, the
machine and the date. Sections whose data files are missing are listed as not run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sflam_opt.bench.common import FIGURES, read_csv, read_json, utc_now

__all__ = ["render", "write"]

SECTIONS = ("solve", "train", "memory")


# ------------------------------------------------------------------------------- formatting
def num(v: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; '-' for missing or non-finite."""
    if v is None or isinstance(v, str):
        return "-" if v in (None, "") else str(v)
    if isinstance(v, bool):
        return str(v)
    x = float(v)
    if not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "-")
    if x == 0:
        return "0"
    if isinstance(v, int):
        return f"{v:,}"
    if abs(x) >= 10**digits:
        return f"{x:,.0f}"
    if abs(x) >= 1e-3:
        return f"{x:.{digits}g}"
    return f"{x:.{digits - 1}e}"


def pct(v: Any, digits: int = 3) -> str:
    """A fraction as a percentage with ``digits`` significant digits."""
    if v is None or not math.isfinite(float(v)):
        return "inf" if v is not None and float(v) > 0 else "-"
    return num(100.0 * float(v), digits) + " %"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _figure(name: str, alt: str, command: str, data: Sequence[str]) -> str:
    files = ", ".join(f"[`{d}`]({FIGURES}/{d})" for d in data)
    return f"![{alt}]({FIGURES}/{name})\n\nMade by: `{command}` &nbsp;·&nbsp; data: {files}"


def _load(figures: Path, name: str) -> Any | None:
    path = figures / name
    return read_json(path) if path.exists() else None


# ------------------------------------------------------------------------------- machine
_MACHINE_KEYS = (
    ("cpu", "CPU"),
    ("usable_cores", "cores used"),
    ("ram_gib", "RAM (GiB)"),
    ("os", "OS"),
    ("python", "Python"),
    ("numpy", "numpy"),
    ("scipy", "scipy"),
    ("cvxpy", "cvxpy"),
    ("clarabel", "clarabel"),
    ("torch", "torch"),
    ("torch_threads", "torch threads"),
    ("cuda", "CUDA available"),
    ("sflam_opt", "sflam-opt"),
    ("git_commit", "git commit"),
    ("load_avg_1m_at_start", "load average at start (1 min)"),
    ("load_avg_1m", "load average at end (1 min)"),
)


def _machine(metas: Mapping[str, Mapping[str, Any]]) -> str:
    names = list(metas)
    rows = []
    for key, label in _MACHINE_KEYS:
        vals = [metas[n]["machine"].get(key) for n in names]
        rows.append([label, *(("-" if v is None else str(v)) for v in vals)])
    rows.append(["started (UTC)", *(metas[n]["started_utc"] for n in names)])
    rows.append(["run time", *(_duration(metas[n].get("elapsed_s")) for n in names)])
    rows.append(["command", *(f"`{metas[n]['command']}`" for n in names)])
    return table(["", *names], rows)


# ------------------------------------------------------------------------------- solve
def _solve(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    meta = doc["meta"]
    cmd = meta["command"]
    parts = meta.get("parts", [])
    prof = meta["profile"]
    out = ["## Solver benchmarks", ""]
    out.append(
        f"Default scenario of formulation §7, `Scenario.default(N, seed={prof['seed']})`; times are "
        "`SolveResult.solve_time_s` of `sflam_opt.solve` (what a user calls), median of "
        f"{prof['repeats']} runs."
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
                "median time (s)",
                "min (s)",
                "max (s)",
                "runs",
                "median CPU (s)",
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
        "Times are wall-clock; the CPU column is the process CPU time of the same calls (all "
        "threads), which load from other processes inflates much less. "
        "Peak traced memory is `tracemalloc`'s peak of Python and numpy allocations during one "
        "extra, untimed solve (native memory of compiled cone solvers is not traced; not measured "
        "where one solve exceeds the time cap). The RSS column is the largest rise of the "
        "process's resident high-water mark (Linux `VmHWM`) during the timed solves: it sees "
        "native memory but not memory the allocator already held from earlier work.",
        "",
        _figure("solve_speed.png", "solve time vs N", cmd, ["solve_speed.csv", "solve.json"]),
        "",
    ]
    return out


def _optimality(figures: Path, doc: Mapping[str, Any], cmd: str) -> list[str]:
    summary = read_csv(figures / "solve_optimality_summary.csv")
    seeds = doc.get("seeds", [])
    out = ["### Optimality gap to `exact`", ""]
    counts = doc.get("exact_status_counts", {})
    out.append(
        f"{len(seeds)} random 3-4 device instances (`sflam_opt.bench.solve.small_instance(seed)`, "
        f"seeds {seeds[0] if seeds else '-'}..{seeds[-1] if seeds else '-'}; random channels, "
        "CPUs, power caps, data sizes, latency weight, target, bit sets; about 15 % with a round "
        "deadline and 15 % with a per-device energy cap). `exact` status counts: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        + ". Gap = J / J_exact - 1 on the instances `exact` proved optimal; a method without a "
        "feasible allocation there counts as an infinite gap."
    )
    out.append("")
    out.append(
        table(
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
    )
    if doc.get("unavailable"):
        out += [
            "",
            "Not measured (solver not registered): "
            + ", ".join(f"`{s}`" for s in doc["unavailable"]),
        ]
    out += [
        "",
        _figure(
            "solve_optimality.png",
            "optimality gap box plot",
            cmd,
            ["solve_optimality.csv", "solve_optimality_summary.csv"],
        ),
        "",
    ]
    return out


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
        _figure(
            "solve_savings.png",
            "J, latency, energy per method",
            cmd,
            ["solve_savings.csv", "solve.json"],
        ),
        "",
    ]
    return out


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
        _figure("solve_pareto.png", "Pareto front", cmd, ["solve_pareto.csv"]),
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
                "status",
                "iterations",
                "final J",
                "`fast` J",
                "stall escapes",
                "time (s)",
            ],
            [
                [
                    r["scenario"],
                    r["status"],
                    num(r["iterations"]),
                    num(r.get("objective")),
                    num(r.get("fast_objective")),
                    num(r.get("stall_escapes")),
                    num(r.get("solve_time_s"), 3),
                ]
                for r in runs
            ],
        )
    )
    out += ["", "Dashed lines in the figure: `fast`'s J on the same scenario."]
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
        _figure(
            "solve_bcd_trace.png",
            "BCD J per iteration",
            cmd,
            ["solve_bcd_trace.csv", "solve_bcd_runs.csv"],
        ),
        "",
    ]
    return out


# ------------------------------------------------------------------------------- memory
def _memory(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    meta = doc["meta"]
    rows = read_csv(figures / "memory.csv")
    out = ["## Memory benchmark", ""]
    model = meta["profile"]["memory_model"]
    out.append(
        f"Peak device memory of one training step of `{model}`: the SFLAM device trains only the "
        "patch embedding and sends 8-bit activations; the FL device trains the whole model. "
        f"Measurement: {doc.get('method') or '-'}. The breakdown is analytic "
        "(`sflam_opt.training.memory.analytic_breakdown`). MB = 10^6 bytes."
    )
    out.append("")
    out.append(
        table(
            [
                "protocol",
                "batch",
                "measured peak MB",
                "analytic MB",
                "weights",
                "gradients",
                "optimizer",
                "activations",
                "input",
                "trained params",
                "time (s)",
            ],
            [
                [
                    r["protocol"],
                    num(r["batch"]),
                    num(r.get("device_peak_mb")),
                    num(r.get("analytic_mb")),
                    num(r.get("weights_mb")),
                    num(r.get("gradients_mb")),
                    num(r.get("optimizer_state_mb")),
                    num(r.get("activations_mb")),
                    num(r.get("input_mb")),
                    num(r.get("trained_params")),
                    num(r.get("seconds"), 3),
                ]
                for r in rows
            ],
        )
    )
    for r in rows:
        if r.get("error"):
            out.append(f"\n{r['protocol']} batch {r['batch']} failed: {r['error']}")
    if doc.get("ratios"):
        out += [""] + [
            f"- batch {r['batch']}: FL device needs {num(r['fl_over_sflam'], 3)}x the SFLAM "
            f"device's peak ({num(r['fl_mb'])} MB vs {num(r['sflam_mb'])} MB)."
            for r in doc["ratios"]
        ]
    out += [
        "",
        _figure("memory.png", "device memory", meta["command"], ["memory.csv", "memory.json"]),
        "",
    ]
    return out


# ------------------------------------------------------------------------------- errors
def recorded_errors(paths: Iterable[Path]) -> list[str]:
    """Rows of the CSV files in ``paths`` whose ``error`` column is set, as one-line strings.

    A solver that raised, an unregistered solver, a failed training run or memory measurement is
    recorded there instead of stopping a long run; ``sflam-opt bench`` then exits 1 so that CI
    notices, and the report lists them.
    """
    out = []
    for path in dict.fromkeys(Path(p) for p in paths if Path(p).suffix == ".csv"):
        if not path.exists():
            continue
        for row in read_csv(path):
            if row.get("error"):
                what = ", ".join(
                    f"{k} {row[k]}"
                    for k in (
                        "solver",
                        "protocol",
                        "bits_mode",
                        "n_devices",
                        "seed",
                        "batch",
                        "scenario",
                    )
                    if row.get(k) is not None
                )
                out.append(f"`{path.name}` ({what}): {row['error']}")
    return out


# ------------------------------------------------------------------------------- headlines
def _headlines(figures: Path, present: Mapping[str, Any]) -> list[str]:
    """A few sentences with the numbers a user picks an allocator and a protocol by."""
    out: list[str] = []
    solve = present.get("solve")
    parts = solve["meta"].get("parts", []) if solve else []
    if "speed" in parts:
        rows = read_csv(figures / "solve_speed.csv")
        fits = solve.get("speed", {}).get("fits", {})
        for solver in ("fast", "bcd"):
            pts = [r for r in rows if r["solver"] == solver and r.get("median_s") is not None]
            if not pts:
                continue
            big = max(pts, key=lambda r: r["n_devices"])
            fit = fits.get(solver)
            growth = f", time growing as N^{fit['exponent']:.2f}" if fit else ""
            out.append(
                f"`{solver}` solves the default scenario with N = {num(big['n_devices'])} devices "
                f"in {num(big['median_s'], 3)} s (median of {big['repeats']}){growth}."
            )
        by = {(r["solver"], r["n_devices"]): r for r in rows if r.get("median_s") is not None}
        common = [n for (s, n) in by if s == "bcd" and ("fast", n) in by]
        if common:
            n = max(common)
            b, f = by[("bcd", n)], by[("fast", n)]
            out.append(
                f"At N = {num(n)}, `fast` is {num(b['median_s'] / f['median_s'], 3)}x faster "
                f"than `bcd` ({num(f['median_s'], 3)} s against {num(b['median_s'], 3)} s) with "
                f"J {num(f['objective'], 6)} against {num(b['objective'], 6)}."
            )
    if "optimality" in parts:
        summ = read_csv(figures / "solve_optimality_summary.csv")
        for r in summ:
            if r["solver"] in ("fast", "bcd") and r["instances"]:
                out.append(
                    f"`{r['solver']}` is within 0.1 % of the proven optimum (`exact`) on "
                    f"{pct(r['within_tol'])} of {r['instances']} random small instances; worst "
                    f"gap {pct(r['worst_gap'])}."
                )
        base = [r for r in summ if r["solver"] not in ("fast", "bcd") and r["instances"]]
        if base:
            best = min(base, key=lambda r: r["median_gap"] if r["median_gap"] is not None else 9e9)
            out.append(
                f"The best baseline, `{best['solver']}`, has a median gap of "
                f"{pct(best['median_gap'])} (95th percentile {pct(best['p95_gap'])})."
            )
    if "savings" in parts:
        sv = solve.get("savings", {}).get("table", [])
        fast = [r for r in sv if r["solver"] == "fast"]
        if fast:
            n = max(r["n_devices"] for r in fast)
            at = {r["baseline"]: r for r in fast if r["n_devices"] == n}
            eq = at.get("equal")
            others = [r for b, r in at.items() if b != "equal"]
            text = f"On the default scenario with N = {num(n)}, `fast`"
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
    train = present.get("train")
    if train and (figures / "train_summary.csv").exists():
        prof = train["meta"]["profile"]
        rows = read_csv(figures / "train_summary.csv")
        a = float(prof["train_bits_alpha"])
        by = {r["protocol"]: r for r in rows if r["alpha"] == a}
        s, f = by.get("sflam"), by.get("sfl")
        if s and f:
            out.append(
                f"Training (digits, α = {num(a)}, {prof['train_rounds']} rounds): SFLAM with "
                f"solver bits (mean {num(s['mean_bits'], 3)}) ends at "
                f"{pct(s['final_accuracy_mean'])} test accuracy against fp32 SFL's "
                f"{pct(f['final_accuracy_mean'])}, sending {num(_ratio(f, s), 3)}x fewer uplink "
                f"bytes; rounds to {pct(prof['train_target'], 2)}: "
                f"{num(s['rounds_to_target_mean'], 3)} ({s['reached_target']} seeds) against "
                f"{num(f['rounds_to_target_mean'], 3)} ({f['reached_target']})."
            )
    mem = present.get("memory")
    if mem and mem.get("ratios"):
        r = max(mem["ratios"], key=lambda r: r["batch"])
        out.append(
            f"Device memory at batch {r['batch']}: the FL device peaks at {num(r['fl_mb'])} MB, "
            f"the SFLAM device at {num(r['sflam_mb'])} MB ({num(r['fl_over_sflam'], 3)}x less)."
        )
    return ["## Headlines", "", *(f"- {t}" for t in out), ""] if out else []


def _ratio(a: Mapping[str, Any], b: Mapping[str, Any]) -> float | None:
    x, y = a.get("uplink_bytes_mean"), b.get("uplink_bytes_mean")
    return None if not x or not y else float(x) / float(y)


# ------------------------------------------------------------------------------- document
def render(out_dir: Path) -> str:
    """The markdown of ``results.md`` for the data files under ``out_dir/figures``."""
    figures = Path(out_dir) / FIGURES
    docs = {s: _load(figures, f"{s}.json") for s in SECTIONS}
    present = {s: d for s, d in docs.items() if d is not None}
    lines = [
        "# sflam-opt results",
        "",
        "<!-- Generated by sflam_opt.bench.report from the CSV/JSON files in figures/; "
        "do not edit by hand. -->",
        "",
        "Every number and figure below was produced by `sflam-opt bench` on the machine described "
        "here, and is rendered from the CSV/JSON files in [`figures/`](figures/) written by that "
        f"run. Report rendered {utc_now()}. Reproduce everything with `sflam-opt bench all --out "
        "docs`, or one part with `sflam-opt bench solve|train|memory "
        "--out docs`; `sflam-opt bench report --out docs` redraws the figures and this file from "
        "the data files alone.",
        "",
    ]
    lines += _headlines(figures, present)
    if present:
        lines += [
            "## Machine and date",
            "",
            _machine({s: d["meta"] for s, d in present.items()}),
            "",
            "A 1-minute load average above the number of cores means other processes competed for "
            "the CPU during that section; its wall times then overstate what an idle machine "
            "needs (accuracies, bytes, J and simulated costs do not depend on it).",
            "",
        ]
    if "solve" in present:
        lines += _solve(figures, present["solve"])
    if "train" in present:
        from sflam_opt.bench.train import report_section

        lines += report_section(figures, present["train"])
    if "memory" in present:
        lines += _memory(figures, present["memory"])
    errors = recorded_errors(sorted(figures.glob("*.csv"))) if figures.is_dir() else []
    if errors:
        lines += ["## Recorded errors", ""] + [f"- {e}" for e in errors] + [""]
    missing = [s for s in SECTIONS if s not in present]
    if missing:
        lines += [
            "## Not run",
            "",
            "No data for: " + ", ".join(f"`sflam-opt bench {s}`" for s in missing) + ".",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def write(out_dir: Path) -> Path:
    """Render and atomically write ``out_dir/results.md``."""
    from sflam_opt.io import atomic_write_text

    return atomic_write_text(Path(out_dir) / "results.md", render(out_dir))

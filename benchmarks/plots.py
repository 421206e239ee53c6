"""Figures of the benchmarks, drawn only from the CSV/JSON files the benchmarks wrote.

Reading the files back (instead of taking in-memory results) guarantees that each PNG shows exactly
the data published next to it. Matplotlib runs headless (Agg backend).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import read_csv, read_json  # noqa: E402
from sflam_opt.io import atomic_write_bytes  # noqa: E402

__all__ = ["memory_figures", "solve_figures", "train_figures"]

_DPI = 110
_COLORS = {
    "fast": "C0",
    "bcd": "C1",
    "bcd-pure": "C6",
    "exact": "k",
    "equal": "C7",
    "fixed-bits": "C2",
    "bandwidth-only": "C3",
    "power-only": "C4",
    "bits-only": "C5",
    "sflam": "C0",
    "sfl": "C1",
    "fl": "C2",
    "sl": "C3",
}
_MARKERS = {
    "equal": "s",
    "fixed-bits": "^",
    "bandwidth-only": "v",
    "power-only": "D",
    "bits-only": "P",
}


def _save(fig: Any, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


# ------------------------------------------------------------------------------- solver
def solve_figures(figures: Path) -> list[Path]:
    """Draw the solver figures whose data files exist in ``figures``; returns the PNG paths."""
    meta = read_json(figures / "solve.json")
    parts = meta["meta"].get("parts", [])
    out = []
    if "speed" in parts:
        out.append(_speed(figures, meta.get("speed", {}).get("fits", {})))
    if "optimality" in parts:
        out.append(_optimality(figures))
    if "savings" in parts:
        out.append(_savings(figures))
    if "pareto" in parts:
        out.append(_pareto(figures))
    if "bcd" in parts:
        out.append(_bcd(figures))
    return out


def _speed(figures: Path, fits: dict[str, Any]) -> Path:
    rows = [r for r in read_csv(figures / "solve_speed.csv") if _finite(r.get("median_s"))]
    fig, (ax, axm) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for solver in dict.fromkeys(r["solver"] for r in rows):
        pts = sorted((r for r in rows if r["solver"] == solver), key=lambda r: r["n_devices"])
        if not pts:
            continue
        n = np.array([r["n_devices"] for r in pts], dtype=float)
        t = np.array([r["median_s"] for r in pts])
        lo = t - np.array([r["min_s"] for r in pts])
        hi = np.array([r["max_s"] for r in pts]) - t
        fit = fits.get(solver)
        label = solver if not fit else f"{solver}: time ~ N^{fit['exponent']:.2f}"
        color = _COLORS.get(solver, "C9")
        ax.errorbar(n, t, yerr=[lo, hi], marker="o", capsize=3, color=color, label=label)
        cold = [(r["n_devices"], r["cold_s"]) for r in pts if _finite(r.get("cold_s"))]
        if cold:
            ax.plot(*zip(*cold, strict=True), ":x", color=color, label=f"{solver} cold")
        if fit:
            xs = np.array([min(fit["fit_sizes"]), max(fit["fit_sizes"])])
            ax.plot(xs, fit["coefficient_s"] * xs ** fit["exponent"], "--", color=color, lw=1)
        for key, style, what in (
            ("traced_peak_mib", "-o", "traced"),
            ("rss_peak_delta_mib", ":s", "RSS rise"),
        ):
            mem = [(r["n_devices"], r[key]) for r in pts if _finite(r.get(key)) and r[key] > 0]
            if mem:
                axm.plot(*zip(*mem, strict=True), style, color=color, label=f"{solver} {what}")
    for a, ylabel in ((ax, "solve time (s)"), (axm, "MiB")):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("devices N")
        a.set_ylabel(ylabel)
        a.grid(True, which="both", alpha=0.3)
        a.legend()
    ax.set_title("warm solve time (median, bars: min-max); dotted: cold")
    axm.set_title("peak memory of one solve")
    return _save(fig, figures / "solve_speed.png")


def _optimality(figures: Path) -> Path:
    rows = read_csv(figures / "solve_optimality.csv")
    solvers = [s for s in dict.fromkeys(r["solver"] for r in rows) if s != "exact"]
    data, labels = [], []
    for s in solvers:
        mine = [r for r in rows if r["solver"] == s and r.get("exact_status") == "optimal"]
        gaps = [100.0 * r["gap"] for r in mine if _finite(r.get("gap"))]
        data.append(gaps if gaps else [np.nan])
        bad = len(mine) - len(gaps)
        labels.append(s + (f"\n({bad} infeasible)" if bad else ""))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(solvers)), 4.5))
    ax.boxplot(data, whis=(5, 95), showfliers=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    ax.set_yscale("symlog", linthresh=0.01)
    finite = [g for d in data for g in d if np.isfinite(g)]
    # Gaps below zero are round-off (J below the proven optimum by ~1e-14) unless visible here.
    lowest = min(finite, default=0.0)
    ax.set_ylim(bottom=lowest * 1.5 if lowest < -1e-6 else 0.0)
    ax.axhline(100 * 1e-3, color="r", lw=0.8, ls=":", label="0.1 %")
    ax.set_ylabel("gap to exact optimum, % (symlog)")
    ax.set_title(
        f"optimality gap over {len({r['seed'] for r in rows})} random instances (whiskers 5-95 %)"
    )
    ax.legend(loc="upper left")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, figures / "solve_optimality.png")


def _savings(figures: Path) -> Path:
    rows = [r for r in read_csv(figures / "solve_savings.csv") if _finite(r.get("objective"))]
    sizes = sorted({r["n_devices"] for r in rows})
    methods = list(dict.fromkeys(r["solver"] for r in rows))
    ref = {r["n_devices"]: r for r in rows if r["solver"] == "equal"}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
    width = 0.8 / max(1, len(methods))
    for ax, key, title in zip(
        axes,
        ("objective", "total_latency_s", "total_energy_j"),
        ("J", "total latency K·T", "total energy K·E"),
        strict=True,
    ):
        for i, m in enumerate(methods):
            vals = {
                r["n_devices"]: r[key] / ref[r["n_devices"]][key]
                for r in rows
                if r["solver"] == m and r["n_devices"] in ref and _finite(r.get(key))
            }
            xs = [
                j + (i - (len(methods) - 1) / 2) * width for j, n in enumerate(sizes) if n in vals
            ]
            ys = [vals[n] for n in sizes if n in vals]
            ax.bar(xs, ys, width=width, color=_COLORS.get(m, "C9"), label=m)
        ax.axhline(1.0, color="k", lw=0.7)
        ax.set_xticks(range(len(sizes)), [f"N={n}" for n in sizes])
        ax.set_ylabel("relative to the equal baseline")
        ax.set_title(f"{title} (equal = 1)")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(fig, figures / "solve_savings.png")


def _pareto(figures: Path) -> Path:
    rows = read_csv(figures / "solve_pareto.csv")
    front = sorted(
        (r for r in rows if r["kind"] == "front" and _finite(r.get("total_latency_s"))),
        key=lambda r: r["latency_weight"],
    )
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    if front:
        x = [r["total_latency_s"] / 3600 for r in front]
        y = [r["total_energy_j"] / 1000 for r in front]
        ax.plot(x, y, "-o", color="C0", label=f"{front[0]['solver']} front")
        for r, xi, yi in zip(front, x, y, strict=True):
            ax.annotate(
                f"ω={r['latency_weight']:g}",
                (xi, yi),
                fontsize=7,
                textcoords="offset points",
                xytext=(4, 3),
            )
    for r in rows:
        if r["kind"] == "baseline" and _finite(r.get("total_latency_s")):
            ax.scatter(
                r["total_latency_s"] / 3600,
                r["total_energy_j"] / 1000,
                s=50,
                marker=_MARKERS.get(r["solver"], "x"),
                color=_COLORS.get(r["solver"], "C9"),
                label=f"{r['solver']} (ω={r['latency_weight']:g})",
                zorder=3,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("total training latency K·T (h)")
    ax.set_ylabel("total device energy K·E (kJ)")
    n = rows[0]["n_devices"] if rows else "?"
    ax.set_title(f"latency-energy trade-off, default scenario N={n}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, figures / "solve_pareto.png")


def _bcd(figures: Path) -> Path:
    rows = read_csv(figures / "solve_bcd_trace.csv")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    by: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        if _finite(r.get("objective")):
            by[(r["scenario"], r.get("solver") or "bcd")].append((r["iteration"], r["objective"]))
    runs = {}
    if (figures / "solve_bcd_runs.csv").exists():
        runs = {r["scenario"]: r for r in read_csv(figures / "solve_bcd_runs.csv")}
    colors = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(k[0] for k in by))}
    for (name, method), pts in by.items():
        pts.sort()
        style, label = ("-o", name) if method == "bcd" else (":.", None)
        ax.plot(*zip(*pts, strict=True), style, ms=3, color=colors[name], label=label)
    for name, color in colors.items():
        ref = runs.get(name, {}).get("fast_objective")
        if _finite(ref):
            ax.axhline(ref, color=color, ls="--", lw=0.8)
    ax.plot([], [], "k:", lw=0.8, label="bcd-pure (dotted)")
    ax.plot([], [], "k--", lw=0.8, label="fast's J (dashed)")
    ax.set_xlabel("BCD outer iteration")
    ax.set_ylabel("J after the iteration (equal = 1)")
    ax.set_title("BCD convergence: bcd as shipped (solid), pure block descent (dotted)")
    ax.grid(True, alpha=0.3)
    if by:
        ax.legend(fontsize=7)
    return _save(fig, figures / "solve_bcd_trace.png")


# ------------------------------------------------------------------------------- training
def _band(
    ax: Any,
    curves: Sequence[Sequence[float]],
    x: Sequence[int],
    color: str,
    label: str,
    ls: str = "-",
) -> None:
    arr = np.array([c[: len(x)] for c in curves], dtype=float)
    ax.plot(x, np.nanmean(arr, axis=0), ls, color=color, label=label)
    if arr.shape[0] > 1:
        ax.fill_between(x, np.nanmin(arr, axis=0), np.nanmax(arr, axis=0), color=color, alpha=0.2)


def _curves(rows: list[dict[str, Any]], key: str) -> dict[tuple, dict[int, dict[int, float]]]:
    # (group) -> seed -> round -> value
    out: dict[tuple, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if _finite(r.get(key)):
            out[(r["alpha"], r["protocol"], r.get("bits_mode"))][r["seed"]][r["round"]] = r[key]
    return out


def _series(seeds: dict[int, dict[int, float]]) -> tuple[list[int], list[list[float]]]:
    rounds = sorted(set().union(*(s.keys() for s in seeds.values())))
    return rounds, [[s.get(k, np.nan) for k in rounds] for s in seeds.values()]


def train_figures(figures: Path) -> list[Path]:
    """Draw the training figures from ``train_curves.csv`` (and ``train_bits_curves.csv``)."""
    out = []
    meta = read_json(figures / "train.json")
    target = meta["meta"]["profile"]["train_target"]
    if (figures / "train_curves.csv").exists():
        rows = read_csv(figures / "train_curves.csv")
        acc = _curves(rows, "test_accuracy")
        alphas = sorted({k[0] for k in acc})
        fig, axes = plt.subplots(
            1, len(alphas), figsize=(4.5 * len(alphas), 3.8), squeeze=False, layout="constrained"
        )
        for ax, alpha in zip(axes[0], alphas, strict=True):
            for (a, proto, _), seeds in sorted(acc.items()):
                if a != alpha:
                    continue
                x, ys = _series(seeds)
                _band(ax, ys, x, _COLORS.get(proto, "C9"), proto, ls="--" if proto == "fl" else "-")
            ax.axhline(target, color="k", lw=0.7, ls=":")
            ax.set_title(f"Dirichlet α = {alpha:g} (mean, band: min-max over seeds)", fontsize=9)
            ax.set_xlabel("round")
            ax.set_ylabel("test accuracy")
            ax.set_ylim(0, 1)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        out.append(_save(fig, figures / "train_accuracy.png"))

        grad = _curves(rows, "grad_sq_norm_avg")
        bounds = {key: _curves(rows, key) for key in ("bound", "bound_calibrated")}
        styles = {
            "bound": (":", "bound, scenario constants"),
            "bound_calibrated": ("--", "bound, calibrated"),
        }
        if grad:
            fig, axes = plt.subplots(
                1,
                len(alphas),
                figsize=(4.8 * len(alphas), 4.0),
                squeeze=False,
                layout="constrained",
            )
            for ax, alpha in zip(axes[0], alphas, strict=True):
                for (a, proto, mode), seeds in sorted(grad.items()):
                    if a != alpha:
                        continue
                    color = _COLORS.get(proto, "C9")
                    x, ys = _series(seeds)
                    _band(ax, ys, x, color, f"{proto} measured")
                    for key, (ls, _) in styles.items():
                        if (a, proto, mode) in bounds[key]:
                            bx, bys = _series(bounds[key][(a, proto, mode)])
                            ax.plot(
                                bx,
                                np.nanmean(np.array(bys, dtype=float), axis=0),
                                ls,
                                color=color,
                                lw=1,
                            )
                for ls, what in styles.values():
                    ax.plot([], [], ls, color="k", lw=1, label=what)
                ax.set_yscale("log")
                ax.set_xlabel("round K")
                ax.set_ylabel("average squared gradient norm")
                ax.set_title(f"α = {alpha:g}: (1/K) Σ ‖∇F‖² vs bound", fontsize=9)
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=7)
            out.append(_save(fig, figures / "train_gradnorm.png"))
    if (figures / "train_bits_curves.csv").exists():
        rows = read_csv(figures / "train_bits_curves.csv")
        acc = _curves(rows, "test_accuracy")
        up = _curves(rows, "uplink_bytes_cum")

        def order(key: tuple) -> tuple[int, float]:
            mode = str(key[2])
            return (0, 0.0) if mode == "solver" else (1, float(mode.split()[-1]))

        fig, (ax, axu) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
        for i, key in enumerate(sorted(acc, key=order)):
            x, ys = _series(acc[key])
            _band(ax, ys, x, f"C{i}", str(key[2]))
            if key in up:
                _, us = _series(up[key])
                mb = np.nanmean(np.array(us, dtype=float), axis=0) / 1e6
                axu.plot(
                    mb,
                    np.nanmean(np.array(ys, dtype=float), axis=0),
                    color=f"C{i}",
                    label=str(key[2]),
                )
        for a in (ax, axu):
            a.axhline(target, color="k", lw=0.7, ls=":")
            a.set_ylabel("test accuracy")
            a.set_ylim(0, 1)
            a.grid(True, which="both", alpha=0.3)
            a.legend(fontsize=8)
        ax.set_xlabel("round")
        ax.set_title("SFLAM: solver bits vs uniform bits (mean, band: min-max)", fontsize=10)
        axu.set_xscale("log")
        axu.set_xlabel("cumulative uplink MB (mean over seeds)")
        axu.set_title("accuracy per uplink byte", fontsize=10)
        out.append(_save(fig, figures / "train_bits.png"))
    return out


# ------------------------------------------------------------------------------- memory
_PARTS = ("weights", "gradients", "optimizer_state", "activations", "input")


def memory_figures(figures: Path) -> list[Path]:
    """Measured device peak per batch (SFLAM vs FL) and the analytic breakdown of each."""
    rows = [r for r in read_csv(figures / "memory.csv") if _finite(r.get("device_peak_mb"))]
    if not rows:
        return []
    batches = sorted({r["batch"] for r in rows})
    by = {(r["protocol"], r["batch"]): r for r in rows}
    fig, (ax, axb) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    width = 0.38
    for i, proto in enumerate(("sflam", "fl")):
        xs = [j + (i - 0.5) * width for j, b in enumerate(batches) if (proto, b) in by]
        ys = [by[(proto, b)]["device_peak_mb"] for b in batches if (proto, b) in by]
        bars = ax.bar(xs, ys, width=width, color=_COLORS[proto], label=f"{proto} device")
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    ax.set_yscale("log")
    ax.set_ylim(bottom=1.0)
    ax.set_ylabel("measured peak device memory (MB)")
    ax.set_title(f"{rows[0]['model']}: one device training step")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend()
    order = sorted(rows, key=lambda r: (r["batch"], r["protocol"] != "sflam"))
    x = np.arange(len(order))
    bottom = np.zeros(len(order))
    totals = np.array([sum(r.get(f"{p}_mb") or 0.0 for p in _PARTS) for r in order])
    for i, part in enumerate(_PARTS):
        vals = np.array([r.get(f"{part}_mb") or 0.0 for r in order]) / totals * 100
        axb.bar(x, vals, bottom=bottom, color=f"C{i}", width=0.6, label=part)
        bottom += vals
    axb.set_xticks(x, [f"{r['protocol']}\nb={r['batch']}" for r in order], fontsize=8)
    axb.set_ylabel("share of analytic total (%)")
    axb.set_title("analytic breakdown")
    axb.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return [_save(fig, figures / "memory.png")]

"""Latency-energy Pareto front: solve across latency weights omega (docs/formulation.md §5).

J weighs total latency ``K T`` against total energy ``K E`` with omega in [0, 1]. Sweeping omega
and recording ``(K T, K E)`` of each solution traces the trade-off the SFLAM paper's weighted
objective explores (arXiv 2504.09114). Used by ``sflam-opt sweep SCENARIO --weights 0:1:11``,
which writes the rows as CSV (:func:`write_csv`) and a PNG plot (:func:`plot_pareto`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sflam_opt.errors import SolverArgumentError
from sflam_opt.io import atomic_write_bytes, atomic_write_text
from sflam_opt.scenario import Scenario

__all__ = [
    "COLUMNS",
    "FEASIBLE_STATUSES",
    "pareto",
    "pareto_front",
    "parse_weights",
    "plot_pareto",
    "write_csv",
]

logger = logging.getLogger(__name__)

#: Keys of every row returned by :func:`pareto`, in CSV column order.
COLUMNS = (
    "weight",
    "status",
    "objective",
    "total_latency_s",
    "total_energy_j",
    "rounds",
    "rounds_ceil",
    "round_latency_s",
    "round_energy_j",
    "mean_bits",
    "solve_time_s",
    "message",
)
#: Solver statuses whose allocation is feasible (a point of the front).
FEASIBLE_STATUSES = ("optimal", "converged", "max_iter")
_WEIGHT_HINT = (
    "use START:STOP:COUNT (e.g. 0:1:11) or a comma list (e.g. 0,0.5,1) of values in [0, 1]"
)


def parse_weights(spec: str) -> NDArray[np.float64]:
    """Latency weights from ``"START:STOP:COUNT"``, a comma list, or one number.

    ``"0:1:11"`` gives 11 evenly spaced weights from 0 to 1 (:func:`numpy.linspace`).

    Parameters
    ----------
    spec : str
        The specification.

    Returns
    -------
    ndarray, shape (M,)
        Sorted, distinct weights in [0, 1].

    Raises
    ------
    SolverArgumentError
        On anything else: a one-line message with the bad value and the accepted forms.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SolverArgumentError(f"weights={spec!r}: empty; {_WEIGHT_HINT}")
    text = spec.strip()

    def num(tok: str) -> float:
        try:
            val = float(tok)
        except ValueError:
            raise SolverArgumentError(
                f"weights={spec!r}: {tok.strip()!r} is not a number; {_WEIGHT_HINT}"
            ) from None
        if not math.isfinite(val) or not 0.0 <= val <= 1.0:
            raise SolverArgumentError(
                f"weights={spec!r}: {tok.strip()} is outside [0, 1]; {_WEIGHT_HINT}"
            )
        return val

    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise SolverArgumentError(
                f"weights={spec!r}: expected 3 fields START:STOP:COUNT, got {len(parts)}; "
                f"{_WEIGHT_HINT}"
            )
        start, stop = num(parts[0]), num(parts[1])
        try:
            count = int(parts[2])
        except ValueError:
            raise SolverArgumentError(
                f"weights={spec!r}: COUNT {parts[2].strip()!r} is not a whole number; "
                f"{_WEIGHT_HINT}"
            ) from None
        if count < 1 or (count == 1 and start != stop):
            raise SolverArgumentError(
                f"weights={spec!r}: COUNT must be >= 2 (or 1 with START == STOP), "
                f"got {count}; {_WEIGHT_HINT}"
            )
        if start > stop:
            raise SolverArgumentError(
                f"weights={spec!r}: START {start:g} is above STOP {stop:g}; {_WEIGHT_HINT}"
            )
        vals = np.linspace(start, stop, count)
    else:
        toks = [t for t in text.split(",")]
        if any(not t.strip() for t in toks):
            raise SolverArgumentError(f"weights={spec!r}: empty entry in the list; {_WEIGHT_HINT}")
        vals = np.array([num(t) for t in toks])
    # Round off linspace noise (0.30000000000000004) so the CSV shows the weights as typed.
    return np.unique(np.round(vals, 12))


def _check_weights(weights: ArrayLike) -> NDArray[np.float64]:
    try:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise SolverArgumentError(
            f"weights={weights!r}: need numbers in [0, 1]; {_WEIGHT_HINT}"
        ) from None
    if w.size == 0:
        raise SolverArgumentError(f"weights: empty; {_WEIGHT_HINT}")
    bad = ~np.isfinite(w) | (w < 0) | (w > 1)
    if bad.any():
        raise SolverArgumentError(
            f"weights: {w[bad][0]!r} is outside [0, 1]; latency weights lie in [0, 1]"
        )
    return w


def _with_weight(scenario: Scenario, omega: float) -> Scenario:
    """``scenario.replace(objective={"latency_weight": omega})`` without rebuilding the devices.

    ``replace`` re-validates the whole scenario through a dict per device (seconds at 10^5
    devices); only ``[objective]`` changes here, so only it is validated, by the same parser.
    """
    from sflam_opt.scenario_parser import ScenarioParser

    table = {**dataclasses.asdict(scenario.objective), "latency_weight": omega}
    objective = ScenarioParser("weights").section("objective", table)
    return dataclasses.replace(scenario, objective=objective)


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def pareto(
    scenario: Scenario,
    weights: ArrayLike,
    solver: str = "bcd",
    *,
    progress: Callable[[int, dict[str, Any]], Any] | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Solve ``scenario`` at every latency weight and collect the totals.

    Parameters
    ----------
    scenario : Scenario
        Its ``[objective] latency_weight`` is replaced by each weight in turn.
    weights : array_like, shape (M,)
        Latency weights omega in [0, 1].
    solver : str
        Registered solver name.
    progress : callable, optional
        Called as ``progress(index, row)`` after each weight.
    **options
        Passed to the solver (e.g. ``max_iter``, ``cvx_solver``).

    Returns
    -------
    list of dict
        One row per weight with the keys of :data:`COLUMNS`. Totals are ``K T`` (s) and ``K E``
        (J); they, ``objective`` and ``rounds`` are None when the solve returned no feasible
        allocation. ``objective`` is J at that weight (1 = the equal split), so it is not
        comparable across weights; the totals are.
    """
    from sflam_opt.solvers import get_solver, solve

    if not isinstance(scenario, Scenario):
        raise SolverArgumentError(f"scenario: expected a Scenario, got {type(scenario).__name__}")
    w = _check_weights(weights)
    get_solver(solver)
    rows: list[dict[str, Any]] = []
    for i, omega in enumerate(w.tolist()):
        scn = _with_weight(scenario, omega)
        res = solve(scn, solver, **options)
        ev = res.evaluation
        ok = res.status in FEASIBLE_STATUSES and ev is not None and res.allocation is not None
        row: dict[str, Any] = {
            "weight": omega,
            "status": res.status,
            "objective": _num(res.objective) if ok else None,
            "total_latency_s": _num(ev.total_latency_s) if ok else None,
            "total_energy_j": _num(ev.total_energy_j) if ok else None,
            "rounds": _num(ev.rounds) if ok else None,
            "rounds_ceil": _num(ev.rounds_ceil) if ok else None,
            "round_latency_s": _num(ev.round_latency_s) if ok else None,
            "round_energy_j": _num(ev.round_energy_j) if ok else None,
            "mean_bits": float(np.mean(res.allocation.bits)) if ok else None,
            "solve_time_s": float(res.solve_time_s),
            "message": res.message,
        }
        logger.debug("sweep: omega=%g %s J=%s", omega, res.status, row["objective"])
        rows.append(row)
        if progress is not None:
            progress(i, row)
    return rows


def _points(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        r
        for r in rows
        if r.get("status") in FEASIBLE_STATUSES
        and _num(r.get("total_latency_s")) is not None
        and _num(r.get("total_energy_j")) is not None
    ]


def pareto_front(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows no other row dominates in (total latency, total energy), by latency.

    A row dominates another when it is no worse in both totals and better in one. Rows without
    a feasible solution are left out.
    """
    pts = _points(rows)
    lat = np.array([float(r["total_latency_s"]) for r in pts])
    en = np.array([float(r["total_energy_j"]) for r in pts])
    if lat.size == 0:
        return []
    dom = (
        (lat[None, :] <= lat[:, None])
        & (en[None, :] <= en[:, None])
        & ((lat[None, :] < lat[:, None]) | (en[None, :] < en[:, None]))
    ).any(axis=1)
    keep = np.flatnonzero(~dom)
    keep = keep[np.lexsort((en[keep], lat[keep]))]
    return [pts[i] for i in keep]


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write the rows as CSV (columns :data:`COLUMNS`; empty cells for None) atomically."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(COLUMNS)
    for r in rows:
        cells = []
        for key in COLUMNS:
            v = r.get(key)
            if v is None:
                cells.append("")
            elif isinstance(v, float):
                cells.append(repr(v))
            else:
                cells.append(str(v))
        out.writerow(cells)
    return atomic_write_text(path, buf.getvalue())


#: A point more than this factor from the median of the plotted points is drawn off-scale.
OFF_SCALE = 100.0


def _off_scale(values: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Which of ``values`` lie more than :data:`OFF_SCALE` times from their median."""
    pos = values[np.isfinite(values) & (values > 0)]
    if pos.size < 3:
        return np.zeros(values.shape, dtype=bool)
    med = float(np.median(pos))
    return ~np.isfinite(values) | (values > OFF_SCALE * med) | (values < med / OFF_SCALE)


def _fit_axes(ax: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Fit the axes to the plotted points that are on scale; mark the others at the edge.

    The axes are logarithmic when the on-scale points still span more than a factor of 100.
    """
    data = [np.asarray(ln.get_xydata(), dtype=float).reshape(-1, 2) for ln in ax.get_lines()]
    xy = np.concatenate(data) if data else np.empty((0, 2))
    xy = xy[np.all(np.isfinite(xy) & (xy > 0), axis=1)]
    if not xy.size:
        return
    off = _off_scale(xy[:, 0]) | _off_scale(xy[:, 1])
    inside = xy[~off] if (~off).any() else xy
    limits = []
    for k, setter in enumerate((ax.set_xscale, ax.set_yscale)):
        lo, hi = float(inside[:, k].min()), float(inside[:, k].max())
        log = hi > 100.0 * lo
        if log:
            setter("log")
            lo, hi = lo / 1.5, hi * 1.5
        else:
            pad = 0.08 * (hi - lo) or 0.08 * abs(hi) or 1.0
            lo, hi = lo - pad, hi + pad
        limits.append((lo, hi))
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    marked = 0
    for r in rows:
        x, y = float(r["total_latency_s"]) / 3600.0, float(r["total_energy_j"]) / 1e3
        if not (_outside(x, limits[0]) or _outside(y, limits[1])):
            continue
        cx, cy = min(max(x, limits[0][0]), limits[0][1]), min(max(y, limits[1][0]), limits[1][1])
        ax.plot(
            [cx],
            [cy],
            marker=">" if x > limits[0][1] else "^",
            color="C3",
            ms=8,
            linestyle="none",
            clip_on=False,
        )
        # The note sits in the empty upper right of a trade-off curve, with an arrow to the mark.
        ax.annotate(
            f"ω={r['weight']:.2g} off scale: {x:.3g} h, {y:.3g} kJ",
            (cx, cy),
            xytext=(0.97, 0.62 - 0.08 * marked),
            textcoords="axes fraction",
            ha="right",
            fontsize=7,
            color="C3",
            arrowprops={"arrowstyle": "->", "color": "C3", "lw": 0.8},
        )
        marked += 1


def _outside(v: float, limits: tuple[float, float]) -> bool:
    return not limits[0] <= v <= limits[1]


def plot_pareto(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    scenario: Scenario | None = None,
    baselines: Mapping[str, Sequence[Mapping[str, Any]] | tuple[float, float]] | None = None,
    title: str | None = None,
) -> Path:
    """Plot total energy against total latency of the sweep and write a PNG atomically.

    Parameters
    ----------
    rows : sequence of dict
        Output of :func:`pareto`. The non-dominated points are joined by a line and labelled with
        their weight; dominated ones are drawn hollow; infeasible rows are skipped.
    path : path-like
        PNG file to write (parent directories are created).
    scenario : Scenario, optional
        When given (and ``baselines`` is None), the equal split (the J = 1 reference) is marked.
    baselines : mapping, optional
        Extra series by name: a list of rows (e.g. ``pareto(scn, ws, solver="fixed-bits")``) or
        one ``(total_latency_s, total_energy_j)`` point.
    title : str, optional
        Plot title.

    Returns
    -------
    Path
        ``path``.
    """
    fig = _pareto_figure(rows, scenario, baselines, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _pareto_figure(
    rows: Sequence[Mapping[str, Any]],
    scenario: Scenario | None,
    baselines: Mapping[str, Sequence[Mapping[str, Any]] | tuple[float, float]] | None,
    title: str | None,
) -> Any:
    """The figure :func:`plot_pareto` writes (a matplotlib ``Figure``)."""
    # The object API with an explicit Agg canvas: no pyplot state and no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 5.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    pts = _points(rows)
    front = pareto_front(rows)
    front_ids = {id(r) for r in front}
    if front:
        ax.plot(
            [r["total_latency_s"] / 3600.0 for r in front],
            [r["total_energy_j"] / 1e3 for r in front],
            "o-",
            color="C0",
            label="Pareto front",
        )
        for r in front:
            ax.annotate(
                f"{r['weight']:.2g}",
                (r["total_latency_s"] / 3600.0, r["total_energy_j"] / 1e3),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
    dominated = [r for r in pts if id(r) not in front_ids]
    if dominated:
        ax.plot(
            [r["total_latency_s"] / 3600.0 for r in dominated],
            [r["total_energy_j"] / 1e3 for r in dominated],
            "o",
            mfc="none",
            color="C0",
            label="dominated",
        )
    extra: dict[str, Any] = dict(baselines or {})
    if baselines is None and scenario is not None:
        from sflam_opt.costs import reference

        ref = reference(scenario)
        if math.isfinite(ref.rounds):
            extra["equal split"] = (ref.rounds * ref.latency_s, ref.rounds * ref.energy_j)
    for k, (name, series) in enumerate(extra.items(), start=1):
        if isinstance(series, tuple):
            xs, ys = [float(series[0])], [float(series[1])]
        else:
            bp = _points(series)
            xs = [float(r["total_latency_s"]) for r in bp]
            ys = [float(r["total_energy_j"]) for r in bp]
        if xs:
            ax.plot(
                np.asarray(xs) / 3600.0,
                np.asarray(ys) / 1e3,
                "s--" if len(xs) > 1 else "s",
                color=f"C{k}",
                label=name,
            )
    # With no latency weight the round time can grow without bound (the continuous block stops
    # near the Shannon-limit energy): such a point would squash every other one, so it is drawn
    # at the edge of the axes with its value written beside it.
    _fit_axes(ax, [r for r in pts if r["weight"] is not None])
    ax.set_xlabel("total latency K T (h)")
    ax.set_ylabel("total energy K E (kJ)")
    ax.set_title(title or "Latency-energy trade-off over the latency weight")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper right")
    if not pts:
        ax.text(0.5, 0.5, "no feasible solution", ha="center", va="center", transform=ax.transAxes)
    return fig

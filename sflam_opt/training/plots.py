"""Training curves: test accuracy, and the measured gradient norm against the bound.

The right panel compares the running average of the measured squared gradient norm,
``(1/k) sum_{j<=k} ||g_j||^2`` (what the left side of the bound of docs/formulation.md §4 averages),
with the bound ``A / (eta tau k) + Phi0 + Phi_q(b)`` after ``k`` rounds. The per-round values are
shown too. Figures are drawn with matplotlib's object API (no pyplot global state) and written
atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sflam_opt.io import atomic_write_bytes

__all__ = ["plot_curves"]


def plot_curves(
    metrics: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, title: str = ""
) -> None:
    """Write ``curves.png``: accuracy per round, and gradient norm vs the convergence bound.

    Parameters
    ----------
    metrics : sequence of mapping
        Rows of ``metrics.jsonl`` (keys ``round``, ``test_accuracy``, ``grad_sq_norm``,
        ``bound``).
    path : path
        Output PNG file.
    title : str
        Figure title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rounds = np.array([m["round"] for m in metrics], dtype=np.float64)
    acc = np.array([m["test_accuracy"] for m in metrics], dtype=np.float64)
    grad = np.array([m["grad_sq_norm"] for m in metrics], dtype=np.float64)
    bnd = np.array([m["bound"] for m in metrics], dtype=np.float64)
    running = np.cumsum(grad) / np.arange(1, grad.size + 1) if grad.size else grad

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(rounds, 100 * acc, marker=".", color="tab:blue")
    left.set_xlabel("round")
    left.set_ylabel("test accuracy (%)")
    left.set_title("aggregated model on the test set")
    left.grid(alpha=0.3)

    right.plot(rounds, grad, color="tab:gray", alpha=0.5, lw=1, label="measured, per round")
    right.plot(rounds, running, color="tab:orange", lw=2, label="measured, running average")
    right.plot(rounds, bnd, color="tab:red", ls="--", lw=2, label="bound (docs/formulation.md §4)")
    right.set_xlabel("round k")
    right.set_ylabel("average squared gradient norm")
    if np.all(grad > 0) and np.all(bnd > 0):
        right.set_yscale("log")
    right.set_title("gradient norm vs convergence bound")
    right.grid(alpha=0.3)
    right.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())

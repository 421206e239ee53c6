"""Figures of docs/formulation.md §4.3 measured on the design runs of ``docs/theory/runs``.

``python -m benchmarks.design_runs`` reads the committed runs of the default configuration (80
rounds; the files without a configuration suffix) and prints, for an online fit after the first
``R`` rounds (the trainer's default, :func:`sflam_opt.training.online.fit_rounds`):

- the fit's margin on ``Phi0``, ``t sd / sqrt(n)`` of the squared gradient norm over rounds
  ``R/2..R``, as a share of that late level (smallest and median over the runs);
- the online ``Phi0`` (the upper confidence value of that level) across the runs;
- the mean squared gradient norm over the last 8 rounds across the runs.

It trains nothing; the figures change only when the runs are retrained (``python -m benchmarks
theory run``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.stats import t as student_t

from benchmarks.common import REPO, read_json
from sflam_opt.estimator import upper_confidence
from sflam_opt.training.config import TrainConfig
from sflam_opt.training.online import fit_rounds

__all__ = ["CONFIDENCE", "design_figures"]

#: The estimator's confidence level (``ConvergenceEstimator``'s default).
CONFIDENCE = 0.95


def design_figures(runs: Path = REPO / "docs" / "theory" / "runs") -> dict[str, float]:
    """The §4.3 figures over the default-configuration runs in ``runs`` (see the module doc)."""
    rounds = TrainConfig().rounds
    r = fit_rounds(TrainConfig())
    margins, phi0, last8 = [], [], []
    for path in sorted(runs.glob("*.json")):
        doc = read_json(path)
        if set(doc["config"]) - {"protocol", "alpha", "seed", "bits"}:
            continue  # another configuration (the non-IID benchmark's)
        g = np.array([m["grad_sq_norm"] for m in doc["metrics"]], dtype=float)
        if g.size != rounds:
            continue
        late = g[r // 2 : r]
        t = student_t.ppf(CONFIDENCE, late.size - 1)
        margins.append(t * float(np.std(late, ddof=1)) / math.sqrt(late.size) / float(late.mean()))
        phi0.append(upper_confidence(late, CONFIDENCE))
        last8.append(float(g[-8:].mean()))
    if not margins:
        raise SystemExit(f"no {rounds}-round default-configuration runs in {runs}")
    return {
        "runs": len(margins),
        "fit_rounds": r,
        "margin_share_min": min(margins),
        "margin_share_median": float(np.median(margins)),
        "online_phi0_min": min(phi0),
        "online_phi0_max": max(phi0),
        "last8_mean_min": min(last8),
        "last8_mean_max": max(last8),
    }


def main() -> None:
    """Print :func:`design_figures`."""
    f = design_figures()
    print(f"{f['runs']} runs of {TrainConfig().rounds} rounds, fit after R = {f['fit_rounds']}")
    print(
        f"Phi0 margin t sd / sqrt(n) over rounds R/2..R: {f['margin_share_min']:.1%} of the late "
        f"level at least, median {f['margin_share_median']:.1%}"
    )
    print(f"online Phi0: {f['online_phi0_min']:.2f} to {f['online_phi0_max']:.2f}")
    print(f"mean over the last 8 rounds: {f['last8_mean_min']:.2f} to {f['last8_mean_max']:.2f}")


if __name__ == "__main__":
    main()

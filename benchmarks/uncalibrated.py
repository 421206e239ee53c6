"""``python -m benchmarks uncalibrated``: the online bound on configurations never calibrated.

Every configuration below has no stored calibration (``sflam_opt/training/calibrations``). SFLAM
runs with ``--calibration online`` (docs/formulation.md §4.3): it fits ``A``, ``Phi0``, ``q`` on
its first ``R`` rounds, solves the bits with them, and from round ``R + 1`` on its bound is a
prediction. fp32 SFL runs the same configuration and seed for the accuracy and byte comparison.

Per run the section reports ``R``, the largest and the median ``G(k) / bound(k)`` over ``k > R``
(``G`` the running mean of the squared gradient norm), final accuracy of SFLAM and fp32 SFL,
SFLAM's uplink bytes over SFL's, and SFLAM's mean bits after the fit.

Seeds. The rule was designed on the committed runs of ``docs/theory/runs`` (seeds 0, 1, 2 and
100) and on synthetic trajectories (``tests/test_estimator.py``); the evaluation uses seeds
:data:`EVAL_SEEDS`, never used to design or tune the estimator or the trainer's defaults.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import BenchContext, utc_now

__all__ = ["CONFIGS", "DESIGN_SEEDS", "EVAL_SEEDS", "draw", "headlines", "report", "run", "rows_of"]

#: Seeds the estimator's rule was designed on (docs/theory/runs) -- never evaluated here.
DESIGN_SEEDS = (0, 1, 2, 100)
#: Evaluation seeds.
EVAL_SEEDS = (11, 12)
#: (label, TrainConfig overrides of the `sflam-opt train` defaults); none has a stored calibration.
CONFIGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("alpha 1", {"alpha": 1.0}),
    ("alpha 0.1, lr 0.05, momentum 0.9", {"alpha": 0.1, "lr": 0.05, "momentum": 0.9}),
    ("lr 0.1, momentum 0 (plain SGD)", {"lr": 0.1, "momentum": 0.0}),
    ("10 devices", {"devices": 10}),
    ("40 devices", {"devices": 40}),
    ("batch 32", {"batch_size": 32}),
    # ViT-S/32 costs far more than vit-tiny per sample on a CPU: fewer devices, steps and rounds.
    (
        "vit-s32 at 32 px, 5 devices, 5 local steps, 25 rounds",
        {"model": "vit-s32", "image_size": 32, "devices": 5, "local_iters": 5, "rounds": 25},
    ),
)
#: Per profile: configurations, seeds, overrides of every run (the test's tiny size).
PLANS: dict[str, tuple[tuple[tuple[str, dict[str, Any]], ...], tuple[int, ...], dict[str, Any]]] = {
    "all": (CONFIGS, EVAL_SEEDS, {}),
    "quick": (
        CONFIGS[:1],
        EVAL_SEEDS[:1],
        {"devices": 4, "rounds": 7, "local_iters": 2, "batch_size": 8, "fit_rounds": 5},
    ),
}
COLUMNS = (
    "config",
    "seed",
    "fit_rounds",
    "max_ratio",
    "median_ratio",
    "sflam_accuracy",
    "sfl_accuracy",
    "uplink_ratio",
    "mean_bits",
)


def _train(overrides: Mapping[str, Any]) -> Any:
    from sflam_opt.training import TrainConfig, train

    return train(TrainConfig(**overrides))


def ratios(metrics: Sequence[Mapping[str, Any]], fit_rounds: int) -> np.ndarray:
    """``G(k) / bound(k)`` for every round ``k > fit_rounds``."""
    g = np.array([m["grad_sq_norm"] for m in metrics], dtype=np.float64)
    running = np.cumsum(g) / np.arange(1, len(g) + 1)
    bound = np.array([np.nan if m["bound"] is None else m["bound"] for m in metrics])
    return (running / bound)[fit_rounds:]


def one_run(label: str, overrides: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """SFLAM (online calibration) and fp32 SFL of one configuration and seed: one table row."""
    sflam = _train({**overrides, "seed": seed, "protocol": "sflam", "calibration": "online"})
    plain = {k: v for k, v in overrides.items() if k != "fit_rounds"}
    sfl = _train({**plain, "seed": seed, "protocol": "sfl", "calibration": "scenario"})
    r = int(sflam.summary["calibration"]["fit_rounds"])
    ratio = ratios(sflam.metrics, r)
    later = [m["allocation"]["bits"] for m in sflam.metrics[r:]]
    return {
        "config": label,
        "seed": seed,
        "fit_rounds": r,
        "max_ratio": float(np.max(ratio)),
        "median_ratio": float(np.median(ratio)),
        "sflam_accuracy": sflam.summary["final_test_accuracy"],
        "sfl_accuracy": sfl.summary["final_test_accuracy"],
        "uplink_ratio": sflam.summary["uplink_bytes"] / sfl.summary["uplink_bytes"],
        "mean_bits": float(np.mean(np.concatenate(later))),
        "constants": {k: sflam.summary["calibration"][k] for k in ("a", "phi0", "q", "epsilon")},
    }


def rows_of(plan: tuple[Any, ...], progress: Any) -> list[dict[str, Any]]:
    """Every (configuration, seed) row of a plan, reporting progress per run."""
    configs, seeds, common = plan
    rows = []
    total = len(configs) * len(seeds)
    for label, overrides in configs:
        for seed in seeds:
            progress(f"uncalibrated: {label}, seed {seed}", 1.0 / total)
            rows.append(one_run(label, {**common, **overrides}, seed))
    return rows


def run(ctx: BenchContext) -> dict[str, Any]:
    """Train every run and write ``figures/uncalibrated.json`` and ``uncalibrated_runs.csv``."""
    started, started_utc = time.perf_counter(), utc_now()
    plan = PLANS.get(ctx.profile.name, PLANS["quick"])
    rows = rows_of(plan, ctx.progress)
    ctx.csv("uncalibrated_runs", rows, COLUMNS)
    doc = {
        "meta": ctx.meta("uncalibrated", started, started_utc),
        "design_seeds": list(DESIGN_SEEDS),
        "eval_seeds": list(plan[1]),
        "common": plan[2],
        "rows": rows,
    }
    ctx.json("uncalibrated", doc)
    return doc


def draw(figures: Path) -> list[Path]:
    """No figure: the section is a table."""
    return []


def _totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    return {
        "max": max(r["max_ratio"] for r in rows),
        "median_min": min(r["median_ratio"] for r in rows),
        "gap": float(np.mean([100 * (r["sfl_accuracy"] - r["sflam_accuracy"]) for r in rows])),
        "bytes": max(r["uplink_ratio"] for r in rows),
    }


def report(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """Markdown of the section."""
    rows = doc["rows"]
    t = _totals(rows)
    lines = [
        "## Bound on configurations never calibrated",
        "",
        "SFLAM with `--calibration online` (docs/formulation.md §4.3) on configurations with no "
        "stored calibration; every other option is the `sflam-opt train` default"
        + (f", except {doc['common']}" if doc["common"] else "")
        + ". The ratio is the running mean of the squared gradient norm over the bound, after "
        f"the fit rounds R. Evaluation seeds {doc['eval_seeds']}; the rule was designed on "
        f"seeds {doc['design_seeds']} (docs/theory/runs) and synthetic trajectories.",
        "",
        "| configuration | seed | R | max G/bound | median G/bound | SFLAM acc | fp32 SFL acc "
        "| uplink bytes / SFL | mean bits |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['seed']} | {r['fit_rounds']} | {r['max_ratio']:.2f} | "
            f"{r['median_ratio']:.2f} | {100 * r['sflam_accuracy']:.1f} % | "
            f"{100 * r['sfl_accuracy']:.1f} % | {r['uplink_ratio']:.3f} | {r['mean_bits']:.2f} |"
        )
    lines += [
        "",
        f"Largest G/bound after the fit: {t['max']:.2f}; smallest median: {t['median_min']:.2f}; "
        f"fp32 SFL minus SFLAM accuracy, mean over runs: {t['gap']:.2f} points; largest uplink "
        f"bytes ratio: {t['bytes']:.3f}.",
        "",
    ]
    return lines


def headlines(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """The worst ratio and the accuracy gap."""
    t = _totals(doc["rows"])
    return [
        f"Online bound on {len(doc['rows'])} never-calibrated runs: largest G/bound "
        f"{t['max']:.2f} after the fit, smallest median {t['median_min']:.2f}; SFLAM "
        f"{t['gap']:.2f} points below fp32 SFL on average at {t['bytes']:.3f} of its uplink bytes "
        "at most."
    ]

"""``python -m benchmarks uncalibrated``: the online bound on configurations never calibrated.

Every configuration below has no stored calibration (``sflam_opt/training/calibrations``). SFLAM
runs with ``--calibration online`` (docs/formulation.md §4.3): it fits ``A``, ``Phi0``, ``q`` on
its first ``R`` rounds, solves the bits with them, and from round ``R + 1`` on its bound is a
prediction. fp32 SFL runs the same configuration and seed for the accuracy and byte comparison.

The Flower example (``examples/flower``, an MLP on digits with ``calibration="online"``) runs in
this process on Flower's in-process grid (no ray) as one more row: its uplink ratio is against the
same updates sent as fp32 frames; it has no fp32 SFL twin, so its accuracy column compares nothing.

Per run the section reports ``R`` (the round the fit was made after: at least the configured fit
rounds, more when the early rounds could not support a fit), the largest and the median
``G(k) / bound(k)`` over ``k > R`` (``G`` the running mean of the squared gradient norm), final
accuracy of SFLAM and fp32 SFL, SFLAM's uplink bytes over SFL's, and SFLAM's mean bits after the
fit.

The runs are independent and seeded: they are spread over ``profile.train_workers`` processes
(the train section's setting) and give the same rows as one process does.

Seeds. Design seeds, :data:`DESIGN_SEEDS`: the committed runs of ``docs/theory/runs`` (seeds 0, 1,
2 and 100), synthetic trajectories (``tests/test_estimator.py``), seeds 11 and 12, the
evaluation seeds of an earlier version of this section whose results were looked at to revise the
rule and the warm-up width (docs/formulation.md §4.3), and, for the Flower row, the example's seeds
0, 11 and 12. The evaluation uses :data:`EVAL_SEEDS`, never used to design or
tune the estimator or the trainer's defaults.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import BenchContext, run_spawned, utc_now

__all__ = ["CONFIGS", "DESIGN_SEEDS", "EVAL_SEEDS", "draw", "headlines", "report", "run", "rows_of"]

#: Seeds the estimator's rule was designed on (docs/theory/runs; 11 and 12 were this section's
#: evaluation seeds before the rule was revised on their results) -- never evaluated here.
DESIGN_SEEDS = (0, 1, 2, 100, 11, 12)
#: Evaluation seeds.
EVAL_SEEDS = (21, 22)
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
#: The Flower row: (label, nodes, rounds) of ``examples/flower/in_process.py``, default run config.
FLOWER = ("Flower example, MLP on digits, 10 nodes, 20 rounds", 10, 20)
#: Per profile: configurations, seeds, overrides of every run (the test's tiny size), Flower row.
PLANS: dict[str, tuple[Any, ...]] = {
    "all": (CONFIGS, EVAL_SEEDS, {}, FLOWER),
    "quick": (
        CONFIGS[:1],
        EVAL_SEEDS[:1],
        {"devices": 4, "rounds": 7, "local_iters": 2, "batch_size": 8, "fit_rounds": 5},
        ("Flower example, 4 nodes, 12 rounds", 4, 12),
    ),
}
#: The example's in-process runner.
IN_PROCESS = Path(__file__).resolve().parents[1] / "examples" / "flower" / "in_process.py"
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


def _train(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """One training run: its summary and metrics rows (what a row needs; picklable)."""
    from sflam_opt.training import TrainConfig, train

    res = train(TrainConfig(**overrides))
    return {"summary": res.summary, "metrics": res.metrics}


def ratios(metrics: Sequence[Mapping[str, Any]], fit_rounds: int) -> np.ndarray:
    """``G(k) / bound(k)`` for every round ``k > fit_rounds``."""
    g = np.array([m["grad_sq_norm"] for m in metrics], dtype=np.float64)
    running = np.cumsum(g) / np.arange(1, len(g) + 1)
    bound = np.array([np.nan if m["bound"] is None else m["bound"] for m in metrics])
    return (running / bound)[fit_rounds:]


def _spread(ratio: np.ndarray, later_bits: Sequence[Any]) -> dict[str, float]:
    """Max and median ratio and mean bits after the fit (NaN when the run never fitted)."""
    if ratio.size == 0:
        return {"max_ratio": float("nan"), "median_ratio": float("nan"), "mean_bits": float("nan")}
    return {
        "max_ratio": float(np.max(ratio)),
        "median_ratio": float(np.median(ratio)),
        "mean_bits": float(np.mean(np.concatenate([np.ravel(b) for b in later_bits]))),
    }


def jobs_of(label: str, overrides: Mapping[str, Any], seed: int) -> list[dict[str, Any]]:
    """The two runs of one row: SFLAM (online calibration) and fp32 SFL, same seed."""
    plain = {k: v for k, v in overrides.items() if k != "fit_rounds"}
    return [
        {**overrides, "seed": seed, "protocol": "sflam", "calibration": "online"},
        {**plain, "seed": seed, "protocol": "sfl", "calibration": "scenario"},
    ]


def row_of(label: str, seed: int, sflam: Mapping[str, Any], sfl: Mapping[str, Any]) -> dict:
    """One table row from the two runs of :func:`jobs_of`."""
    s = sflam["summary"]
    r = int(s["calibration"]["fit_rounds"])
    later = [m["allocation"]["bits"] for m in sflam["metrics"][r:]]
    return {
        "config": label,
        "seed": seed,
        "fit_rounds": r,
        **_spread(ratios(sflam["metrics"], r), later),
        "sflam_accuracy": s["final_test_accuracy"],
        "sfl_accuracy": sfl["summary"]["final_test_accuracy"],
        "uplink_ratio": s["uplink_bytes"] / sfl["summary"]["uplink_bytes"],
        "constants": {k: s["calibration"][k] for k in ("a", "phi0", "q", "epsilon")},
    }


def one_run(label: str, overrides: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """SFLAM (online calibration) and fp32 SFL of one configuration and seed: one table row."""
    sflam, sfl = (_train(j) for j in jobs_of(label, overrides, seed))
    return row_of(label, seed, sflam, sfl)


def _in_process() -> Any:
    spec = importlib.util.spec_from_file_location("sflam_flower_in_process", IN_PROCESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flower_row(label: str, nodes: int, rounds: int, seed: int) -> dict[str, Any]:
    """The Flower example with ``calibration="online"`` in this process: one table row.

    ``seed`` is both the run config's ``seed`` (data split, model) and the grid's (node ids,
    sampling). ``G`` is the running mean of the rounds' ``calib-grad-sq`` (weighted over the
    replies); the bound of round ``k`` uses the constants in force and that round's bits.
    """
    import torch

    from sflam_opt import bound
    from sflam_opt.integrations.flower.validation import expected_frame_nbytes

    ip = _in_process()
    cfg = ip.run_config(nodes, rounds, [f"seed={seed}"])
    # One torch thread, whatever the process set before: the same floats in a pool worker and
    # in a process that trained before (the thread count changes the sums' order).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result, strategy = ip.run_app(cfg, nodes, seed)
    finally:
        torch.set_num_threads(threads)
    hist = strategy.history
    metrics = result.train_metrics_clientapp
    g = np.array([float(metrics[h.server_round]["calib-grad-sq"]) for h in hist])
    r = sum(1 for h in hist if h.calibration == "fit")
    bounds = [np.nan] * r + [
        bound(
            strategy.allocator.round_scenario(devices=h.device_ids).replace(
                convergence=h.convergence
            ),
            h.allocation.bits,
            h.server_round,
        )
        for h in hist[r:]
    ]
    running = np.cumsum(g) / np.arange(1, len(g) + 1)
    shapes = [a.shape for a in ip.task.make_model(int(cfg["seed"])).state_dict().values()]
    fp32 = expected_frame_nbytes(shapes, 32) * sum(len(h.aggregated) for h in hist)
    return {
        "config": label,
        "seed": seed,
        "fit_rounds": r,
        **_spread((running / np.array(bounds))[r:], [h.allocation.bits for h in hist[r:]]),
        "sflam_accuracy": float(result.evaluate_metrics_serverapp[rounds]["accuracy"]),
        "sfl_accuracy": None,
        "uplink_ratio": sum(h.uplink_bytes for h in hist) / fp32,
        "constants": dict(hist[-1].convergence),
    }


def _job(job: Mapping[str, Any]) -> dict[str, Any]:
    """Run one job of :func:`rows_of` (in a worker process)."""
    if job["kind"] == "flower":
        return flower_row(*job["args"])
    return _train(job["overrides"])


def _run_jobs(jobs: list[dict[str, Any]], workers: int, progress: Any) -> list[dict[str, Any]]:
    """Every job's result, in order; over ``workers`` processes when more than one."""
    total = len(jobs)
    # The ViT-S/32 runs first, the longest by far, so that the pool does not end waiting on one.
    order = sorted(
        range(total), key=lambda i: jobs[i].get("overrides", {}).get("model") != "vit-s32"
    )
    return run_spawned(
        _job,
        [(job,) for job in jobs],
        workers,
        lambda i: progress(f"uncalibrated: {jobs[i]['label']}", 1.0 / total),
        order,
    )


def rows_of(plan: tuple[Any, ...], progress: Any, workers: int = 1) -> list[dict[str, Any]]:
    """Every (configuration, seed) row of a plan and the Flower row per seed."""
    configs, seeds, common, flower = plan
    jobs: list[dict[str, Any]] = []
    for label, overrides in configs:
        for seed in seeds:
            for ov in jobs_of(label, {**common, **overrides}, seed):
                jobs.append({"kind": "train", "label": f"{label}, seed {seed}", "overrides": ov})
    for seed in seeds:
        label = f"{flower[0]}, seed {seed}"
        jobs.append({"kind": "flower", "label": label, "args": (*flower, seed)})
    done = _run_jobs(jobs, workers, progress)
    rows = []
    pairs = iter(done[: 2 * len(configs) * len(seeds)])
    for label, _ in configs:
        for seed in seeds:
            rows.append(row_of(label, seed, next(pairs), next(pairs)))
    rows.extend(done[2 * len(configs) * len(seeds) :])
    return rows


def run(ctx: BenchContext) -> dict[str, Any]:
    """Train every run and write ``figures/uncalibrated.json`` and ``uncalibrated_runs.csv``."""
    started, started_utc = time.perf_counter(), utc_now()
    plan = PLANS.get(ctx.profile.name, PLANS["quick"])
    rows = rows_of(plan, ctx.progress, workers=ctx.profile.train_workers)
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
    """Worst ratios and bytes over every row; the accuracy gap over the rows with an fp32 twin."""
    paired = [r for r in rows if r["sfl_accuracy"] is not None]
    return {
        "max": float(np.nanmax([r["max_ratio"] for r in rows])),
        "median_min": float(np.nanmin([r["median_ratio"] for r in rows])),
        "gap": float(np.mean([100 * (r["sfl_accuracy"] - r["sflam_accuracy"]) for r in paired])),
        "bytes": max(r["uplink_ratio"] for r in rows),
    }


def _cells(r: Mapping[str, Any]) -> str:
    sfl = "—" if r["sfl_accuracy"] is None else f"{100 * r['sfl_accuracy']:.1f} %"
    return (
        f"| {r['config']} | {r['seed']} | {r['fit_rounds']} | {r['max_ratio']:.2f} | "
        f"{r['median_ratio']:.2f} | {100 * r['sflam_accuracy']:.1f} % | {sfl} | "
        f"{r['uplink_ratio']:.3f} | {r['mean_bits']:.2f} |"
    )


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
        "the fit rounds R (the fit is made after the first round from the configured fit rounds "
        "on whose measurements support it). The Flower example (`examples/flower`, "
        '`calibration="online"`, in-process grid) compares its uplink bytes with the same '
        "updates as fp32 frames and has no fp32 twin for accuracy. Evaluation seeds "
        f"{doc['eval_seeds']}; the rule was designed on seeds {doc['design_seeds']} "
        "(docs/theory/runs, and 11 and 12 of an earlier evaluation) and synthetic trajectories.",
        "",
        "| configuration | seed | R | max G/bound | median G/bound | SFLAM acc | fp32 SFL acc "
        "| uplink bytes / SFL | mean bits |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_cells(r) for r in rows]
    lines += [
        "",
        f"Largest G/bound after the fit: {t['max']:.2f}; smallest median: {t['median_min']:.2f}; "
        f"fp32 SFL minus SFLAM accuracy, mean over the trainer's runs: {t['gap']:.2f} points; "
        "largest uplink "
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

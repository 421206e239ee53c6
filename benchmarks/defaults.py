"""Training with every default of ``sflam-opt train``, for each protocol and several seeds.

Each run is ``train(TrainConfig(protocol=P, seed=S))``: every other option at its default
(scikit-learn digits, ``vit-tiny``, the ``fast`` solver's bits, bandwidth and power on the default
scenario; all protocols are costed under the same bandwidth and power). These are the figures the
README quotes for a default run. Runs are independent and deterministic given the seed, so they
run in ``train_workers`` worker processes with one torch thread each; the wall time of a run is
measured with every worker busy.

Per seed the section checks what a default run promises: SFLAM reaches 95 % test accuracy, is at
most 1 point below fp32 ``sfl``, sends at most half of ``sfl``'s uplink bytes, and its simulated
total latency is below ``fl``'s and ``sl``'s. The digits test set has 360 images (one image is
0.28 points), so the per-seed gap to ``sfl`` is noisy; the mean over the seeds is reported too.

Outputs in ``figures/``: ``defaults_runs.csv`` (one row per run), ``defaults_checks.csv`` (one row
per seed) and ``defaults.json``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import BenchContext, finite_mean, read_csv, utc_now
from benchmarks.markdown import duration, made_by, num, pct, table
from benchmarks.train import execute, run_row

__all__ = ["PROTOCOLS", "checks", "draw", "headlines", "jobs", "report", "run"]

PROTOCOLS = ("sflam", "sfl", "fl", "sl")

#: Accuracy a default SFLAM run must reach, and how far below fp32 SFL it may end (points).
TARGET_ACCURACY = 0.95
MAX_GAP_POINTS = 1.0

RUN_COLUMNS = (
    "protocol",
    "seed",
    "final_accuracy",
    "best_accuracy",
    "rounds",
    "uplink_bytes",
    "total_latency_s",
    "total_energy_j",
    "mean_bits",
    "solver_status",
    "wall_time_s",
    "error",
)
CHECK_COLUMNS = (
    "seed",
    "gap_points",
    "uplink_share",
    "latency_share",
    "accuracy_ok",
    "within_gap",
    "uplink_half",
    "latency_below_fl_sl",
)


def jobs(profile: Any) -> list[dict[str, Any]]:
    """One job per (seed, protocol) for :func:`benchmarks.train.execute`: the default config."""
    from sflam_opt.training.config import TrainConfig

    out = []
    for seed in profile.defaults_seeds:
        for proto in PROTOCOLS:
            cfg = TrainConfig(protocol=proto, seed=int(seed), threads=1)
            out.append(
                {
                    "group": "defaults",
                    "alpha": cfg.alpha,
                    "protocol": proto,
                    "bits_mode": "solver" if proto == "sflam" else "fp32",
                    "seed": int(seed),
                    "config": cfg.to_dict(),
                }
            )
    return out


def checks(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per seed with all four protocols run: SFLAM's gap to SFL and whether each promise holds.

    ``gap_points`` is 100 x (SFLAM - SFL) final accuracy; ``uplink_share`` and ``latency_share``
    are SFLAM's uplink bytes and simulated total latency as fractions of SFL's.
    """
    by = {(r["protocol"], r["seed"]): r for r in rows if r.get("final_accuracy") is not None}
    out = []
    for seed in sorted({r["seed"] for r in rows}):
        if not all((p, seed) in by for p in PROTOCOLS):
            continue
        s, f, fl, sl = (by[(p, seed)] for p in PROTOCOLS)
        gap = 100.0 * (s["final_accuracy"] - f["final_accuracy"])
        out.append(
            {
                "seed": seed,
                "gap_points": gap,
                "uplink_share": s["uplink_bytes"] / f["uplink_bytes"],
                "latency_share": s["total_latency_s"] / f["total_latency_s"],
                "accuracy_ok": s["final_accuracy"] >= TARGET_ACCURACY,
                "within_gap": gap >= -MAX_GAP_POINTS,
                "uplink_half": s["uplink_bytes"] <= 0.5 * f["uplink_bytes"],
                "latency_below_fl_sl": s["total_latency_s"]
                < min(fl["total_latency_s"], sl["total_latency_s"]),
            }
        )
    return out


def run(ctx: BenchContext) -> dict[str, Any]:
    """Train every (seed, protocol) with the defaults; write the CSV files and ``defaults.json``."""
    from sflam_opt.training.config import defaults

    p = ctx.profile
    started, started_utc = time.perf_counter(), utc_now()
    todo = jobs(p)
    results = execute(ctx, todo)
    rows = [run_row(r, p.train_target) for r in results]
    ctx.csv("defaults_runs", rows, RUN_COLUMNS)
    checked = checks(rows)
    ctx.csv("defaults_checks", checked, CHECK_COLUMNS)
    ctx.json(
        "defaults",
        {
            "meta": ctx.meta("defaults", started, started_utc),
            "config": defaults(),
            "seeds": list(p.defaults_seeds),
            "workers": p.train_workers,
            "solver_bits": next(
                (r["summary"].get("bits") for r in results if r.get("summary")), None
            ),
        },
    )
    return {"rows": rows, "checks": checked}


def draw(figures: Path) -> list[Path]:
    """The section has tables only; nothing to draw."""
    return []


def _yes(v: Any) -> str:
    return "-" if v is None else ("yes" if v in (True, "True") else "**no**")


def report(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """Markdown of the defaults section, from ``defaults_*.csv`` and ``defaults.json``."""
    meta, cfg = doc["meta"], doc["config"]
    runs = read_csv(figures / "defaults_runs.csv")
    checked = read_csv(figures / "defaults_checks.csv")
    out = ["## Training with the defaults", ""]
    out.append(
        "`sflam-opt train --protocol P --seed S` with every other option at its default: "
        f"{cfg['dataset']}, `{cfg['model']}`, {cfg['devices']} devices, Dirichlet α = "
        f"{num(cfg['alpha'])}, {cfg['rounds']} rounds of {cfg['local_iters']} local steps of batch "
        f"{cfg['batch_size']}, lr {num(cfg['lr'])}, momentum {num(cfg['momentum'])}, bits, "
        f"bandwidth and power from the `{cfg['solver']}` solver. Wall times are per run with "
        f"{doc.get('workers')} runs in parallel, one torch thread each."
    )
    out.append("")
    out.append(
        table(
            [
                "protocol",
                "seed",
                "final accuracy",
                "uplink MB",
                "sim. latency (s)",
                "sim. energy (J)",
                "mean bits",
                "wall time",
            ],
            [
                [
                    f"`{r['protocol']}`",
                    r["seed"],
                    pct(r.get("final_accuracy"), 4),
                    num(None if r.get("uplink_bytes") is None else r["uplink_bytes"] / 1e6),
                    num(r.get("total_latency_s")),
                    num(r.get("total_energy_j")),
                    num(r.get("mean_bits"), 3),
                    duration(r.get("wall_time_s")),
                ]
                for r in runs
            ],
        )
    )
    for r in runs:
        if r.get("error"):
            out.append(f"\n- `{r['protocol']}` seed {r['seed']} failed: {r['error']}")
    if checked:
        out += ["", "Per seed, SFLAM against the other protocols:", ""]
        out.append(
            table(
                [
                    "seed",
                    "SFLAM - SFL (points)",
                    "uplink vs SFL",
                    "latency vs SFL",
                    f"SFLAM ≥ {pct(TARGET_ACCURACY, 2)}",
                    f"within {num(MAX_GAP_POINTS)} point of SFL",
                    "uplink ≤ SFL / 2",
                    "latency < FL, SL",
                ],
                [
                    [
                        c["seed"],
                        f"{c['gap_points']:+.2f}",
                        pct(c["uplink_share"]),
                        pct(c["latency_share"]),
                        _yes(c["accuracy_ok"]),
                        _yes(c["within_gap"]),
                        _yes(c["uplink_half"]),
                        _yes(c["latency_below_fl_sl"]),
                    ]
                    for c in checked
                ],
            )
        )
        mean_gap = finite_mean(c["gap_points"] for c in checked)
        out += ["", f"Mean SFLAM - SFL gap over the seeds: {mean_gap:+.2f} points."]
    data = ["defaults_runs.csv", "defaults_checks.csv", "defaults.json"]
    out += ["", made_by(meta["command"], data), ""]
    return out


def headlines(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """The sentence the README quotes for a default ``sflam-opt train`` run."""
    runs = read_csv(figures / "defaults_runs.csv")
    checked = read_csv(figures / "defaults_checks.csv")
    if not checked:
        return []
    seed = checked[0]["seed"]
    by = {r["protocol"]: r for r in runs if r["seed"] == seed}
    s, f = by["sflam"], by["sfl"]
    gaps = ", ".join(f"{c['gap_points']:+.2f}" for c in checked)
    seeds = ", ".join(str(c["seed"]) for c in checked)
    mean_gap = finite_mean(c["gap_points"] for c in checked)
    return [
        f"`sflam-opt train` with its defaults (seed {seed}): SFLAM picks "
        f"{num(s['mean_bits'], 3)} bits on average and reaches {pct(s['final_accuracy'], 4)} test "
        f"accuracy in {duration(s['wall_time_s'])}, against {pct(f['final_accuracy'], 4)} for "
        f"fp32 `sfl`, with {pct(checked[0]['uplink_share'], 2)} of its uplink bytes and "
        f"{pct(checked[0]['latency_share'], 2)} of its simulated latency. SFLAM - SFL at seeds "
        f"{seeds}: {gaps} points (mean {mean_gap:+.2f})."
    ]

"""Markdown of the training section of ``results.md``, from ``train_*.csv`` and ``train.json``.

Reads only the files :mod:`benchmarks.train` wrote into ``figures/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.common import finite_mean, read_csv
from benchmarks.markdown import figure, num, pct, table

__all__ = ["headlines", "report"]


def report(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """Markdown of the training section, from ``train_*.csv`` and ``train.json``."""
    meta = doc["meta"]
    prof = meta["profile"]
    cmd = meta["command"]
    target = prof["train_target"]
    out = ["## Training benchmarks", ""]
    out.append(
        f"scikit-learn digits, `vit-tiny` split ViT, {prof['train_devices']} devices, Dirichlet "
        f"label split α ∈ {{{', '.join(f'{a:g}' for a in prof['train_alphas'])}}}, "
        f"{prof['train_rounds']} rounds of {prof['train_local_iters']} local steps of batch "
        f"{prof['train_batch_size']}, SGD momentum {prof['train_momentum']:g}, lr "
        f"{prof['train_lr']:g} (SL {prof['train_lr_sl']:g}, profile setting `train_lr_sl`), "
        f"seeds {', '.join(map(str, prof['train_seeds']))}; runs in {prof['train_workers']} "
        "worker processes with one torch thread each. Bandwidth and power for every protocol "
        f"(and SFLAM's bits) come from the `{prof['train_solver']}` solver on the default scenario "
        "with the trained model's sizes; simulated latency and energy are the cost model's "
        "(docs/formulation.md §2), bytes are counted at the transport. Target accuracy "
        f"{pct(target, 2)}; 'to target' columns average over the seeds that reached it."
    )
    if doc.get("solver_bits") is not None:
        out.append("")
        out.append(f"Solver bits per device (seed {prof['train_seeds'][0]}): {doc['solver_bits']}.")
    out.append("")
    summary = read_csv(figures / "train_summary.csv")
    out.append(_train_table(summary))
    out += [
        "",
        figure(
            "train_accuracy.png",
            "accuracy curves",
            cmd,
            ["train_runs.csv", "train_curves.csv", "train_summary.csv"],
        ),
        "",
    ]
    runs = read_csv(figures / "train_runs.csv")
    errs = [r for r in runs if r.get("error")]
    for r in errs:
        out.append(
            f"- {r['protocol']} α={r['alpha']} {r['bits_mode']} seed {r['seed']}: {r['error']}"
        )
    out += ["", "### Gradient norm against the bound", ""]
    grid = [r for r in runs if r["group"] == "protocols" and r.get("final_bound") is not None]
    cal = doc.get("calibration") or {}
    const = cal.get("constants")
    if grid:
        out.append(
            "Measured (1/K) Σ_k ‖∇‖² of the whole-model stochastic gradient after the last "
            "round K against the bound A/(η τ K) + Φ0 + Φ_q(b) of docs/formulation.md §4, once with the "
            "constants of the trainer's scenario (what the solver used to pick the bits) and once "
            "with constants "
            "calibrated for this model and data by `sflam_opt.training.calibrate.calibrate`."
        )
        out.append("")
        if const:
            out.append(
                f"Calibration on a held-out seed ({cal['seed']}), α = {num(cal['alpha'])}, fp32 "
                f"SFL plus SFLAM at uniform {', '.join(map(str, cal['bits']))} bits, "
                f"{const['rounds']} rounds each: A = {num(const['a'])}, Φ0 = "
                f"{num(const['phi0'])}, q = {num(const['q'])}, ε = {num(const['epsilon'])}"
                + _default_constants(doc.get("scenario_convergence"))
                + "."
            )
        else:
            out.append(f"Calibration failed: {cal.get('error') or 'not run'}.")
        out.append("")
        agg: dict[tuple, list] = {}
        for r in grid:
            agg.setdefault((r["alpha"], r["protocol"]), []).append(r)
        out.append(
            table(
                [
                    "α",
                    "protocol",
                    "measured avg ‖∇‖²",
                    "bound, scenario constants",
                    "bound, calibrated",
                    "measured / calibrated bound",
                ],
                [
                    [
                        num(a),
                        p,
                        num(finite_mean([r["final_grad_sq_norm_avg"] for r in rs])),
                        num(finite_mean([r["final_bound"] for r in rs])),
                        num(finite_mean([r.get("final_bound_calibrated") for r in rs])),
                        num(
                            finite_mean(
                                [
                                    r["final_grad_sq_norm_avg"] / r["final_bound_calibrated"]
                                    for r in rs
                                    if r.get("final_bound_calibrated")
                                ]
                            ),
                            3,
                        ),
                    ]
                    for (a, p), rs in agg.items()
                ],
            )
        )
        out += [
            "",
            "Mean over seeds; a ratio above 1 means the measured average exceeds the bound.",
            "",
            figure("train_gradnorm.png", "gradient norm vs bound", cmd, ["train_curves.csv"]),
            "",
        ]
    out += [f"### SFLAM: solver bits against uniform bits (α = {prof['train_bits_alpha']:g})", ""]
    bits = read_csv(figures / "train_bits_summary.csv")
    out.append(_train_table(bits, by="bits_mode"))
    out += [
        "",
        figure(
            "train_bits.png",
            "solver bits vs uniform bits",
            cmd,
            ["train_bits_curves.csv", "train_bits_summary.csv"],
        ),
        "",
    ]
    out += ["### CIFAR-10, ViT-B/32 pretrained", ""]
    cifar = doc.get("cifar10", {})
    out.append(f"Command, for each α: `{doc.get('cifar10_command')}`.")
    out.append("")
    if cifar.get("run"):
        out.append(
            table(
                ["α", "rounds", "final accuracy", "best accuracy", "error"],
                [
                    [
                        num(r["alpha"]),
                        num(r.get("rounds")),
                        pct(r.get("final_accuracy")),
                        pct(r.get("best_accuracy")),
                        r.get("error") or "",
                    ]
                    for r in cifar.get("results", [])
                ],
            )
        )
    else:
        out.append(
            "**Not run on this machine**: " + "; ".join(cifar.get("reasons", [])) + ". The paper "
            "(arXiv 2504.09114) reports its accuracy for this setting from a GPU run; sflam-opt has not "
            "reproduced it here, so no number is claimed. `python -m benchmarks train --cifar10-dir "
            "DIR` runs it automatically on a machine with a CUDA device."
        )
    out.append("")
    return out


def _default_constants(conv: Mapping[str, Any] | None) -> str:
    if not conv:
        return ""
    return (
        " (the trainer's scenario"
        + (f", constants '{conv['source']}'" if conv.get("source") else "")
        + f": A = {num(conv['a'])}, Φ0 = {num(conv['phi0'])}, "
        f"q = {num(conv['q'])}, ε = {num(conv['epsilon'])})"
    )


def _train_table(rows: list[dict], by: str = "protocol") -> str:
    first = "protocol" if by == "protocol" else "bits"
    return table(
        [
            "α",
            first,
            "final accuracy (mean ± std)",
            "min-max",
            "reached",
            "rounds to target",
            "uplink MB (total)",
            "uplink MB to target",
            "sim. latency to target (s)",
            "sim. energy to target (J)",
            "mean bits",
        ],
        [
            [
                num(r["alpha"]),
                f"`{r[by]}`",
                f"{pct(r.get('final_accuracy_mean'))} ± {pct(r.get('final_accuracy_std'), 2)}",
                f"{pct(r.get('final_accuracy_min'))} - {pct(r.get('final_accuracy_max'))}",
                r.get("reached_target"),
                _range(
                    r.get("rounds_to_target_mean"),
                    r.get("rounds_to_target_min"),
                    r.get("rounds_to_target_max"),
                ),
                num(_mb(r.get("uplink_bytes_mean"))),
                num(_mb(r.get("uplink_bytes_to_target_mean"))),
                num(r.get("latency_to_target_s_mean")),
                num(r.get("energy_to_target_j_mean")),
                num(r.get("mean_bits"), 3),
            ]
            for r in rows
        ],
    )


def _mb(v: Any) -> float | None:
    return None if v is None else float(v) / 1e6


def _range(mean: Any, lo: Any, hi: Any) -> str:
    if mean is None:
        return "-"
    return f"{num(mean, 3)} ({num(lo)}-{num(hi)})"


def headlines(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """The training sentence of the report's headlines: SFLAM against fp32 SFL."""
    out: list[str] = []
    if (figures / "train_summary.csv").exists():
        prof = doc["meta"]["profile"]
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
    return out


def _ratio(a: Mapping[str, Any], b: Mapping[str, Any]) -> float | None:
    x, y = a.get("uplink_bytes_mean"), b.get("uplink_bytes_mean")
    return None if not x or not y else float(x) / float(y)

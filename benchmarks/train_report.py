"""Markdown of the training section of ``results.md``, from ``train_*.csv`` and ``train.json``.

Reads only the files :mod:`benchmarks.train` wrote into ``figures/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.common import finite_mean, read_csv
from benchmarks.markdown import figure, made_by, num, pct, table

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
    out += ["", made_by(cmd, ["train.json"])]
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
    if grid:
        out += _bound_section(grid, doc, cmd)
    gaps = _gap_lines(runs)
    if gaps:
        out += ["### SFLAM against fp32 SFL, final round and last rounds", "", *gaps, ""]
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


#: Held-out ratio measured / bound: above 1 the bound does not bound, below 0.25 it is vacuous.
RATIO_MAX, RATIO_MIN = 1.0, 0.25


def _verdict(ratios: list[float], source: str) -> str:
    """One word on a group of measured / bound ratios (see :data:`RATIO_MAX`)."""
    if not ratios:
        return "-"
    if max(ratios) > RATIO_MAX:
        word = f"**over {num(RATIO_MAX)}: not a bound**"
    elif min(ratios) < RATIO_MIN:
        word = f"**vacuous (< {num(RATIO_MIN)})**"
    else:
        word = "holds"
    # An uncalibrated bound (no stored calibration of the run's configuration) was never meant
    # to hold; say so next to the verdict.
    return f"uncalibrated: {word}" if source.startswith("uncalibrated") else word


def _bound_ratio(run: Mapping[str, Any]) -> float:
    """Measured average squared gradient norm over the bound, at a run's last round."""
    return float(run["final_grad_sq_norm_avg"]) / float(run["final_bound"])


def _bound_section(grid: list[dict], doc: Mapping[str, Any], cmd: str) -> list[str]:
    """Measured average squared gradient norm against the bound the solver used, per run."""
    cal = doc.get("calibration") or {}
    const = cal.get("constants")
    out = [
        "Measured (1/K) Σ_k ‖∇‖² of the whole-model stochastic gradient after the last round K "
        "against the bound A/(η_eff τ K) + Φ0 + Φ_q(b) of docs/formulation.md §4 with the "
        "constants the solver used to pick the bits: the stored calibration of this "
        "configuration (sflam_opt/training/calibrations/, fitted as an upper envelope on seed "
        "100, so seeds "
        + ", ".join(sorted({str(r["seed"]) for r in grid}))
        + " are held out), or, where no calibration matches (`uncalibrated`), docs/formulation.md "
        f"§7's constants. Ratios outside [{num(RATIO_MIN)}, {num(RATIO_MAX)}] are flagged.",
        "",
    ]
    agg: dict[tuple, list] = {}
    for r in grid:
        agg.setdefault((r["alpha"], r["protocol"]), []).append(r)
    rows = []
    for (a, p), rs in agg.items():
        ratios = [_bound_ratio(r) for r in rs if r["final_bound"]]
        source = str(rs[0].get("bound_source") or "")
        rows.append(
            [
                num(a),
                p,
                source or "-",
                len(rs),
                num(finite_mean([r["final_grad_sq_norm_avg"] for r in rs])),
                num(finite_mean([r["final_bound"] for r in rs])),
                f"{num(min(ratios), 3)} - {num(max(ratios), 3)}" if ratios else "-",
                _verdict(ratios, source),
            ]
        )
    out.append(
        table(
            [
                "α",
                "protocol",
                "constants",
                "seeds",
                "measured avg ‖∇‖² (mean)",
                "bound (mean)",
                "measured / bound, min - max over seeds",
                "verdict",
            ],
            rows,
        )
    )
    if const:
        out += [
            "",
            f"For comparison, the benchmark also refits the constants on one partition (seed "
            f"{cal['seed']}, α = {num(cal['alpha'])}, fp32 SFL plus SFLAM at uniform "
            f"{', '.join(map(str, cal['bits']))} bits, {const['rounds']} rounds each): A = "
            f"{num(const['a'])}, Φ0 = {num(const['phi0'])}, q = {num(const['q'])}, ε = "
            f"{num(const['epsilon'])}"
            + _default_constants(doc.get("scenario_convergence"))
            + "; the figure draws that bound dashed.",
        ]
    out += [
        "",
        figure("train_gradnorm.png", "gradient norm vs bound", cmd, ["train_curves.csv"]),
        "",
    ]
    return out


def _gap_lines(runs: list[dict]) -> list[str]:
    """SFLAM minus fp32 SFL per alpha: final-round accuracy and the mean of the last rounds."""
    out = []
    grid = [r for r in runs if r["group"] == "protocols" and r.get("final_accuracy") is not None]
    for a in sorted({r["alpha"] for r in grid}):
        by = {
            p: [r for r in grid if r["alpha"] == a and r["protocol"] == p] for p in ("sflam", "sfl")
        }
        if not by["sflam"] or not by["sfl"]:
            continue
        fin = [100 * finite_mean([r["final_accuracy"] for r in by[p]]) for p in ("sflam", "sfl")]
        last = [
            100 * finite_mean([r.get("last10_accuracy") for r in by[p]]) for p in ("sflam", "sfl")
        ]
        out.append(
            f"- α = {num(a)}: SFLAM {num(fin[0], 3)} % against SFL {num(fin[1], 3)} % at the "
            f"final round ({fin[0] - fin[1]:+.2f} points, mean of {len(by['sflam'])} and "
            f"{len(by['sfl'])} seeds); over the last 10 rounds {num(last[0], 3)} % against "
            f"{num(last[1], 3)} % ({last[0] - last[1]:+.2f} points)."
        )
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
                f"Training (digits, α = {num(a)}, {prof['train_rounds']} rounds, "
                f"{prof['train_devices']} devices; bits, bandwidth and power from "
                f"`{prof['train_solver']}` on the default scenario, no fading): SFLAM with "
                f"solver bits (mean {num(s['mean_bits'], 3)}) ends at "
                f"{pct(s['final_accuracy_mean'])} test accuracy against fp32 SFL's "
                f"{pct(f['final_accuracy_mean'])}, sending {num(_ratio(f, s), 3)}x fewer uplink "
                f"bytes; rounds to {pct(prof['train_target'], 2)}: "
                f"{num(s['rounds_to_target_mean'], 3)} ({s['reached_target']} seeds) against "
                f"{num(f['rounds_to_target_mean'], 3)} ({f['reached_target']})."
            )
        lowest = min(r["alpha"] for r in rows)
        low = {r["protocol"]: r for r in rows if r["alpha"] == lowest}
        s, f = low.get("sflam"), low.get("sfl")
        if s and f and s is not by.get("sflam"):
            out.append(
                f"Strongest non-IID split (α = {num(s['alpha'])}): SFLAM ends at "
                f"{pct(s['final_accuracy_mean'])} against fp32 SFL's "
                f"{pct(f['final_accuracy_mean'])} (mean of {s['runs']} and {f['runs']} seeds; same "
                "setup otherwise)."
            )
    if (figures / "train_runs.csv").exists():
        runs = read_csv(figures / "train_runs.csv")
        held = [
            _bound_ratio(r)
            for r in runs
            if r["group"] == "protocols"
            and r.get("final_bound")
            and str(r.get("bound_source") or "").startswith("calibrated")
        ]
        if held:
            out.append(
                f"Convergence bound with the packaged calibration, {len(held)} held-out runs: "
                f"measured / bound from {num(min(held), 3)} to {num(max(held), 3)} (a bound "
                f"holds at <= 1)."
            )
    return out


def _ratio(a: Mapping[str, Any], b: Mapping[str, Any]) -> float | None:
    x, y = a.get("uplink_bytes_mean"), b.get("uplink_bytes_mean")
    return None if not x or not y else float(x) / float(y)

"""Training benchmarks: protocols under non-IID data, solver bits against uniform bits.

Every run is one call of :func:`sflam_opt.training.trainer.train` on scikit-learn digits with the
``vit-tiny`` split ViT, ``N`` devices, a Dirichlet(alpha) label split and the default scenario of
docs/formulation.md §7 for the simulated costs (its ``[model]``/``[training]`` tables replaced by the
trained model's, as the trainer does). Two groups:

- ``protocols``: alpha x {sflam, sfl, fl, sl} x seeds. SFLAM uses the bits, bandwidth and power of
  the ``fast`` solver; the others send fp32 activations (or models) with its bandwidth and power.
- ``bits``: SFLAM at one alpha with the solver's bits against uniform widths (same bandwidth and
  power, bits overridden), same seeds.

Per run: final and best test accuracy, the first round reaching the target accuracy (90 %), the
uplink bytes counted at the transport and the simulated latency and energy (sums over rounds) up to
that round and in total, and per round the measured average squared gradient norm
``(1/K) sum_k ||grad||^2`` next to the bound of docs/formulation.md §4 for the bits used.

Runs are independent and deterministic given their seed, so they run in parallel worker processes
(one torch thread each; wall times are informational only). The optional CIFAR-10 run
(``vit-b32 --pretrained``) needs a local CIFAR-10 directory and a CUDA device; otherwise it is
skipped and the report says why.

Outputs in ``figures/``: ``train_runs.csv``, ``train_curves.csv``, ``train_summary.csv``,
``train_bits_curves.csv``, ``train_bits_summary.csv``, ``train.json``, ``train_accuracy.png``,
``train_gradnorm.png``, ``train_bits.png``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import BenchContext, checkout_env, finite_mean, jsonable, utc_now
from benchmarks.plots import train_figures as draw
from benchmarks.train_report import headlines, report
from sflam_opt.errors import SflamError

__all__ = [
    "CIFAR_COMMAND",
    "cifar_command",
    "cifar_status",
    "curve_rows",
    "draw",
    "execute",
    "headlines",
    "jobs",
    "report",
    "run",
    "run_job",
    "run_row",
    "summarize",
]

logger = logging.getLogger(__name__)

#: The CIFAR-10 setting of arXiv 2504.09114, as the command the train section runs per alpha on a
#: GPU.
CIFAR_COMMAND = (
    "sflam-opt train --dataset cifar10 --data-dir DIR --model vit-b32 --pretrained "
    "--device cuda --protocol sflam --alpha {alpha} --devices {devices} --rounds {rounds} "
    "--lr {lr} --batch-size {batch} --local-iters {tau} --solver {solver} --seed {seed}"
)


def cifar_command(profile: Any, alpha: str = "ALPHA") -> str:
    """The documented ``sflam-opt train`` command of the CIFAR-10 ViT-B/32 run."""
    return CIFAR_COMMAND.format(
        alpha=alpha,
        devices=profile.train_devices,
        rounds=profile.cifar_rounds,
        lr=f"{profile.cifar_lr:g}",
        batch=profile.cifar_batch_size,
        tau=profile.train_local_iters,
        solver=profile.train_solver,
        seed=profile.seed,
    )


#: Rounds averaged for ``last10_accuracy``: the final round alone swings by points from round to
#: round under strong non-IID data, the mean of the last rounds much less.
LAST_ROUNDS = 10

RUN_COLUMNS = (
    "group",
    "alpha",
    "protocol",
    "bits_mode",
    "seed",
    "lr",
    "rounds",
    "final_accuracy",
    "last10_accuracy",
    "best_accuracy",
    "rounds_to_target",
    "uplink_bytes",
    "uplink_bytes_to_target",
    "latency_to_target_s",
    "energy_to_target_j",
    "total_latency_s",
    "total_energy_j",
    "mean_bits",
    "final_grad_sq_norm_avg",
    "final_bound",
    "final_bound_calibrated",
    "bound_source",
    "solver",
    "solver_status",
    "wall_time_s",
    "error",
)
CURVE_COLUMNS = (
    "alpha",
    "protocol",
    "bits_mode",
    "seed",
    "round",
    "test_accuracy",
    "train_loss",
    "grad_sq_norm",
    "grad_sq_norm_avg",
    "bound",
    "bound_calibrated",
    "uplink_bytes_cum",
    "latency_s_cum",
    "energy_j_cum",
)
SUMMARY_COLUMNS = (
    "alpha",
    "protocol",
    "bits_mode",
    "runs",
    "final_accuracy_mean",
    "final_accuracy_std",
    "final_accuracy_min",
    "final_accuracy_max",
    "reached_target",
    "rounds_to_target_mean",
    "rounds_to_target_min",
    "rounds_to_target_max",
    "uplink_bytes_mean",
    "uplink_bytes_to_target_mean",
    "latency_to_target_s_mean",
    "energy_to_target_j_mean",
    "mean_bits",
    "errors",
)


def _lr(profile: Any, protocol: str) -> float:
    return float(profile.train_lr_sl if protocol == "sl" else profile.train_lr)


def _config(profile: Any, *, protocol: str, alpha: float, seed: int, bits: int | None) -> dict:
    return {
        "protocol": protocol,
        "model": "vit-tiny",
        "dataset": "digits",
        "devices": profile.train_devices,
        "alpha": float(alpha),
        "rounds": profile.train_rounds,
        "lr": _lr(profile, protocol),
        "momentum": float(profile.train_momentum),
        "batch_size": profile.train_batch_size,
        "local_iters": profile.train_local_iters,
        "bits": bits,
        "solver": profile.train_solver,
        "seed": int(seed),
        "threads": 1,
    }


def jobs(profile: Any) -> list[dict[str, Any]]:
    """Every training run of the profile as plain data (group, labels, TrainConfig kwargs).

    The ``bits`` group reuses the ``protocols`` group's SFLAM runs at ``train_bits_alpha`` for the
    solver's bits when that alpha is in the grid (same config, same seed: the same run).
    """
    a = float(profile.train_bits_alpha)
    base = _config(profile, protocol="sfl", alpha=a, seed=profile.calibration_seed, bits=None)
    out: list[dict[str, Any]] = [
        {
            "group": "calibration",
            "alpha": a,
            "protocol": "sfl+sflam",
            "bits_mode": "calibration",
            "seed": profile.calibration_seed,
            "config": base,
            "calibration_bits": list(profile.calibration_bits),
        }
    ]
    for alpha in profile.train_alphas:
        for proto in profile.train_protocols:
            for seed in profile.train_seeds:
                out.append(
                    {
                        "group": "protocols",
                        "alpha": float(alpha),
                        "protocol": proto,
                        "bits_mode": "solver" if proto == "sflam" else "fp32",
                        "seed": seed,
                        "config": _config(
                            profile, protocol=proto, alpha=alpha, seed=seed, bits=None
                        ),
                    }
                )
    need_solver = not ("sflam" in profile.train_protocols and a in map(float, profile.train_alphas))
    modes: list[tuple[str, int | None]] = [(f"uniform {b}", b) for b in profile.train_uniform_bits]
    if need_solver:
        modes.insert(0, ("solver", None))
    for label, bits in modes:
        for seed in profile.train_seeds:
            out.append(
                {
                    "group": "bits",
                    "alpha": a,
                    "protocol": "sflam",
                    "bits_mode": label,
                    "seed": seed,
                    "config": _config(profile, protocol="sflam", alpha=a, seed=seed, bits=bits),
                }
            )
    return out


def _calibrate(job: Mapping[str, Any]) -> dict[str, Any]:
    from sflam_opt.training.calibrate import calibrate

    c = job["config"]
    res = calibrate(
        c["model"],
        c["dataset"],
        devices=c["devices"],
        alpha=c["alpha"],
        rounds=c["rounds"],
        lr=c["lr"],
        momentum=c["momentum"],
        batch_size=c["batch_size"],
        local_iters=c["local_iters"],
        bits=tuple(job["calibration_bits"]),
        seed=c["seed"],
        threads=c["threads"],
    )
    keep = ("a", "phi0", "q", "epsilon", "f_w0", "f_inf", "floors", "rounds", "target_rounds")
    return {k: res[k] for k in keep}


def run_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """Train one job (in a worker process); returns plain data only."""
    from sflam_opt.bounds import phi_q
    from sflam_opt.training.trainer import TrainConfig, train

    t0 = time.perf_counter()
    try:
        if job["group"] == "calibration":
            cal = _calibrate(job)
            return {
                **job,
                "calibration": cal,
                "error": None,
                "wall_time_s": time.perf_counter() - t0,
            }
        res = train(TrainConfig(**job["config"]))
    except Exception as exc:  # noqa: BLE001 - one failed run is recorded, the others go on
        logger.warning("training run %s failed: %s", _label(job), exc)
        return {
            **job,
            "error": f"{type(exc).__name__}: {exc}",
            "wall_time_s": time.perf_counter() - t0,
        }
    keep = (
        "round",
        "test_accuracy",
        "train_loss",
        "grad_sq_norm",
        "bound",
        "uplink_bytes",
        "latency_s",
        "energy_j",
    )
    metrics = [{k: m.get(k) for k in keep} for m in res.metrics]
    s = res.summary
    used = res.allocation.bits if s.get("bits") is not None else np.full(len(res.allocation), 32)
    q = res.scenario.convergence.q
    # Phi_q(b) / q: the bits' factor in the bound, reused with calibrated constants later.
    unit = float(phi_q(res.scenario, used)) / q if q > 0 else None
    return {
        **job,
        "metrics": metrics,
        "summary": {
            "mean_bits": s.get("mean_bits"),
            "bits": s.get("bits"),
            "solver": (s.get("allocation") or {}).get("solver"),
            "solver_status": (s.get("allocation") or {}).get("status"),
            "uplink_bytes": s.get("uplink_bytes"),
            "phi_q_unit": unit,
            "convergence": {
                **dataclasses.asdict(res.scenario.convergence),
                "source": (s.get("allocation") or {}).get("convergence"),
            },
        },
        "wall_time_s": time.perf_counter() - t0,
        "error": None,
    }


def run_row(
    result: Mapping[str, Any], target: float, calibration: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One ``train_runs.csv`` row: final accuracy, rounds/bytes/latency/energy to ``target``."""
    row: dict[str, Any] = {
        k: result.get(k) for k in ("group", "alpha", "protocol", "bits_mode", "seed", "error")
    }
    row["lr"] = result["config"]["lr"]
    row["wall_time_s"] = result.get("wall_time_s")
    metrics = result.get("metrics") or []
    if not metrics:
        return row
    acc = np.array([m["test_accuracy"] for m in metrics], dtype=float)
    up = np.cumsum([m["uplink_bytes"] for m in metrics], dtype=float)
    lat = np.cumsum([m["latency_s"] for m in metrics], dtype=float)
    en = np.cumsum([m["energy_j"] for m in metrics], dtype=float)
    grad = np.array([m["grad_sq_norm"] for m in metrics], dtype=float)
    hit = np.flatnonzero(acc >= target)
    i = int(hit[0]) if hit.size else None
    s = result.get("summary", {})
    row.update(
        rounds=len(metrics),
        final_accuracy=float(acc[-1]),
        last10_accuracy=float(acc[-LAST_ROUNDS:].mean()),
        best_accuracy=float(acc.max()),
        rounds_to_target=None if i is None else int(metrics[i]["round"]),
        uplink_bytes=float(up[-1]),
        uplink_bytes_to_target=None if i is None else float(up[i]),
        latency_to_target_s=None if i is None else float(lat[i]),
        energy_to_target_j=None if i is None else float(en[i]),
        total_latency_s=float(lat[-1]),
        total_energy_j=float(en[-1]),
        mean_bits=s.get("mean_bits"),
        final_grad_sq_norm_avg=float(grad.mean()),
        final_bound=metrics[-1].get("bound"),
        final_bound_calibrated=calibrated_bound(result, calibration, len(metrics)),
        bound_source=(s.get("convergence") or {}).get("source"),
        solver=s.get("solver"),
        solver_status=s.get("solver_status"),
    )
    return row


def calibrated_bound(
    result: Mapping[str, Any], calibration: Mapping[str, Any] | None, k: int
) -> float | None:
    """Bound of docs/formulation.md §4 after ``k`` rounds with calibrated A, Phi0 and q.

    ``A / (eta_eff tau k) + Phi0 + q * Phi_q(b) / q_scenario``, with ``eta_eff = lr / (1 -
    momentum)`` and tau of the run's config and
    the bits' factor ``Phi_q(b) / q`` the run recorded (``phi_q_unit``).
    """
    unit = (result.get("summary") or {}).get("phi_q_unit")
    if not calibration or unit is None:
        return None
    from sflam_opt.bounds import effective_step

    c = result["config"]
    return (
        calibration["a"] / (effective_step(c["lr"], c["momentum"]) * c["local_iters"] * k)
        + calibration["phi0"]
        + calibration["q"] * unit
    )


def curve_rows(
    result: Mapping[str, Any], calibration: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Per-round rows of one run, with cumulative bytes/latency/energy, the running mean of the
    squared gradient norm (the left side of the bound of docs/formulation.md §4), the trainer's bound
    (scenario constants) and the bound with ``calibration``'s constants."""
    metrics = result.get("metrics") or []
    out = []
    up = lat = en = grad = 0.0
    for k, m in enumerate(metrics, start=1):
        up += m["uplink_bytes"]
        lat += m["latency_s"]
        en += m["energy_j"]
        grad += m["grad_sq_norm"]
        out.append(
            {
                "alpha": result["alpha"],
                "protocol": result["protocol"],
                "bits_mode": result["bits_mode"],
                "seed": result["seed"],
                "round": m["round"],
                "test_accuracy": m["test_accuracy"],
                "train_loss": m["train_loss"],
                "grad_sq_norm": m["grad_sq_norm"],
                "grad_sq_norm_avg": grad / k,
                "bound": m.get("bound"),
                "bound_calibrated": calibrated_bound(result, calibration, k),
                "uplink_bytes_cum": up,
                "latency_s_cum": lat,
                "energy_j_cum": en,
            }
        )
    return out


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Aggregate runs over seeds per (alpha, protocol, bits_mode).

    Accuracy: mean, population std, min and max over seeds. Rounds/bytes/latency/energy to the
    target: means over the seeds that reached it (``reached_target`` says how many did).
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["alpha"], r["protocol"], r["bits_mode"]), []).append(r)
    out = []
    for (alpha, proto, mode), rs in groups.items():
        ok = [r for r in rs if r.get("final_accuracy") is not None]
        acc = np.array([r["final_accuracy"] for r in ok], dtype=float)
        reached = [r for r in ok if r.get("rounds_to_target") is not None]
        rt = [r["rounds_to_target"] for r in reached]
        out.append(
            {
                "alpha": alpha,
                "protocol": proto,
                "bits_mode": mode,
                "runs": len(rs),
                "final_accuracy_mean": float(acc.mean()) if acc.size else None,
                "final_accuracy_std": float(acc.std()) if acc.size else None,
                "final_accuracy_min": float(acc.min()) if acc.size else None,
                "final_accuracy_max": float(acc.max()) if acc.size else None,
                "reached_target": f"{len(reached)}/{len(rs)}",
                "rounds_to_target_mean": finite_mean(rt),
                "rounds_to_target_min": min(rt) if rt else None,
                "rounds_to_target_max": max(rt) if rt else None,
                "uplink_bytes_mean": finite_mean([r.get("uplink_bytes") for r in ok]),
                "uplink_bytes_to_target_mean": finite_mean(
                    [r["uplink_bytes_to_target"] for r in reached]
                ),
                "latency_to_target_s_mean": finite_mean(
                    [r["latency_to_target_s"] for r in reached]
                ),
                "energy_to_target_j_mean": finite_mean([r["energy_to_target_j"] for r in reached]),
                "mean_bits": finite_mean([r.get("mean_bits") for r in ok]),
                "errors": sum(1 for r in rs if r.get("error")),
            }
        )
    return out


def _label(j: Mapping[str, Any]) -> str:
    return f"train: {j['protocol']} α={j['alpha']:g} {j['bits_mode']} seed {j['seed']}"


def execute(ctx: BenchContext, todo: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the jobs, in ``train_workers`` worker processes when more than one.

    Each worker is a long-lived ``python -m benchmarks.train`` process fed one JSON job per
    line (so torch is imported once per worker, and nothing depends on how the parent was
    started); a thread per worker feeds it from a shared queue.
    """
    workers = max(1, min(ctx.profile.train_workers, len(todo), os.cpu_count() or 1))
    if workers == 1:
        results = []
        for j in todo:
            ctx.progress(_label(j), 0.0)
            results.append(run_job(j))
            ctx.progress(_label(j), 1.0 / len(todo))
        return results
    pending: queue.Queue[int] = queue.Queue()
    for i in range(len(todo)):
        pending.put(i)
    results_by_index: dict[int, dict[str, Any]] = {}
    lock = threading.Lock()
    env = checkout_env()

    def feed() -> None:
        with tempfile.TemporaryFile(mode="w+") as errlog:
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.train"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errlog,
                text=True,
                env=env,
            )
            assert proc.stdin is not None and proc.stdout is not None
            try:
                while True:
                    try:
                        i = pending.get_nowait()
                    except queue.Empty:
                        break
                    proc.stdin.write(json.dumps(todo[i]) + "\n")
                    proc.stdin.flush()
                    line = proc.stdout.readline()
                    if not line:
                        errlog.seek(0)
                        tail = (errlog.read().strip().splitlines() or ["no output"])[-1]
                        res = {**todo[i], "error": f"worker died: {tail}"}
                    else:
                        res = json.loads(line)
                    with lock:
                        results_by_index[i] = res
                        ctx.progress(_label(todo[i]), 1.0 / len(todo))
                    if not line:
                        break
            finally:
                proc.stdin.close()
                proc.wait(timeout=60)

    threads = [threading.Thread(target=feed, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    missing = [i for i in range(len(todo)) if i not in results_by_index]
    for i in missing:  # every worker died: run what is left here
        results_by_index[i] = run_job(todo[i])
    return [results_by_index[i] for i in range(len(todo))]


def main() -> int:
    """Worker loop of ``python -m benchmarks.train``: one JSON job in, one result out."""
    channel = sys.stdout
    sys.stdout = sys.stderr  # anything a library prints must not corrupt the result lines
    for line in sys.stdin:
        if line.strip():
            res = run_job(json.loads(line))
            channel.write(json.dumps(jsonable(res)) + "\n")
            channel.flush()
    return 0


def cifar_status(cifar10_dir: Path | None) -> dict[str, Any]:
    """Whether the CIFAR-10 ViT-B/32 run can happen here, and why not if it cannot."""
    import torch

    from sflam_opt.training.data import CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES

    d = cifar10_dir
    if d is None and os.environ.get("SFLAM_CIFAR10_DIR"):
        d = Path(os.environ["SFLAM_CIFAR10_DIR"])
    reasons = []
    if d is None:
        reasons.append("no CIFAR-10 directory (give --cifar10-dir DIR or set SFLAM_CIFAR10_DIR)")
    elif not all((Path(d) / f).is_file() for f in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)):
        reasons.append(f"{d} does not hold data_batch_1..5 and test_batch")
    if not torch.cuda.is_available():
        reasons.append("no CUDA device")
    return {"run": not reasons, "data_dir": None if d is None else str(d), "reasons": reasons}


def _cifar(ctx: BenchContext, status: dict[str, Any]) -> list[dict[str, Any]]:
    from sflam_opt.training.trainer import TrainConfig, train

    p = ctx.profile
    rows = []
    for alpha in p.train_alphas:
        ctx.progress(f"train: cifar10 vit-b32 α={alpha:g}", 0.0)
        cfg = TrainConfig(
            protocol="sflam",
            model="vit-b32",
            dataset="cifar10",
            data_dir=status["data_dir"],
            pretrained=True,
            device="cuda",
            alpha=float(alpha),
            devices=p.train_devices,
            rounds=p.cifar_rounds,
            lr=p.cifar_lr,
            batch_size=p.cifar_batch_size,
            local_iters=p.train_local_iters,
            solver=p.train_solver,
            seed=p.seed,
        )
        try:
            res = train(cfg)
        except SflamError as exc:
            rows.append({"alpha": alpha, "error": str(exc)})
            continue
        rows.append(
            {
                "alpha": alpha,
                "rounds": len(res.metrics),
                "final_accuracy": res.summary["final_test_accuracy"],
                "best_accuracy": res.summary["best_test_accuracy"],
                "config": cfg.to_dict(),
            }
        )
    return rows


def run(ctx: BenchContext) -> dict[str, Any]:
    """Run the training benchmarks; write CSVs, figures and ``train.json``."""
    p = ctx.profile
    started, started_utc = time.perf_counter(), utc_now()
    todo = jobs(p)
    done = execute(ctx, todo)
    cal_job = next((r for r in done if r["group"] == "calibration"), None)
    calibration = (cal_job or {}).get("calibration")
    results = [r for r in done if r["group"] != "calibration"]
    rows = [run_row(r, p.train_target, calibration) for r in results]
    grid = [r for r in rows if r["group"] == "protocols"]
    bits_rows = [r for r in rows if r["group"] == "bits"]
    a = float(p.train_bits_alpha)
    bits_rows = [r for r in grid if r["protocol"] == "sflam" and r["alpha"] == a] + bits_rows
    ctx.csv("train_runs", rows, RUN_COLUMNS)
    ctx.csv(
        "train_curves",
        [c for r in results if r["group"] == "protocols" for c in curve_rows(r, calibration)],
        CURVE_COLUMNS,
    )
    bits_results = [
        r for r in results if r["group"] == "bits" or (r["protocol"] == "sflam" and r["alpha"] == a)
    ]
    ctx.csv(
        "train_bits_curves",
        [c for r in bits_results for c in curve_rows(r, calibration)],
        CURVE_COLUMNS,
    )
    ctx.csv("train_summary", summarize(grid), SUMMARY_COLUMNS)
    ctx.csv("train_bits_summary", summarize(bits_rows), SUMMARY_COLUMNS)
    cifar = cifar_status(ctx.cifar10_dir)
    if cifar["run"]:
        cifar["results"] = _cifar(ctx, cifar)
    solver_bits = next(
        (
            r.get("summary", {}).get("bits")
            for r in results
            if r["bits_mode"] == "solver" and r.get("summary")
        ),
        None,
    )
    ctx.json(
        "train",
        {
            "meta": ctx.meta("train", started, started_utc),
            "configs": [
                {k: j[k] for k in ("group", "alpha", "protocol", "bits_mode", "seed", "config")}
                for j in todo
            ],
            "solver_bits": solver_bits,
            "scenario_convergence": next(
                (r["summary"].get("convergence") for r in results if r.get("summary")), None
            ),
            "calibration": {
                "constants": calibration,
                "seed": p.calibration_seed,
                "alpha": a,
                "bits": list(p.calibration_bits),
                "error": (cal_job or {}).get("error"),
                "wall_time_s": (cal_job or {}).get("wall_time_s"),
            },
            "cifar10": cifar,
            "cifar10_command": cifar_command(p),
        },
    )
    ctx.written.extend(draw(ctx.figures))
    return {"rows": rows, "cifar10": cifar}


if __name__ == "__main__":
    sys.exit(main())

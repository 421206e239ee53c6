"""Estimate the constants A, Phi0 and q of the convergence bound from training runs.

Formulation section 4 bounds the average squared gradient norm after K rounds,
``G(K) = (1/K) sum_{k<=K} ||grad_k||^2``, by
``B(K, b) = A / (eta_eff tau K) + Phi0 + Phi_q(b)`` with ``Phi_q(b) = sum_n rho_n q / (2^{b_n} - 1)^2``
and ``eta_eff = eta / (1 - mu)``, the effective step of SGD with heavy-ball momentum ``mu``
(:func:`sflam_opt.bounds.effective_step`). :func:`calibrate` measures the configuration to be
trained with the real trainer (:func:`sflam_opt.training.trainer.train`) -- fp32 SFL-V1 and SFLAM
at uniform low bit widths, on one or more calibration seeds -- and fits the constants so that the
bound holds on every one of those runs (:func:`fit_calibration`):

1. **q: upper envelope of the quantization floor.** Quantization noise shows in the gradient norm
   once the early transient is over: per calibration partition and bit width ``b``, the plateau
   (mean of the per-round values over the last ``plateau_fraction`` of the rounds) of the b-bit
   run exceeds the fp32 run's by ``Delta_b``. ``q = max (Delta_b)_+ (2^b - 1)^2`` over widths and
   partitions: the smallest q whose term covers every measured excess. (The running averages
   alone cannot identify q: they keep the early transient, whose size differs from run to run by
   more than the quantization floor.)
2. **A, Phi0: upper envelope.** Every run r (uniform bits ``b_r``; fp32 has ``Phi_q = 0``) and
   every round K gives a point ``G_r(K)``. With q fixed, ``(A, Phi0) >= 0`` minimise the fp32
   bound at the target horizon, ``A / (eta_eff tau K_target) + Phi0``, subject to
   ``B(K, b_r) >= G_r(K)`` at every point: a linear program (:func:`envelope_fit`, HiGHS). The
   bound is then the curve of its form that lies on or above every measured curve and is lowest
   where the solver uses it (at ``K_target``), not a least-squares fit through the curves.
3. **Partition margin.** With several calibration partitions (seeds, or Dirichlet alphas, each
   giving another split of the data), the envelope is refitted leaving each partition out; the
   largest ratio ``G_r(K) / B(K, b_r)`` of a left-out partition's runs over all K is how far an
   unseen partition went above an envelope of the others. The final constants are the
   all-partition envelope's times that factor (at least 1), so the bound also covers the
   variation from partition to partition.
4. **Target.** ``epsilon = Phi0 + A / (eta_eff tau K_target)``: what the bound guarantees for fp32
   after ``K_target`` rounds (default: the calibration's own), so a scenario with these constants
   asks the allocation to reach what fp32 training reaches in that many rounds.

The measured ``A_0 = 2 (F(w_0) - F_inf)`` (initial cross-entropy minus the fp32 run's final
training loss) and the per-bits plateaus are kept as evidence. A calibration is valid for the
configuration it measured only; :mod:`sflam_opt.training.calibration_store` stores it with that
configuration and the command that made it.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linprog

from sflam_opt.bounds import effective_step, quantization_penalty
from sflam_opt.errors import TrainingConfigError
from sflam_opt.scenario import Scenario
from sflam_opt.training.calibration_store import calibrate_command, calibration_key
from sflam_opt.training.data import load_dataset
from sflam_opt.training.models import FullModel, build_split_model, input_size
from sflam_opt.training.quantizer import FP32_BITS, MAX_BITS
from sflam_opt.training.trainer import TrainConfig, TrainResult, evaluate_model, train
from sflam_opt.validation import is_int

__all__ = [
    "FITTING_RULE",
    "calibrate",
    "calibrate_config",
    "calibration_scenario",
    "envelope_fit",
    "fit_calibration",
    "plateau",
    "quantization_floor",
    "running_average",
]

logger = logging.getLogger(__name__)

#: One-line statement of the rule, stored with every calibration.
FITTING_RULE = (
    "q = max over bit widths b and partitions of (2^b-1)^2 (plateau_b - plateau_fp32)_+, "
    "plateaus = mean squared gradient norm over the last half of the rounds; then (A, Phi0) >= 0 "
    "minimise A/(eta_eff tau K_target) + Phi0 subject to B(K, b) >= G(K) for every run and round "
    "K (upper envelope), B = A/(eta_eff tau K) + Phi0 + q/(2^b-1)^2, eta_eff = lr/(1-momentum), G(K) the "
    "running mean of the squared gradient norm over rounds 1..K, A at least the measured "
    "2 (F(w_0) - F_inf) when known; then all three scaled "
    "by the largest leave-one-partition-out excess (>= 1); "
    "epsilon = Phi0 + A/(eta_eff tau K_target)"
)


trainer_logger = logging.getLogger("sflam_opt.training.trainer")


class _DropUncalibrated(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "uncalibrated" not in record.getMessage()


def plateau(values: ArrayLike, fraction: float = 0.5) -> float:
    """Mean of the last ``fraction`` of ``values`` (at least one value)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("plateau of no values")
    k = max(1, int(round(fraction * v.size)))
    return float(v[-k:].mean())


def running_average(values: ArrayLike) -> np.ndarray:
    """``G(K) = (1/K) sum_{k<=K} values[k-1]`` for K = 1..len(values), shape (len(values),)."""
    v = np.asarray(values, dtype=np.float64)
    return np.cumsum(v) / np.arange(1, v.size + 1)


def _bits_factor(bits: int) -> float:
    return 0.0 if bits >= FP32_BITS else float(quantization_penalty(bits))


def quantization_floor(runs: Sequence[Mapping[str, Any]], fraction: float = 0.5) -> float:
    """``q``: the largest ``(2^b - 1)^2 (plateau_b - plateau_fp32)_+`` (module docstring, step 1).

    Parameters
    ----------
    runs : sequence of mapping
        ``bits`` (32 = fp32), ``grad_sq_norm`` per round, ``group`` (partition; default ``seed``).
        Each partition's quantized runs are compared with its own fp32 run.
    fraction : float
        Share of the last rounds averaged for a plateau.

    Returns
    -------
    float
        ``q >= 0``; 0 without a partition holding both an fp32 and a quantized run.
    """
    fp32: dict[str, float] = {}
    for r in runs:
        if int(r["bits"]) >= FP32_BITS:
            fp32[_group(r)] = plateau(r["grad_sq_norm"], fraction)
    q = 0.0
    for r in runs:
        b = int(r["bits"])
        if b < FP32_BITS and _group(r) in fp32:
            excess = plateau(r["grad_sq_norm"], fraction) - fp32[_group(r)]
            q = max(q, excess / _bits_factor(b))
    return q


def _group(r: Mapping[str, Any]) -> str:
    return str(r.get("group", r.get("seed")))


def envelope_fit(
    runs: Sequence[tuple[int, ArrayLike]],
    step_tau: float,
    q: float | None = None,
    horizon: int | None = None,
) -> tuple[float, float, float]:
    """Tightest ``(A, Phi0[, q]) >= 0`` with ``B(K, b) >= G(K)`` on every run and round.

    Parameters
    ----------
    runs : sequence of (int, array_like)
        ``(bits, grad_sq_norm per round)``; ``bits = 32`` for fp32 (no quantization term).
    step_tau : float
        ``eta_eff * tau`` of the runs (effective step times local iterations).
    q : float, optional
        Fixed quantization constant; by default q is a third variable of the program.
    horizon : int, optional
        With ``q`` fixed: minimise the fp32 bound after ``horizon`` rounds,
        ``A / (step_tau horizon) + Phi0``. Otherwise the summed slack ``sum (B - G)`` over every
        point is minimised.

    Returns
    -------
    (float, float, float)
        ``A``, ``Phi0``, ``q`` of the envelope.
    """
    if horizon is not None and q is None:
        raise ValueError("envelope_fit: a horizon objective needs a fixed q")
    rows, rhs = [], []
    for bits, values in runs:
        g = running_average(values)
        k = np.arange(1, g.size + 1, dtype=np.float64)
        rows.append(
            np.column_stack(
                [1.0 / (step_tau * k), np.ones_like(k), np.full_like(k, _bits_factor(bits))]
            )
        )
        rhs.append(g)
    m = np.vstack(rows)
    target = np.concatenate(rhs)
    if q is not None:
        target = target - q * m[:, 2]
        m = m[:, :2]
    if not np.isfinite(target).all():
        raise TrainingConfigError(
            "calibration: a run has non-finite gradient norms; lower --lr and calibrate again"
        )
    has_q = q is None and bool(m[:, 2].any())
    if q is None and not has_q:
        m = m[:, :2]
    # Scale the columns to comparable magnitudes; HiGHS is exact either way, this only helps it.
    scale = np.maximum(m.max(axis=0), 1e-300)
    cost = (m / scale).sum(axis=0)
    if horizon is not None:
        cost = np.array([1.0 / (step_tau * horizon), 1.0]) / scale
    res = linprog(
        c=cost,
        A_ub=-(m / scale),
        b_ub=-target,
        bounds=[(0, None)] * m.shape[1],
        method="highs",
    )
    if res.status != 0:
        raise TrainingConfigError(f"calibration: the envelope fit failed ({res.message})")
    coef = res.x / scale
    a, phi0 = float(coef[0]), float(coef[1])
    if q is None:
        q = float(coef[2]) if has_q else 0.0
    return a, phi0, float(q)


def _bound(a: float, phi0: float, q: float, bits: int, step_tau: float, n: int) -> np.ndarray:
    k = np.arange(1, n + 1, dtype=np.float64)
    return a / (step_tau * k) + phi0 + q * _bits_factor(bits)


def fit_calibration(
    runs: Sequence[Mapping[str, Any]],
    step_tau: float,
    target_rounds: int,
    plateau_fraction: float = 0.5,
    a_min: float = 0.0,
) -> dict[str, Any]:
    """The calibrated constants of runs of one configuration (module docstring, steps 1-4).

    Parameters
    ----------
    runs : sequence of mapping
        Each with ``bits`` (32 = fp32), ``grad_sq_norm`` (one value per round) and ``group``, the
        data partition it trained on (default: its ``seed``).
    step_tau : float
        ``eta_eff * tau``.
    target_rounds : int
        ``K_target`` of the epsilon rule.
    plateau_fraction : float
        Share of the last rounds averaged for the plateaus of step 1.
    a_min : float
        Lower limit of A, e.g. the measured ``2 (F(w_0) - F_inf)``: when the running means do not
        fall over the calibration (short runs), the envelope alone would put A at 0, which no
        scenario accepts. Raising A only raises the bound, so it stays an envelope.

    Returns
    -------
    dict
        ``a``, ``phi0``, ``q``, ``epsilon``; ``envelope`` (the unscaled all-partition fit),
        ``margin`` (the partition factor), ``leave_one_out`` (partition -> largest excess ratio)
        and ``final_ratio`` (run label -> ``G(K) / B(K)`` at the last round with the final
        constants).
    """
    if not runs:
        raise TrainingConfigError("calibration: no runs to fit")
    group = _group
    pairs = [(int(r["bits"]), r["grad_sq_norm"]) for r in runs]
    q = quantization_floor(runs, plateau_fraction)
    a, phi0, q = envelope_fit(pairs, step_tau, q, int(target_rounds))
    a = max(a, float(a_min))
    groups = sorted({group(r) for r in runs})
    loo: dict[str, float] = {}
    if len(groups) > 1:
        for s in groups:
            rest_runs = [r for r in runs if group(r) != s]
            rest = [(int(r["bits"]), r["grad_sq_norm"]) for r in rest_runs]
            fq = quantization_floor(rest_runs, plateau_fraction)
            fa, fp, fq = envelope_fit(rest, step_tau, fq, int(target_rounds))
            worst = 0.0
            for r in runs:
                if group(r) == s:
                    g = running_average(r["grad_sq_norm"])
                    b = _bound(fa, fp, fq, int(r["bits"]), step_tau, g.size)
                    worst = max(worst, float(np.max(g / b)))
            loo[str(s)] = worst
    margin = max([1.0, *loo.values()])
    a_c, phi0_c, q_c = margin * a, margin * phi0, margin * q
    epsilon = phi0_c + a_c / (step_tau * int(target_rounds))
    final = {}
    for r in runs:
        g = running_average(r["grad_sq_norm"])
        b = _bound(a_c, phi0_c, q_c, int(r["bits"]), step_tau, g.size)
        name = "fp32" if int(r["bits"]) >= FP32_BITS else f"{int(r['bits'])}-bit"
        final[f"{name} {group(r)}"] = float(g[-1] / b[-1])
    return {
        "a": a_c,
        "phi0": phi0_c,
        "q": q_c,
        "epsilon": epsilon,
        "envelope": {"a": a, "phi0": phi0, "q": q},
        "margin": margin,
        "leave_one_out": loo,
        "final_ratio": final,
    }


def calibrate_config(
    config: TrainConfig,
    *,
    seeds: Sequence[int],
    bits: Sequence[int] = (2,),
    target_rounds: int | None = None,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """:func:`calibrate` the configuration ``config`` describes (its model, data and trainer options).

    ``config``'s protocol, bits, allocation, scenario, seed and output options do not enter: the
    calibration runs its own fp32 and ``bits`` runs on ``seeds``.
    """
    return calibrate(
        config.model,
        config.dataset,
        config.data_dir,
        devices=config.devices,
        devices_per_round=config.devices_per_round,
        alpha=config.alpha,
        rounds=config.rounds,
        lr=config.lr,
        momentum=config.momentum,
        batch_size=config.batch_size,
        local_iters=config.local_iters,
        image_size=config.image_size,
        pretrained=config.pretrained,
        weights=config.weights,
        bits=bits,
        target_rounds=target_rounds,
        seeds=seeds,
        device=config.device,
        threads=config.threads,
        progress=progress,
    )


def calibrate(
    model: str = "vit-tiny",
    dataset: str = "digits",
    data_dir: str | None = None,
    *,
    devices: int = 20,
    devices_per_round: int | None = None,
    alpha: float = 0.5,
    rounds: int = 30,
    lr: float | None = None,
    momentum: float | None = None,
    batch_size: int | None = None,
    local_iters: int | None = None,
    image_size: int | None = None,
    pretrained: bool = False,
    weights: str | None = None,
    bits: Sequence[int] = (2,),
    plateau_fraction: float = 0.5,
    target_rounds: int | None = None,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    device: str = "cpu",
    threads: int | None = None,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Estimate A, Phi0, q and epsilon (module docstring) from ``len(seeds) (1 + len(bits))`` runs.

    Parameters
    ----------
    model, dataset, data_dir, image_size, pretrained, weights
        What to train (as ``sflam-opt train``).
    devices, devices_per_round, alpha, rounds, lr, momentum, batch_size, local_iters, device, threads
        Trainer options of every run; ``None`` takes the :class:`TrainConfig` default.
    bits : sequence of int
        Uniform bit widths (1..16) of the quantized runs that estimate q.
    plateau_fraction : float
        Share of the last rounds averaged for the reported plateaus (evidence only), in (0, 1].
    target_rounds : int, optional
        K of the epsilon rule (default: ``rounds``).
    seed : int
        Calibration seed when ``seeds`` is not given.
    seeds : sequence of int, optional
        Calibration seeds; two or more add the leave-one-seed-out margin.
    progress : callable, optional
        Called as ``progress(run_label, metrics_row)`` after every round of every run.

    Returns
    -------
    dict
        ``a``, ``phi0``, ``q``, ``epsilon`` (the ``[convergence]`` table) and the evidence:
        ``f_w0``, ``f_inf``, ``a_measured`` (``2 (f_w0 - f_inf)``), ``floors`` (bits -> plateau,
        first seed), ``grad_sq_norm`` (run -> per-round values), ``envelope``, ``margin``,
        ``leave_one_out``, ``final_ratio``, ``rounds``, ``target_rounds``, ``seeds``; ``entry``,
        the record for :func:`~sflam_opt.training.calibration_store.save_calibration`; and
        ``scenario``, the first fp32 run's scenario, for :func:`calibration_scenario`.

    Raises
    ------
    TrainingConfigError
        Invalid options, or an fp32 run whose loss did not decrease.
    """
    bits = tuple(bits)
    seeds = (seed,) if seeds is None else tuple(int(s) for s in seeds)
    _check_options(bits, seeds, plateau_fraction, target_rounds)
    overrides = {
        k: v
        for k, v in dict(
            lr=lr, momentum=momentum, batch_size=batch_size, local_iters=local_iters
        ).items()
        if v is not None
    }
    common = dict(
        model=model,
        dataset=dataset,
        data_dir=data_dir,
        devices=devices,
        devices_per_round=devices_per_round,
        alpha=alpha,
        rounds=rounds,
        image_size=image_size,
        pretrained=pretrained or weights is not None,
        weights=weights,
        device=device,
        threads=threads,
        solver="equal",  # the allocation's bandwidth and power do not affect learning
        calibration="scenario",  # these runs measure the constants; none are needed to train
        **overrides,
    )
    results = _runs(common, seeds, bits, progress)
    fp32 = results[0][2]
    cfg0 = fp32.config
    f_w0, f_inf = _loss_gap(fp32, seeds[0])
    fit = fit_calibration(
        [
            {
                "bits": b,
                "group": f"seed {s}",
                "grad_sq_norm": [m["grad_sq_norm"] for m in r.metrics],
            }
            for s, b, r in results
        ],
        effective_step(cfg0.lr, cfg0.momentum) * cfg0.local_iters,
        rounds if target_rounds is None else int(target_rounds),
        plateau_fraction,
        a_min=2.0 * (f_w0 - f_inf),
    )
    return _result(
        fit, results, (f_w0, f_inf), bits, seeds, rounds, target_rounds, plateau_fraction
    )


def _result(
    fit: Mapping[str, Any],
    results: list[tuple[int, int, TrainResult]],
    loss_gap: tuple[float, float],
    bits: tuple[int, ...],
    seeds: tuple[int, ...],
    rounds: int,
    target_rounds: int | None,
    plateau_fraction: float,
) -> dict[str, Any]:
    """:func:`calibrate`'s return value: the constants, the evidence and the store entry."""
    f_w0, f_inf = loss_gap
    fp32 = results[0][2]
    cfg0 = fp32.config
    k_target = rounds if target_rounds is None else int(target_rounds)
    command = calibrate_command(cfg0).replace(
        " --save",
        f" --rounds {rounds} --bits {','.join(map(str, bits))} "
        f"--seeds {','.join(map(str, seeds))}"
        + (f" --target-rounds {k_target}" if target_rounds is not None else "")
        + " --save",
    )
    evidence = {
        "envelope": fit["envelope"],
        "margin": fit["margin"],
        "leave_one_out": fit["leave_one_out"],
        "final_ratio": fit["final_ratio"],
    }
    entry = {
        "config": calibration_key(cfg0),
        "convergence": {k: fit[k] for k in ("a", "phi0", "q", "epsilon")},
        "rule": FITTING_RULE,
        "step": "eta_eff = lr / (1 - momentum)",
        "command": command,
        "seeds": list(seeds),
        "bits": list(bits),
        "rounds": rounds,
        "target_rounds": k_target,
        **evidence,
        "a_measured": 2.0 * (f_w0 - f_inf),
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return {
        **{k: fit[k] for k in ("a", "phi0", "q", "epsilon")},
        "f_w0": f_w0,
        "f_inf": f_inf,
        "a_measured": 2.0 * (f_w0 - f_inf),
        "floors": {
            str(b): plateau([m["grad_sq_norm"] for m in r.metrics], plateau_fraction)
            for s, b, r in results
            if s == seeds[0]
        },
        "grad_sq_norm": {
            ("fp32" if b == FP32_BITS else f"{b}-bit") + f" seed {s}": [
                m["grad_sq_norm"] for m in r.metrics
            ]
            for s, b, r in results
        },
        **evidence,
        "rounds": rounds,
        "target_rounds": k_target,
        "seeds": list(seeds),
        "entry": entry,
        "scenario": fp32.scenario,
    }


def _check_options(
    bits: tuple[int, ...],
    seeds: tuple[int, ...],
    plateau_fraction: float,
    target_rounds: int | None,
) -> None:
    """One-line errors for :func:`calibrate`'s own options (the trainer checks the rest)."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise TrainingConfigError(f"seeds: give distinct calibration seeds, not {list(seeds)}")
    if not bits:
        raise TrainingConfigError("bits: give at least one bit width for the quantized runs")
    for b in bits:
        if not is_int(b) or not 1 <= b <= MAX_BITS:
            raise TrainingConfigError(
                f"bits: invalid width {b!r} for a calibration run; use integers in 1..{MAX_BITS}"
            )
    if len(set(bits)) != len(bits):
        raise TrainingConfigError(f"bits: duplicate widths in {list(bits)}")
    if not 0 < plateau_fraction <= 1:
        raise TrainingConfigError(
            f"plateau_fraction: invalid value {plateau_fraction!r}; give a share in (0, 1]"
        )
    if target_rounds is not None and (isinstance(target_rounds, bool) or target_rounds < 1):
        raise TrainingConfigError(
            f"target_rounds: invalid value {target_rounds!r}; give a whole number >= 1"
        )


def _runs(
    common: Mapping[str, Any],
    seeds: tuple[int, ...],
    bits: tuple[int, ...],
    progress: Callable[[str, dict[str, Any]], None] | None,
) -> list[tuple[int, int, TrainResult]]:
    """Per seed, the fp32 SFL run and one SFLAM run per width: ``(seed, bits, result)``."""

    def run(label: str, **kw: Any) -> TrainResult:
        cfg = TrainConfig(**common, **kw)
        cb = None if progress is None else (lambda row: progress(label, row))
        logger.info("calibration run %s", label)
        # Calibration runs have no calibration yet by definition; their warning is noise.
        quiet = _DropUncalibrated()
        trainer_logger.addFilter(quiet)
        try:
            return train(cfg, progress=cb)
        finally:
            trainer_logger.removeFilter(quiet)

    results: list[tuple[int, int, TrainResult]] = []
    for s in seeds:
        results.append((s, FP32_BITS, run(f"fp32 seed {s}", protocol="sfl", seed=s)))
        for b in bits:
            results.append(
                (s, int(b), run(f"{b}-bit seed {s}", protocol="sflam", bits=int(b), seed=s))
            )
    return results


def _loss_gap(fp32: TrainResult, seed: int) -> tuple[float, float]:
    """``F(w_0)`` (the initial model of ``seed``) and ``F_inf`` (the trained fp32 model).

    Both are the mean cross-entropy over the whole training set; ``F_inf`` is floored at 0.
    """
    cfg = fp32.config
    data = load_dataset(cfg.dataset, cfg.data_dir)
    init_dev, init_srv, _ = build_split_model(
        cfg.model,
        num_classes=data.num_classes,
        image_size=input_size(cfg.model, data.image_size, cfg.image_size),
        in_chans=data.in_chans,
        seed=seed,
    )
    where = next(fp32.model.parameters()).device
    x, y = data.x_train.to(where), data.y_train.to(where)
    f_w0 = evaluate_model(FullModel(init_dev, init_srv).to(where), x, y)[0]
    f_inf = max(0.0, evaluate_model(fp32.model, x, y)[0])
    if not f_w0 > f_inf:
        raise TrainingConfigError(
            f"rounds: the fp32 calibration run did not lower the training loss "
            f"({f_w0:.4g} -> {f_inf:.4g}); raise --rounds or lower --lr"
        )
    return f_w0, f_inf


def calibration_scenario(result: Mapping[str, Any]) -> Scenario:
    """The calibration run's scenario with ``[convergence]`` from the estimates.

    Parameters
    ----------
    result : mapping
        Output of :func:`calibrate`.

    Returns
    -------
    Scenario
        ``Scenario.default`` (docs/formulation.md §7) sized to the calibration's devices, with the
        ``[model]``/``[training]`` tables (``learning_rate`` = the effective step) and data sizes
        of the trained model and the estimated ``a``, ``phi0``, ``q`` and ``epsilon``.
    """
    scenario: Scenario = result["scenario"]
    return scenario.replace(
        convergence={k: float(result[k]) for k in ("a", "phi0", "q", "epsilon")}
    )

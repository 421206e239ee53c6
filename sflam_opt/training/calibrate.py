"""Estimate the constants A, Phi0 and q of the convergence bound from short training runs.

Formulation section 4 bounds the average squared gradient norm after K rounds by
``A / (eta tau K) + Phi0 + Phi_q(b)`` with ``Phi_q(b) = sum_n rho_n q / (2^{b_n} - 1)^2``.
:func:`calibrate` measures the chosen model on the chosen data with the real trainer
(:func:`sflam_opt.training.trainer.train`, SFL-V1 of Thapa et al. 2022 and SFLAM, arXiv 2504.09114)
and estimates:

- ``A = 2 (F(w_0) - F_inf)``. ``F(w_0)`` is the cross-entropy of the initial model on the whole
  training set. ``F_inf`` is estimated by the training-set loss of the final global model of the
  fp32 run (the lowest loss the calibration reached; an upper estimate of the true infimum, so A
  is on the low side), floored at 0, the infimum of cross-entropy.
- ``Phi0``: the plateau of the measured average squared stochastic-gradient norm of the fp32
  (``sfl``) run, i.e. its mean over the last ``plateau`` fraction of the rounds (default: last
  half). It collects the bits-independent terms (gradient noise, client drift).
- ``q``: runs with uniform low bit widths ``b`` (same seed, same everything else) give plateaus
  ``G_b``; the extra floor ``max(G_b - Phi0, 0)`` is fitted by least squares through the origin to
  ``q x_b`` with ``x_b = 1 / (2^b - 1)^2`` (uniform bits, so ``sum_n rho_n = 1``):
  ``q = sum_b x_b (G_b - Phi0)_+ / sum_b x_b^2`` (:func:`fit_q`).
- ``epsilon``: the level the bound guarantees for fp32 after ``target_rounds`` rounds (default:
  the calibration's own), ``Phi0 + A / (eta tau K)``. A scenario with these constants asks the
  allocation to reach what fp32 training reaches in that many rounds; it is feasible at high bits
  by construction.

:func:`calibration_scenario` turns the estimates into a scenario whose ``[model]``,
``[training]`` and device data sizes describe the run as well (``sflam-opt calibrate --out``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from sflam_opt.errors import TrainingConfigError
from sflam_opt.scenario import Scenario
from sflam_opt.training.data import load_dataset
from sflam_opt.training.models import FullModel, build_split_model
from sflam_opt.training.quantizer import MAX_BITS
from sflam_opt.training.trainer import TrainConfig, TrainResult, evaluate_model, train

__all__ = ["calibrate", "calibration_scenario", "fit_q", "plateau"]

logger = logging.getLogger(__name__)


def plateau(values: ArrayLike, fraction: float = 0.5) -> float:
    """Mean of the last ``fraction`` of ``values`` (at least one value)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("plateau of no values")
    k = max(1, int(round(fraction * v.size)))
    return float(v[-k:].mean())


def fit_q(floors: Mapping[int, float], phi0: float) -> float:
    """Least-squares ``q`` of ``floors[b] - phi0 ~ q / (2^b - 1)^2`` through the origin.

    Parameters
    ----------
    floors : mapping of int to float
        Plateau of the measured average squared gradient norm at uniform ``b`` bits.
    phi0 : float
        Plateau without quantization.

    Returns
    -------
    float
        ``q >= 0`` (negative excess floors, i.e. noise, count as 0).
    """
    bits = np.array(list(floors), dtype=np.float64)
    extra = np.maximum(np.array(list(floors.values()), dtype=np.float64) - phi0, 0.0)
    x = 1.0 / np.square(np.exp2(bits) - 1.0)
    return float((x * extra).sum() / np.square(x).sum())


def calibrate(
    model: str = "vit-tiny",
    dataset: str = "digits",
    data_dir: str | None = None,
    *,
    devices: int = 20,
    alpha: float = 0.5,
    rounds: int = 30,
    lr: float | None = None,
    momentum: float | None = None,
    batch_size: int | None = None,
    local_iters: int | None = None,
    bits: Sequence[int] = (2, 3, 4),
    plateau_fraction: float = 0.5,
    target_rounds: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = None,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Estimate A, Phi0, q and epsilon (module docstring) from ``1 + len(bits)`` short runs.

    Parameters
    ----------
    model, dataset, data_dir
        What to train (as ``sflam-opt train``).
    devices, alpha, rounds, lr, momentum, batch_size, local_iters, seed, device, threads
        Trainer options of every run; ``None`` takes the :class:`TrainConfig` default.
    bits : sequence of int
        Uniform bit widths (1..16) of the quantized runs that estimate q.
    plateau_fraction : float
        Share of the last rounds averaged for a plateau, in (0, 1].
    target_rounds : int, optional
        K of the epsilon rule (default: ``rounds``).
    progress : callable, optional
        Called as ``progress(run_label, metrics_row)`` after every round of every run.

    Returns
    -------
    dict
        ``a``, ``phi0``, ``q``, ``epsilon`` (the ``[convergence]`` table), and the evidence:
        ``f_w0``, ``f_inf``, ``floors`` (bits -> plateau), ``grad_sq_norm`` (run -> per-round
        values), ``rounds``, ``target_rounds``; plus ``scenario``, the fp32 run's scenario (model,
        training and data-size tables of what was trained), for :func:`calibration_scenario`.

    Raises
    ------
    TrainingConfigError
        Invalid options, or a run whose loss did not decrease (no usable A).
    """
    bits = tuple(bits)
    if not bits:
        raise TrainingConfigError("bits: give at least one bit width for the quantized runs")
    for b in bits:
        if isinstance(b, bool) or not isinstance(b, int | np.integer) or not 1 <= b <= MAX_BITS:
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
        alpha=alpha,
        rounds=rounds,
        seed=seed,
        device=device,
        threads=threads,
        solver="equal",  # the allocation's bandwidth and power do not affect learning
        **overrides,
    )

    def run(label: str, **kw: Any) -> TrainResult:
        cfg = TrainConfig(**common, **kw)
        cb = None if progress is None else (lambda row: progress(label, row))
        logger.info("calibration run %s", label)
        return train(cfg, progress=cb)

    fp32 = run("fp32", protocol="sfl")
    quant = {int(b): run(f"{b}-bit", protocol="sflam", bits=int(b)) for b in bits}

    data = load_dataset(dataset, data_dir)
    init_dev, init_srv, _ = build_split_model(
        model,
        num_classes=data.num_classes,
        image_size=data.image_size,
        in_chans=data.in_chans,
        seed=seed,
    )
    where = next(fp32.model.parameters()).device
    x, y = data.x_train.to(where), data.y_train.to(where)
    f_w0 = evaluate_model(FullModel(init_dev, init_srv).to(where), x, y)[0]
    f_inf = max(0.0, evaluate_model(fp32.model, x, y)[0])
    a = 2.0 * (f_w0 - f_inf)
    if not a > 0:
        raise TrainingConfigError(
            f"rounds: the fp32 calibration run did not lower the training loss "
            f"({f_w0:.4g} -> {f_inf:.4g}); raise --rounds or lower --lr"
        )
    grads = {"fp32": [m["grad_sq_norm"] for m in fp32.metrics]}
    grads.update({str(b): [m["grad_sq_norm"] for m in r.metrics] for b, r in quant.items()})
    phi0 = plateau(grads["fp32"], plateau_fraction)
    floors = {b: plateau(grads[str(b)], plateau_fraction) for b in quant}
    q = fit_q(floors, phi0)
    k = rounds if target_rounds is None else int(target_rounds)
    train_cfg = fp32.config
    epsilon = phi0 + a / (train_cfg.lr * train_cfg.local_iters * k)
    return {
        "a": a,
        "phi0": phi0,
        "q": q,
        "epsilon": epsilon,
        "f_w0": f_w0,
        "f_inf": f_inf,
        "floors": {str(b): v for b, v in floors.items()},
        "grad_sq_norm": grads,
        "rounds": rounds,
        "target_rounds": k,
        "scenario": fp32.scenario,
    }


def calibration_scenario(result: Mapping[str, Any]) -> Scenario:
    """The calibration run's scenario with ``[convergence]`` from the estimates.

    Parameters
    ----------
    result : mapping
        Output of :func:`calibrate`.

    Returns
    -------
    Scenario
        ``Scenario.default`` (formulation section 7) sized to the calibration's devices, with the
        ``[model]``/``[training]`` tables and data sizes of the trained model and the estimated
        ``a``, ``phi0``, ``q`` and ``epsilon``.
    """
    scenario: Scenario = result["scenario"]
    return scenario.replace(
        convergence={k: float(result[k]) for k in ("a", "phi0", "q", "epsilon")}
    )

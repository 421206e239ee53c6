"""Calibration of the bound's constants: the estimators, and a short end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest

from sflam_opt.bounds import effective_step
from sflam_opt.errors import TrainingConfigError
from sflam_opt.solvers import solve
from sflam_opt.training.calibrate import (
    calibrate,
    calibration_scenario,
    envelope_fit,
    fit_calibration,
    plateau,
    running_average,
)
from sflam_opt.training.calibration_store import find_calibration, save_calibration


def _per_round(curve: np.ndarray) -> np.ndarray:
    """Per-round values whose running average is ``curve``."""
    k = np.arange(1, curve.size + 1)
    total = curve * k
    return np.diff(total, prepend=0.0)


def _bound_curve(a, phi0, q, bits, step_tau, n):
    k = np.arange(1, n + 1)
    x = 0.0 if bits == 32 else 1.0 / (2.0**bits - 1) ** 2
    return a / (step_tau * k) + phi0 + q * x


def test_running_average_is_the_left_side_of_the_bound():
    np.testing.assert_allclose(running_average([4, 2, 0]), [4, 3, 2])


def test_envelope_recovers_constants_of_curves_that_have_the_bound_form():
    a, phi0, q, st = 4.0, 1.5, 20.0, 3.0
    runs = [(b, _per_round(_bound_curve(a, phi0, q, b, st, 40))) for b in (32, 2, 4)]
    assert envelope_fit(runs, st) == pytest.approx((a, phi0, q), rel=1e-6)


def test_envelope_lies_on_or_above_every_point_and_touches_it():
    rng = np.random.default_rng(0)
    st = 1.5
    runs = []
    for b in (32, 2, 3):
        clean = _bound_curve(3.0, 1.0, 9.0, b, st, 60)
        runs.append((b, _per_round(clean) * rng.uniform(0.7, 1.3, 60)))
    a, phi0, q = envelope_fit(runs, st)
    slack = np.concatenate(
        [_bound_curve(a, phi0, q, b, st, 60) - running_average(g) for b, g in runs]
    )
    assert slack.min() >= -1e-9 and slack.min() < 1e-6  # an envelope, and the tightest one
    # A least-squares fit through the same points leaves points above it; the envelope does not.
    m = np.vstack(
        [
            np.column_stack(
                [
                    1 / (st * np.arange(1, 61)),
                    np.ones(60),
                    np.full(60, 0 if b == 32 else 1 / (2**b - 1) ** 2),
                ]
            )
            for b, _ in runs
        ]
    )
    g = np.concatenate([running_average(v) for _, v in runs])
    ls = np.linalg.lstsq(m, g, rcond=None)[0]
    assert (m @ ls < g - 1e-6).any()


def test_seed_margin_makes_the_bound_cover_a_seed_the_other_fit_missed():
    st = 2.0
    low = _per_round(_bound_curve(2.0, 1.0, 10.0, 32, st, 30))
    high = _per_round(_bound_curve(2.0, 1.3, 10.0, 32, st, 30))
    runs = [
        {"bits": 32, "seed": 1, "grad_sq_norm": low},
        {"bits": 32, "seed": 2, "grad_sq_norm": high},
        {"bits": 2, "seed": 1, "grad_sq_norm": _per_round(_bound_curve(2.0, 1.0, 10.0, 2, st, 30))},
    ]
    fit = fit_calibration(runs, st, target_rounds=30)
    assert fit["margin"] > 1.0 and fit["leave_one_out"]["1"] > 1.0
    assert max(fit["final_ratio"].values()) <= 1.0 + 1e-9
    assert fit["a"] == pytest.approx(fit["margin"] * fit["envelope"]["a"])
    assert fit["epsilon"] == pytest.approx(fit["phi0"] + fit["a"] / (st * 30))


def test_plateau_is_the_mean_of_the_last_fraction():
    assert plateau([9, 9, 1, 3], 0.5) == 2.0
    assert plateau([5.0], 0.5) == 5.0
    assert plateau([1, 2, 3, 4, 5], 0.2) == 5.0
    with pytest.raises(ValueError):
        plateau([], 0.5)


def test_calibrate_end_to_end_bounds_its_own_runs_and_is_found_again(tmp_path, monkeypatch):
    # Near-IID data and enough local steps that four rounds lower the training loss.
    kw = dict(devices=3, rounds=4, alpha=100.0, local_iters=10, batch_size=16, lr=0.1,
              momentum=0.9, threads=1)  # fmt: skip
    res = calibrate(bits=(1, 3), seeds=(1, 2), **kw)
    assert set(res["grad_sq_norm"]) == {
        f"{r} seed {s}" for r in ("fp32", "1-bit", "3-bit") for s in (1, 2)
    }
    assert min(res["a"], res["phi0"], res["q"]) >= 0 and res["a"] > 0
    assert max(res["final_ratio"].values()) <= 1.0 + 1e-9  # the bound bounds every run
    assert res["f_w0"] == pytest.approx(np.log(10), rel=0.1)  # near-uniform initial predictions
    scen = calibration_scenario(res)
    eta, tau = scen.training.learning_rate, scen.training.local_iters
    assert eta == pytest.approx(effective_step(0.1, 0.9))
    assert res["epsilon"] == pytest.approx(res["phi0"] + res["a"] / (eta * tau * 4))
    assert scen.convergence.a == res["a"] and scen.n_devices == 3
    # The calibrated target is reachable at high bits, so the scenario solves.
    assert solve(scen, solver="equal").status != "infeasible"
    entry = res["entry"]
    assert "--seeds 1,2" in entry["command"] and "--bits 1,3" in entry["command"]
    save_calibration(entry, tmp_path)
    monkeypatch.setenv("SFLAM_OPT_CALIBRATION_DIR", str(tmp_path))
    from sflam_opt.training import TrainConfig

    found = find_calibration(TrainConfig(**{k: v for k, v in kw.items() if k != "threads"}))
    assert found is not None and found.convergence == entry["convergence"]
    assert find_calibration(TrainConfig(**{**kw, "alpha": 0.5})) is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bits": ()}, "at least one"),
        ({"bits": (0,)}, "invalid width 0"),
        ({"bits": (32,)}, "invalid width 32"),
        ({"bits": (2, 2)}, "duplicate"),
        ({"seeds": (1, 1)}, "distinct"),
        ({"plateau_fraction": 0.0}, "plateau_fraction"),
        ({"target_rounds": 0}, "target_rounds"),
        ({"rounds": 0}, "rounds"),
        # Two tiny rounds on skewed data raise the loss: no usable A, and the error says so.
        ({"rounds": 2, "local_iters": 1, "lr": 0.5, "momentum": 0.9}, "did not lower"),
    ],
)
def test_calibrate_bad_arguments(kwargs, match):
    with pytest.raises(TrainingConfigError, match=match):
        calibrate(**{"devices": 3, "rounds": 2, **kwargs})

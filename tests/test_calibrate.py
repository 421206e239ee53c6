"""Calibration of the bound's constants: the estimators, and a short end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest

from sflam_opt.errors import TrainingConfigError
from sflam_opt.solvers import solve
from sflam_opt.training.calibrate import calibrate, calibration_scenario, fit_q, plateau


def test_fit_q_recovers_a_known_quantization_constant():
    phi0, q = 0.7, 3.2
    floors = {b: phi0 + q / (2**b - 1) ** 2 for b in (1, 2, 3, 4)}
    assert fit_q(floors, phi0) == pytest.approx(q, rel=1e-12)
    # Floors below phi0 (noise) count as no excess; no excess at all gives q = 0.
    assert fit_q({2: 0.5, 3: 0.6}, phi0) == 0.0
    # Least squares through the origin weights low bit widths most: x_b = 1/(2^b - 1)^2.
    noisy = {2: phi0 + q / 9 + 0.01, 4: phi0 + q / 225 - 0.01}
    x = np.array([1 / 9, 1 / 225])
    expect = (x * (np.array([q / 9 + 0.01, q / 225 - 0.01]))).sum() / (x**2).sum()
    assert fit_q(noisy, phi0) == pytest.approx(expect)


def test_plateau_is_the_mean_of_the_last_fraction():
    assert plateau([9, 9, 1, 3], 0.5) == 2.0
    assert plateau([5.0], 0.5) == 5.0
    assert plateau([1, 2, 3, 4, 5], 0.2) == 5.0
    with pytest.raises(ValueError):
        plateau([], 0.5)


def test_calibrate_end_to_end_follows_its_estimators():
    # Near-IID data and enough local steps that four rounds lower the training loss.
    res = calibrate(
        devices=3,
        rounds=4,
        alpha=100.0,
        local_iters=10,
        batch_size=16,
        lr=0.1,
        momentum=0.9,
        bits=(1, 3),
        threads=1,
        seed=1,
    )
    phi0 = float(np.mean(res["grad_sq_norm"]["fp32"][-2:]))
    assert res["phi0"] == pytest.approx(phi0)
    floors = {b: float(np.mean(res["grad_sq_norm"][str(b)][-2:])) for b in (1, 3)}
    assert res["floors"] == {str(b): pytest.approx(v) for b, v in floors.items()}
    assert res["q"] == pytest.approx(fit_q(floors, phi0))
    assert res["a"] == pytest.approx(2 * (res["f_w0"] - res["f_inf"])) and res["a"] > 0
    assert res["f_w0"] == pytest.approx(np.log(10), rel=0.1)  # near-uniform initial predictions
    scen = calibration_scenario(res)
    eta, tau = scen.training.learning_rate, scen.training.local_iters
    assert res["epsilon"] == pytest.approx(res["phi0"] + res["a"] / (eta * tau * 4))
    assert scen.convergence.a == res["a"] and scen.n_devices == 3
    # The calibrated target is reachable at high bits, so the scenario solves.
    assert solve(scen, solver="equal").status != "infeasible"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bits": ()}, "at least one"),
        ({"bits": (0,)}, "invalid width 0"),
        ({"bits": (32,)}, "invalid width 32"),
        ({"bits": (2, 2)}, "duplicate"),
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

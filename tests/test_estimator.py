"""ConvergenceEstimator: the online rule of docs/formulation.md §4.3 on synthetic trajectories."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sflam_opt import ConvergenceEstimator, SolverArgumentError, UnsupportedFitError

STEP, TAU = 0.3, 10


def trajectory(
    rounds: int, *, kappa: float, floor: float, noise: float, seed: int, decay: float = 6.0
):
    """A run obeying the rule's model: gradient mass above the floor is kappa per unit of loss.

    ``F_k = F_0 exp(-k / decay)`` (F_inf = 0); ``g_k = floor + kappa (F_{k-1} - F_k)`` times a
    lognormal factor of spread ``noise``.
    """
    rng = np.random.default_rng(seed)
    k = np.arange(rounds + 1)
    f = 2.3 * np.exp(-k / decay)
    g = (floor + kappa * -np.diff(f)) * np.exp(noise * rng.standard_normal(rounds))
    loss = 0.5 * (f[:-1] + f[1:])  # the mean loss over a round's steps
    return loss, g


def fed(loss, g, q=4.0, q_noise=0.0, seed=0, bits=2, devices=5) -> ConvergenceEstimator:
    rng = np.random.default_rng(seed + 1)
    est = ConvergenceEstimator(step=STEP, local_iters=TAU)
    for f, gk in zip(loss, g, strict=True):
        delta = q / (2**bits - 1) ** 2 * np.exp(q_noise * rng.standard_normal(devices))
        est.add_round(f, gk, quant_error=delta, quant_bits=[bits] * devices)
    return est


def test_recovers_known_constants_without_noise():
    kappa, floor = 40.0, 3.0
    loss, g = trajectory(40, kappa=kappa, floor=floor, noise=0.0, seed=0, decay=3.0)
    c = fed(loss, g, q=4.0).fit(30, target_rounds=40)
    # Noise-free: the floor's only spread is the remaining transient, so Phi0 sits just above it.
    assert floor <= c.phi0 < 1.1 * floor
    # A / (eta tau) is the whole gradient mass above the floor, kappa (F_0 - F_inf).
    true_a = STEP * TAU * kappa * 2.3
    assert 0.8 * true_a < c.a < 1.25 * true_a
    assert c.q == pytest.approx(4.0)
    assert c.epsilon == pytest.approx(c.phi0 + c.a / (STEP * TAU * 40))


def test_bound_holds_after_the_fit_on_noisy_runs():
    for seed in range(5):
        loss, g = trajectory(60, kappa=40.0, floor=3.0, noise=0.3, seed=seed)
        c = fed(loss[:12], g[:12], seed=seed).fit(target_rounds=60)
        k = np.arange(1, 61)
        running = np.cumsum(g) / k
        bound = c.a / (STEP * TAU * k) + c.phi0
        assert (running[12:] <= bound[12:]).all(), seed
        assert np.median(running[12:] / bound[12:]) > 0.4


def test_margin_grows_with_spread():
    loss, g = trajectory(30, kappa=40.0, floor=3.0, noise=0.0, seed=0)
    rng = np.random.default_rng(7)
    jitter = rng.standard_normal(30)
    jitter -= jitter.mean()
    calm = fed(loss, g, q_noise=0.05).fit(target_rounds=30)
    noisy = fed(loss, g * np.exp(0.4 * jitter), q_noise=0.6).fit(target_rounds=30)
    assert noisy.phi0 > calm.phi0
    assert noisy.q > calm.q > 0


def test_refit_uses_only_earlier_rounds():
    loss, g = trajectory(30, kappa=40.0, floor=3.0, noise=0.2, seed=3)
    est = fed(loss[:10], g[:10])
    before = est.fit(8, target_rounds=30)
    est.add_round(50.0, 1e6, quant_error=[1e3], quant_bits=[2])
    after = est.fit(8, target_rounds=30)
    assert after == before
    # The new round does count when asked: a spike as the last round says g has not settled.
    assert est.support() is not None
    with pytest.raises(UnsupportedFitError):
        est.fit(target_rounds=30)


def rising_then_falling(rounds: int, *, peak: int, seed: int, noise: float = 0.1):
    """A run that leaves a flat start first: g grows for ``peak`` rounds, then decays to 1."""
    rng = np.random.default_rng(seed)
    k = np.arange(1, rounds + 1)
    g = np.where(k <= peak, 0.25 * 2.0 ** (k - 1), 1.0 + 3.0 * np.exp(-(k - peak) / 4.0))
    g = g * np.exp(noise * rng.standard_normal(rounds))
    loss = 2.3 * np.exp(-k / 8.0) + 0.1
    return loss, g


def test_rising_gradient_norm_is_no_fit_then_a_later_fit_holds():
    # The Flower example's measured fit rounds (fit_rounds = 5): g rose, then fell once.
    est = fed([2.22, 1.86, 1.28, 0.893, 0.585], [0.257, 0.594, 1.17, 1.87, 1.08])
    assert "has not fallen" in est.support()
    with pytest.raises(UnsupportedFitError, match="^calibration: the squared gradient norm"):
        est.fit(target_rounds=20)
    for seed in range(5):
        loss, g = rising_then_falling(60, peak=5, seed=seed)
        est = fed(loss, g, seed=seed)
        assert est.support(5) is not None and est.support(6) is not None, seed
        # Refit after every round with past rounds only, as the trainer and strategy do.
        r = next(r for r in range(5, 60) if est.support(r) is None)
        c = est.fit(r, target_rounds=60)
        assert c.a > 0 and c.epsilon > c.phi0 + c.q / (2**16 - 1) ** 2  # reachable
        k = np.arange(1, 61)
        running = np.cumsum(g) / k
        assert (running[r:] <= c.a / (STEP * TAU * k[r:]) + c.phi0).all(), (seed, r)


def test_flat_gradient_norm_is_no_fit():
    loss = 2.3 * np.exp(-np.arange(12) / 6.0)
    est = fed(loss, np.full(12, 2.0))
    assert est.support() is not None


def test_quantization_term_scales_with_the_measured_width():
    loss, g = trajectory(20, kappa=40.0, floor=3.0, noise=0.0, seed=0)
    at2 = fed(loss, g, q=9.0, bits=2).fit(target_rounds=20)
    at4 = fed(loss, g, q=9.0, bits=4).fit(target_rounds=20)
    assert at2.q == pytest.approx(9.0) and at4.q == pytest.approx(9.0)


def test_bad_input_names_the_argument_or_round():
    est = ConvergenceEstimator(step=STEP, local_iters=TAU)
    with pytest.raises(SolverArgumentError, match="^grad_sq_norm: round 1 .*negative"):
        est.add_round(2.0, -1.0)
    with pytest.raises(SolverArgumentError, match="^loss: round 1 measured nan"):
        est.add_round(float("nan"), 1.0)
    with pytest.raises(SolverArgumentError, match="^quant_bits: round 1 has 1 widths for 2"):
        est.add_round(2.0, 1.0, quant_error=[0.1, 0.2], quant_bits=[2])
    with pytest.raises(SolverArgumentError, match="^quant_error: round 1 has a negative"):
        est.add_round(2.0, 1.0, quant_error=[-0.1], quant_bits=[2])
    with pytest.raises(SolverArgumentError, match="^grad_sq_norm: has 2 rounds but loss has 3"):
        est.extend([1.0, 1.0, 1.0], [1.0, 1.0])
    assert est.rounds == 0  # nothing bad was recorded
    est.extend([2.0, 1.9, 1.8], [5.0, 4.0, 3.0])
    with pytest.raises(SolverArgumentError, match="^rounds: .* at least 5"):
        est.fit(target_rounds=10)
    with pytest.raises(SolverArgumentError, match="^step:"):
        ConvergenceEstimator(step=-1.0, local_iters=TAU)


def test_estimator_does_not_import_torch():
    code = "import sys, sflam_opt.estimator; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

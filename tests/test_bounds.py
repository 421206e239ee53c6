"""Convergence bound (formulation §4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from reference_scenarios import two_device

from sflam_opt.bounds import bound, margin, min_epsilon, phi_q, rounds_needed, target_infeasibility


def test_phi_q_weights_devices_by_data_share() -> None:
    scn = two_device()  # rho = (0.25, 0.75), q = 1
    assert phi_q(scn, [2, 2]) == pytest.approx(1 / 9)
    assert phi_q(scn, [2, 8]) == pytest.approx(0.25 / 9 + 0.75 / 255**2)
    batch = phi_q(scn, np.array([[2, 2], [2, 8]]))
    np.testing.assert_allclose(batch, [1 / 9, 0.25 / 9 + 0.75 / 255**2])


def test_rounds_needed_inverts_the_bound() -> None:
    scn = two_device()
    bits = [4, 8]
    k = rounds_needed(scn, bits)
    # After exactly K(b) rounds the bound equals the target epsilon.
    assert bound(scn, bits, k) == pytest.approx(scn.convergence.epsilon, rel=1e-12)
    assert margin(scn, bits) > 0


def test_unreachable_target_gives_inf_rounds_and_smallest_epsilon() -> None:
    scn = two_device().replace(convergence={"epsilon": 0.11})  # phi0 = 0.1
    assert rounds_needed(scn, [2, 2]) == math.inf
    need = min_epsilon(scn)
    assert need == pytest.approx(0.1 + 1 / 255**2)
    assert target_infeasibility(scn) is None  # 0.11 > 0.1000154
    tight = two_device().replace(convergence={"epsilon": 0.1})
    msg = target_infeasibility(tight)
    assert msg is not None and "epsilon" in msg and f"{need:.6g}" in msg


def test_phi_q_of_long_vectors_equals_the_elementwise_formula_bit_for_bit() -> None:
    # Long integer vectors take their penalties from a per-width table; the values must be the
    # very doubles of the formula, for every width and dtype, batched or not.
    from sflam_opt import Scenario
    from sflam_opt.bounds import LOOKUP_MIN_SIZE, quantization_penalty

    n = 2 * LOOKUP_MIN_SIZE
    scn = Scenario.default(devices=n, seed=3)
    rng = np.random.default_rng(11)
    for dtype in (np.int64, np.int32, np.uint8):
        bits = rng.integers(1, 54, size=(3, n)).astype(dtype)
        direct = scn.convergence.q * (quantization_penalty(bits.astype(np.float64)) @ scn.rho)
        assert np.array_equal(phi_q(scn, bits), direct)
    for width in (1, 8, 16, 32, 53):
        full = np.full(n, width)
        assert phi_q(scn, full) == scn.convergence.q * (quantization_penalty(full * 1.0) @ scn.rho)
    # Outside the table (0 or > 53 bits) the formula itself runs.
    assert phi_q(scn, np.full(n, 60)) == scn.convergence.q * (
        quantization_penalty(np.full(n, 60.0)) @ scn.rho
    )

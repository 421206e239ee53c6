"""Cost model (formulation §2, §5) against numbers worked by hand, plus properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_scenarios import named, two_device

from sflam_opt import Allocation, evaluate
from sflam_opt.bounds import rounds_needed
from sflam_opt.costs import (
    breakdown,
    equal_allocation,
    objective,
    payload_bits,
    rate_bps,
    reference,
)

# Hand calculation for tests/reference_scenarios.two_device():
#   tau = 2, beta = 10, d = 1000, M = 1000, N0 = 10^((-174 - 30)/10) = 3.98107e-21 W/Hz
#   W(b) = tau (beta d b + 64) + 32 M = 20000 b + 32128      -> W(4) = 112128, W(8) = 192128
#   device a: g = 1e-10, B = 0.4 MHz, p = 0.1 W: SNR = 0.1e-10 / (N0 0.4e6) = 6279.7,
#             R = 0.4e6 log2(1 + SNR) = 5.046685e6 bit/s, u = W/R = 0.0222181 s
#   device b: g = 1e-11, B = 0.6 MHz, p = 0.2 W: R = 5.826789e6 bit/s, u = 0.0329732 s
#   compute t = tau beta c_d / f = 20e6 / f: a 0.02 s, b 0.01 s; energy kappa 20e6 f^2: a 0.002 J,
#   b 0.008 J; server t_s = 20 * 1e9 / 1e12 = 0.02 s; downlink (20 * 1000 * 32 + 32000) / 1e8
#   = 0.00672 s.
HAND = {
    "W": [112128.0, 192128.0],
    "R": [5046685.335244188, 5826789.021302155],
    "u": [0.022218147665545824, 0.032973220636202775],
    "T_n": [0.06893814766554583, 0.06969322063620279],
    "E_n": [0.004221814766554583, 0.014594644127240555],
}


@pytest.fixture
def hand_alloc() -> Allocation:
    return Allocation(np.array([4, 8]), np.array([0.4e6, 0.6e6]), np.array([0.1, 0.2]), ("a", "b"))


def test_payload_matches_hand_calculation() -> None:
    np.testing.assert_array_equal(payload_bits(two_device(), [4, 8]), HAND["W"])


def test_rate_and_breakdown_match_hand_calculation(hand_alloc: Allocation) -> None:
    scn = two_device()
    np.testing.assert_allclose(
        rate_bps(scn, hand_alloc.bandwidth_hz, hand_alloc.power_w), HAND["R"], rtol=1e-12
    )
    bd = breakdown(scn, hand_alloc)
    np.testing.assert_allclose(bd.upload_s, HAND["u"], rtol=1e-12)
    np.testing.assert_allclose(bd.compute_s, [0.02, 0.01], rtol=1e-12)
    np.testing.assert_allclose(bd.compute_j, [0.002, 0.008], rtol=1e-12)
    np.testing.assert_allclose(bd.server_s, [0.02, 0.02], rtol=1e-12)
    np.testing.assert_allclose(bd.downlink_s, [0.00672, 0.00672], rtol=1e-12)
    np.testing.assert_allclose(bd.latency_s, HAND["T_n"], rtol=1e-12)
    np.testing.assert_allclose(bd.energy_j, HAND["E_n"], rtol=1e-12)
    np.testing.assert_allclose(bd.upload_j, np.array([0.1, 0.2]) * HAND["u"], rtol=1e-12)


def test_rounds_and_objective_match_hand_calculation(hand_alloc: Allocation) -> None:
    scn = two_device()
    # rho = (100, 300)/400; Phi_q = 1.0 (0.25/15^2 + 0.75/255^2); K = A/(eta tau (eps-Phi0-Phi_q))
    phi = 0.25 / 225 + 0.75 / 65025
    k = 2.0 / (0.1 * 2 * (0.5 - 0.1 - phi))
    ev = evaluate(scn, hand_alloc)
    assert ev.rounds == pytest.approx(k, rel=1e-12)
    assert ev.phi_q == pytest.approx(phi, rel=1e-12)
    t, e = max(HAND["T_n"]), sum(HAND["E_n"])
    assert ev.round_latency_s == pytest.approx(t, rel=1e-12)
    assert ev.round_energy_j == pytest.approx(e, rel=1e-12)
    assert ev.total_latency_s == pytest.approx(k * t, rel=1e-12)
    assert ev.rounds_ceil == math.ceil(k)
    # Equal baseline: B/2 each, Pmax, 8 bits.
    eq = breakdown(scn, equal_allocation(scn))
    k0 = 2.0 / (0.1 * 2 * (0.5 - 0.1 - (0.25 + 0.75) / 65025))
    t0, e0 = eq.latency_s.max(), eq.energy_j.sum()
    j = 0.5 * k * t / (k0 * t0) + 0.5 * k * e / (k0 * e0)
    assert ev.objective == pytest.approx(j, rel=1e-12)
    assert ev.violations == []


@pytest.mark.parametrize("name", list(named()))
def test_equal_baseline_scores_exactly_one(name: str) -> None:
    scn = named()[name]
    assert objective(scn, equal_allocation(scn)) == 1.0


def test_reference_weights_reconstruct_objective(hand_alloc: Allocation) -> None:
    scn = two_device()
    ref = reference(scenario := scn)
    bd = breakdown(scenario, hand_alloc)
    k = rounds_needed(scn, hand_alloc.bits)
    j = k * (ref.w_latency * bd.latency_s.max() + ref.w_energy * bd.energy_j.sum())
    assert j == pytest.approx(evaluate(scn, hand_alloc).objective, rel=1e-13)


def test_violations_are_listed() -> None:
    scn = two_device().replace(constraints={"round_deadline_s": 0.05, "device_energy_j": 0.005})
    bad = Allocation(np.array([3, 8]), np.array([0.8e6, 0.6e6]), np.array([0.1, 0.5]), ("a", "b"))
    v = evaluate(scn, bad).violations
    kinds = sorted(s.split(":")[0] for s in v)
    assert kinds == ["bandwidth", "bits", "deadline", "energy", "power"]
    assert any("bits: not in the allowed set [2, 4, 8]" in s for s in v)


def test_unreachable_target_is_a_violation_with_smallest_epsilon() -> None:
    scn = two_device().replace(convergence={"epsilon": 0.15})
    alloc = Allocation(np.array([2, 2]), np.array([0.5e6, 0.5e6]), np.array([0.1, 0.2]), ("a", "b"))
    ev = evaluate(scn, alloc)
    assert ev.rounds == math.inf
    assert any(s.startswith("convergence:") for s in ev.violations)


@settings(max_examples=60, deadline=None)
@given(
    bw=st.floats(1e4, 5e6),
    extra=st.floats(1.0, 10.0),
    p=st.floats(1e-3, 1.0),
    gain_db=st.floats(-140, -60),
)
def test_more_bandwidth_never_raises_upload_time(
    bw: float, extra: float, p: float, gain_db: float
) -> None:
    scn = two_device().replace(devices=two_device().devices)
    scn = scn.subset([0])
    from dataclasses import replace

    scn = replace(scn, devices=replace(scn.devices, gain_db=np.array([gain_db])))
    u1 = breakdown(scn, Allocation(np.array([4]), np.array([bw]), np.array([p]))).upload_s[0]
    u2 = breakdown(scn, Allocation(np.array([4]), np.array([bw * extra]), np.array([p]))).upload_s[
        0
    ]
    assert u2 <= u1 * (1 + 1e-12)


@settings(max_examples=60, deadline=None)
@given(
    bits=st.lists(st.integers(2, 16), min_size=2, max_size=2),
    dev=st.integers(0, 1),
    more=st.integers(1, 14),
)
def test_more_bits_never_raise_rounds(bits: list[int], dev: int, more: int) -> None:
    scn = named()["default10"].subset([0, 1])
    higher = list(bits)
    higher[dev] = min(16, higher[dev] + more)
    assert rounds_needed(scn, higher) <= rounds_needed(scn, bits)


def test_allocation_of_wrong_size_or_ids_is_rejected() -> None:
    from sflam_opt.errors import AllocationError

    scn = two_device()
    with pytest.raises(AllocationError, match="3 devices but the scenario has 2"):
        breakdown(scn, Allocation(np.ones(3, int), np.ones(3), np.ones(3)))
    with pytest.raises(AllocationError, match="id 'x'"):
        breakdown(scn, Allocation(np.ones(2, int), np.ones(2), np.ones(2), ("x", "b")))


def test_reference_is_reused_for_the_same_scenario_only() -> None:
    # solve() asks for the reference twice per scenario; the second is the first's object, and a
    # scenario derived by replace() gets its own.
    from sflam_opt import Scenario
    from sflam_opt.costs import reference

    scn = Scenario.default(devices=5, seed=2)
    first = reference(scn)
    assert reference(scn) is first
    other = scn.replace(objective={"latency_weight": 0.25})
    assert reference(other).latency_weight == 0.25
    assert reference(scn) == first and reference(scn).latency_weight != 0.25

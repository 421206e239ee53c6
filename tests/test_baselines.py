"""Baselines: each is the true optimum of its restricted problem, honours constraints."""

from __future__ import annotations

import itertools

import cvxpy as cp
import numpy as np
import pytest
import reference_scenarios as refs
from scipy.optimize import minimize_scalar

from sflam_opt.allocation import Allocation
from sflam_opt.bounds import rounds_needed
from sflam_opt.costs import (
    compute_energy_j,
    equal_allocation,
    fixed_time_s,
    objective,
    payload_bits,
    rate_bps,
    reference,
)
from sflam_opt.errors import SolverArgumentError
from sflam_opt.solvers import available_solvers, solve
from sflam_opt.solvers.kernel import solve_continuous

LN2 = np.log(2.0)
BASELINES = ("equal", "fixed-bits", "bandwidth-only", "power-only", "bits-only")
SMALL = refs.small_set(50)
# Feasible instances of every kind: plain, energy cap (7, 16, 35), deadline (40), few levels (10).
SUBSET = [0, 4, 7, 10, 16, 35, 40]


def test_all_registered():
    names = available_solvers()
    for b in BASELINES:
        assert b in names and names[b]


@pytest.mark.parametrize("k", SUBSET)
def test_feasible_outputs_and_never_worse_than_equal(k):
    s = SMALL[k]
    eq = solve(s, "equal")
    for b in BASELINES[1:]:
        r = solve(s, b)
        assert r.status in ("optimal", "infeasible"), (b, r.message)
        if r.status == "optimal":
            assert r.evaluation.violations == []
            assert r.iterations[-1] == pytest.approx(r.objective, rel=1e-7)
            # Each restriction contains the equal point (B/N, Pmax, max bits).
            if eq.status == "converged":
                assert r.objective <= 1.0 + 1e-9, b


# ------------------------------------------------------------------------------------------------
# bits-only against full enumeration of bit vectors at B/N and Pmax
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 3, 7, 10, 16, 21, 40])
def test_bits_only_is_the_enumeration_optimum(k):
    s = SMALL[k]
    r = solve(s, "bits-only")
    # Every bit vector at B/N and Pmax, costed with the cost model's own functions.
    eq = equal_allocation(s)
    rows = np.array(list(itertools.product(s.bits.levels, repeat=s.n_devices)))
    rate = rate_bps(s, eq.bandwidth_hz, eq.power_w)
    up = payload_bits(s, rows) / rate
    lat = fixed_time_s(s) + up
    en = compute_energy_j(s) + eq.power_w * up
    ok = np.ones(len(rows), dtype=bool)
    if s.constraints.round_deadline_s is not None:
        ok &= lat.max(axis=1) <= s.constraints.round_deadline_s
    if s.constraints.device_energy_j is not None:
        ok &= en.max(axis=1) <= s.constraints.device_energy_j
    j = reference(s).objective(rounds_needed(s, rows), lat.max(axis=1), en.sum(axis=1))
    j = np.where(ok, j, np.inf)
    best = float(j.min())
    if not np.isfinite(best):
        assert r.status == "infeasible"
    else:
        assert r.status == "optimal"
        assert r.objective == pytest.approx(best, rel=1e-12)
        assert objective(s, r.allocation) == pytest.approx(best, rel=1e-12)


# ------------------------------------------------------------------------------------------------
# power-only and bandwidth-only against CVXPY models of the same restriction
# ------------------------------------------------------------------------------------------------


def _cvx_power_only(s):
    """B_n = B/N: u_n exp(k_n/u_n) <= z_n (k = W ln2 / B_n), energy (N0 B_n / g)(z - u).

    Times are in units of 100 s, which keeps Clarabel's exponential cones well scaled.
    """
    ts = 100.0
    n = s.n_devices
    bw = s.system.bandwidth_hz / n
    w = payload_bits(s, np.full(n, s.bits.max))
    g, n0 = s.gain, s.noise_w_per_hz
    c, ce = fixed_time_s(s), compute_energy_j(s)
    ref = reference(s)
    t, u, z = cp.Variable(), cp.Variable(n, pos=True), cp.Variable(n)
    k = w * LN2 / bw / ts
    up = cp.multiply(n0 * bw / g * ts, z - u)
    cons = [
        cp.constraints.ExpCone(k, u, z),
        u + c / ts <= t,
        u >= k / np.log1p(s.devices.max_power_w * g / (n0 * bw)),  # power cap
    ]
    if s.constraints.device_energy_j is not None:
        cons.append(ce + up <= s.constraints.device_energy_j)
    if s.constraints.round_deadline_s is not None:
        cons.append(t <= s.constraints.round_deadline_s / ts)
    kk = float(rounds_needed(s, np.full(n, s.bits.max)))
    obj = kk * (ref.w_latency * ts * t + ref.w_energy * (ce.sum() + cp.sum(up)))
    prob = cp.Problem(cp.Minimize(obj), cons)
    prob.solve(solver=cp.CLARABEL)
    return prob.status, float(prob.value) if prob.value is not None else np.inf


def _cvx_bandwidth_only(s):
    """p = Pmax: R_n(B) = B log2(1 + a/B) = -rel_entr(B, B + a)/ln2 >= W / u_n."""
    n = s.n_devices
    w = payload_bits(s, np.full(n, s.bits.max))
    g, n0, pmax = s.gain, s.noise_w_per_hz, s.devices.max_power_w
    c, ce = fixed_time_s(s), compute_energy_j(s)
    ref = reference(s)
    scale = 1e6
    bw = cp.Variable(n, pos=True)  # MHz
    u = cp.Variable(n, pos=True)
    t = cp.Variable()
    a = pmax * g / n0 / scale
    rate = -cp.rel_entr(bw, bw + a) / LN2  # Mbit/s
    cons = [
        rate >= cp.multiply(w / scale, cp.inv_pos(u)),
        u + c <= t,
        cp.sum(bw) <= s.system.bandwidth_hz / scale,
    ]
    energy = ce + cp.multiply(pmax, u)
    if s.constraints.device_energy_j is not None:
        cons.append(energy <= s.constraints.device_energy_j)
    if s.constraints.round_deadline_s is not None:
        cons.append(t <= s.constraints.round_deadline_s)
    kk = float(rounds_needed(s, np.full(n, s.bits.max)))
    prob = cp.Problem(cp.Minimize(kk * (ref.w_latency * t + ref.w_energy * cp.sum(energy))), cons)
    prob.solve(solver=cp.CLARABEL)
    return prob.status, float(prob.value) if prob.value is not None else np.inf


@pytest.mark.parametrize("k", SUBSET)
def test_power_only_matches_cvxpy(k):
    s = SMALL[k]
    r = solve(s, "power-only")
    status, j = _cvx_power_only(s)
    if r.status == "infeasible":
        assert status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE)
        return
    assert r.status == "optimal" and status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
    assert r.objective == pytest.approx(j, rel=1e-5)
    assert r.objective <= j * (1 + 1e-7)


@pytest.mark.parametrize("k", SUBSET)
def test_bandwidth_only_matches_cvxpy(k):
    s = SMALL[k]
    r = solve(s, "bandwidth-only")
    status, j = _cvx_bandwidth_only(s)
    if r.status == "infeasible":
        assert status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE), r.message
        return
    assert r.status == "optimal" and status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
    assert r.objective == pytest.approx(j, rel=1e-5)
    assert r.objective <= j * (1 + 1e-7)


def test_power_only_at_the_optimal_round_time():
    # Independent 1-D check: J over T with every device using its whole slot.
    s = refs.named()["default10"]
    r = solve(s, "power-only")
    n = s.n_devices
    bw = np.full(n, s.system.bandwidth_hz / n)
    w = payload_bits(s, np.full(n, s.bits.max))
    c = fixed_time_s(s)
    pmax = s.devices.max_power_w

    def j_of(t):
        u = t - c
        p = s.noise_w_per_hz * bw / s.gain * (np.exp2(w / (bw * u)) - 1)
        if np.any(p > pmax * (1 + 1e-12)):
            return np.inf
        return objective(s, Allocation(np.full(n, s.bits.max), bw, p, s.devices.ids))

    t_lo = r.info["round_latency_s"] * 0.5
    res = minimize_scalar(j_of, bounds=(t_lo, 3 * r.info["round_latency_s"]), method="bounded")
    assert r.objective <= res.fun * (1 + 1e-9)
    assert r.objective == pytest.approx(res.fun, rel=1e-6)


# ------------------------------------------------------------------------------------------------
# fixed-bits
# ------------------------------------------------------------------------------------------------


def test_fixed_bits_uses_the_exact_block_and_checks_the_level():
    s = refs.named()["default10"]
    r = solve(s, "fixed-bits", bits=4)
    sol = solve_continuous(s, np.full(10, 4))
    assert r.status == "optimal" and r.objective == pytest.approx(sol.objective, rel=1e-12)
    assert np.all(r.allocation.bits == 4)
    assert solve(s, "fixed-bits").allocation.bits[0] == s.bits.max
    with pytest.raises(SolverArgumentError, match=r"bits=17.*choose one of"):
        solve(s, "fixed-bits", bits=17)
    with pytest.raises(SolverArgumentError, match="bits="):
        solve(s, "fixed-bits", bits=4.0)
    low = solve(s.replace(convergence={"q": 3.0}), "fixed-bits", bits=2)
    assert low.status == "infeasible" and "use bits >= 3" in low.message


# ------------------------------------------------------------------------------------------------
# Infeasibility messages name a relaxation that works
# ------------------------------------------------------------------------------------------------


def _number(msg: str, before: str, unit: str) -> float:
    return float(msg.split(before)[1].split(f" {unit}")[0])


@pytest.mark.parametrize("name", ["bandwidth-only", "power-only", "bits-only", "fixed-bits"])
def test_deadline_relaxation_in_message_works(name):
    s = refs.named()["deadline_infeasible"]
    r = solve(s, name)
    assert r.status == "infeasible" and r.message.startswith("deadline:")
    need = _number(r.message, "raise it to at least ", "s")
    assert solve(s.replace(constraints={"round_deadline_s": need}), name).status == "optimal"


@pytest.mark.parametrize("name", ["bandwidth-only", "power-only", "bits-only", "fixed-bits"])
def test_energy_relaxation_in_message_works(name):
    s = refs.named()["energy_cap_infeasible"]
    r = solve(s, name)
    assert r.status == "infeasible" and r.message.startswith("energy:")
    key = "raise it to at least " if "to at least" in r.message else "raise it above "
    need = _number(r.message, key, "J") * (1 + 1e-6)
    relaxed = solve(s.replace(constraints={"device_energy_j": need}), name)
    assert relaxed.status == "optimal", relaxed.message


def test_bandwidth_only_energy_cap_needing_bandwidth():
    s = SMALL[19]  # cap met at full power only with more bandwidth than the band
    r = solve(s, "bandwidth-only")
    assert r.status == "infeasible" and "bandwidth_hz above" in r.message
    need = _number(r.message, "raise it to at least ", "J")
    assert solve(s.replace(constraints={"device_energy_j": need}), "bandwidth-only").success

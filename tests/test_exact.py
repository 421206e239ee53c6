"""The ``exact`` solver: global optimum by branch and bound over bit vectors."""

from __future__ import annotations

import numpy as np
import pytest
import reference_scenarios as refs

from sflam_opt.errors import SolverArgumentError
from sflam_opt.scenario import Scenario
from sflam_opt.solvers import solve
from sflam_opt.solvers.kernel import solve_continuous_rows


def _brute_force(s: Scenario) -> tuple[float, np.ndarray]:
    grid = np.indices((len(s.bits.levels),) * s.n_devices).reshape(s.n_devices, -1).T
    rows = s.bits.array[grid]
    sol = solve_continuous_rows(s, rows)
    k = int(np.argmin(sol.objective))
    return float(sol.objective[k]), rows[k]


# Three-device instances (3375 vectors) with and without constraints, few-level sets, and one
# four-device instance with 15 levels (50625 vectors).
CASES = [0, 2, 7, 10, 16, 21, 39, 40, 45]


@pytest.mark.parametrize("seed", CASES)
def test_exact_equals_full_enumeration(seed):
    s = refs.small_set(50)[seed]
    r = solve(s, "exact")
    j, bits = _brute_force(s)
    if not np.isfinite(j):
        assert r.status == "infeasible"
        return
    assert r.status == "optimal", r.message
    assert r.objective == pytest.approx(j, rel=1e-9)
    assert r.evaluation.violations == []
    # The pruning is what makes it cheap: far fewer continuous solves than vectors.
    assert r.info["continuous_solves"] < r.info["bit_vectors"]


def test_exact_on_two_device_and_no_worse_than_everything():
    s = refs.two_device()
    r = solve(s, "exact")
    assert r.status == "optimal"
    j, bits = _brute_force(s)
    assert r.objective == pytest.approx(j, rel=1e-9)
    np.testing.assert_array_equal(r.allocation.bits, bits)
    for other in ("fast", "equal", "fixed-bits", "bandwidth-only", "power-only", "bits-only"):
        o = solve(s, other)
        assert r.objective <= o.objective * (1 + 1e-9), other


def test_refuses_big_instances_and_honours_max_combinations():
    s = Scenario.default(devices=8, seed=0)
    with pytest.raises(SolverArgumentError) as err:
        solve(s, "exact")
    msg = str(err.value)
    assert msg == (
        "exact: 15^8 = 2.6e9 bit vectors exceeds the limit of 2e5 (max_combinations); "
        "use solver='fast' or 'bcd'"
    )
    small = refs.two_device()  # 3^2 = 9 vectors
    with pytest.raises(SolverArgumentError, match="max_combinations"):
        solve(small, "exact", max_combinations=8)
    assert solve(small, "exact", max_combinations=9).status == "optimal"
    with pytest.raises(SolverArgumentError, match="max_combinations"):
        solve(small, "exact", max_combinations=0)


def test_ten_devices_three_levels():
    s = refs.named()["few_levels"]  # 3^10 = 59049 vectors
    r = solve(s, "exact")
    assert r.status == "optimal"
    assert r.objective <= solve(s, "fast").objective * (1 + 1e-9)
    assert r.info["continuous_solves"] < 0.05 * r.info["bit_vectors"]


def test_infeasible_instances_report_the_relaxation():
    s = refs.small_set(50)[1]  # deadline below the fastest possible round
    r = solve(s, "exact")
    assert r.status == "infeasible" and r.message.startswith("deadline:")
    need = float(r.message.split("raise it to at least ")[1].split(" s")[0])
    ok = solve(s.replace(constraints={"round_deadline_s": need}), "exact")
    assert ok.status == "optimal"
    assert ok.evaluation.round_latency_s <= need * (1 + 1e-9)
    tight = refs.two_device().replace(constraints={"device_energy_j": 1e-3})
    r = solve(tight, "exact")
    assert r.status == "infeasible" and r.message.startswith("energy:")


@pytest.mark.parametrize("case", ["two_device", "four_devices"])
def test_cvxpy_continuous_block_agrees_with_the_kernel(case):
    """continuous="cvxpy" (no kernel code in V*) finds the kernel's optimum."""
    scn = {
        "two_device": refs.named()["two_device"],
        "four_devices": Scenario.default(devices=4, seed=6).replace(bits=[4, 8, 16]),
    }[case]
    kern = solve(scn, "exact")
    cvx = solve(scn, "exact", continuous="cvxpy")
    assert kern.status == cvx.status == "optimal"
    assert cvx.info["continuous"] == "cvxpy" and cvx.info["fallbacks"] == []
    assert cvx.allocation.bits.tolist() == kern.allocation.bits.tolist()
    assert cvx.objective == pytest.approx(kern.objective, rel=1e-7)
    assert cvx.backend == "CLARABEL"


def test_unknown_continuous_mode_is_named():
    with pytest.raises(SolverArgumentError, match="continuous='closed'") as err:
        solve(refs.named()["two_device"], "exact", continuous="closed")
    assert "\n" not in str(err.value) and "kernel, cvxpy" in str(err.value)

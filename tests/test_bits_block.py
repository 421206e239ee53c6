"""The bits block of bcd: Dinkelbach over one-hot levels at fixed bandwidth and power."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import reference_scenarios as rs

from sflam_opt.allocation import Allocation
from sflam_opt.costs import equal_allocation, evaluate
from sflam_opt.errors import SolverArgumentError
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.bits import (
    bits_objective,
    dinkelbach_step,
    dinkelbach_value,
    level_table,
    solve_bits,
)


def _perturbed(scn: Scenario, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A feasible-looking (B, p): the equal split with random bandwidth shares and powers."""
    rng = np.random.default_rng(seed)
    n = scn.n_devices
    share = rng.uniform(0.5, 1.5, n)
    bw = scn.system.bandwidth_hz * share / share.sum()
    pw = scn.devices.max_power_w * rng.uniform(0.3, 1.0, n)
    return bw, pw


def _all_choices(table) -> tuple[np.ndarray, np.ndarray]:
    """Every level-index vector (L^N, N) and whether all its levels are allowed."""
    n, nl = table.latency_s.shape
    idx = np.array(list(itertools.product(range(nl), repeat=n)), dtype=np.int64)
    ok = table.allowed[np.arange(n), idx].all(axis=1)
    return idx, ok


def _cases():
    """Small instances (3-4 devices) that have at least one feasible bit vector at their (B, p)."""
    out = []
    for seed in range(12):
        scn = rs.random_small(seed)
        bw, pw = _perturbed(scn, seed)
        table = level_table(scn, bw, pw)
        idx, ok = _all_choices(table)
        j = np.where(ok, bits_objective(table, idx), np.inf)
        if np.isfinite(j).any():
            out.append((seed, scn, bw, pw, table, idx, ok, j))
    return out


CASES = _cases()


def test_enough_brute_force_cases():
    # The comparison below must run on a real sample, with and without active constraints.
    assert len(CASES) >= 8
    assert any(c[1].constraints.round_deadline_s is not None for c in CASES)


@pytest.mark.parametrize("method", ["milp", "sweep"])
def test_dinkelbach_step_matches_brute_force(method):
    for seed, _scn, _bw, _pw, table, idx, ok, j in CASES:
        for theta in (0.0, float(np.min(j)), 2.0 * float(np.min(j))):
            f = np.where(ok, dinkelbach_value(table, idx, theta), np.inf)
            best = dinkelbach_step(table, theta, method)
            assert best is not None
            assert table.allowed[np.arange(best.size), best].all()
            got = dinkelbach_value(table, best, theta)
            assert got <= f.min() + 1e-12 * max(1.0, abs(f.min())), (seed, theta)


@pytest.mark.parametrize("method", ["milp", "sweep"])
def test_solve_bits_is_the_global_optimum_at_fixed_bandwidth_power(method):
    for seed, scn, bw, pw, table, idx, _ok, j in CASES:
        # Start from the worst feasible choice so Dinkelbach has to move.
        worst = np.where(np.isfinite(j), j, -np.inf)
        start = table.levels[idx[int(np.argmax(worst))]]
        res = solve_bits(scn, bw, pw, start, method=method)
        assert res.status == "optimal"
        assert res.objective == pytest.approx(float(np.min(j)), rel=1e-12), seed
        # theta falls strictly at every accepted step.
        assert all(b < a for a, b in zip(res.history, res.history[1:], strict=False))
        # The cost model agrees with the table's J at these (B, p) and every constraint holds.
        ev = evaluate(scn, Allocation(res.bits, bw, pw, scn.devices.ids))
        assert ev.objective == pytest.approx(res.objective, rel=1e-12)
        assert not [v for v in ev.violations if not v.startswith(("power", "bandwidth"))]


def test_relax_and_round_is_feasible_and_never_worse_than_its_start():
    for _seed, scn, bw, pw, table, idx, _ok, j in CASES:
        worst = np.where(np.isfinite(j), j, -np.inf)
        k = int(np.argmax(worst))
        res = solve_bits(scn, bw, pw, table.levels[idx[k]], method="relax")
        assert res.status in ("rounded", "optimal")
        assert np.min(j) <= res.objective <= j[k]
        ri = table.index_of(res.bits)
        assert table.allowed[np.arange(ri.size), ri].all()


def test_milp_and_sweep_agree_beyond_brute_force_size():
    scn = Scenario.default(devices=40, seed=3)
    bw, pw = _perturbed(scn, 3)
    start = np.full(40, scn.bits.max)
    a = solve_bits(scn, bw, pw, start, method="milp")
    b = solve_bits(scn, bw, pw, start, method="sweep")
    c = solve_bits(scn, bw, pw, start, method="relax")
    assert a.status == b.status == "optimal"
    assert a.objective == pytest.approx(b.objective, rel=1e-12)
    assert a.objective < bits_objective(level_table(scn, bw, pw), np.full(40, 14)) * (1 - 1e-3)
    assert a.objective <= c.objective <= a.objective * (1 + 1e-2)


def test_levels_breaking_the_deadline_are_excluded():
    scn = Scenario.default(devices=6, seed=1)
    eq = equal_allocation(scn)
    lat = evaluate(scn, eq).breakdown.latency_s
    # A deadline the equal split at max bits misses, but fewer bits meet.
    tight = scn.replace(constraints={"round_deadline_s": float(0.9 * lat.max())})
    table = level_table(tight, eq.bandwidth_hz, eq.power_w)
    assert not table.allowed[:, -1].all() and table.allowed[:, 0].all()
    start = np.full(6, scn.bits.min)
    res = solve_bits(tight, eq.bandwidth_hz, eq.power_w, start, method="milp")
    ev = evaluate(tight, Allocation(res.bits, eq.bandwidth_hz, eq.power_w, scn.devices.ids))
    assert ev.feasible, ev.violations
    assert ev.round_latency_s <= 0.9 * lat.max() * (1 + 1e-9)


def test_bad_arguments_raise_one_line_errors():
    scn = Scenario.default(devices=3, seed=0)
    eq = equal_allocation(scn)
    with pytest.raises(SolverArgumentError, match="bits_method='simplex'") as e1:
        solve_bits(scn, eq.bandwidth_hz, eq.power_w, eq.bits, method="simplex")
    with pytest.raises(SolverArgumentError, match="outside the allowed set") as e2:
        solve_bits(scn, eq.bandwidth_hz, eq.power_w, np.array([16, 16, 17]))
    for e in (e1, e2):
        assert "\n" not in str(e.value)

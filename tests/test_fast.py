"""The ``fast`` solver: quality against ``exact``, constraints, infeasibility, scale."""

from __future__ import annotations

import numpy as np
import pytest
import reference_scenarios as refs

from sflam_opt.errors import SolverArgumentError
from sflam_opt.scenario import Scenario
from sflam_opt.solvers import solve

SMALL = refs.small_set(50)


@pytest.fixture(scope="module")
def small_results():
    return [(solve(s, "fast"), solve(s, "exact")) for s in SMALL]


def test_fast_within_a_tenth_of_a_percent_of_exact_on_small_set(small_results):
    gaps = []
    for k, (fast, exact) in enumerate(small_results):
        assert fast.status != "failed" and exact.status != "failed", k
        if exact.status == "infeasible":
            # Both agree that nothing works, with the same diagnosis.
            assert fast.status == "infeasible" and fast.message == exact.message, k
            continue
        assert exact.status == "optimal"
        assert fast.status == "converged", (k, fast.message)
        gaps.append(fast.objective / exact.objective - 1.0)
    gaps = np.array(gaps)
    assert gaps.size >= 40  # most of the set is feasible
    assert np.all(gaps >= -1e-9)  # exact is a global optimum
    # Measured: every feasible instance, worst gap ~1e-11 (the polish reaches the optimum).
    assert np.all(gaps <= 1e-3), gaps.max()


def test_fast_allocations_pass_evaluate_and_respect_constraints(small_results):
    for s, (fast, _) in zip(SMALL, small_results, strict=True):
        if fast.status == "infeasible":
            assert fast.allocation is None
            continue
        assert fast.evaluation.violations == []
        c = s.constraints
        bd = fast.evaluation.breakdown
        if c.round_deadline_s is not None:
            assert bd.latency_s.max() <= c.round_deadline_s * (1 + 1e-9)
        if c.device_energy_j is not None:
            assert bd.energy_j.max() <= c.device_energy_j * (1 + 1e-9)
        assert fast.iterations[-1] == pytest.approx(fast.objective, rel=1e-9)
        assert all(np.diff(fast.iterations) <= 0)  # every accepted step lowers J


@pytest.mark.parametrize("name", list(refs.named()))
def test_fast_no_worse_than_any_baseline(name):
    s = refs.named()[name]
    fast = solve(s, "fast")
    for base in ("equal", "fixed-bits", "bandwidth-only", "power-only", "bits-only"):
        r = solve(s, base)
        if r.status in ("optimal", "converged"):
            assert fast.objective <= r.objective * (1 + 1e-9), base
        if base == "equal" and r.status == "converged":
            assert fast.objective <= 1.0


def test_deadline_infeasible_names_the_deadline_that_works():
    s = refs.named()["deadline_infeasible"]  # 90 s, below the fastest possible round
    r = solve(s, "fast")
    assert r.status == "infeasible" and r.allocation is None
    assert r.message.startswith("deadline: round_deadline_s = 90 s")
    need = float(r.message.split("raise it to at least ")[1].split(" s")[0])
    ok = solve(s.replace(constraints={"round_deadline_s": need}), "fast")
    assert ok.status == "converged" and ok.evaluation.round_latency_s <= need * (1 + 1e-9)
    assert solve(s.replace(constraints={"round_deadline_s": need * 0.999}), "fast").status == (
        "infeasible"
    )


def test_energy_cap_infeasible_names_the_cap_that_works():
    s = refs.named()[
        "energy_cap_infeasible"
    ]  # 20 J per device: below compute + Shannon-limit upload
    r = solve(s, "fast")
    assert r.status == "infeasible" and r.message.startswith("energy: device_energy_j = 20 J")
    need = float(r.message.split("raise it above ")[1].split(" J")[0])
    ok = solve(s.replace(constraints={"device_energy_j": need * 1.001}), "fast")
    assert ok.status == "converged"
    assert ok.evaluation.breakdown.energy_j.max() <= need * 1.001 * (1 + 1e-9)
    assert solve(s.replace(constraints={"device_energy_j": need * 0.999}), "fast").status == (
        "infeasible"
    )


def test_unreachable_target_is_infeasible_with_the_epsilon_needed():
    s = refs.named()["default10"].replace(convergence={"epsilon": 0.27})  # = phi0
    r = solve(s, "fast")
    assert (
        r.status == "infeasible" and "epsilon" in r.message and "raise epsilon above" in r.message
    )


def test_bandwidth_too_small_for_deadline_offers_the_bandwidth_needed():
    s = refs.small_set(50)[1]
    r = solve(s, "fast")
    assert r.status == "infeasible" and "raise bandwidth_hz to at least" in r.message
    bw = float(r.message.split("raise bandwidth_hz to at least ")[1].split(" Hz")[0])
    wide = s.replace(system={"bandwidth_hz": bw * 1.0001})
    assert solve(wide, "fast").status == "converged"


def test_options_are_validated():
    s = refs.named()["two_device"]
    with pytest.raises(SolverArgumentError, match="max_iter"):
        solve(s, "fast", max_iter=0)
    with pytest.raises(SolverArgumentError, match="rtol"):
        solve(s, "fast", rtol=0.5)
    with pytest.raises(SolverArgumentError, match="not an option"):
        solve(s, "fast", bits=4)


def test_deterministic():
    s = Scenario.default(devices=30, seed=5)
    a, b = solve(s, "fast"), solve(s, "fast")
    assert a.allocation == b.allocation and a.objective == b.objective


def test_large_instances_without_polish_stay_close_to_polished():
    # The Dinkelbach fixed point alone (what N = 1e5 relies on) is near the polished optimum.
    s = Scenario.default(devices=30, seed=2)
    plain = solve(s, "fast", polish=False)
    full = solve(s, "fast")
    assert plain.info["polish"] == "off" and full.info["polish"] != "off"
    assert full.objective <= plain.objective <= full.objective * (1 + 1e-3)


def test_runs_at_one_hundred_thousand_devices():
    s = Scenario.default(devices=100_000, seed=0)
    r = solve(s, "fast")
    assert r.status == "converged" and r.evaluation.violations == []
    assert r.objective < solve(s, "bits-only").objective
    assert r.info["polish"] == "off"


def test_default_path_needs_neither_fastest_round_nor_bracketed_search(monkeypatch):
    # What keeps fast ~100x ahead of bcd at N = 1000 (benchmarks/bench_bcd.py): without a
    # deadline every continuous solve is one joint Newton search, with no T_min computation
    # and no nested bracketed search; the optimum is the one those slower paths find.
    from sflam_opt.solvers.kernel import roundtime, rows

    s = Scenario.default(devices=1000, seed=0)

    def refuse(*args, **kwargs):
        raise AssertionError("slow path used")

    monkeypatch.setattr(rows, "min_round_time", refuse)
    monkeypatch.setattr(roundtime, "min_round_time", refuse)
    monkeypatch.setattr(roundtime, "search_time_bracketed", refuse)
    r = solve(s, "fast")
    assert r.status == "converged" and r.evaluation.violations == []
    # Measured before the joint search (bracketed search at every step): J = 0.1716748914857394.
    assert r.objective == pytest.approx(0.1716748914857394, rel=1e-9)


@pytest.mark.parametrize(
    "omega,constraint",
    [
        (1.0, {}),  # latency only: the time value of bandwidth drives the bits
        (1.0, {"round_deadline_s": 0.8}),  # latency only at a binding deadline
        (0.5, {"round_deadline_s": 0.75}),  # many devices switch levels at once
        (0.1, {"device_energy_j": 0.7}),
    ],
)
def test_no_polish_instances_no_worse_than_any_baseline(omega, constraint):
    # N = 300 turns the exact polish off, so this checks the Lagrangian steps themselves,
    # including the price clearing and uniform-level fallbacks.
    base = Scenario.default(devices=300, seed=3)
    free = solve(base, "fast")
    scale = {
        "round_deadline_s": free.evaluation.round_latency_s,
        "device_energy_j": float(free.evaluation.breakdown.energy_j.max()),
    }
    cons = {k: v * scale[k] for k, v in constraint.items()}
    s = base.replace(constraints=cons, objective={"latency_weight": omega})
    r = solve(s, "fast")
    assert r.status == "converged" and r.info["polish"] == "off"
    assert r.evaluation.violations == []
    for level in s.bits.levels:
        fb = solve(s, "fixed-bits", bits=level)
        if fb.success:
            assert r.objective <= fb.objective * (1 + 1e-9), level
    for name in ("equal", "bits-only", "power-only", "bandwidth-only"):
        b = solve(s, name)
        if b.status in ("optimal", "converged"):
            assert r.objective <= b.objective * (1 + 1e-9), name


@pytest.mark.parametrize("levels", [list(range(2, 17)), [4, 8, 16], [1, 16], [16], [3, 7, 9, 16]])
def test_level_choice_equals_the_argmin_of_the_full_table(levels):
    # best_levels locates the convex cost's minimum by its switch ratios instead of building
    # the (N, L) table: it must pick exactly the table's argmin, ties and thresholds included.
    from sflam_opt.costs import reference
    from sflam_opt.solvers.kernel import BitsProblem
    from sflam_opt.solvers.kernel.pricing import best_levels

    s = Scenario.default(devices=4, seed=0).replace(bits=levels)
    prob = BitsProblem(s, reference(s), 1e-10)
    rng = np.random.default_rng(5)
    n = 20_000
    alpha = np.exp(rng.uniform(-30, 10, n))
    gamma = np.exp(rng.uniform(-30, 30, n))
    if prob.level_ratios.size:  # half of the rows exactly at, or an ulp off, a switch ratio
        at = prob.level_ratios[rng.integers(0, prob.level_ratios.size, n // 2)]
        gamma[: n // 2] = alpha[: n // 2] * at * rng.choice([1.0, 1 + 2**-52, 1 - 2**-53], n // 2)
    gamma[:10], alpha[10:20], alpha[20:25], gamma[25:30] = 0.0, 0.0, np.nan, np.inf
    table = alpha[:, None] * prob.w_l[None, :] + gamma[:, None] * prob.pen_l[None, :]
    np.testing.assert_array_equal(best_levels(prob, alpha, gamma), np.argmin(table, axis=1))


def test_chunked_round_time_search_is_bit_identical(monkeypatch):
    # At large N the joint search runs in cache-sized blocks and adds the block sums along
    # numpy's pairwise tree; with tiny blocks forced at N = 1000 it must reproduce the
    # whole-array search bit for bit (a latency-only round shows a cap binding, too).
    from sflam_opt.solvers.kernel import chunks, roundtime

    rng = np.random.default_rng(0)
    for n in (1, 7, 128, 129, 1000, 4097):
        a = rng.standard_normal((2, n)) * np.exp(rng.uniform(-20, 20, (2, n)))
        c = chunks.Chunks(n, 64)
        assert np.array_equal(c.total([a[:, sl].sum(axis=1) for sl in c.slices]), a.sum(axis=1))
    s = Scenario.default(devices=1000, seed=2)
    cases = [s, s.replace(objective={"latency_weight": 1.0}), s.replace(bits=[4, 8, 16])]
    plain = [solve(x, "fast") for x in cases]
    monkeypatch.setattr(roundtime, "CHUNK", 64)
    calls = []
    real = roundtime._free_terms_chunked
    monkeypatch.setattr(roundtime, "_free_terms_chunked", lambda *a: calls.append(1) or real(*a))
    for x, ref in zip(cases, plain, strict=True):
        r = solve(x, "fast")
        assert r.objective == ref.objective and r.iterations == ref.iterations
        for f in ("bits", "bandwidth_hz", "power_w"):
            np.testing.assert_array_equal(getattr(r.allocation, f), getattr(ref.allocation, f))
    assert len(calls) > 10


def test_capped_level_walks_pick_the_argmin_of_the_full_table():
    # The capped re-scoring walks down from the cap-free level, and the latency-only step walks
    # from a start level, instead of scoring every level: both must pick the full table's argmin
    # (convex costs in the level). At and above T_min, with prices that cap many devices.
    from sflam_opt.costs import reference
    from sflam_opt.solvers.kernel import BitsProblem
    from sflam_opt.solvers.kernel import pricing as pr
    from sflam_opt.solvers.kernel.params import row_constants
    from sflam_opt.solvers.kernel.split import min_round_time
    from sflam_opt.solvers.lambertw import h_inverse

    rng = np.random.default_rng(11)
    moved = 0
    for omega in (0.999, 0.9):
        s = Scenario.default(devices=2000, seed=1).replace(objective={"latency_weight": omega})
        prob = BitsProblem(s, reference(s), 1e-10)
        prm, nl, n = prob.prm, prob.levels.size, s.n_devices
        sol = prob.solve_rows(np.full((1, n), prob.levels[-1]))
        rw = row_constants(prm, sol.payload_bits)
        t_min = float(min_round_time(prm, rw)[0])
        theta = float(sol.objective[0]) / prob.k_coef
        idx = np.arange(n)
        rows, lvl = np.repeat(idx, nl), np.tile(np.arange(nl), n)
        for t, f in ((t_min, 10.0), (t_min, 100.0), (1.5 * t_min, 100.0), (3 * t_min, 1.0)):
            u = t - prm.fixed_s
            mu = f * prm.w_e * float(np.exp(sol.log_price[0]))
            xf = h_inverse(mu / (prm.w_e * prm.n0 * u / prm.gain))  # the cap-free optimum
            em1 = np.expm1(xf)
            table = pr._capped_cost(prob, rows, u[rows], xf[rows], em1[rows], mu, theta, lvl)
            want = np.argmin(table.reshape(n, nl), axis=1)
            alpha = prm.w_e * prob.s_per_bit * em1 / xf + mu * np.log(2) / (u * xf)
            top = pr.best_levels(prob, alpha, theta * prob.q_rho)
            np.testing.assert_array_equal(pr._exact_choice(prob, idx, u, xf, mu, theta, top), want)
            moved += int(np.sum(want != top))
            start = rng.integers(0, nl, n)
            got = pr._latency_only_choice(prob, u, mu, theta, start)
            np.testing.assert_array_equal(got, pr._CapTable(prob, u).choose(mu, theta))
    assert moved > 100  # the walk down from the cap-free level was exercised


def test_zero_latency_weight_jump_lands_on_the_e_fold_search(monkeypatch):
    # omega = 0 without a deadline: the jump to the first e-fold round time within 1e-6 of the
    # infimum must give the very answer of stepping through every e-fold.
    from sflam_opt.solvers.kernel import roundtime

    cases = [Scenario.default(devices=n, seed=k) for n, k in ((300, 0), (300, 4), (2000, 1))]
    cases = [c.replace(objective={"latency_weight": 0.0}) for c in cases]
    fast = [solve(c, "fast") for c in cases]
    monkeypatch.setattr(roundtime._Bracket, "jump", lambda self: None)
    for c, ref in zip(cases, fast, strict=True):
        r = solve(c, "fast")
        assert "latency weight 0" in ref.message and r.message == ref.message
        assert r.objective == ref.objective
        assert r.info["round_latency_s"] == ref.info["round_latency_s"]
        np.testing.assert_array_equal(r.allocation.bits, ref.allocation.bits)


@pytest.mark.parametrize("omega", [0.0, 1e-6, 0.999, 1.0])
def test_extreme_weights_match_exact(omega):
    # The walks, the T_min-first start and the omega = 0 jump serve the extreme weights; on
    # reference instances fast must still find exact's optimum there. At omega = 0 both stop
    # at a round time within a factor 1 + 1e-6 of the infimum (not the same one: exact's own
    # round-time search), so they agree to that factor.
    for seed in range(3):
        s = Scenario.default(devices=3, seed=seed).replace(objective={"latency_weight": omega})
        ex, fa = solve(s, "exact"), solve(s, "fast")
        assert ex.success and fa.success
        assert fa.objective == pytest.approx(ex.objective, rel=1e-6 if omega == 0 else 1e-9)

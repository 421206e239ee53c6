"""CVXPY side of bcd: backend choice and fallback, DPP blocks, and their optima."""

from __future__ import annotations

import numpy as np
import pytest
import reference_scenarios as rs

from sflam_opt.bounds import rounds_needed
from sflam_opt.costs import reference
from sflam_opt.errors import SolverArgumentError
from sflam_opt.scenario import Scenario
from sflam_opt.solvers import cone_format, cvx, joint, solve
from sflam_opt.solvers.kernel import bandwidth_split, solve_continuous

LN2 = np.log(2.0)


# ------------------------------------------------------------------------------ backends
def test_default_order_is_clarabel_then_ecos_then_scs():
    assert cvx.solver_order(None) == ("CLARABEL", "ECOS", "SCS")


def test_named_backend_goes_first_and_keeps_the_fallbacks():
    assert cvx.solver_order("ecos") == ("ECOS", "CLARABEL", "SCS")
    assert cvx.solver_order(" SCS ") == ("SCS", "CLARABEL", "ECOS")


@pytest.mark.parametrize("bad", ["gurobi", "OSQP", "", 3])
def test_unknown_backend_lists_the_installed_ones(bad):
    with pytest.raises(SolverArgumentError) as err:
        cvx.solver_order(bad)
    msg = str(err.value)
    assert "\n" not in msg and f"cvx_solver={bad!r}" in msg
    assert "CLARABEL, ECOS, SCS" in msg


def test_inaccurate_or_failed_backend_falls_back(monkeypatch):
    blk, _ = cvx.get_block("upload", 3)
    blk.set(np.ones(3), np.full(3, 0.5), np.full(3, 0.1), np.ones(3), 1.0, 10.0, np.full(3, np.e))
    # Two interior-point iterations cannot reach optimality: Clarabel stops at its limit.
    monkeypatch.setitem(cvx._SOLVER_OPTS, "CLARABEL", {"max_iter": 2})
    out = blk.solve(cvx.solver_order(None))
    assert out.ok and out.status == "optimal"
    assert out.backend == "ECOS" and out.fell_back
    assert out.attempts[0].startswith("CLARABEL: ") and out.attempts[1] == "ECOS: optimal"


def test_every_backend_failing_is_reported_not_raised():
    blk, _ = cvx.get_block("bandwidth", 3)
    # Each device needs at least 5 MHz of a 6 MHz band: infeasible.
    blk.set(np.ones(3), np.full(3, 5.0), np.ones(3), 6.0, np.full(3, 2.0), np.full(3, np.e))
    out = blk.solve(cvx.solver_order(None))
    assert not out.ok and out.backend is None
    assert [a.split(":")[0] for a in out.attempts] == ["CLARABEL", "ECOS", "SCS"]


# ------------------------------------------------------------------------------ DPP
@pytest.mark.parametrize("kind", ["bandwidth", "upload"])
def test_blocks_are_dpp_and_cached_per_shape(kind):
    blk, _ = cvx.get_block(kind, 7)
    assert blk.is_dpp()
    again, built = cvx.get_block(kind, 7)
    assert again is blk and not built
    other, built_other = cvx.get_block(kind, 8)
    assert other is not blk and built_other


def test_second_solve_reuses_the_canonicalization(monkeypatch):
    blk = cvx.UploadBlock(4)  # fresh, so the first solve below is the one that compiles
    blk.set(np.ones(4), np.full(4, 0.5), np.full(4, 0.1), np.ones(4), 1.0, 10.0, np.full(4, np.e))
    first = blk.solve(("CLARABEL",))
    prob = blk.problem("CLARABEL")
    prog = prob._cache.param_prog
    assert first.ok and prog is not None  # DPP: CVXPY kept the parametrized program
    chain = prob._cache.solving_chain
    calls = []
    original = chain.apply
    monkeypatch.setattr(chain, "apply", lambda *a, **k: calls.append(1) or original(*a, **k))
    blk.set(2 * np.ones(4), np.full(4, 0.7), np.full(4, 0.2), np.ones(4), 0.5, 10.0, np.ones(4))
    second = blk.solve(("CLARABEL",))
    assert second.ok
    assert prob._cache.param_prog is prog  # same compiled program, new parameter values
    assert calls == []  # the reduction chain (canonicalization) did not run again
    assert not np.allclose(first.values["v"], second.values["v"])


# ------------------------------------------------------------------------------ compile
def _unformatted(blk):
    """The block's parametrized cone program just before the solver reorders its rows."""
    prob = blk.problem("CLARABEL")
    _, chain, _ = prob.get_problem_data("CLARABEL")
    out = prob
    for red in chain.reductions[:-1]:
        out, _ = red.apply(out)
    return out


@pytest.mark.parametrize("kind", ["bandwidth", "upload", "joint"])
@pytest.mark.parametrize("order", [[0, 1, 2], [0, 2, 1]])
def test_linear_reordering_gives_cvxpys_matrix(kind, order):
    """Exponential cones (every block) and second-order cones (the joint block's expansion)."""
    from cvxpy.reductions.solvers.conic_solvers.clarabel_conif import CLARABEL

    import sflam_opt.solvers.joint  # noqa: F401 - registers the joint block

    blk = cvx._BUILDERS[kind](6)
    prog = _unformatted(blk)
    theirs = CLARABEL.format_constraints(prog, order).A.tocsr()
    ours = cone_format.LinearFormatClarabel.format_constraints(prog, order)
    assert ours.formatted and ours.A.shape == theirs.shape
    assert abs(ours.A.tocsr() - theirs).nnz == 0
    assert abs(prog.A.tocsr() - theirs).nnz > 0  # the reordering did move rows


def test_unknown_cone_types_use_cvxpys_reordering():
    import cvxpy as cp

    x = cp.Variable(3)
    con = cp.PowCone3D(x[0], x[1], x[2], 0.5)
    assert cone_format.row_permutation([con], [0, 1, 2]) is None


def test_blocks_never_use_cvxpys_quadratic_reordering(monkeypatch):
    from cvxpy.reductions.solvers.conic_solvers.conic_solver import ConicSolver

    def forbidden(*args, **kwargs):
        raise AssertionError("CVXPY's own format_constraints ran")

    monkeypatch.setattr(ConicSolver, "format_constraints", classmethod(forbidden))
    blk = cvx.UploadBlock(5)
    blk.set(np.ones(5), np.full(5, 0.5), np.full(5, 0.1), np.ones(5), 1.0, 10.0, np.full(5, np.e))
    for backend in ("CLARABEL", "ECOS", "SCS"):
        out = blk.solve((backend,))
        assert out.ok and out.backend == backend, out.attempts


def test_custom_solver_gives_the_same_solution_as_plain_clarabel():
    blk = cvx.BandwidthBlock(5)
    rng = np.random.default_rng(3)
    blk.set(rng.random(5) + 1, np.full(5, 0.01), rng.random(5), 5.0, np.ones(5), np.full(5, 3.0))
    ours = blk.solve(("CLARABEL",))
    prob = blk.problem("CLARABEL")
    prob.solve(solver="CLARABEL", **cvx._SOLVER_OPTS["CLARABEL"])
    assert ours.ok and prob.status == "optimal"
    assert np.allclose(ours.values["beta"], blk.variables["beta"].value, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------ optima
def test_joint_block_at_a_fixed_round_time_is_the_closed_form_split():
    """At a fixed T the joint block's energy is the KKT split of the exact continuous block."""
    scn = Scenario.default(devices=10, seed=0)
    bits = np.full(10, 8)
    t = 2.0 * solve_continuous(scn, bits).min_round_latency_s
    rnd = joint._Round(scn, bits, reference(scn))
    search = joint._Search(rnd, cvx.solver_order(None), None)
    search.at_t_min()
    search.value(t)
    out = search.solves[-1]
    assert out.backend == "CLARABEL" and out.status == "optimal" and len(out.attempts) == 1
    _, _, ref_e = bandwidth_split(scn, bits, t)
    y = search.y_ref  # the y of the last solve
    assert y is not None
    x = rnd.payload_nats / (rnd.allocation(t, y)[0] * (t - rnd.c))
    energy = float(np.sum(rnd.comp + rnd.shannon_j * joint.phi(x)))
    assert energy == pytest.approx(ref_e, rel=1e-7)


@pytest.mark.parametrize(
    "case", ["default", "latency", "energy", "deadline", "energy_cap", "faded9", "faded31"]
)
def test_joint_block_agrees_with_the_kernel(case):
    """The CVXPY continuous block (no kernel code) and the kernel give the same optimum."""
    d = Scenario.default(devices=10, seed=0)
    scn = {
        "default": d,
        "latency": d.replace(objective={"latency_weight": 1.0}),
        "energy": d.replace(objective={"latency_weight": 0.0}),
        "deadline": d.replace(constraints={"round_deadline_s": 175.0}),
        "energy_cap": d.replace(constraints={"device_energy_j": 24.5}),
        "faded9": rs.faded(60, 9),
        "faded31": rs.faded(60, 31),
    }[case]
    bits = np.full(scn.n_devices, 2 if case in ("deadline", "energy_cap") else 6)
    ref = reference(scn)
    sol = joint.solve_joint(scn, bits, ref, cvx.solver_order(None))
    kern = solve_continuous(scn, bits, ref=ref)
    assert kern.feasible and sol.status == "optimal", sol.message
    if case != "energy":  # omega = 0 without a deadline: one solve at x ~ 1e-5, see docs
        assert all(len(out.attempts) == 1 and out.status == "optimal" for out in sol.solves)
    v_kernel = kern.objective * ref.rounds / rounds_needed(scn, bits)
    # The kernel stops within 1e-6 of the infimum when V falls forever (no latency weight).
    assert sol.value == pytest.approx(v_kernel, rel=1e-6 if case == "energy" else 1e-8)
    assert sol.bandwidth_hz.sum() <= scn.system.bandwidth_hz * (1 + 1e-9)
    assert np.all(sol.power_w <= scn.devices.max_power_w * (1 + 1e-9))


def test_phi_inverse_inverts_phi():
    r = np.array([1.0, 1.0 + 1e-9, 1.5, 10.0, 1e6, 1e300, np.inf])
    x = joint.phi_inv(r)
    assert x[0] == 0.0 and x[-1] == np.inf
    np.testing.assert_allclose(joint.phi(x[1:-1]), r[1:-1], rtol=1e-9)


def test_changed_cvxpy_internals_fall_back_to_cvxpys_formatting(monkeypatch, caplog):
    """A CVXPY whose ReducedMat changed shape: one warning, plain solvers, bcd still solves."""
    from cvxpy.reductions.utilities import ReducedMat

    assert cone_format.cvxpy_mismatch() is None  # the installed CVXPY is the tested shape

    def changed_init(self, data, length, quad_form=False):  # renamed arguments
        raise AssertionError("not called")

    monkeypatch.setattr(ReducedMat, "__init__", changed_init)
    with caplog.at_level("WARNING", logger="sflam_opt.solvers.cone_format"):
        why = cone_format.configure()
    try:
        assert why is not None and "ReducedMat" in why
        assert len(caplog.records) == 1 and "CVXPY's own" in caplog.messages[0]
        assert cone_format.solver_instance("CLARABEL") == "CLARABEL"
        monkeypatch.undo()  # CVXPY itself works again; only our override stays off
        res = solve(Scenario.default(devices=8, seed=3), "bcd", escape=False)
        assert res.success and res.info["fallbacks"] == [] and res.info["failures"] == []
        assert res.info["backends"]["continuous"] == {"CLARABEL": res.info["cone_solves"]}
    finally:
        monkeypatch.undo()
        assert cone_format.configure() is None
    assert cone_format.solver_instance("CLARABEL") is not None
    assert not isinstance(cone_format.solver_instance("CLARABEL"), str)


def test_h_inv_inverts_h_down_to_underflow_and_at_both_ends():
    # Extreme gains give band prices whose ratios reach 1e-30 and below; the root search on
    # log h returned NaN there (bcd then failed with an internal error at a -200 dB device).
    r = np.array([1e-300, 1e-30, 1e-20, 1e-13, 1e-12, 2e-12, 1e-6, 1.0, 1e3, 1e300])
    x = joint.h_inv(r)
    assert np.all(np.isfinite(x)) and np.all(np.diff(x) > 0)
    # Where h itself is accurate, h(h_inv(r)) = r; below, the series sqrt(2r) is exact to O(r).
    big = r >= 1e-12
    np.testing.assert_allclose(joint.h(x[big]), r[big], rtol=1e-9)
    np.testing.assert_allclose(x[~big], np.sqrt(2.0 * r[~big]), rtol=1e-6)
    assert joint.h_inv(np.array([0.0]))[0] == 0.0
    assert joint.h_inv(np.array([np.inf]))[0] == np.inf

"""``exact``: the global optimum for small instances, over all ``L^N`` bit vectors.

The problem is the one of ``docs/formulation.md``, section "The problem". For fixed bits the exact
continuous block (:mod:`sflam_opt.solvers.kernel`) gives the optimum
``V*(b)`` of ``w_T T + w_E E`` over bandwidth and power, and ``J(b) = K(b) V*(b)``. Both factors
are monotone in every device's bits: ``V*`` is non-decreasing (a larger payload only shrinks the
feasible set) and ``K`` is non-increasing. So over a box ``lo <= b <= hi`` of bit vectors

    J(b) >= K(hi) V*(lo),

which drives a best-first-free, breadth-wise branch and bound: boxes are halved along their widest
device, each new box costs one continuous solve (its ``lo`` corner, batched across the boxes of a
level), and a box is dropped when its bound is no better than the incumbent (started from
``fast``). Every vector not dropped is evaluated exactly, so the result is the global optimum up
to the continuous block's certified tolerance ``rtol``.
"""

from __future__ import annotations

import logging

import numpy as np

from sflam_opt.allocation import Allocation
from sflam_opt.costs import reference
from sflam_opt.errors import SolverArgumentError
from sflam_opt.numeric import FloatArray, IntArray
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.base import SolveResult, check_tolerance, register_solver
from sflam_opt.solvers.fast import run_fast
from sflam_opt.solvers.kernel import (
    FAILED,
    OK,
    BitsProblem,
    Incumbent,
    RowSolutions,
    row_allocation,
)
from sflam_opt.validation import check_int

__all__ = ["DEFAULT_MAX_COMBINATIONS", "solve_exact"]

logger = logging.getLogger(__name__)

#: Default cap on ``L^N`` (bit vectors in the search space).
DEFAULT_MAX_COMBINATIONS = 200_000


def _values(prob: BitsProblem, bits: IntArray) -> RowSolutions:
    """Continuous optima for rows of bits with K = 1, so ``objective`` is ``V*`` (w_T T + w_E E).

    K is left out because the bound needs ``V*`` at corners where the target is unreachable.
    """
    return prob.solve_rows(bits, unit_rounds=True)


def _bound_values(sol: RowSolutions) -> FloatArray:
    """``V*`` per row for the bound: inf where infeasible, 0 (no bound) where the solve failed.

    A failed row is not a candidate, but its box must not be pruned on its account.
    """
    v = np.where(sol.status == OK, sol.objective, np.inf)
    return np.where(sol.status == FAILED, 0.0, v)


def _short(x: int) -> str:
    """``2.6e9`` style for big counts, plain digits below 1e4."""
    if x < 10_000:
        return str(x)
    mant, exp = f"{float(x):.2g}".split("e")
    return f"{mant}e{int(exp)}"


@register_solver("exact", "global optimum by branch and bound over all bit vectors (small N)")
def solve_exact(
    scenario: Scenario,
    *,
    max_combinations: int = DEFAULT_MAX_COMBINATIONS,
    rtol: float = 1e-10,
) -> SolveResult:
    """Global optimum over all ``L^N`` bit vectors, each with the exact continuous block.

    Parameters
    ----------
    scenario : Scenario
    max_combinations : int
        Refuse instances with more than this many bit vectors (``L^N``).
    rtol : float
        Relative optimality gap certified by each continuous solve.

    Raises
    ------
    SolverArgumentError
        If ``L^N`` exceeds ``max_combinations`` or an option is invalid.
    """
    max_combinations = check_int(
        max_combinations, "max_combinations", minimum=1, error=SolverArgumentError
    )
    rtol = check_tolerance(rtol, "rtol", upper=1e-2, example="1e-10")
    n, nl = scenario.n_devices, len(scenario.bits.levels)
    total = nl**n
    if total > max_combinations:
        raise SolverArgumentError(
            f"exact: {nl}^{n} = {_short(total)} bit vectors exceeds the limit of "
            f"{_short(max_combinations)} (max_combinations); use solver='fast' or 'bcd'"
        )
    ref = reference(scenario)
    run = run_fast(scenario, ref=ref, rtol=rtol)
    inc, info = run.state, run.info
    if inc is None:
        return SolveResult(None, run.status, run.message, backend="numpy", info=info)
    prob = BitsProblem(scenario, ref, rtol)
    best_bits, best_sol = inc.bits.copy(), inc.sol
    best_j = inc.objective
    history = [best_j]
    lv = prob.levels
    # Boxes as level-index corners; V at each box's lo corner.
    lo = np.zeros((1, n), dtype=np.int64)
    hi = np.full((1, n), nl - 1, dtype=np.int64)
    v_lo = _values(prob, lv[lo])
    v = _bound_values(v_lo)
    j0 = float(prob.rounds(lv[lo])[0] * v[0]) if v_lo.status[0] == OK else np.inf
    if j0 < best_j:
        best_j, best_bits, best_sol = j0, lv[lo[0]].copy(), None
        history.append(best_j)
    solves, levels_done = 1, 0
    shrink = 1.0 / (1.0 + rtol)
    while lo.shape[0]:
        levels_done += 1
        k_hi = prob.rounds(lv[hi])
        with np.errstate(invalid="ignore"):
            bound = k_hi * v * shrink
        keep = bound < best_j
        point = np.all(lo == hi, axis=1)
        lo, hi, v = lo[keep & ~point], hi[keep & ~point], v[keep & ~point]
        if lo.shape[0] == 0:
            break
        width = hi - lo
        d = np.argmax(width, axis=1)
        rows = np.arange(lo.shape[0])
        mid = lo[rows, d] + width[rows, d] // 2
        # Left child keeps lo (and its V); right child starts at mid + 1.
        left_hi = hi.copy()
        left_hi[rows, d] = mid
        right_lo = lo.copy()
        right_lo[rows, d] = mid + 1
        sol = _values(prob, lv[right_lo])
        solves += right_lo.shape[0]
        v_right = _bound_values(sol)
        # Every evaluated corner is a full bit vector: a candidate for the incumbent.
        j_right = prob.rounds(lv[right_lo]) * v_right
        j_right = np.where((sol.status == OK) & np.isfinite(j_right), j_right, np.inf)
        k = int(np.argmin(j_right))
        if j_right[k] < best_j:
            best_j = float(j_right[k])
            best_bits = lv[right_lo[k]].copy()
            best_sol = None
            history.append(best_j)
        lo = np.concatenate([lo, right_lo])
        hi = np.concatenate([left_hi, hi])
        v = np.concatenate([v, v_right])
    if best_sol is None:
        best_sol = prob.solve_rows(best_bits[None, :])
    state = Incumbent(best_bits, best_sol.row(0))
    bw, pw = row_allocation(scenario, state.sol, 0)
    alloc = Allocation(state.bits, bw, pw, scenario.devices.ids)
    info = {
        **info,
        "continuous_solves": solves,
        "bit_vectors": total,
        "pruned_share": 1.0 - min(solves, total) / total,
        "bnb_levels": levels_done,
    }
    share = f"{solves} continuous solves for {nl}^{n} = {total} bit vectors"
    logger.debug("exact: %s", share)
    return SolveResult(
        alloc,
        "optimal",
        f"global optimum over all bit vectors (branch and bound, {share})",
        backend="numpy",
        iterations=history,
        info=info,
    )

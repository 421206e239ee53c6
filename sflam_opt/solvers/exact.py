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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sflam_opt.allocation import Allocation
from sflam_opt.bounds import rounds_needed
from sflam_opt.costs import Reference, reference
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
    diagnose,
    row_allocation,
)
from sflam_opt.validation import check_int

if TYPE_CHECKING:
    from sflam_opt.solvers.joint import JointSolution

__all__ = ["CONTINUOUS_OPTIONS", "CVXPY_RTOL", "DEFAULT_MAX_COMBINATIONS", "solve_exact"]

logger = logging.getLogger(__name__)

#: Default cap on ``L^N`` (bit vectors in the search space).
DEFAULT_MAX_COMBINATIONS = 200_000


#: Values of the ``continuous`` option.
CONTINUOUS_OPTIONS = ("kernel", "cvxpy")
#: Relative accuracy of the CVXPY continuous block (cone tolerance and round-time search): the
#: prune margin of ``continuous="cvxpy"``.
CVXPY_RTOL = 1e-7


class _CvxRows:
    """``continuous="cvxpy"``: V* per row by the joint CVXPY block (no kernel code), cached."""

    def __init__(self, scenario: Scenario, ref: Reference) -> None:
        from sflam_opt.solvers.cvx import solver_order  # CVXPY: only for continuous="cvxpy"

        self.scenario, self.ref = scenario, ref
        self.order = solver_order(None)
        self.cache: dict[bytes, JointSolution] = {}
        self.fallbacks: list[str] = []
        self.recentred: list[str] = []

    def solve(self, bits: IntArray) -> JointSolution:
        key = np.asarray(bits, dtype=np.int64).tobytes()
        sol = self.cache.get(key)
        if sol is None:
            from sflam_opt.solvers.joint import solve_joint

            sol = solve_joint(self.scenario, bits, self.ref, self.order)
            self.fallbacks += [
                "; ".join(o.attempts) for o in sol.solves if len(o.attempts) > 1 or not o.ok
            ]
            self.recentred += sol.recentred
            self.cache[key] = sol
        return sol

    def values(self, rows: IntArray) -> tuple[FloatArray, IntArray]:
        """``V*`` per row (inf if infeasible) and the kernel-style status (OK / FAILED / other)."""
        sols = [self.solve(r) for r in rows]
        v = np.array([s.value if s.status == "optimal" else np.inf for s in sols])
        st = np.array(
            [OK if s.status == "optimal" else FAILED if s.status == "failed" else -1 for s in sols]
        )
        return v, st


def _values(prob: BitsProblem | _CvxRows, bits: IntArray) -> tuple[FloatArray, IntArray]:
    """``V*`` (w_T T + w_E E, K = 1) per row of bits and its status.

    K is left out because the bound needs ``V*`` at corners where the target is unreachable.
    """
    if isinstance(prob, _CvxRows):
        return prob.values(bits)
    sol = prob.solve_rows(bits, unit_rounds=True)
    return sol.objective, sol.status


def _bound_values(obj: FloatArray, status: IntArray) -> FloatArray:
    """``V*`` per row for the bound: inf where infeasible, 0 (no bound) where the solve failed.

    A failed row is not a candidate, but its box must not be pruned on its account.
    """
    v = np.where(status == OK, obj, np.inf)
    return np.where(status == FAILED, 0.0, v)


def _short(x: int) -> str:
    """``2.6e9`` style for big counts, plain digits below 1e4."""
    if x < 10_000:
        return str(x)
    mant, exp = f"{float(x):.2g}".split("e")
    return f"{mant}e{int(exp)}"


@dataclass
class _Search:
    """The branch and bound's incumbent and counters."""

    best_j: float
    best_bits: IntArray
    history: list[float]
    solves: int = 0
    levels: int = 0

    def offer(self, j: FloatArray, rows: IntArray) -> None:
        """Take the best of ``rows`` (bit values) if its ``J`` beats the incumbent."""
        k = int(np.argmin(j))
        if j[k] < self.best_j:
            self.best_j, self.best_bits = float(j[k]), rows[k].copy()
            self.history.append(self.best_j)


def _branch_and_bound(
    scenario: Scenario, prob: BitsProblem | _CvxRows, levels: IntArray, search: _Search, rtol: float
) -> None:
    """Halve boxes of level indices along their widest device; prune by ``K(hi) V*(lo)``."""
    n, nl = scenario.n_devices, levels.size

    def rounds(idx: IntArray) -> FloatArray:
        return np.asarray(rounds_needed(scenario, levels[idx]), dtype=np.float64).reshape(-1)

    lo = np.zeros((1, n), dtype=np.int64)
    hi = np.full((1, n), nl - 1, dtype=np.int64)
    obj, st = _values(prob, levels[lo])
    v = _bound_values(obj, st)
    search.solves += 1
    search.offer(np.where(st == OK, rounds(lo) * obj, np.inf), levels[lo])
    shrink = 1.0 / (1.0 + rtol)
    while lo.shape[0]:
        search.levels += 1
        with np.errstate(invalid="ignore"):
            keep = (rounds(hi) * v * shrink < search.best_j) & ~np.all(lo == hi, axis=1)
        lo, hi, v = lo[keep], hi[keep], v[keep]
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
        obj, st = _values(prob, levels[right_lo])
        search.solves += right_lo.shape[0]
        v_right = _bound_values(obj, st)
        # Every evaluated corner is a full bit vector: a candidate for the incumbent.
        j_right = rounds(right_lo) * v_right
        search.offer(np.where((st == OK) & np.isfinite(j_right), j_right, np.inf), levels[right_lo])
        lo = np.concatenate([lo, right_lo])
        hi = np.concatenate([left_hi, hi])
        v = np.concatenate([v, v_right])


def _allocation(
    scenario: Scenario, prob: BitsProblem | _CvxRows, bits: IntArray
) -> Allocation | None:
    """The continuous optimum at ``bits`` as an allocation."""
    if isinstance(prob, _CvxRows):
        sol = prob.solve(bits)
        if sol.status != "optimal":
            return None
        return Allocation(bits, sol.bandwidth_hz, sol.power_w, scenario.devices.ids)
    row = prob.solve_rows(bits[None, :])
    state = Incumbent(bits, row.row(0))
    bw, pw = row_allocation(scenario, state.sol, 0)
    return Allocation(state.bits, bw, pw, scenario.devices.ids)


@register_solver("exact", "global optimum by branch and bound over all bit vectors (small N)")
def solve_exact(
    scenario: Scenario,
    *,
    max_combinations: int = DEFAULT_MAX_COMBINATIONS,
    rtol: float = 1e-10,
    continuous: str = "kernel",
) -> SolveResult:
    """Global optimum over all ``L^N`` bit vectors, each with an exact continuous block.

    Parameters
    ----------
    scenario : Scenario
    max_combinations : int
        Refuse instances with more than this many bit vectors (``L^N``).
    rtol : float
        Relative optimality gap certified by each continuous solve (``continuous="kernel"``).
    continuous : {"kernel", "cvxpy"}
        The continuous block: ``fast``'s closed-form kernel (the incumbent then starts from
        ``fast``), or the joint CVXPY block of :mod:`sflam_opt.solvers.joint`, which shares no
        code with that kernel: every ``V*`` and so every bound and ``J`` is the CVXPY block's
        (the incumbent starts from ``fast``'s bits scored by that block; boxes are pruned with a
        margin of :data:`CVXPY_RTOL`): an independent check of ``fast`` and ``bcd``.

    Returns
    -------
    SolveResult
        ``iterations``: the incumbent's J each time it improved. ``info``: ``continuous`` (the
        mode), ``continuous_solves`` (bit vectors scored), ``bit_vectors`` (``L^N``),
        ``pruned_share`` (share never scored), ``bnb_levels`` (branching levels); with
        ``"kernel"`` also ``fast``'s own info of the starting run; with ``"cvxpy"`` also
        ``fallbacks`` (one line per cone solve that needed another backend or failed) and
        ``recentred`` (continuation steps of the CVXPY block).

    Raises
    ------
    SolverArgumentError
        If ``L^N`` exceeds ``max_combinations`` or an option is invalid.
    """
    max_combinations = check_int(
        max_combinations, "max_combinations", minimum=1, error=SolverArgumentError
    )
    rtol = check_tolerance(rtol, "rtol", upper=1e-2, example="1e-10")
    if continuous not in CONTINUOUS_OPTIONS:
        raise SolverArgumentError(
            f"continuous={continuous!r}: unknown; choose one of {', '.join(CONTINUOUS_OPTIONS)}"
        )
    n, nl = scenario.n_devices, len(scenario.bits.levels)
    total = nl**n
    if total > max_combinations:
        raise SolverArgumentError(
            f"exact: {nl}^{n} = {_short(total)} bit vectors exceeds the limit of "
            f"{_short(max_combinations)} (max_combinations); use solver='fast' or 'bcd'"
        )
    ref = reference(scenario)
    levels = np.asarray(scenario.bits.array, dtype=np.int64)
    info: dict[str, Any] = {"continuous": continuous}
    if continuous == "cvxpy":
        prob: BitsProblem | _CvxRows = _CvxRows(scenario, ref)
        search = _Search(np.inf, levels[-1] + np.zeros(n, dtype=np.int64), [])
        hint = run_fast(scenario, ref=ref, rtol=rtol).state
        if hint is not None:
            # Only fast's bits: their J comes from the CVXPY block, so the pruning stays
            # independent of the kernel (a wrong kernel can only make the pruning weaker).
            obj, st = prob.values(hint.bits[None, :])
            search.offer(
                np.where(st == OK, rounds_needed(scenario, hint.bits) * obj, np.inf),
                hint.bits[None, :],
            )
        _branch_and_bound(scenario, prob, levels, search, CVXPY_RTOL)
        info["fallbacks"] = prob.fallbacks
        info["recentred"] = prob.recentred
        if not np.isfinite(search.best_j):
            return SolveResult(
                None, "infeasible", diagnose(scenario, ref).message, backend="CLARABEL", info=info
            )
    else:
        run = run_fast(scenario, ref=ref, rtol=rtol)
        info = {**run.info, **info}
        if run.state is None:
            return SolveResult(None, run.status, run.message, backend="numpy", info=info)
        prob = BitsProblem(scenario, ref, rtol)
        search = _Search(run.state.objective, run.state.bits.copy(), [run.state.objective])
        _branch_and_bound(scenario, prob, levels, search, rtol)
    alloc = _allocation(scenario, prob, search.best_bits)
    if alloc is None:
        return SolveResult(
            None, "failed", "the continuous block failed at the best bits", info=info
        )
    info.update(
        continuous_solves=search.solves,
        bit_vectors=total,
        pruned_share=1.0 - min(search.solves, total) / total,
        bnb_levels=search.levels,
    )
    share = f"{search.solves} continuous solves for {nl}^{n} = {total} bit vectors"
    logger.debug("exact: %s", share)
    return SolveResult(
        alloc,
        "optimal",
        f"global optimum over all bit vectors (branch and bound, {share})",
        backend="CLARABEL" if continuous == "cvxpy" else "numpy",
        iterations=search.history,
        info=info,
    )

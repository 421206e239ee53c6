"""``fast``: joint bits, bandwidth and power without a general-purpose solver.

J factors as ``J(b) = Kc V*(b) / m(b)`` with ``Kc = A / (eta tau)``, the margin
``m(b) = eps - Phi0 - sum_n rho_n q / (2^{b_n} - 1)^2`` and ``V*(b)`` the optimum of
``w_T T + w_E E`` over bandwidth and power, which the exact continuous block
(:mod:`sflam_opt.solvers.kernel`) computes in O(N) per round-time step; see
``docs/formulation.md``, section "Structure that the solvers use".

The bits search is Dinkelbach's method on the ratio ``V/m``: at the continuous optimum of the
current bits (round time T, bandwidth multiplier mu) and the current ratio ``theta = V/m``, the
problem ``min V - theta m`` separates per device, and each device picks

    b_n = argmin_l  w_E e_n(l; T, mu) + mu B_n(l; T, mu) + theta q rho_n pen(l)

where ``B_n(l)`` and ``e_n(l)`` are the device's bandwidth and upload energy at that price (its
free spectral variable ``x_n = h^{-1}(mu / (w_E a_n))`` does not depend on the level; only the cap
does). That is one vectorized (N x L) argmin (:func:`sflam_opt.solvers.kernel.lagrangian_bits`). ``mu`` is ``w_E lambda`` (lambda: the continuous
block's energy price) plus, when the round sits at its fastest feasible value, the time value of
bandwidth ``V'(T_min+) / (-d sum Bmin / dT)``. The continuous block then re-optimizes T and the
price for the new bits, and the steps repeat while J falls.

A fixed-price step can overshoot when many similar devices switch levels at once (typically at a
deadline). It is then retried, in one batched continuous solve, with the price re-cleared (the
smallest mu whose choices fit the band) at round times around the current one, and with uniform
bit levels near the current and proposed bits (which also keeps ``fast`` no worse than the
``fixed-bits`` baselines). At a fixed point the bits minimize the Lagrangian of the continuous
optimum, optimal up to the price effect of one device; on small instances a polish of single- and
two-device level changes, each scored by the exact block (batched), closes that gap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from sflam_opt.allocation import Allocation
from sflam_opt.costs import Reference, reference
from sflam_opt.errors import SolverArgumentError
from sflam_opt.numeric import IntArray
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.base import SolveResult, check_start_bits, check_tolerance, register_solver
from sflam_opt.solvers.kernel import (
    ZERO_LATENCY_NOTE,
    BitsProblem,
    Incumbent,
    RowSolutions,
    diagnose,
    lagrangian_bits,
    row_allocation,
)
from sflam_opt.validation import check_flag, check_int

__all__ = ["FastRun", "run_fast", "solve_fast"]

logger = logging.getLogger(__name__)

#: Polish by exact single-device moves while (candidate rows x N) stays below this.
POLISH_SINGLE_BUDGET = 20_000
#: Polish by exact two-device moves while (candidate rows x N) stays below this.
POLISH_PAIR_BUDGET = 6_000


@dataclass
class FastRun:
    """Outcome of :func:`run_fast`.

    Attributes
    ----------
    state : Incumbent or None
        The best bits and their continuous optimum (None when ``status`` is "infeasible" or
        "failed").
    status : str
        "converged", "max_iter", "infeasible" (the message names the relaxation) or "failed".
    message : str
        Why there is no state (empty otherwise).
    info : dict
        Diagnostics (see :func:`solve_fast`).
    history : list of float
        J after every accepted step.
    """

    state: Incumbent | None
    status: str
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    history: list[float] = field(default_factory=list)


def _trial_times(prob: BitsProblem, state: Incumbent) -> list[float]:
    """Round times at which to re-clear the bandwidth price in a fallback step."""
    t = float(state.sol.round_latency_s[0])
    t_min = float(state.sol.min_round_latency_s[0])
    cap = prob.prm.deadline_s if prob.prm.deadline_s is not None else np.inf
    if t <= t_min * (1 + 1e-12):
        # At the fastest round for these bits: only longer rounds admit more bits.
        factors = (1.0, 1.05, 1.1, 1.2, 1.4)
    else:
        factors = (0.95, 1.0, 1.05)
    floor = float(np.max(prob.prm.fixed_s))  # every device needs some upload time
    return sorted({min(t * f, cap) for f in factors if t * f > floor})


def _single_moves(prob: BitsProblem, bits: IntArray) -> IntArray:
    """All bit vectors differing from ``bits`` in one device's level, (N (L - 1), N)."""
    n, nl = bits.size, prob.levels.size
    cand = np.repeat(bits[None, :], n * nl, axis=0)
    dev = np.repeat(np.arange(n), nl)
    cand[np.arange(n * nl), dev] = np.tile(prob.levels, n)
    keep = cand[np.arange(n * nl), dev] != bits[dev]
    return cand[keep]


def _pair_moves(prob: BitsProblem, bits: IntArray) -> IntArray:
    """All bit vectors differing from ``bits`` in exactly two devices' levels."""
    n, lv = bits.size, prob.levels
    i, j = np.triu_indices(n, 1)
    li, lj = np.meshgrid(lv, lv, indexing="ij")
    li, lj = li.ravel(), lj.ravel()
    p, q = i.size, li.size
    cand = np.repeat(bits[None, :], p * q, axis=0)
    ii, jj = np.repeat(i, q), np.repeat(j, q)
    rows = np.arange(p * q)
    cand[rows, ii] = np.tile(li, p)
    cand[rows, jj] = np.tile(lj, p)
    keep = (cand[rows, ii] != bits[ii]) & (cand[rows, jj] != bits[jj])
    return cand[keep]


def _key(bits: IntArray) -> bytes:
    """A dictionary key of a bit vector: one byte per device (bit widths lie in 1..32).

    At N = 1e6 the int64 bytes cost ~5 ms to copy and hash per vector; these cost ~2 ms.
    """
    return np.asarray(bits).astype(np.uint8).tobytes()


def _best_row(sol: RowSolutions) -> int:
    return int(np.argmin(sol.objective))


def run_fast(
    scenario: Scenario,
    *,
    ref: Reference | None = None,
    max_iter: int = 50,
    polish: bool | None = None,
    rtol: float = 1e-10,
    start_bits: IntArray | None = None,
    start_point: tuple[float, float] | None = None,
) -> FastRun:
    """The ``fast`` search (options as in :func:`solve_fast`).

    ``start_bits`` joins the starting rows; on a large instance (no uniform-level starts) it is
    tried alone first, from ``start_point`` (round time, bandwidth price) if given, and the other
    starting rows are solved only if it is infeasible.
    """
    ref = ref if ref is not None else reference(scenario)
    diag = diagnose(scenario, ref)
    if not diag.feasible:
        return FastRun(None, "infeasible", diag.message, {"diagnosis_exact": diag.exact})
    prob = BitsProblem(scenario, ref, rtol)
    state = _first_incumbent(prob, diag.bits, start_bits, start_point)
    if state is None:
        # The diagnosis found feasible bits, so this is a numerical failure, not infeasibility.
        logger.warning("fast: the continuous block found no feasible start at the diagnosed bits")
        return FastRun(
            None,
            "failed",
            "fast: the continuous block found no feasible start at bits the feasibility "
            "diagnosis accepted (numerical failure)",
            {},
        )
    search = _Dinkelbach(prob, state)
    status = search.run(max_iter)
    info: dict[str, Any] = {
        "accepted_steps": dict(search.counts),
        "continuous_solves": len(search.evaluated),
        "dinkelbach_steps": search.steps,
    }
    state, history = search.state, search.history
    state, info["polish"], info["polish_moves"] = _polish(prob, state, history, polish, max_iter)
    info["round_latency_s"] = float(state.sol.round_latency_s[0])
    info["bandwidth_price_j_per_hz"] = float(np.exp(state.sol.log_price[0]))
    return FastRun(state, status, "", info, history)


def _first_incumbent(
    prob: BitsProblem,
    diag_bits: IntArray,
    start_bits: IntArray | None,
    start_point: tuple[float, float] | None,
) -> Incumbent | None:
    """The best starting row, or None if no starting row has a finite optimum.

    Starting rows: ``start_bits``, the diagnosis' feasible bits, max bits and (small N) every
    uniform level; on a large instance ``start_bits`` is solved alone first.
    """
    n, nl = diag_bits.size, prob.levels.size
    starts = [diag_bits, np.full(n, prob.levels[-1])]
    small = nl * n <= POLISH_SINGLE_BUDGET // 4
    sol = None
    if start_bits is not None:
        start = np.asarray(start_bits, dtype=np.int64)
        if not small:
            cand = start[None, :]
            sol = prob.solve_rows(cand, point=start_point)
            if not np.isfinite(sol.objective[0]):
                sol = None
        starts.insert(0, start)
    if small:
        starts.extend(np.full(n, lv) for lv in prob.levels)
    if sol is None:
        seen: dict[bytes, IntArray] = {}
        for b in starts:
            b = np.asarray(b, dtype=np.int64)
            seen.setdefault(_key(b), b)
        cand = np.array(list(seen.values()))
        sol = prob.solve_rows(cand)
    k = _best_row(sol)
    if not np.isfinite(sol.objective[k]):
        return None
    return Incumbent(cand[k].copy(), sol.row(k))


class _Dinkelbach:
    """The Dinkelbach bits search from an incumbent (see the module docstring).

    Attributes
    ----------
    state : Incumbent
        The best bits so far.
    history : list of float
        J after every accepted step.
    evaluated : set of bytes
        Bit vectors already scored (never scored twice).
    counts : dict
        Accepted steps by kind: "plain", "fallback" (re-cleared price) and "uniform".
    steps : int
        Accepted steps.
    """

    def __init__(self, prob: BitsProblem, state: Incumbent) -> None:
        self.prob = prob
        self.state = state
        self.history = [state.objective]
        self.evaluated = {_key(state.bits)}
        self.counts = {"plain": 0, "fallback": 0, "uniform": 0}
        self.steps = 0

    def run(self, max_iter: int) -> str:
        """Step while J falls; "converged" or "max_iter"."""
        for _ in range(max_iter):
            nxt = self.step()
            if nxt is None:
                return "converged"
            self.state = nxt
            self.history.append(nxt.objective)
            self.steps += 1
        return "max_iter"

    def step(self) -> Incumbent | None:
        """One accepted step, or None at a fixed point."""
        prob, state = self.prob, self.state
        plain = lagrangian_bits(prob, state)
        nxt = None
        if not np.array_equal(plain, state.bits):
            nxt = self.better([plain])
            self.counts["plain"] += nxt is not None
            if nxt is None:
                # The linear step overshot (many devices switching at once at a fixed price):
                # clear the price at round times around the current one (the new bits may
                # need a longer or allow a shorter round), and try uniform levels near both.
                cands = [
                    lagrangian_bits(prob, state, clear=True, round_latency_s=t)
                    for t in _trial_times(prob, state)
                ]
                nxt = self.better([*cands, *self.uniform_near(plain, state.bits)])
                self.counts["fallback"] += nxt is not None
        if nxt is None:
            nxt = self.better(self.uniform_near(state.bits))
            self.counts["uniform"] += nxt is not None
        return nxt

    def better(self, cands: list[IntArray]) -> Incumbent | None:
        """Best of the not yet evaluated candidates if it lowers J (one batched solve)."""
        fresh: dict[bytes, IntArray] = {}
        for b in cands:
            key = _key(b)
            if key not in self.evaluated:
                fresh.setdefault(key, b)
        if not fresh:
            return None
        self.evaluated.update(fresh)
        rows = np.array(list(fresh.values()))
        sol = self.prob.solve_rows(rows, warm=self.state.sol)
        k = _best_row(sol)
        if sol.objective[k] < self.state.objective * (1.0 - 1e-13):
            return Incumbent(rows[k].copy(), sol.row(k))
        return None

    def uniform_near(self, *vectors: IntArray) -> list[IntArray]:
        """Uniform vectors at and next to the mean level of each vector.

        They cover the fixed-bits baselines around the current point (J is usually unimodal in
        that level).
        """
        levels = self.prob.levels
        n, nl = vectors[0].size, levels.size
        out = []
        for v in vectors:
            m = float(np.mean(self.prob.level_index(v)))
            for k in range(int(np.floor(m)) - 1, int(np.ceil(m)) + 2):
                if 0 <= k < nl:
                    out.append(np.full(n, levels[k]))
        return out


def _polish(
    prob: BitsProblem,
    state: Incumbent,
    history: list[float],
    polish: bool | None,
    max_iter: int,
) -> tuple[Incumbent, str, int]:
    """Exact single- (and two-) device level changes on small instances.

    Returns the improved incumbent, the polish kind ("single+pair", "single" or "off") and the
    number of accepted moves; appends J after every move to ``history``.
    """
    n, nl = state.bits.size, prob.levels.size
    do_polish = polish if polish is not None else True
    if not (do_polish and nl > 1 and (nl - 1) * n * n <= POLISH_SINGLE_BUDGET):
        return state, "off", 0
    pairs_ok = (n * (n - 1) // 2) * (nl - 1) ** 2 * n <= POLISH_PAIR_BUDGET
    moves = 0
    for _ in range(max_iter):
        cand = _single_moves(prob, state.bits)
        if pairs_ok:
            cand = np.concatenate([cand, _pair_moves(prob, state.bits)])
        sol = prob.solve_rows(cand, warm=state.sol)
        k = _best_row(sol)
        if not sol.objective[k] < state.objective * (1.0 - 1e-12):
            break
        state = Incumbent(cand[k].copy(), sol.row(k))
        history.append(state.objective)
        moves += 1
    return state, "single+pair" if pairs_ok else "single", moves


@register_solver("fast", "exact continuous block + Dinkelbach bits search, no general solver")
def solve_fast(
    scenario: Scenario,
    *,
    max_iter: int = 50,
    polish: bool | None = None,
    rtol: float = 1e-10,
    start_bits: ArrayLike | None = None,
    start_point: tuple[float, float] | None = None,
) -> SolveResult:
    """Exact continuous block with a Dinkelbach bits search (no general solver).

    Parameters
    ----------
    scenario : Scenario
    max_iter : int
        Cap on Dinkelbach steps and on polish rounds.
    polish : bool, optional
        Score single- and two-device level changes with the exact block (default: whenever the
        candidate batch is small, i.e. small N).
    rtol : float
        Relative optimality gap of each continuous solve.
    start_bits : array_like of int, shape (N,), optional
        Warm start: bit widths (allowed levels) scored alongside the usual starting points; the
        search continues from the best of them (e.g. the last round's bits).
    start_point : (float, float), optional
        Round time (s) and bandwidth price (J/Hz) of a nearby solution, as in ``info``
        (``round_latency_s``, ``bandwidth_price_j_per_hz``) of the last round: with
        ``start_bits`` on a large instance, the first continuous solve starts there.
    """
    max_iter = check_int(max_iter, "max_iter", minimum=1, error=SolverArgumentError)
    if polish is not None:
        polish = check_flag(polish, "polish", error=SolverArgumentError)
    rtol = check_tolerance(rtol, "rtol", upper=1e-2, example="1e-10")
    start = None if start_bits is None else check_start_bits(scenario, start_bits)
    point = None
    if start_point is not None:
        try:
            point = (float(start_point[0]), float(start_point[1]))
        except (TypeError, ValueError, IndexError):
            raise SolverArgumentError(
                f"start_point={start_point!r}: need (round time s, bandwidth price J/Hz)"
            ) from None
    run = run_fast(
        scenario,
        max_iter=max_iter,
        polish=polish,
        rtol=rtol,
        start_bits=start,
        start_point=point,
    )
    state, info, history, status = run.state, run.info, run.history, run.status
    if state is None:
        return SolveResult(None, run.status, run.message, backend="numpy", info=info)
    bw, pw = row_allocation(scenario, state.sol, 0)
    alloc = Allocation(state.bits, bw, pw, scenario.devices.ids)
    msg = (
        f"Dinkelbach bits search converged after {info['dinkelbach_steps']} steps"
        if status == "converged"
        else f"stopped after max_iter = {max_iter} Dinkelbach steps"
    )
    if info["polish_moves"]:
        msg += f"; polish improved it in {info['polish_moves']} moves"
    if bool(state.sol.capped_at_limit[0]):
        msg += ZERO_LATENCY_NOTE
    return SolveResult(alloc, status, msg, backend="numpy", iterations=history, info=info)

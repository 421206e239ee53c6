"""``fast``: joint bits, bandwidth and power without a general-purpose solver (formulation §6).

J factors as ``J(b) = Kc V*(b) / m(b)`` with ``Kc = A / (eta tau)``, the margin
``m(b) = eps - Phi0 - sum_n rho_n q / (2^{b_n} - 1)^2`` and ``V*(b)`` the optimum of
``w_T T + w_E E`` over bandwidth and power, which the exact continuous block
(:mod:`sflam_opt.solvers.continuous`) computes in O(N) per round-time step.

The bits search is Dinkelbach's method on the ratio ``V/m``: at the continuous optimum of the
current bits (round time T, bandwidth price lambda) and the current ratio ``theta = V/m``, the
problem ``min V - theta m`` separates per device, and each device picks

    b_n = argmin_l  w_E [e_n(l; T, lambda) + lambda B_n(l; T, lambda)] + theta q rho_n pen(l)

where ``B_n(l)`` and ``e_n(l)`` are the device's bandwidth and upload energy at that price (its
free spectral variable ``x_n = h^{-1}(lambda / a_n)`` does not depend on the level; only the cap
does). That is one vectorized (N x L) argmin. The continuous block then re-optimizes T and lambda
for the new bits, and the steps repeat while J falls. At a fixed point the bits minimize the
Lagrangian of the continuous optimum, which is optimal up to the price effect of one device; on
small instances a polish of single- and two-device level changes, each scored by the exact block
(batched), closes that gap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sflam_opt.allocation import Allocation
from sflam_opt.costs import Reference, payload_bits, reference
from sflam_opt.errors import SolverArgumentError
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.base import SolveResult, register_solver
from sflam_opt.solvers.continuous import (
    LN2,
    RowSolutions,
    _Params,
    _params,
    _solve_rows,
    diagnose,
    row_allocation,
)
from sflam_opt.solvers.lambertw import phi_inverse

__all__ = ["FastState", "lagrangian_bits", "solve_fast"]

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

#: Polish by exact single-device moves while (candidate rows x N) stays below this.
POLISH_SINGLE_BUDGET = 20_000
#: Polish by exact two-device moves while (candidate rows x N) stays below this.
POLISH_PAIR_BUDGET = 6_000


@dataclass
class FastState:
    """Current iterate: bits and the exact continuous optimum at those bits."""

    bits: NDArray[np.int64]
    sol: RowSolutions  # one row

    @property
    def objective(self) -> float:
        return float(self.sol.objective[0])


class _Problem:
    """Scenario constants in the shapes the bits search needs."""

    def __init__(self, scenario: Scenario, ref: Reference, rtol: float) -> None:
        self.scenario = scenario
        self.ref = ref
        self.rtol = rtol
        self.prm: _Params = _params(scenario, ref)
        self.levels = scenario.bits.array  # (L,)
        self.w_l = payload_bits(scenario, self.levels)  # (L,)
        self.s_nl = self.prm.n0 * LN2 * self.w_l[None, :] / self.prm.gain[:, None]  # (N, L)
        c = scenario.convergence
        self.pen_l = 1.0 / np.square(np.exp2(self.levels) - 1.0)  # (L,)
        self.pen_nl = c.q * scenario.rho[:, None] * self.pen_l[None, :]  # (N, L)
        self.room = c.epsilon - c.phi0
        t = scenario.training
        self.k_coef = c.a / (t.learning_rate * t.local_iters)

    def rounds(self, bits: NDArray[np.int64]) -> FloatArray:
        """``K(b)`` for rows of bit values (M, N), from the per-level table (inf if unreachable)."""
        idx = np.searchsorted(self.levels, bits)
        n = idx.shape[1]
        margin = self.room - self.pen_nl[np.arange(n)[None, :], idx].sum(axis=1)
        with np.errstate(divide="ignore"):
            return np.where(margin > 0, self.k_coef / np.where(margin > 0, margin, 1.0), np.inf)

    def solve_rows(self, bits: NDArray[np.int64], warm: RowSolutions | None = None) -> RowSolutions:
        """Exact continuous optimum for each row of ``bits`` (M, N)."""
        w = payload_bits(self.scenario, bits)
        k = self.rounds(bits)
        wm = None
        if warm is not None:
            m = bits.shape[0]
            wm = (
                np.repeat(warm.round_latency_s, m),
                np.repeat(warm.log_price, m),
                np.repeat(warm.x_free, m, axis=0),
            )
        return _solve_rows(self.prm, w, k, self.rtol, wm)


def lagrangian_bits(prob: _Problem, state: FastState) -> NDArray[np.int64]:
    """One Dinkelbach step: every device's best level at the current T, lambda and ratio.

    Without a binding cap, device n's cost at level l is ``alpha_n W_l + theta q rho_n pen_l``
    with ``alpha_n = w_E (S_n phi(x_n) + lambda ln2 / (u_n x_n)) / W`` per payload bit (x_n is
    level-independent), an (N x L) rank-2 table. A cap only raises a level's cost (it moves x
    off the unconstrained optimum of ``e + lambda B``), so the cap-free table is a lower bound;
    devices whose cap-free choice hits a cap are re-scored exactly.

    Returns
    -------
    ndarray of int, shape (N,)
        Level *values* (bits).
    """
    sol, prm = state.sol, prob.prm
    t = float(sol.round_latency_s[0])
    lam = float(np.exp(sol.log_price[0]))
    xf = sol.x_free[0]  # (N,) free spectral variable at (T, lambda)
    u = t - prm.fixed_s  # (N,)
    theta = float(sol.objective[0]) / prob.k_coef  # ratio V/m = J / Kc
    s_per_bit = prob.s_nl[:, 0] / prob.w_l[0]  # N0 ln2 / g_n
    em1 = np.expm1(xf)
    phi_f = em1 / xf
    alpha = prm.w_e * (s_per_bit * phi_f + lam * LN2 / (u * xf))
    gamma = theta * prob.pen_nl[:, 0] / prob.pen_l[0]  # theta q rho_n
    cost = alpha[:, None] * prob.w_l[None, :] + gamma[:, None] * prob.pen_l[None, :]
    pick = np.argmin(cost, axis=1)
    rows = np.arange(xf.size)
    r = _cap_ratio(prob, u[:, None], pick[:, None], rows[:, None])[:, 0]
    hit = em1 > r * xf  # phi(x_free) > r: the cap binds (or the level cannot make it)
    if hit.any():
        idx = np.flatnonzero(hit)
        pick[idx] = _exact_choice(prob, idx, u[idx], xf[idx], lam, theta)
    return prob.levels[pick]


def _cap_ratio(prob: _Problem, u, lvl, rows) -> FloatArray:
    """``min(Pmax u / S, budget / S)`` at the given (device, level index) pairs."""
    prm = prob.prm
    s = prob.s_nl[rows, lvl]
    r = prm.pmax[rows] * u / s
    if prm.budget_j is not None:
        r = np.minimum(r, prm.budget_j[rows] / s)
    return r


def _exact_choice(prob, idx, u, xf, lam, theta) -> NDArray[np.int64]:
    """Best level of devices ``idx`` with their caps honoured (full rows of the table)."""
    prm = prob.prm
    nl = prob.levels.size
    rows = np.broadcast_to(idx[:, None], (idx.size, nl))
    lvl = np.broadcast_to(np.arange(nl)[None, :], (idx.size, nl))
    r = _cap_ratio(prob, u[:, None], lvl, rows)
    x = np.broadcast_to(xf[:, None], r.shape).copy()
    clamped = np.expm1(x) > r * x
    x[clamped] = phi_inverse(r[clamped])
    with np.errstate(divide="ignore", invalid="ignore"):
        energy = prob.s_nl[idx] * np.expm1(x) / x
        bw = prob.w_l[None, :] * LN2 / (u[:, None] * x)
        cost = prm.w_e * (energy + lam * bw) + theta * prob.pen_nl[idx]
    cost = np.where((r > 1.0) & np.isfinite(cost), cost, np.inf)
    return np.argmin(cost, axis=1)


def _single_moves(prob: _Problem, bits: NDArray[np.int64]) -> NDArray[np.int64]:
    """All bit vectors differing from ``bits`` in one device's level, (N (L - 1), N)."""
    n, nl = bits.size, prob.levels.size
    cand = np.repeat(bits[None, :], n * nl, axis=0)
    dev = np.repeat(np.arange(n), nl)
    cand[np.arange(n * nl), dev] = np.tile(prob.levels, n)
    keep = cand[np.arange(n * nl), dev] != bits[dev]
    return cand[keep]


def _pair_moves(prob: _Problem, bits: NDArray[np.int64]) -> NDArray[np.int64]:
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


def _best_row(sol: RowSolutions) -> int:
    return int(np.argmin(sol.objective))


def _take_row(sol: RowSolutions, k: int) -> RowSolutions:
    return RowSolutions(
        *(
            getattr(sol, f)[k : k + 1] if isinstance(getattr(sol, f), np.ndarray) else None
            for f in sol.__dataclass_fields__
        )
    )


def run_fast(
    scenario: Scenario,
    *,
    ref: Reference | None = None,
    max_iter: int = 50,
    polish: bool | None = None,
    rtol: float = 1e-10,
    start_bits: NDArray[np.int64] | None = None,
) -> tuple[FastState | None, dict[str, Any], list[float], str]:
    """The ``fast`` search; returns (state or None, info, J per iteration, message)."""
    ref = ref if ref is not None else reference(scenario)
    diag = diagnose(scenario, ref)
    if not diag.feasible:
        return None, {"diagnosis_exact": diag.exact}, [], diag.message
    prob = _Problem(scenario, ref, rtol)
    n, nl = scenario.n_devices, prob.levels.size
    info: dict[str, Any] = {}
    # Starting rows: the diagnosis' feasible bits, max bits, and (small N) every uniform level.
    starts = [diag.bits, np.full(n, prob.levels[-1])]
    if start_bits is not None:
        starts.insert(0, np.asarray(start_bits, dtype=np.int64))
    if nl * n <= POLISH_SINGLE_BUDGET // 4:
        starts.extend(np.full(n, lv) for lv in prob.levels)
    seen: dict[bytes, NDArray[np.int64]] = {}
    for b in starts:
        seen.setdefault(np.asarray(b, dtype=np.int64).tobytes(), np.asarray(b, dtype=np.int64))
    cand = np.array(list(seen.values()))
    sol = prob.solve_rows(cand)
    k = _best_row(sol)
    if not np.isfinite(sol.objective[k]):
        # Cannot happen when the diagnosis found feasible bits; guard against a solver bug.
        return None, info, [], "fast: no feasible start found (internal error)"
    state = FastState(cand[k].copy(), _take_row(sol, k))
    history = [state.objective]
    steps = 0
    status_iter = "converged"
    for _ in range(max_iter):
        b_new = lagrangian_bits(prob, state)
        if np.array_equal(b_new, state.bits):
            break
        sol_new = prob.solve_rows(b_new[None, :], warm=state.sol)
        steps += 1
        if not sol_new.objective[0] < state.objective * (1.0 - 1e-13):
            break
        state = FastState(b_new, sol_new)
        history.append(state.objective)
    else:
        status_iter = "max_iter"
    info["dinkelbach_steps"] = steps
    do_polish = polish if polish is not None else True
    moves = 0
    if do_polish and (nl - 1) * n * n <= POLISH_SINGLE_BUDGET:
        pairs_ok = (n * (n - 1) // 2) * (nl - 1) ** 2 * n <= POLISH_PAIR_BUDGET
        for _ in range(max_iter):
            cand = _single_moves(prob, state.bits)
            if pairs_ok:
                cand = np.concatenate([cand, _pair_moves(prob, state.bits)])
            sol = prob.solve_rows(cand, warm=state.sol)
            k = _best_row(sol)
            if not sol.objective[k] < state.objective * (1.0 - 1e-12):
                break
            state = FastState(cand[k].copy(), _take_row(sol, k))
            history.append(state.objective)
            moves += 1
        info["polish"] = "single+pair" if pairs_ok else "single"
    else:
        info["polish"] = "off"
    info["polish_moves"] = moves
    info["round_latency_s"] = float(state.sol.round_latency_s[0])
    info["bandwidth_price_j_per_hz"] = float(np.exp(state.sol.log_price[0]))
    return state, info, history, status_iter


@register_solver("fast", "exact continuous block + Dinkelbach bits search, no general solver")
def solve_fast(
    scenario: Scenario,
    *,
    max_iter: int = 50,
    polish: bool | None = None,
    rtol: float = 1e-10,
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
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise SolverArgumentError(f"max_iter={max_iter!r}: need a whole number >= 1")
    if polish is not None and not isinstance(polish, bool):
        raise SolverArgumentError(f"polish={polish!r}: need true or false")
    if isinstance(rtol, bool) or not isinstance(rtol, int | float) or not 0 < rtol < 1e-2:
        raise SolverArgumentError(f"rtol={rtol!r}: need a number in (0, 0.01), e.g. 1e-10")
    state, info, history, status = run_fast(
        scenario, max_iter=int(max_iter), polish=polish, rtol=float(rtol)
    )
    if state is None:
        return SolveResult(None, "infeasible", status, backend="numpy", info=info)
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
        msg += (
            "; latency weight 0 without a deadline: round time capped where J is within 1e-6 "
            "of its infimum"
        )
    return SolveResult(alloc, status, msg, backend="numpy", iterations=history, info=info)

"""``fast``: joint bits, bandwidth and power without a general-purpose solver (formulation §6).

J factors as ``J(b) = Kc V*(b) / m(b)`` with ``Kc = A / (eta tau)``, the margin
``m(b) = eps - Phi0 - sum_n rho_n q / (2^{b_n} - 1)^2`` and ``V*(b)`` the optimum of
``w_T T + w_E E`` over bandwidth and power, which the exact continuous block
(:mod:`sflam_opt.solvers.continuous`) computes in O(N) per round-time step.

The bits search is Dinkelbach's method on the ratio ``V/m``: at the continuous optimum of the
current bits (round time T, bandwidth multiplier mu) and the current ratio ``theta = V/m``, the
problem ``min V - theta m`` separates per device, and each device picks

    b_n = argmin_l  w_E e_n(l; T, mu) + mu B_n(l; T, mu) + theta q rho_n pen(l)

where ``B_n(l)`` and ``e_n(l)`` are the device's bandwidth and upload energy at that price (its
free spectral variable ``x_n = h^{-1}(mu / (w_E a_n))`` does not depend on the level; only the cap
does). That is one vectorized (N x L) argmin. ``mu`` is ``w_E lambda`` (lambda: the continuous
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
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sflam_opt.allocation import Allocation
from sflam_opt.costs import Reference, payload_bits, reference
from sflam_opt.errors import SolverArgumentError
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.base import SolveResult, check_start_bits, register_solver
from sflam_opt.solvers.continuous import (
    LN2,
    RowSolutions,
    _Params,
    _params,
    _solve_rows,
    diagnose,
    row_allocation,
)
from sflam_opt.solvers.lambertw import h_from_expm1, h_inverse, phi_inverse

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
        self.s_per_bit = self.s_nl[:, 0] / self.w_l[0]  # N0 ln2 / g_n, (N,)
        self.q_rho = self.pen_nl[:, 0] / self.pen_l[0]  # q rho_n, (N,)
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

    def solve_rows(
        self,
        bits: NDArray[np.int64],
        warm: RowSolutions | None = None,
        point: tuple[float, float] | None = None,
    ) -> RowSolutions:
        """Exact continuous optimum for each row of ``bits`` (M, N).

        ``warm`` (a solution of these devices) or ``point`` (round time T in s and bandwidth
        price lambda in J/Hz of a nearby problem, e.g. the last round) starts the search there.
        """
        w = payload_bits(self.scenario, bits)
        k = self.rounds(bits)
        wm = None
        if warm is None and point is not None:
            wm = self._warm_from_point(point, bits.shape[0])
        if warm is not None:
            m = bits.shape[0]
            wm = (
                np.repeat(warm.round_latency_s, m),
                np.repeat(warm.log_price, m),
                np.repeat(warm.x_free, m, axis=0),
            )
        return _solve_rows(self.prm, w, k, self.rtol, wm, lazy_t_min=True)

    def _warm_from_point(
        self, point: tuple[float, float], m: int
    ) -> tuple[FloatArray, FloatArray, FloatArray] | None:
        """Search start ``(T, log lambda, x_free)`` for ``m`` rows from a (T, lambda) point."""
        prm = self.prm
        t, lam = float(point[0]), float(point[1])
        if not (prm.w_e > 0 and prm.w_t > 0 and np.isfinite(t) and np.isfinite(lam) and lam > 0):
            return None
        # Every device needs some upload time; the free spectral variable solves h(x) = lam / a.
        t = max(t, float(np.max(prm.fixed_s)) * (1.0 + 1e-6))
        a = prm.n0 * (t - prm.fixed_s) / prm.gain
        x_free = h_inverse(lam / a)
        if not np.all(np.isfinite(x_free) & (x_free > 0)):
            return None
        return (np.full(m, t), np.full(m, np.log(lam)), np.repeat(x_free[None, :], m, axis=0))


def lagrangian_bits(
    prob: _Problem,
    state: FastState,
    *,
    clear: bool = False,
    round_latency_s: float | None = None,
) -> NDArray[np.int64]:
    """One Dinkelbach step: every device's best level at the current T, lambda and ratio.

    Without a binding cap, device n's cost at level l is ``alpha_n W_l + theta q rho_n pen_l``
    with ``alpha_n = w_E (S_n phi(x_n) + lambda ln2 / (u_n x_n)) / W`` per payload bit (x_n is
    level-independent), an (N x L) rank-2 table. A cap only raises a level's cost (it moves x
    off the unconstrained optimum of ``e + lambda B``), so the cap-free table is a lower bound;
    devices whose cap-free choice hits a cap are re-scored exactly.

    Parameters
    ----------
    clear : bool
        Re-price bandwidth (bisection on log mu) to the smallest price at which the chosen
        levels' bandwidths fit the band at the current T: the Lagrangian choice is then feasible
        there and uses the band up (used when the plain step at the old price fails, e.g. at a
        deadline, where many devices would switch levels at once).
    round_latency_s : float, optional
        Price at this round time instead of the current one (with ``clear``: a candidate whose
        bits fit the band at that T, for moves that need a longer or shorter round).

    Returns
    -------
    ndarray of int, shape (N,)
        Level *values* (bits).
    """
    sol, prm = state.sol, prob.prm
    t = float(sol.round_latency_s[0]) if round_latency_s is None else float(round_latency_s)
    u = t - prm.fixed_s  # (N,)
    theta = float(sol.objective[0]) / prob.k_coef  # ratio V/m = J / Kc
    log_a = np.log(prm.n0 * u / prm.gain)
    w_e = prm.w_e
    table = _CapTable(prob, u) if w_e == 0.0 else None
    mu0 = _bandwidth_price(prob, state)

    def at(log_mu: float, x0: FloatArray | None) -> tuple[NDArray[np.int64], float, FloatArray]:
        if table is not None:
            p = table.choose(np.exp(log_mu), theta)
            return p, float(table.bw[np.arange(u.size), p].sum()), x0
        # Device optimum of w_E e + mu B without caps: h(x) = mu / (w_E a).
        x = h_inverse(np.exp(np.minimum(log_mu - np.log(w_e) - log_a, 700.0)), x0)
        p, b = _choose(prob, u, x, np.exp(log_mu), theta)
        return p, float(b.sum()), x

    s0 = float(np.log(mu0))
    same_point = round_latency_s is None and mu0 == w_e * np.exp(sol.log_price[0])
    if w_e > 0.0 and same_point:
        # The continuous optimum's free spectral variables solve h(x) = mu / (w_E a) already.
        xf = sol.x_free[0]
        pick, b = _choose(prob, u, xf, np.exp(s0), theta)
        tot = float(b.sum())
    else:
        pick, tot, xf = at(s0, None)
    if not clear:
        return prob.levels[pick]
    # Clear the market at this T: the smallest price mu at which the chosen levels fit the
    # band (their total bandwidth falls with mu), bracketed from mu0 in the needed direction.
    # Prices beyond e^+-100 of the start change nothing (every device at its extreme level).
    if tot <= prm.bandwidth_hz:
        lo, hi, p_hi, x_hi = s0 - 1.0, s0, pick, xf
        while True:
            p_lo, tot_lo, x_lo = at(lo, x_hi)
            if tot_lo > prm.bandwidth_hz:
                break
            if lo <= s0 - 100.0:
                return prob.levels[p_lo]
            width = hi - lo
            hi, p_hi, x_hi = lo, p_lo, x_lo
            lo = max(lo - 2.0 * width, s0 - 100.0)
    else:
        lo, hi = s0, s0 + 1.0
        while True:
            p_hi, tot, x_hi = at(hi, xf)
            if tot <= prm.bandwidth_hz:
                break
            if hi >= s0 + 100.0:
                return state.bits.copy()
            lo, hi = hi, min(hi + 2.0 * (hi - lo), s0 + 100.0)
    for _ in range(60):
        if hi - lo <= 1e-4:  # the choice changes in steps; finer prices rarely change it
            break
        mid = 0.5 * (lo + hi)
        p_mid, tot, x_mid = at(mid, x_hi)
        if tot <= prm.bandwidth_hz:
            hi, p_hi, x_hi = mid, p_mid, x_mid
        else:
            lo = mid
    return prob.levels[p_hi]


def _trial_times(prob: _Problem, state: FastState) -> list[float]:
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


def _bandwidth_price(prob: _Problem, state: FastState) -> float:
    """Multiplier ``mu`` of ``sum B_n <= B`` in objective units per Hz at the current optimum.

    Inside ``(T_min, deadline)`` it is ``w_E lambda`` (lambda: the energy price, J/Hz). At
    ``T = T_min`` the band is what holds the round time up, so the slope ``V'(T_min+) > 0`` adds
    the time value of bandwidth, ``V' / (-d sum Bmin / dT)``; without it a latency-only objective
    would see no reason to use fewer bits at a fixed round time.
    """
    sol, prm = state.sol, prob.prm
    mu = prm.w_e * float(np.exp(sol.log_price[0]))
    t, t_min = float(sol.round_latency_s[0]), float(sol.min_round_latency_s[0])
    slope = float(sol.slope[0])
    if not (t <= t_min * (1 + 1e-12) and slope > 0):
        return mu if mu > 0 else 1e-300
    u, x, w = sol.upload_s[0], sol.x[0], sol.payload_bits[0]
    bmin = w * LN2 / (u * x)
    power = prm.pmax * u <= (np.inf if prm.budget_j is None else prm.budget_j)
    em1 = np.expm1(x)
    extra = np.where(power, em1 / h_from_expm1(x, em1), 0.0)
    dsum = float(np.sum(bmin / u * (1.0 + extra)))  # -d sum Bmin / dT
    return mu + slope / dsum


class _CapTable:
    """Least bandwidth per (device, level) at a round time, for the latency-only step."""

    def __init__(self, prob: _Problem, u: FloatArray) -> None:
        nl = prob.levels.size
        rows = np.broadcast_to(np.arange(u.size)[:, None], (u.size, nl))
        lvl = np.broadcast_to(np.arange(nl)[None, :], (u.size, nl))
        x = phi_inverse(_cap_ratio(prob, u[:, None], lvl, rows))
        with np.errstate(divide="ignore"):
            self.bw = np.where(x > 0, prob.w_l[None, :] * LN2 / (u[:, None] * x), np.inf)
        self.pen = prob.pen_nl

    def choose(self, mu: float, theta: float) -> NDArray[np.int64]:
        return np.argmin(mu * self.bw + theta * self.pen, axis=1)


def _choose(
    prob: _Problem, u: FloatArray, xf: FloatArray, mu: float, theta: float
) -> tuple[NDArray[np.int64], FloatArray]:
    """Per-device best level index at bandwidth price ``mu`` and its bandwidth, shapes (N,).

    Device n's cost at level l is ``w_E e_nl + mu B_nl + theta q rho_n pen_l``, with its
    spectral variable ``x_n`` (free optimum ``xf``) held at the level's cap where that binds.
    """
    prm = prob.prm
    rows = np.arange(u.size)
    em1 = np.expm1(xf)
    alpha = prm.w_e * prob.s_per_bit * em1 / xf + mu * LN2 / (u * xf)
    gamma = theta * prob.q_rho
    cost = alpha[:, None] * prob.w_l[None, :] + gamma[:, None] * prob.pen_l[None, :]
    pick = np.argmin(cost, axis=1)
    r = _cap_ratio(prob, u[:, None], pick[:, None], rows[:, None])[:, 0]
    hit = em1 > r * xf  # phi(x_free) > r: the cap binds (or the level cannot make it)
    x = xf
    if hit.any():
        idx = np.flatnonzero(hit)
        pick[idx] = _exact_choice(prob, idx, u[idx], xf[idx], mu, theta)
        r = _cap_ratio(prob, u[:, None], pick[:, None], rows[:, None])[:, 0]
        x = np.array(xf, dtype=np.float64)
        capped = em1 > r * xf
        x[capped] = phi_inverse(r[capped])
    with np.errstate(divide="ignore"):
        bw = prob.w_l[pick] * LN2 / (u * x)
    return pick, bw


def _cap_ratio(prob: _Problem, u, lvl, rows) -> FloatArray:
    """``min(Pmax u / S, budget / S)`` at the given (device, level index) pairs."""
    prm = prob.prm
    s = prob.s_nl[rows, lvl]
    r = prm.pmax[rows] * u / s
    if prm.budget_j is not None:
        r = np.minimum(r, prm.budget_j[rows] / s)
    return r


def _exact_choice(prob, idx, u, xf, mu, theta) -> NDArray[np.int64]:
    """Best level of devices ``idx`` with their caps honoured (full rows of the table)."""
    prm = prob.prm
    nl = prob.levels.size
    rows = np.broadcast_to(idx[:, None], (idx.size, nl))
    lvl = np.broadcast_to(np.arange(nl)[None, :], (idx.size, nl))
    r = _cap_ratio(prob, u[:, None], lvl, rows)
    x = np.broadcast_to(xf[:, None], r.shape).copy()
    with np.errstate(over="ignore", invalid="ignore"):
        clamped = np.expm1(x) > r * x
    x[clamped] = phi_inverse(r[clamped])
    with np.errstate(divide="ignore", invalid="ignore"):
        energy = prob.s_nl[idx] * np.expm1(x) / x
        bw = prob.w_l[None, :] * LN2 / (u[:, None] * x)
        cost = prm.w_e * energy + mu * bw + theta * prob.pen_nl[idx]
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
    start_point: tuple[float, float] | None = None,
) -> tuple[FastState | None, dict[str, Any], list[float], str]:
    """The ``fast`` search; returns (state or None, info, J per iteration, message).

    ``start_bits`` joins the starting rows; when given for a large instance (no uniform-level
    starts), it is tried alone first, from ``start_point`` (round time, bandwidth price) if given,
    and the other starting rows are solved only if it is infeasible.
    """
    ref = ref if ref is not None else reference(scenario)
    diag = diagnose(scenario, ref)
    if not diag.feasible:
        return None, {"diagnosis_exact": diag.exact}, [], diag.message
    prob = _Problem(scenario, ref, rtol)
    n, nl = scenario.n_devices, prob.levels.size
    info: dict[str, Any] = {}
    # Starting rows: the diagnosis' feasible bits, max bits, and (small N) every uniform level.
    starts = [diag.bits, np.full(n, prob.levels[-1])]
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
    evaluated = {state.bits.tobytes()}
    counts = {"plain": 0, "fallback": 0, "uniform": 0}

    def better(cands: list[NDArray[np.int64]]) -> FastState | None:
        """Best of the not yet evaluated candidates if it lowers J (one batched solve)."""
        fresh: dict[bytes, NDArray[np.int64]] = {}
        for b in cands:
            key = b.tobytes()
            if key not in evaluated:
                fresh.setdefault(key, b)
        if not fresh:
            return None
        evaluated.update(fresh)
        rows = np.array(list(fresh.values()))
        sol = prob.solve_rows(rows, warm=state.sol)
        k = _best_row(sol)
        if sol.objective[k] < state.objective * (1.0 - 1e-13):
            return FastState(rows[k].copy(), _take_row(sol, k))
        return None

    def uniform_near(*vectors: NDArray[np.int64]) -> list[NDArray[np.int64]]:
        # Uniform vectors at and next to the mean level of each vector: they cover the
        # fixed-bits baselines around the current point (J is usually unimodal in that level).
        out = []
        for v in vectors:
            m = float(np.mean(np.searchsorted(prob.levels, v)))
            for k in range(int(np.floor(m)) - 1, int(np.ceil(m)) + 2):
                if 0 <= k < nl:
                    out.append(np.full(n, prob.levels[k]))
        return out

    for _ in range(max_iter):
        plain = lagrangian_bits(prob, state)
        nxt = None
        if not np.array_equal(plain, state.bits):
            nxt = better([plain])
            counts["plain"] += nxt is not None
            if nxt is None:
                # The linear step overshot (many devices switching at once at a fixed price):
                # clear the price at round times around the current one (the new bits may
                # need a longer or allow a shorter round), and try uniform levels near both.
                cands = [
                    lagrangian_bits(prob, state, clear=True, round_latency_s=t)
                    for t in _trial_times(prob, state)
                ]
                nxt = better([*cands, *uniform_near(plain, state.bits)])
                counts["fallback"] += nxt is not None
        if nxt is None:
            nxt = better(uniform_near(state.bits))
            counts["uniform"] += nxt is not None
        if nxt is None:
            break
        state = nxt
        history.append(state.objective)
        steps += 1
    else:
        status_iter = "max_iter"
    info["accepted_steps"] = dict(counts)
    info["continuous_solves"] = len(evaluated)
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
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise SolverArgumentError(f"max_iter={max_iter!r}: need a whole number >= 1")
    if polish is not None and not isinstance(polish, bool):
        raise SolverArgumentError(f"polish={polish!r}: need true or false")
    if isinstance(rtol, bool) or not isinstance(rtol, int | float) or not 0 < rtol < 1e-2:
        raise SolverArgumentError(f"rtol={rtol!r}: need a number in (0, 0.01), e.g. 1e-10")
    start = None if start_bits is None else check_start_bits(scenario, start_bits)
    point = None
    if start_point is not None:
        try:
            point = (float(start_point[0]), float(start_point[1]))
        except (TypeError, ValueError, IndexError):
            raise SolverArgumentError(
                f"start_point={start_point!r}: need (round time s, bandwidth price J/Hz)"
            ) from None
    state, info, history, status = run_fast(
        scenario,
        max_iter=int(max_iter),
        polish=polish,
        rtol=float(rtol),
        start_bits=start,
        start_point=point,
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

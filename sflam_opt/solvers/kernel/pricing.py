"""Bits priced by the continuous optimum: one Dinkelbach step of the joint problem.

See ``docs/formulation.md``, section "Structure that the solvers use". J factors as
``J(b) = Kc V*(b) / m(b)`` with ``Kc = A / (eta tau)``, the convergence margin
``m(b) = eps - Phi0 - sum_n rho_n q / (2^{b_n} - 1)^2`` and ``V*(b)`` the continuous optimum. At
the continuous optimum of the current bits (round time T, bandwidth price mu) and the current
ratio ``theta = V/m``, ``min V - theta m`` separates per device, and each device picks

    b_n = argmin_l  w_E e_n(l; T, mu) + mu B_n(l; T, mu) + theta q rho_n pen(l)

where ``B_n(l)`` and ``e_n(l)`` are the device's bandwidth and upload energy at that price (its
free spectral variable does not depend on the level; only the cap does): one vectorized (N x L)
argmin, :func:`lagrangian_bits`. Unlike a bits step at fixed bandwidth, it sees the bandwidth a
smaller payload frees for the other devices. ``fast`` iterates it; ``bcd`` uses it to escape
block stalls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sflam_opt.costs import Reference, payload_bits
from sflam_opt.numeric import LN2, FloatArray, IntArray
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.kernel.params import KernelParams, kernel_params
from sflam_opt.solvers.kernel.rows import RowSolutions, solve_rows
from sflam_opt.solvers.lambertw import h_from_expm1, h_inverse, phi_inverse

__all__ = ["BitsProblem", "Incumbent", "best_levels", "lagrangian_bits"]


@dataclass
class Incumbent:
    """A bit vector and the exact continuous optimum at those bits.

    Attributes
    ----------
    bits : ndarray of int, shape (N,)
        Bit widths.
    sol : RowSolutions
        One-row batch: the continuous optimum at ``bits`` (see :func:`.rows.solve_rows`).
    """

    bits: IntArray
    sol: RowSolutions

    @property
    def objective(self) -> float:
        return float(self.sol.objective[0])


#: Batches of bit vectors with more (row x device) entries than this are solved row by row.
ROW_BATCH = 2_000_000


class BitsProblem:
    """Scenario constants in the shapes a bits search needs, and batched continuous solves.

    Parameters
    ----------
    scenario : Scenario
    ref : Reference
        ``costs.reference(scenario)``.
    rtol : float
        Certified relative gap of every continuous solve.

    Attributes
    ----------
    prm : KernelParams
        Constants of the continuous block.
    levels : ndarray of int, shape (L,)
        Allowed bit widths.
    w_l : ndarray, shape (L,)
        Payload bits per level.
    s_nl : ndarray, shape (N, L)
        Shannon-limit upload energy ``N0 W_l ln2 / g_n``, J.
    pen_l, pen_nl : ndarray, shapes (L,) and (N, L)
        ``1 / (2^l - 1)^2`` and ``q rho_n / (2^l - 1)^2``.
    room : float
        ``eps - Phi0``: the convergence margin with no quantization.
    k_coef : float
        ``A / (eta tau)``: rounds ``K = k_coef / margin``.
    """

    def __init__(self, scenario: Scenario, ref: Reference, rtol: float) -> None:
        self.scenario = scenario
        self.ref = ref
        self.rtol = rtol
        self.prm: KernelParams = kernel_params(scenario, ref)
        self.levels = scenario.bits.array  # (L,)
        self.w_l = payload_bits(scenario, self.levels)  # (L,)
        # The (N, L) tables are rank one: their factors are kept, and entries are computed
        # from them with the same rounding as the tables' (which are built only if asked for).
        self._s_l = self.prm.n0 * LN2 * self.w_l  # (L,): S_nl = _s_l[l] / g_n
        c = scenario.convergence
        self.pen_l = 1.0 / np.square(np.exp2(self.levels) - 1.0)  # (L,)
        self._qr = c.q * scenario.rho  # (N,): pen_nl = _qr[n] * pen_l[l]
        self.s_per_bit = self._s_l[0] / self.prm.gain / self.w_l[0]  # N0 ln2 / g_n, (N,)
        self.q_rho = self._qr * self.pen_l[0] / self.pen_l[0]  # q rho_n, (N,)
        # alpha W_l + gamma pen_l is convex in l (W affine, pen convex in the bit width), so its
        # argmin moves up one level as gamma / alpha passes each of these (increasing) ratios.
        with np.errstate(divide="ignore", invalid="ignore"):
            self.level_ratios = np.diff(self.w_l) / -np.diff(self.pen_l)  # (L - 1,)
        self.room = c.epsilon - c.phi0
        t = scenario.training
        self.k_coef = c.a / (t.learning_rate * t.local_iters)

    @cached_property
    def s_nl(self) -> FloatArray:
        """Shannon-limit upload energy per (device, level), shape (N, L), J."""
        return self._s_l[None, :] / self.prm.gain[:, None]

    @cached_property
    def pen_nl(self) -> FloatArray:
        """``q rho_n / (2^l - 1)^2`` per (device, level), shape (N, L)."""
        return self._qr[:, None] * self.pen_l[None, :]

    def s_at(self, rows: IntArray, lvl: IntArray) -> FloatArray:
        """``s_nl[rows, lvl]`` without the table (broadcast shapes)."""
        return self._s_l[lvl] / self.prm.gain[rows]

    def pen_at(self, rows: IntArray, lvl: IntArray) -> FloatArray:
        """``pen_nl[rows, lvl]`` without the table (broadcast shapes)."""
        return self._qr[rows] * self.pen_l[lvl]

    def level_index(self, bits: IntArray) -> IntArray:
        """Index into ``levels`` of every entry of ``bits`` (allowed levels), same shape."""
        lv = self.levels
        if bits.size and 0 <= lv[0] and lv[-1] <= 1024:
            lo, hi = int(bits.min()), int(bits.max())
            if lo >= 0 and hi <= lv[-1]:
                table = np.full(int(lv[-1]) + 1, -1, dtype=np.int64)
                table[lv] = np.arange(lv.size)
                idx = table[bits]
                if int(idx.min()) >= 0:
                    return idx
        return np.searchsorted(lv, bits)

    def rounds(self, bits: IntArray) -> FloatArray:
        """``K(b)`` for rows of bit values (M, N), from the per-level table (inf if unreachable)."""
        return self._rounds_at(self.level_index(bits))

    def _rounds_at(self, idx: IntArray) -> FloatArray:
        """:meth:`rounds` from level indices (M, N)."""
        margin = self.room - (self._qr[None, :] * self.pen_l[idx]).sum(axis=1)
        with np.errstate(divide="ignore"):
            return np.where(margin > 0, self.k_coef / np.where(margin > 0, margin, 1.0), np.inf)

    def solve_rows(
        self,
        bits: IntArray,
        warm: RowSolutions | None = None,
        *,
        unit_rounds: bool = False,
        point: tuple[float, float] | None = None,
    ) -> RowSolutions:
        """Exact continuous optimum for each row of ``bits`` (M, N).

        ``warm`` (a one-row solution) starts every row's round-time search from its optimum and
        lets rows skip ``T_min`` when they do not need it. Without ``warm``, ``point`` (round time
        T in s and bandwidth price lambda in J/Hz of a nearby problem, e.g. the last round's)
        starts the search there. With ``unit_rounds`` K is set to 1, so that ``objective`` is
        ``V* = w_T T + w_E E`` even where the target is unreachable.
        """
        m, n = bits.shape
        if m > 1 and m * n > ROW_BATCH:
            # One row at a time: a row's (N,) arrays stay near the cache, while a batch's
            # (M, N) temporaries page-fault (at N = 1e6 four rows cost 4x one row each).
            parts = [
                self.solve_rows(bits[k : k + 1], warm, unit_rounds=unit_rounds, point=point)
                for k in range(m)
            ]
            return RowSolutions.stack(parts)
        idx = self.level_index(bits)
        w = self.w_l[idx]  # payload_bits(bits): the same doubles, gathered from the level table
        if unit_rounds:
            return solve_rows(self.prm, w, np.ones(bits.shape[0]), self.rtol)
        k = self._rounds_at(idx)
        wm = None
        if warm is None and point is not None:
            wm = self._warm_from_point(point, bits.shape[0])
        at_min = None
        if warm is not None:
            m = bits.shape[0]
            wm = (
                np.repeat(warm.round_latency_s, m),
                np.repeat(warm.log_price, m),
                np.repeat(warm.x_free, m, axis=0),
            )
            t, t_min = float(warm.round_latency_s[0]), float(warm.min_round_latency_s[0])
            at_min = np.full(m, t <= t_min * (1.0 + 1e-12))  # False where T_min is unknown
        return solve_rows(self.prm, w, k, self.rtol, wm, lazy_t_min=True, start_at_min=at_min)

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
    prob: BitsProblem,
    state: Incumbent,
    *,
    clear: bool = False,
    round_latency_s: float | None = None,
) -> IntArray:
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
    log_a: FloatArray | None = None  # log(N0 u / g), computed when a price needs it
    w_e = prm.w_e
    mu0 = _bandwidth_price(prob, state)
    if w_e == 0.0 and not clear:
        # One price: walk each device from its current level instead of tabling every level.
        start = prob.level_index(state.bits)
        return prob.levels[_latency_only_choice(prob, u, float(np.exp(np.log(mu0))), theta, start)]
    table = _CapTable(prob, u) if w_e == 0.0 else None

    def at(log_mu: float, x0: FloatArray | None) -> tuple[IntArray, float, FloatArray]:
        nonlocal log_a
        if table is not None:
            p = table.choose(np.exp(log_mu), theta)
            return p, table.total(p), x0
        # Device optimum of w_E e + mu B without caps: h(x) = mu / (w_E a).
        if log_a is None:
            log_a = np.log(prm.n0 * u / prm.gain)
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


def _bandwidth_price(prob: BitsProblem, state: Incumbent) -> float:
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


def _latency_only_choice(
    prob: BitsProblem, u: FloatArray, mu: float, theta: float, start: IntArray
) -> IntArray:
    """:meth:`_CapTable.choose` without the table: per device ``argmin_l mu B_nl + theta q rho_n
    pen_l`` (``B_nl``: least bandwidth at level l), walking from ``start`` (level indices).

    ``B_nl`` is convex in the payload (the inverse of a concave rate) and the penalty convex in
    the level, so the walk (:func:`_walk`) finds the first minimizer, scoring only the levels
    that each device passes (a few, near its current level) instead of all of them.
    """
    if not (np.isfinite(mu) and np.isfinite(theta)):
        return _CapTable(prob, u).choose(mu, theta)

    def cost(sub: IntArray, lvl: IntArray) -> FloatArray:
        us = u[sub]
        x = phi_inverse(_cap_ratio(prob, us, lvl, sub))
        with np.errstate(divide="ignore"):
            bw = np.where(x > 0, prob.w_l[lvl] * LN2 / (us * x), np.inf)
        return mu * bw + theta * prob.pen_at(sub, lvl)

    nl, n = prob.levels.size, u.size
    if n > _SAMPLE * nl:
        # A step can move every device many levels at once (e.g. from the max-bits start):
        # start the walk at the median best level of a sample of devices, scored on every level.
        sample = np.linspace(0, n - 1, _SAMPLE).astype(np.intp)
        table = cost(np.repeat(sample, nl), np.tile(np.arange(nl), _SAMPLE)).reshape(_SAMPLE, nl)
        start = np.full(n, int(np.median(np.argmin(table, axis=1))), dtype=np.intp)
    return _walk(cost, start, nl)


#: Devices sampled to start the level walk of a latency-only step.
_SAMPLE = 101


class _CapTable:
    """Least bandwidth per (level, device) at a round time, for the latency-only step.

    Stored level by level, shape (L, N): at N = 1e6 each level is one contiguous pass, and
    :meth:`choose` never forms an (N, L) table.
    """

    def __init__(self, prob: BitsProblem, u: FloatArray) -> None:
        nl = prob.levels.size
        self.prob = prob
        self.bw = np.empty((nl, u.size))
        # One level at a time, each warm-started from the level below's roots: the cold start
        # of the whole table took ~12 Newton sweeps.
        x = None
        for k in range(nl):
            x = phi_inverse(_cap_ratio(prob, u, k), x)
            with np.errstate(divide="ignore"):
                self.bw[k] = np.where(x > 0, prob.w_l[k] * LN2 / (u * x), np.inf)

    def choose(self, mu: float, theta: float) -> IntArray:
        """Per device ``argmin_l mu B_nl + theta q rho_n pen_l`` (first on ties, as np.argmin)."""
        prob = self.prob
        best = pick = None
        nan = False
        for k in range(self.bw.shape[0]):
            cost = mu * self.bw[k] + theta * (prob._qr * prob.pen_l[k])
            nan = nan or bool(np.isnan(cost.sum()))  # costs lie in [0, inf] or are NaN
            if best is None:
                best, pick = cost, np.zeros(cost.size, dtype=np.intp)
                continue
            take = cost < best
            np.copyto(best, cost, where=take)
            pick[take] = k
        if nan:  # np.argmin picks a row's first NaN: redo those rows as it would
            table = mu * self.bw.T + theta * prob.pen_nl
            rows = np.flatnonzero(np.isnan(table).any(axis=1))
            pick[rows] = np.argmin(table[rows], axis=1)
        return pick

    def total(self, pick: IntArray) -> float:
        """Sum over the devices of the bandwidth at levels ``pick``, Hz."""
        return float(self.bw[pick, np.arange(pick.size)].sum())


def _choose(
    prob: BitsProblem, u: FloatArray, xf: FloatArray, mu: float, theta: float
) -> tuple[IntArray, FloatArray]:
    """Per-device best level index at bandwidth price ``mu`` and its bandwidth, shapes (N,).

    Device n's cost at level l is ``w_E e_nl + mu B_nl + theta q rho_n pen_l``, with its
    spectral variable ``x_n`` (free optimum ``xf``) held at the level's cap where that binds.
    """
    prm = prob.prm
    em1 = np.expm1(xf)
    alpha = prm.w_e * prob.s_per_bit * em1 / xf + mu * LN2 / (u * xf)
    gamma = theta * prob.q_rho
    pick = best_levels(prob, alpha, gamma)
    r = _cap_ratio(prob, u, pick)
    hit = em1 > r * xf  # phi(x_free) > r: the cap binds (or the level cannot make it)
    x = xf
    if hit.any():
        idx = np.flatnonzero(hit)
        pick[idx] = _exact_choice(prob, idx, u[idx], xf[idx], mu, theta, pick[idx])
        r = _cap_ratio(prob, u, pick)
        x = np.array(xf, dtype=np.float64)
        capped = em1 > r * xf
        x[capped] = phi_inverse(r[capped])
    with np.errstate(divide="ignore"):
        bw = prob.w_l[pick] * LN2 / (u * x)
    return pick, bw


def best_levels(prob: BitsProblem, alpha: FloatArray, gamma: FloatArray) -> IntArray:
    """``argmin_l alpha_n W_l + gamma_n pen_l`` per device (index into the levels), shape (N,).

    The same index as ``np.argmin`` over the (N, L) table (first on ties), without the table: the
    cost is convex in l, so its argmin moves up one level as ``gamma / alpha`` passes each of
    ``level_ratios``. Where that ratio lies clear of every switch ratio (relative margin
    :data:`_SWITCH_RTOL`, far above the table's rounding) its place among them is the answer;
    the few devices near a switch, or with a non-finite or non-positive ``alpha``, are decided
    by the table's entries (:func:`_best_levels_table`).
    """
    nl = prob.levels.size
    ratios = prob.level_ratios
    usable = nl > 1 and bool(np.all(np.isfinite(ratios)) and np.all(np.diff(ratios) > 0))
    if not usable:
        return _table_argmin(prob, alpha, gamma)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = gamma / alpha
    pick = _count_below(ratios, ratio)  # switch ratios below each device's: 0 .. L - 1
    margin = _SWITCH_RTOL * ratio
    with np.errstate(invalid="ignore"):
        clear = ratio - np.take(np.concatenate(([-np.inf], ratios)), pick) > margin
        clear &= np.take(np.concatenate((ratios, [np.inf])), pick) - ratio > margin
        clear &= alpha > 0.0
        clear &= ratio >= 0.0
    idx = np.flatnonzero(~clear)
    if idx.size:
        pick[idx] = _best_levels_table(prob, alpha[idx], gamma[idx])
    return pick


#: Relative distance from a switch ratio beyond which the ratio alone decides the level.
_SWITCH_RTOL = 1e-6


def _count_below(ratios: FloatArray, ratio: FloatArray) -> IntArray:
    """``np.searchsorted(ratios, ratio)`` for ratios that are not NaN (NaN gives 0 here).

    Bit widths lie in 1..32, so there are at most 31 switch ratios: one comparison per ratio
    is several times faster than the binary search at N = 1e6.
    """
    count = np.zeros(ratio.shape, dtype=np.int8)
    for r in ratios:
        count += ratio > r
    return count.astype(np.intp)


def _table_argmin(prob: BitsProblem, alpha: FloatArray, gamma: FloatArray) -> IntArray:
    """``np.argmin`` over the (N, L) table of ``alpha W_l + gamma pen_l``."""
    table = alpha[:, None] * prob.w_l[None, :] + gamma[:, None] * prob.pen_l[None, :]
    return np.argmin(table, axis=1)


def _best_levels_table(prob: BitsProblem, alpha: FloatArray, gamma: FloatArray) -> IntArray:
    """:func:`best_levels` from the table's entries around the ratio's place (and whole rows
    for non-finite or non-positive ``alpha``)."""
    w_l, pen_l, nl = prob.w_l, prob.pen_l, prob.levels.size
    with np.errstate(divide="ignore", invalid="ignore"):
        mid = np.searchsorted(prob.level_ratios, gamma / alpha)
    mid = np.minimum(mid, nl - 1)
    lo = np.maximum(mid - 1, 0)
    hi = np.minimum(mid + 1, nl - 1)
    pick = lo
    best = alpha * w_l[lo] + gamma * pen_l[lo]
    for cand in (mid, hi):
        cost = alpha * w_l[cand] + gamma * pen_l[cand]
        take = cost < best
        pick = np.where(take, cand, pick)
        best = np.where(take, cost, best)
    odd = ~(np.isfinite(alpha) & np.isfinite(gamma) & (alpha > 0) & (gamma >= 0))
    if odd.any():
        idx = np.flatnonzero(odd)
        pick[idx] = _table_argmin(prob, alpha[idx], gamma[idx])
    return pick


def _cap_ratio(
    prob: BitsProblem, u: FloatArray, lvl: IntArray | int, rows: IntArray | None = None
) -> FloatArray:
    """``min(Pmax u / S, budget / S)`` at the given (device, level index) pairs.

    ``rows=None`` means every device, in order (``u`` of shape (N,), ``lvl`` too or one index).
    """
    prm = prob.prm
    if rows is None:
        s = prob._s_l[lvl] / prm.gain
        r = prm.pmax * u / s
        return r if prm.budget_j is None else np.minimum(r, prm.budget_j / s)
    s = prob.s_at(rows, lvl)
    r = prm.pmax[rows] * u / s
    if prm.budget_j is not None:
        r = np.minimum(r, prm.budget_j[rows] / s)
    return r


def _exact_choice(
    prob: BitsProblem,
    idx: IntArray,
    u: FloatArray,
    xf: FloatArray,
    mu: float,
    theta: float,
    top: IntArray,
) -> IntArray:
    """Best level of devices ``idx`` with their caps honoured, at most ``top`` (their cap-free
    best level).

    A device's capped cost is convex in the level (the least ``w_E e + mu B`` over a convex set
    of (B, W), plus a convex penalty) and exceeds the cap-free cost by an amount that does not
    fall with W (the cap tightens), so its best level is at most the cap-free one: a walk down
    from ``top`` (:func:`_walk`) finds it, scoring only the levels it passes.
    """
    em1f = np.expm1(xf)

    def cost(sub: IntArray, lvl: IntArray) -> FloatArray:
        return _capped_cost(prob, idx[sub], u[sub], xf[sub], em1f[sub], mu, theta, lvl)

    return _walk(cost, top, prob.levels.size, up=False)


def _capped_cost(
    prob: BitsProblem,
    rows: IntArray,
    u: FloatArray,
    xf: FloatArray,
    em1f: FloatArray,
    mu: float,
    theta: float,
    lvl: IntArray,
) -> FloatArray:
    """``w_E e + mu B + theta q rho pen`` of devices ``rows`` at level indices ``lvl``, shape (K,).

    The spectral variable is the free one, ``xf``, or the level's cap where that binds; inf
    where the level cannot meet the cap.
    """
    prm = prob.prm
    r = _cap_ratio(prob, u, lvl, rows)
    x = np.array(xf, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        clamped = em1f > r * x
    x[clamped] = phi_inverse(r[clamped])
    with np.errstate(divide="ignore", invalid="ignore"):
        energy = prob.s_at(rows, lvl) * np.expm1(x) / x
        bw = prob.w_l[lvl] * LN2 / (u * x)
        cost = prm.w_e * energy + mu * bw + theta * prob.pen_at(rows, lvl)
    return np.where((r > 1.0) & np.isfinite(cost), cost, np.inf)


def _walk(
    cost: Callable[[IntArray, IntArray], FloatArray],
    start: IntArray,
    nl: int,
    *,
    up: bool = True,
) -> IntArray:
    """Per device the first minimizer of a cost convex in the level, walking from ``start``.

    ``cost(sub, lvl)`` scores devices ``sub`` (indices into ``start``) at level indices ``lvl``.
    Each device steps down while the cost does not rise (so ties go to the lower level, as
    ``np.argmin`` picks the first) and, if it did not move down, up while the cost falls; only the
    devices still moving are scored at each step.
    """
    pick = np.array(start, dtype=np.intp)
    best = cost(np.arange(pick.size), pick)
    moved = np.zeros(pick.size, dtype=bool)
    act = np.flatnonzero(pick > 0)
    while act.size:
        lvl = pick[act] - 1
        c = cost(act, lvl)
        go = c <= best[act]
        act, lvl = act[go], lvl[go]
        pick[act], best[act] = lvl, c[go]
        moved[act] = True
        act = act[lvl > 0]
    if not up:
        return pick
    act = np.flatnonzero(~moved & (pick < nl - 1))
    while act.size:
        lvl = pick[act] + 1
        c = cost(act, lvl)
        go = c < best[act]
        act, lvl = act[go], lvl[go]
        pick[act], best[act] = lvl, c[go]
        act = act[lvl < nl - 1]
    return pick

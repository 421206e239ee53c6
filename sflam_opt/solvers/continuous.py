"""The exact continuous block: optimal bandwidth and power for fixed bits (formulation §6).

For fixed bits ``b`` the rounds ``K(b)`` are a constant and J is ``K (w_T T + w_E E)``. At a round
time ``T`` every device uploads for its whole slot ``u_n = T - c_n`` (upload energy falls with
``u_n``). In the spectral variable ``x_n = W_n ln2 / (B_n u_n)``:

* the rate is ``W_n / u_n``, the power ``p_n = N0 B_n (e^x - 1)/g_n`` and the upload energy
  ``e_n = S_n phi(x_n)`` with ``S_n = N0 W_n ln2 / g_n`` (the Shannon-limit energy) and
  ``phi(x) = (e^x - 1)/x``;
* the marginal value of bandwidth is ``-de_n/dB_n = a_n h(x_n)``, ``a_n = N0 u_n / g_n``,
  ``h(x) = (x - 1) e^x + 1``;
* the power cap and the per-device energy cap both read ``phi(x_n) <= r``, i.e.
  ``x_n <= x_max,n`` (a lower bound ``B_n >= Bmin_n(T)``).

The optimal split at ``T`` prices bandwidth with one multiplier ``lambda``:
``x_n = min(x_max,n, h^{-1}(lambda / a_n))``, with ``lambda`` set so that ``sum B_n = B``
(safeguarded Newton on ``log lambda``). The optimal value ``V(T) = w_T T + w_E E(T)`` is convex in
``T`` (partial minimization of a jointly convex problem), and its derivative is available in
closed form by the envelope theorem:

    V'(T) = w_T + w_E sum_n [ -lambda_n B_n / u_n + [clamped] (lambda - lambda_n) dBmin_n/dT ]

with ``lambda_n = a_n h(x_n)``. The best ``T`` on ``[T_min, deadline]`` is the root of ``V'``,
found by a bracketed secant (Illinois) search whose stopping rule certifies
``V(T) - V* <= rtol V(T)`` by convexity. Everything is vectorized over a batch of bit vectors
(rows), which the ``exact`` solver uses to enumerate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sflam_opt.bounds import rounds_needed
from sflam_opt.costs import (
    Reference,
    compute_energy_j,
    fixed_time_s,
    payload_bits,
    reference,
)
from sflam_opt.errors import SolverArgumentError
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.lambertw import h, h_inverse, phi, phi_inverse

__all__ = [
    "ContinuousSolution",
    "RowSolutions",
    "bandwidth_split",
    "solve_continuous",
    "solve_continuous_rows",
]

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
LN2 = float(np.log(2.0))

#: When the latency weight is 0 and there is no deadline, J decreases toward its infimum as
#: T -> inf; the block stops at the first round time whose J is within this factor of it.
ZERO_LATENCY_WEIGHT_RTOL = 1e-6

# Row status codes of the batched solver.
OK = 0
INFEASIBLE_ENERGY = 1  # device energy cap at or below compute + Shannon-limit upload energy
INFEASIBLE_DEADLINE = 2  # fastest round at these bits is later than the deadline
INFEASIBLE_TARGET = 3  # eps unreachable with these bits (K = inf)


@dataclass(frozen=True, eq=False)
class ContinuousSolution:
    """Optimum of J over bandwidth and power for fixed bits.

    Attributes
    ----------
    status : str
        ``"optimal"`` or ``"infeasible"``.
    message : str
        One line; for ``"infeasible"`` it names the binding constraint and the relaxation needed.
    bandwidth_hz, power_w, upload_s : ndarray, shape (N,)
        The optimal split (NaN when infeasible).
    round_latency_s : float
        Round time T, s (NaN when infeasible).
    round_energy_j : float
        Round energy E (all devices, compute + upload), J (NaN when infeasible).
    objective : float
        J at these bits (inf when infeasible).
    min_round_latency_s : float
        Smallest feasible T at these bits (inf when no T works, e.g. an energy cap too low).
    bandwidth_price : float
        Multiplier ``lambda`` of ``sum B_n <= B`` in J per Hz of upload energy (``-de_n/dB_n`` of
        every device not held at a cap), NaN when infeasible.
    """

    status: str
    message: str
    bandwidth_hz: FloatArray
    power_w: FloatArray
    upload_s: FloatArray
    round_latency_s: float
    round_energy_j: float
    objective: float
    min_round_latency_s: float
    bandwidth_price: float = float("nan")

    @property
    def feasible(self) -> bool:
        return self.status == "optimal"


@dataclass(frozen=True, eq=False)
class _Params:
    """Scenario constants used by the block; arrays have shape (N,)."""

    n0: float
    gain: FloatArray
    pmax: FloatArray
    fixed_s: FloatArray
    compute_j: FloatArray
    budget_j: FloatArray | None  # device_energy_j - compute energy (upload budget)
    deadline_s: float | None
    bandwidth_hz: float
    w_t: float
    w_e: float


def _params(scenario: Scenario, ref: Reference) -> _Params:
    cap = scenario.constraints.device_energy_j
    ce = compute_energy_j(scenario)
    return _Params(
        n0=scenario.noise_w_per_hz,
        gain=scenario.gain,
        pmax=scenario.devices.max_power_w.astype(np.float64),
        fixed_s=fixed_time_s(scenario),
        compute_j=ce,
        budget_j=None if cap is None else cap - ce,
        deadline_s=scenario.constraints.round_deadline_s,
        bandwidth_hz=float(scenario.system.bandwidth_hz),
        w_t=float(ref.w_latency) if np.isfinite(ref.rounds) else 0.0,
        w_e=float(ref.w_energy) if np.isfinite(ref.rounds) else 0.0,
    )


# ------------------------------------------------------------------------------------------------
# Per-device building blocks, shapes (M, N) (rows = bit vectors)
# ------------------------------------------------------------------------------------------------


def shannon_energy(prm: _Params, w: FloatArray) -> FloatArray:
    """``S_n = N0 W_n ln2 / g_n``: upload energy with unlimited bandwidth and time, J."""
    return prm.n0 * w * LN2 / prm.gain


def min_upload_s(prm: _Params, w: FloatArray) -> FloatArray:
    """Upload time at full power with unlimited bandwidth, ``N0 W ln2 / (Pmax g)``, s."""
    return prm.n0 * w * LN2 / (prm.pmax * prm.gain)


def energy_cap_x(prm: _Params, w: FloatArray) -> FloatArray:
    """Largest ``x`` the energy cap allows (inf without cap, 0 when no bandwidth suffices)."""
    if prm.budget_j is None:
        return np.full(w.shape, np.inf)
    with np.errstate(divide="ignore"):
        r = prm.budget_j / shannon_energy(prm, w)
    return phi_inverse(r)


def _cap_x(prm: _Params, w: FloatArray, u: FloatArray, x_e: FloatArray):
    """``x_max`` (binding cap) and whether the power cap is the binding one."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r_p = prm.pmax * prm.gain * u / (prm.n0 * w * LN2)
    x_p = phi_inverse(np.where(u > 0, r_p, 0.0))
    power = x_p <= x_e
    return np.minimum(x_p, x_e), power, x_p


def _dlog_bmin_dlogu(x: FloatArray, power: FloatArray) -> FloatArray:
    """``-(u / Bmin) dBmin/du``: 1 for the energy cap, ``1 + (e^x - 1)/h(x)`` for the power cap."""
    with np.errstate(divide="ignore", invalid="ignore"):
        extra = np.where(power, np.expm1(x) / h(x), 0.0)
    return 1.0 + np.where(np.isfinite(extra), extra, 0.0)


def _lower_time(prm: _Params, w: FloatArray) -> FloatArray:
    """Per row, the round time below which some device cannot upload at full power, s."""
    return np.max(prm.fixed_s + min_upload_s(prm, w), axis=-1)


def _min_round_time(prm: _Params, w: FloatArray, x_e: FloatArray, t_lb: FloatArray) -> FloatArray:
    """Smallest T with ``sum Bmin_n(T) <= B`` per row (safeguarded Newton on log(T - t_lb))."""
    m = w.shape[0]
    log_b = np.log(prm.bandwidth_hz)
    scale = np.maximum(t_lb, 1e-3)

    def fval(v: FloatArray) -> tuple[FloatArray, FloatArray]:
        dt = np.exp(v)
        t = t_lb + dt
        u = t[:, None] - prm.fixed_s
        xmax, power, _ = _cap_x(prm, w, u, x_e)
        with np.errstate(divide="ignore"):
            bmin = (w * LN2 / u) / xmax
        tot = bmin.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.log(tot) - log_b
            # d log(sum Bmin)/dv = dt * sum dBmin/dT / sum Bmin
            g = -dt * np.sum(bmin / u * _dlog_bmin_dlogu(xmax, power), axis=1) / tot
        return f, g

    # Bracket: f(v_lo) > 0 (infeasible), f(v_hi) <= 0 (feasible).
    v_hi = np.log(scale)
    f_hi, _ = fval(v_hi)
    for _ in range(200):
        bad = ~(f_hi <= 0)
        if not bad.any():
            break
        v_hi = np.where(bad, v_hi + 2.0, v_hi)
        f_hi, _ = fval(v_hi)
    v_lo = np.log(scale) - 2.0
    f_lo, _ = fval(v_lo)
    for _ in range(200):
        bad = ~(f_lo > 0)
        if not bad.any():
            break
        v_lo = np.where(bad, v_lo - 4.0, v_lo)
        f_lo, _ = fval(v_lo)
    v = v_hi.copy()
    f, g = fval(v)
    active = np.ones(m, dtype=bool)
    for _ in range(200):
        newton = v - f / g
        ok = np.isfinite(newton) & (newton > v_lo) & (newton < v_hi)
        v_new = np.where(ok, newton, 0.5 * (v_lo + v_hi))
        v = np.where(active, v_new, v)
        f, g = fval(v)
        feas = f <= 0
        v_hi = np.where(active & feas, v, v_hi)
        v_lo = np.where(active & ~feas, v, v_lo)
        # Width in T relative to T: 1e-14 is at rounding level.
        width = np.exp(v_hi) - np.exp(v_lo)
        active = active & (width > 1e-14 * (t_lb + np.exp(v_hi))) & (np.abs(f) > 1e-15)
        if not active.any():
            break
    return t_lb + np.exp(v_hi)


@dataclass
class _Split:
    """Optimal split at given round times, for rows; arrays (M, N) or (M,)."""

    t: FloatArray
    u: FloatArray
    x: FloatArray  # spectral variable of the split
    x_free: FloatArray  # h^{-1}(lambda / a), before the caps
    xmax: FloatArray
    power: FloatArray
    log_lam: FloatArray  # (M,)
    energy: FloatArray  # (M,) round energy, J
    value: FloatArray  # (M,) w_T T + w_E E
    slope: FloatArray  # (M,) dV/dT


def _split(
    prm: _Params,
    w: FloatArray,
    x_e: FloatArray,
    t: FloatArray,
    log_lam0: FloatArray | None = None,
    x0: FloatArray | None = None,
) -> _Split:
    """Optimal bandwidth split at round times ``t`` (M,), assuming ``t >= T_min`` per row."""
    u = t[:, None] - prm.fixed_s
    kappa = w * LN2 / u
    log_a = np.log(prm.n0 * u / prm.gain)
    xmax, power, _ = _cap_x(prm, w, u, x_e)
    log_b = np.log(prm.bandwidth_hz)
    # lambda_cap,n = a h(x_max): above it device n sits at its cap.
    with np.errstate(divide="ignore"):
        log_cap = log_a + np.log(h(np.minimum(xmax, 700.0)))
    s_hi = np.max(log_cap, axis=1)
    # Every device alone gets >= B at lambda = min a h(kappa / B): the sum is >= B there.
    s_lo = np.min(log_a + np.log(h(kappa / prm.bandwidth_hz)), axis=1)
    s_lo = np.minimum(s_lo, s_hi)
    if log_lam0 is None:
        # Start from the price at which the median device would get an equal share.
        s = np.median(log_a + np.log(h(kappa * w.shape[1] / prm.bandwidth_hz)), axis=1)
    else:
        s = log_lam0.copy()
    s = np.clip(s, s_lo, s_hi)
    xf = x0
    active = np.ones(t.shape, dtype=bool)
    for _ in range(100):
        y = np.exp(np.minimum(s[:, None] - log_a, 700.0))
        xf = h_inverse(y, xf)
        x = np.minimum(xf, xmax)
        bw = kappa / x
        tot = bw.sum(axis=1)
        f = np.log(tot) - log_b
        free = xf < xmax
        hx = h(x)
        # d log B_n / d log lambda = -h(x) / (x^2 e^x) for free devices
        with np.errstate(divide="ignore", invalid="ignore"):
            dn = np.where(free, hx / (x * x * np.exp(x)), 0.0)
        g = -np.sum(bw * dn, axis=1) / tot
        too_much = f > 0
        s_lo = np.where(active & too_much, s, s_lo)
        s_hi = np.where(active & ~too_much, s, s_hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = s - f / g
        ok = np.isfinite(newton) & (newton > s_lo) & (newton < s_hi)
        s_new = np.where(ok, newton, 0.5 * (s_lo + s_hi))
        active = active & (np.abs(f) > 1e-14) & (s_hi - s_lo > 1e-14 * np.abs(s_hi) + 1e-300)
        if not active.any():
            break
        s = np.where(active, s_new, s)
    # Final consistent state at s.
    y = np.exp(np.minimum(s[:, None] - log_a, 700.0))
    xf = h_inverse(y, xf)
    x = np.minimum(xf, xmax)
    lam = np.exp(s)
    s_n = shannon_energy(prm, w)
    energy = prm.compute_j.sum() + np.sum(s_n * phi(x), axis=1)
    value = prm.w_t * t + prm.w_e * energy
    hx = h(x)
    bw = kappa / x
    lam_n = np.exp(log_a) * hx
    clamped = ~(xf < xmax)
    dbmin = -(bw / u) * _dlog_bmin_dlogu(x, power)
    de_dt = np.sum(-lam_n * bw / u + np.where(clamped, (lam[:, None] - lam_n) * dbmin, 0.0), axis=1)
    slope = prm.w_t + prm.w_e * de_dt
    return _Split(t, u, x, xf, xmax, power, s, energy, value, slope)


def _take(sp: _Split, idx: NDArray[np.int64]) -> _Split:
    return _Split(*(getattr(sp, f)[idx] for f in sp.__dataclass_fields__))


def _put(dst: _Split, idx: NDArray[np.int64], src: _Split) -> None:
    for f in dst.__dataclass_fields__:
        getattr(dst, f)[idx] = getattr(src, f)


@dataclass(frozen=True, eq=False)
class RowSolutions:
    """Batched continuous optima for M bit vectors; arrays have shape (M,) or (M, N).

    ``status`` holds row codes: 0 optimal, 1 energy cap too low, 2 deadline too early,
    3 target unreachable. Infeasible rows have NaN times/energies and ``objective = inf``.
    """

    status: NDArray[np.int64]
    objective: FloatArray
    rounds: FloatArray
    round_latency_s: FloatArray
    round_energy_j: FloatArray
    min_round_latency_s: FloatArray
    log_price: FloatArray
    x: FloatArray
    upload_s: FloatArray
    payload_bits: FloatArray
    capped_at_limit: NDArray[np.bool_]  # T stopped at the zero-latency-weight cap


def _solve_rows(prm: _Params, w: FloatArray, rounds: FloatArray, rtol: float) -> RowSolutions:
    m, n = w.shape
    status = np.zeros(m, dtype=np.int64)
    status[~np.isfinite(rounds)] = INFEASIBLE_TARGET
    x_e = energy_cap_x(prm, w)
    status[(status == OK) & np.any(x_e <= 0, axis=1)] = INFEASIBLE_ENERGY
    t_min = np.full(m, np.inf)
    ok_e = status != INFEASIBLE_ENERGY
    t_lb = _lower_time(prm, w)
    if ok_e.any():
        t_min[ok_e] = _min_round_time(prm, w[ok_e], x_e[ok_e], t_lb[ok_e])
    if prm.deadline_s is not None:
        late = (status == OK) & (t_min > prm.deadline_s)
        status[late] = INFEASIBLE_DEADLINE
    out_t = np.full(m, np.nan)
    out_e = np.full(m, np.nan)
    out_v = np.full(m, np.inf)
    out_s = np.full(m, np.nan)
    out_x = np.full((m, n), np.nan)
    out_u = np.full((m, n), np.nan)
    capped = np.zeros(m, dtype=bool)
    rows = np.flatnonzero(status == OK)
    if rows.size:
        sp, cap_rows = _search_time(prm, w[rows], x_e[rows], t_min[rows], t_lb[rows], rtol)
        out_t[rows] = sp.t
        out_e[rows] = sp.energy
        out_v[rows] = sp.value
        out_s[rows] = sp.log_lam
        out_x[rows] = sp.x
        out_u[rows] = sp.u
        capped[rows] = cap_rows
    with np.errstate(invalid="ignore"):
        obj = np.where(status == OK, rounds * out_v, np.inf)
    return RowSolutions(status, obj, rounds, out_t, out_e, t_min, out_s, out_x, out_u, w, capped)


def _search_time(
    prm: _Params,
    w: FloatArray,
    x_e: FloatArray,
    t_min: FloatArray,
    t_lb: FloatArray,
    rtol: float,
) -> tuple[_Split, NDArray[np.bool_]]:
    """Minimize the convex V(T) on [t_min, deadline] per row (Illinois on V'(T))."""
    m = w.shape[0]
    lo = _split(prm, w, x_e, t_min)
    best = _Split(*(np.copy(getattr(lo, f)) for f in lo.__dataclass_fields__))
    capped = np.zeros(m, dtype=bool)
    # Rows whose optimum is T_min (V increasing from the start) are done.
    todo = np.flatnonzero(lo.slope < 0)
    if todo.size == 0 or prm.w_e == 0.0:
        return best, capped
    # Upper end: the deadline, or expand until V' > 0 (or, with w_T = 0, until V is within
    # ZERO_LATENCY_WEIGHT_RTOL of its infimum).
    wl, xl, lb = w[todo], x_e[todo], t_lb[todo]
    tl = t_min[todo]
    if prm.deadline_s is not None:
        t_hi = np.full(todo.size, prm.deadline_s)
        hi = _split(prm, wl, xl, t_hi, lo.log_lam[todo], lo.x_free[todo])
    else:
        v_inf = prm.w_e * (prm.compute_j.sum() + shannon_energy(prm, wl).sum(axis=1))
        t_hi = lb + 4.0 * (tl - lb)
        hi = _split(prm, wl, xl, t_hi, lo.log_lam[todo], lo.x_free[todo])
        for _ in range(200):
            if prm.w_t > 0:
                more = hi.slope <= 0
            else:
                more = hi.value > (1.0 + ZERO_LATENCY_WEIGHT_RTOL) * v_inf
            if not more.any():
                break
            idx = np.flatnonzero(more)
            t_new = lb[idx] + 4.0 * (hi.t[idx] - lb[idx])
            sub = _split(prm, wl[idx], xl[idx], t_new, hi.log_lam[idx], hi.x_free[idx])
            _put(hi, idx, sub)
        if prm.w_t == 0:
            capped[todo] = True
    # Rows where V is still decreasing at the upper end stop there.
    at_hi = hi.slope <= 0
    if at_hi.any():
        _put(best, todo[at_hi], _take(hi, np.flatnonzero(at_hi)))
    inner = np.flatnonzero(~at_hi)
    if inner.size == 0:
        return best, capped
    rows = todo[inner]
    a = _take(lo, rows)
    b = _take(hi, inner)
    wr, xr = w[rows], x_e[rows]
    fa, fb = a.slope.copy(), b.slope.copy()
    side = np.zeros(rows.size, dtype=np.int64)
    cur = a
    active = np.ones(rows.size, dtype=bool)
    for _ in range(200):
        ia = np.flatnonzero(active)
        if ia.size == 0:
            break
        ta, tb = a.t[ia], b.t[ia]
        # Regula falsi with the Illinois down-weighting of a stale end.
        t_new = tb - fb[ia] * (tb - ta) / (fb[ia] - fa[ia])
        width = tb - ta
        bad = ~np.isfinite(t_new) | (t_new <= ta + 1e-9 * width) | (t_new >= tb - 1e-9 * width)
        t_new = np.where(bad, 0.5 * (ta + tb), t_new)
        c = _split(prm, wr[ia], xr[ia], t_new, cur.log_lam[ia], cur.x_free[ia])
        neg = c.slope < 0
        ineg, ipos = ia[neg], ia[~neg]
        _put(a, ineg, _take(c, np.flatnonzero(neg)))
        _put(b, ipos, _take(c, np.flatnonzero(~neg)))
        fa[ineg] = c.slope[neg]
        fb[ipos] = c.slope[~neg]
        # Illinois: halve the slope kept at the end that was not replaced twice in a row.
        fb[ineg[side[ineg] == -1]] *= 0.5
        fa[ipos[side[ipos] == 1]] *= 0.5
        side[ineg] = -1
        side[ipos] = 1
        cur = _Split(*(np.copy(getattr(a, f)) for f in a.__dataclass_fields__))
        _put(cur, ia, c)
        # Certified gap by convexity: V(end) - V* <= |V'(end)| (tb - ta).
        width = b.t[ia] - a.t[ia]
        gap_a = -a.slope[ia] * width
        gap_b = b.slope[ia] * width
        vmin = np.minimum(a.value[ia], b.value[ia])
        done = (np.minimum(gap_a, gap_b) <= rtol * vmin) | (width <= 1e-15 * b.t[ia])
        active[ia[done]] = False
    use_b = b.value < a.value
    pick = _take(a, np.arange(rows.size))
    _put(pick, np.flatnonzero(use_b), _take(b, np.flatnonzero(use_b)))
    _put(best, rows, pick)
    return best, capped


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------


def _check_bits(scenario: Scenario, bits: ArrayLike, *, rows: bool) -> NDArray[np.int64]:
    b = np.asarray(bits)
    n = scenario.n_devices
    want = "(M, N)" if rows else "(N,)"
    if (rows and (b.ndim != 2 or b.shape[1] != n)) or (not rows and b.shape != (n,)):
        raise SolverArgumentError(
            f"bits: expected shape {want} with N = {n} devices, got shape {b.shape}"
        )
    if b.size and (not np.all(np.isfinite(b)) or np.any(b < 1) or np.any(b != np.round(b))):
        raise SolverArgumentError("bits: need whole numbers >= 1 (the quantizer's bit widths)")
    return b.astype(np.int64)


def solve_continuous_rows(
    scenario: Scenario,
    bits: ArrayLike,
    *,
    ref: Reference | None = None,
    rtol: float = 1e-10,
) -> RowSolutions:
    """Exact continuous optimum for each of M bit vectors at once.

    Parameters
    ----------
    scenario : Scenario
    bits : array_like of int, shape (M, N)
        One bit vector per row.
    ref : Reference, optional
        ``costs.reference(scenario)``, computed when omitted.
    rtol : float
        Certified relative optimality gap of each row's J.

    Returns
    -------
    RowSolutions
        Objective J (M,) (inf for infeasible rows), round time/energy, status codes, and the
        spectral variables from which :func:`row_allocation` rebuilds the split.
    """
    b = _check_bits(scenario, bits, rows=True)
    ref = ref if ref is not None else reference(scenario)
    prm = _params(scenario, ref)
    w = payload_bits(scenario, b)
    k = np.asarray(rounds_needed(scenario, b), dtype=np.float64).reshape(b.shape[0])
    return _solve_rows(prm, w, k, float(rtol))


def row_allocation(
    scenario: Scenario, sol: RowSolutions, row: int
) -> tuple[FloatArray, FloatArray]:
    """Bandwidth (Hz) and power (W), shape (N,), of row ``row`` of a batched solve."""
    n0, g = scenario.noise_w_per_hz, scenario.gain
    x, u, w = sol.x[row], sol.upload_s[row], sol.payload_bits[row]
    kappa = w * LN2 / u
    bw = kappa / x
    pw = n0 * bw * np.expm1(x) / g
    # Rounding can leave p a hair above a power cap hit exactly; clip to the cap.
    return bw, np.minimum(pw, scenario.devices.max_power_w)


def solve_continuous(
    scenario: Scenario,
    bits: ArrayLike,
    *,
    ref: Reference | None = None,
    rtol: float = 1e-10,
) -> ContinuousSolution:
    """Exact optimum of J over bandwidth and power for fixed bits (formulation §6).

    Honours the power caps, ``[constraints] round_deadline_s`` and ``device_energy_j``.

    Parameters
    ----------
    scenario : Scenario
    bits : array_like of int, shape (N,)
        Bits per device (any whole numbers >= 1; the solvers pass members of the allowed set).
    ref : Reference, optional
        ``costs.reference(scenario)`` (the normalization of J), computed when omitted.
    rtol : float
        Certified relative optimality gap of J (convexity bound on the 1-D round-time search).

    Returns
    -------
    ContinuousSolution
        Status ``"optimal"`` with the split, or ``"infeasible"`` with a message naming the
        binding constraint and the relaxation that makes these bits feasible.
    """
    b = _check_bits(scenario, bits, rows=False)
    if not (isinstance(rtol, int | float) and 0 < rtol < 1):
        raise SolverArgumentError(f"rtol={rtol!r}: need a number in (0, 1), e.g. 1e-10")
    ref = ref if ref is not None else reference(scenario)
    sol = solve_continuous_rows(scenario, b[None, :], ref=ref, rtol=rtol)
    n = scenario.n_devices
    nan = np.full(n, np.nan)
    code = int(sol.status[0])
    t_min = float(sol.min_round_latency_s[0])
    if code != OK:
        msg = infeasibility_message(scenario, b, code, t_min)
        return ContinuousSolution("infeasible", msg, nan, nan, nan, np.nan, np.nan, np.inf, t_min)
    bw, pw = row_allocation(scenario, sol, 0)
    msg = "optimal bandwidth and power for fixed bits (exact continuous block)"
    if sol.capped_at_limit[0]:
        msg += (
            f"; latency weight 0 and no deadline: J falls toward its infimum as T grows, "
            f"stopped where J is within {ZERO_LATENCY_WEIGHT_RTOL:g} of it"
        )
    return ContinuousSolution(
        "optimal",
        msg,
        bw,
        pw,
        sol.upload_s[0].copy(),
        float(sol.round_latency_s[0]),
        float(sol.round_energy_j[0]),
        float(sol.objective[0]),
        t_min,
        float(np.exp(sol.log_price[0])),
    )


def infeasibility_message(
    scenario: Scenario, bits: NDArray[np.int64], code: int, t_min: float
) -> str:
    """One-line explanation for a row status code at fixed ``bits``."""
    if code == INFEASIBLE_TARGET:
        from sflam_opt.bounds import margin

        return (
            f"convergence: epsilon = {scenario.convergence.epsilon:g} is not above "
            f"phi0 + Phi_q(bits) = {scenario.convergence.epsilon - margin(scenario, bits):.6g} "
            "at these bits; use more bits"
        )
    if code == INFEASIBLE_ENERGY:
        prm = _params(scenario, reference(scenario))
        need = prm.compute_j + shannon_energy(prm, payload_bits(scenario, bits))
        return (
            f"energy: device_energy_j = {scenario.constraints.device_energy_j:g} J is not above "
            f"compute + Shannon-limit upload energy {need.max():.6g} J of device "
            f"{scenario.devices.ids[int(np.argmax(need))]!r} at these bits; raise it above "
            f"{need.max():.6g} J"
        )
    if code == INFEASIBLE_DEADLINE:
        return (
            f"deadline: round_deadline_s = {scenario.constraints.round_deadline_s:g} s is below "
            f"the fastest possible round {t_min:.6g} s at these bits; raise it to at least "
            f"{t_min:.6g} s"
        )
    raise ValueError(f"unknown status code {code}")


def bandwidth_split(
    scenario: Scenario,
    bits: ArrayLike,
    round_latency_s: float,
    *,
    ref: Reference | None = None,
) -> tuple[FloatArray, FloatArray, float]:
    """Energy-optimal bandwidth and power at a given round time T for fixed bits.

    Every device uploads for its whole slot ``T - c_n``; bandwidth is priced by one multiplier.

    Parameters
    ----------
    scenario : Scenario
    bits : array_like of int, shape (N,)
    round_latency_s : float
        Round time T in s; must be at least the smallest feasible round time at these bits.
    ref : Reference, optional
        Unused except for consistency with :func:`solve_continuous` (weights do not matter at a
        fixed T).

    Returns
    -------
    bandwidth_hz : ndarray, shape (N,)
    power_w : ndarray, shape (N,)
    energy_j : float
        Round energy E (compute + upload, all devices), J.

    Raises
    ------
    SolverArgumentError
        If T is below the fastest feasible round at these bits, or the energy cap cannot be met.
    """
    b = _check_bits(scenario, bits, rows=False)
    t = float(round_latency_s)
    if not np.isfinite(t) or t <= 0:
        raise SolverArgumentError(f"round_latency_s={round_latency_s!r}: need a positive number")
    ref = ref if ref is not None else reference(scenario)
    prm = _params(scenario, ref)
    w = payload_bits(scenario, b)[None, :]
    x_e = energy_cap_x(prm, w)
    if np.any(x_e <= 0):
        raise SolverArgumentError(
            "bits: " + infeasibility_message(scenario, b, INFEASIBLE_ENERGY, np.inf)
        )
    t_lb = _lower_time(prm, w)
    t_min = float(_min_round_time(prm, w, x_e, t_lb)[0])
    if t < t_min:
        raise SolverArgumentError(
            f"round_latency_s={t:.9g}: below the fastest feasible round {t_min:.9g} s at these "
            "bits; pass at least that"
        )
    sp = _split(prm, w, x_e, np.array([t]))
    x, u = sp.x[0], sp.u[0]
    bw = w[0] * LN2 / u / x
    pw = np.minimum(prm.n0 * bw * np.expm1(x) / prm.gain, prm.pmax)
    return bw, pw, float(sp.energy[0])

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

with ``lambda_n = a_n h(x_n)``. The best ``T`` on ``[T_min, deadline]`` is the root of ``V'``.
It is found by one Newton iteration on the split and ``T`` together (``V''`` by implicit
differentiation of the split, O(N) per step), with a bracketed secant (Illinois) search over
converged splits as the fallback; both stop on a convexity certificate
``V(T) - V* <= rtol V(T)``. Everything is vectorized over a batch of bit vectors (rows), which
the ``exact`` solver uses to enumerate.
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
from sflam_opt.solvers.lambertw import h, h_from_expm1, h_inverse, phi_inverse

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
# Per-device building blocks. Rows are bit vectors: arrays (M, N); per-row scalars (M,).
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Rows:
    """Constants of a batch of bit vectors that do not depend on the round time."""

    w: FloatArray  # payload bits W (M, N)
    shannon: FloatArray  # Shannon-limit upload energy S = N0 W ln2 / g, J (M, N)
    pmax_over_s: FloatArray  # r_p = Pmax u / S: the power cap's ratio per second of upload
    r_e: FloatArray  # energy cap ratio budget / S (inf without a cap)
    x_e: FloatArray  # phi^{-1}(r_e): largest x the energy cap allows (inf without a cap)
    t_lb: FloatArray  # (M,) round time at which some device's full-power rate is just enough

    def take(self, idx: NDArray[np.int64]) -> _Rows:
        return _Rows(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


def shannon_energy(prm: _Params, w: FloatArray) -> FloatArray:
    """``S_n = N0 W_n ln2 / g_n``: upload energy with unlimited bandwidth and time, J."""
    return prm.n0 * w * LN2 / prm.gain


def _rows(prm: _Params, w: FloatArray) -> _Rows:
    s = shannon_energy(prm, w)
    if prm.budget_j is None:
        r_e = x_e = np.full(w.shape, np.inf)
    else:
        r_e = prm.budget_j / s
        x_e = phi_inverse(r_e)
    # Full power, unlimited bandwidth: rate Pmax g / (N0 ln2), so u >= S / Pmax.
    t_lb = np.max(prm.fixed_s + s / prm.pmax, axis=-1)
    return _Rows(w, s, prm.pmax / s, r_e, x_e, t_lb)


def _dlog_bmin_dlogu(x: FloatArray, em1: FloatArray, hx: FloatArray, power: FloatArray):
    """``-(u / Bmin) dBmin/du``: 1 for the energy cap, ``1 + (e^x - 1)/h(x)`` for the power cap."""
    with np.errstate(divide="ignore", invalid="ignore"):
        extra = np.where(power, em1 / hx, 0.0)
    return 1.0 + np.where(np.isfinite(extra), extra, 0.0)


def _min_round_time(prm: _Params, rw: _Rows, t0: FloatArray | None = None) -> FloatArray:
    """Smallest T with ``sum Bmin_n(T) <= B`` per row.

    ``Bmin_n(T) = W_n ln2 / (u_n x_max,n)`` falls with T and is infinite at ``t_lb``. Newton on
    ``F(v) = log sum Bmin - log B`` over ``v = log(T - t_lb)`` (F is close to linear, slope
    -1, for large T), from ``t0`` if given, with steps capped and a bracket kept for bisection.
    """
    m = rw.w.shape[0]
    log_b = np.log(prm.bandwidth_hz)
    t_lb = rw.t_lb
    xw: FloatArray | None = None

    def fval(v: FloatArray) -> tuple[FloatArray, FloatArray]:
        nonlocal xw
        dt = np.exp(v)
        u = (t_lb + dt)[:, None] - prm.fixed_s
        r_p = rw.pmax_over_s * np.maximum(u, 0.0)
        power = r_p <= rw.r_e
        xmax = phi_inverse(np.minimum(r_p, rw.r_e), xw)
        xw = xmax
        with np.errstate(divide="ignore", invalid="ignore"):
            bmin = rw.w * LN2 / (u * xmax)
            tot = bmin.sum(axis=1)
            f = np.log(tot) - log_b
            em1 = np.expm1(xmax)
            d = _dlog_bmin_dlogu(xmax, em1, h_from_expm1(xmax, em1), power)
            # d log(sum Bmin)/dv = -dt sum (Bmin/u) d / sum Bmin
            g = -dt * np.sum(bmin / u * d, axis=1) / tot
        return f, g

    if t0 is None:
        v = np.log(np.maximum(t_lb, 1e-6))
    else:
        v = np.log(np.maximum(np.where(np.isfinite(t0), t0, 2 * t_lb) - t_lb, 1e-9 * t_lb))
    v_lo = np.full(m, -np.inf)  # F > 0 (infeasible) left of here
    v_hi = np.full(m, np.inf)  # F <= 0 (feasible) right of here
    active = np.ones(m, dtype=bool)
    for _ in range(300):
        f, g = fval(v)
        feas = f <= 0
        v_hi = np.where(active & feas, v, v_hi)
        v_lo = np.where(active & ~feas, v, v_lo)
        width = np.exp(v_hi) - np.exp(v_lo)
        # 1e-14 of T is rounding level; |F| <= 1e-15: sum Bmin equals B to rounding.
        closed = np.isfinite(v_hi) & (width <= 1e-14 * (t_lb + np.exp(v_hi)))
        active &= ~closed & ~(feas & (np.abs(f) <= 1e-15))
        if not active.any():
            break
        with np.errstate(invalid="ignore", divide="ignore"):
            step = -f / g
        step = np.where(np.isfinite(step), np.clip(step, -4.0, 4.0), np.where(feas, -4.0, 4.0))
        newton = v + step
        inside = (newton > v_lo) & (newton < v_hi)
        both = np.isfinite(v_lo) & np.isfinite(v_hi)
        v_new = np.where(inside | ~both, newton, 0.5 * (v_lo + v_hi))
        v = np.where(active, v_new, v)
    return t_lb + np.exp(v_hi)


@dataclass
class _Split:
    """Optimal split at given round times, for rows; arrays (M, N) or (M,)."""

    t: FloatArray
    u: FloatArray
    x: FloatArray  # spectral variable of the split
    x_free: FloatArray  # h^{-1}(lambda / a): the device's x if it were not held at a cap
    log_lam: FloatArray  # (M,) log of the bandwidth price lambda, J/Hz
    energy: FloatArray  # (M,) round energy, J
    value: FloatArray  # (M,) w_T T + w_E E
    slope: FloatArray  # (M,) dV/dT


def _take(sp: _Split, idx: NDArray[np.int64]) -> _Split:
    return _Split(*(getattr(sp, f)[idx] for f in sp.__dataclass_fields__))


def _put(dst: _Split, idx: NDArray[np.int64], src: _Split) -> None:
    for f in dst.__dataclass_fields__:
        getattr(dst, f)[idx] = getattr(src, f)


def _copy(sp: _Split) -> _Split:
    return _Split(*(np.copy(getattr(sp, f)) for f in sp.__dataclass_fields__))


# Newton tolerances of the split: log-residuals at rounding level (the iteration is quadratic).
_SPLIT_TOL = 1e-12
_SPLIT_MAX_NEWTON = 40


def _split(
    prm: _Params,
    rw: _Rows,
    t: FloatArray,
    log_lam0: FloatArray | None = None,
    x0: FloatArray | None = None,
) -> _Split:
    """Optimal bandwidth split at round times ``t`` (M,), assuming ``t >= T_min`` per row.

    Joint Newton on ``(log lambda, log x_n)`` for ``log h(x_n) = log lambda - log a_n`` and
    ``sum W_n ln2 / (u_n x_n) = B`` (arrow-shaped Jacobian, solved in O(N)), with devices whose
    free ``x`` would break a cap held at ``x_max``. Rows that do not converge (clamping can
    cycle) are redone by the bracketed method :func:`_split_bracketed`.
    """
    m, n = rw.w.shape
    u = t[:, None] - prm.fixed_s
    kappa = rw.w * LN2 / u
    log_a = np.log(prm.n0 / prm.gain * u)
    r_p = rw.pmax_over_s * u
    r = np.minimum(r_p, rw.r_e)
    log_b = np.log(prm.bandwidth_hz)
    if log_lam0 is None or x0 is None:
        xf = kappa * (n / prm.bandwidth_hz)
        s = np.median(log_a + np.log(h(xf)), axis=1)
    else:
        xf = np.array(x0, dtype=np.float64)
        s = np.array(log_lam0, dtype=np.float64)
    x = xf
    xcap = None
    done = np.zeros(m, dtype=bool)
    for _ in range(_SPLIT_MAX_NEWTON):
        em1 = np.expm1(xf)
        with np.errstate(invalid="ignore", divide="ignore"):
            clamped = em1 > r * xf  # phi(x_free) > r: the cap binds
        x = xf
        if clamped.any():
            # r is fixed within a call: each device's cap x is computed once.
            if xcap is None:
                xcap = np.full((m, n), np.nan)
            new = clamped & np.isnan(xcap)
            if new.any():
                xcap[new] = phi_inverse(r[new], xf[new])
            x = np.where(clamped, xcap, xf)
        hf = h_from_expm1(xf, em1)
        res = np.log(hf) + log_a - s[:, None]
        d = xf * xf / (hf / (em1 + 1.0))  # d log h / d log x (no overflow up to x = 700)
        bw = kappa / x
        tot = bw.sum(axis=1)
        f = np.log(tot) - log_b
        wt = np.where(clamped, 0.0, bw / (tot[:, None] * d))
        den = wt.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ds = (f + np.sum(wt * res, axis=1)) / den
        done = (np.max(np.abs(res), axis=1) <= _SPLIT_TOL) & (np.abs(f) <= _SPLIT_TOL)
        if done.all():
            break
        ds = np.clip(np.where(np.isfinite(ds), ds, 0.0), -4.0, 4.0)
        dt = np.clip((ds[:, None] - res) / d, -4.0, 4.0)
        xf = xf * np.exp(dt)
        s = s + ds
    bad = ~done | ~np.isfinite(s)
    if bad.any():
        idx = np.flatnonzero(bad)
        logger.debug("split: %d of %d rows fall back to the bracketed method", idx.size, m)
        xf_b, s_b = _split_bracketed(prm, rw.take(idx), t[idx])
        xf = xf.copy()
        xf[idx] = xf_b
        s = s.copy()
        s[idx] = s_b
        em1 = np.expm1(xf)
        with np.errstate(invalid="ignore"):
            clamped = em1 > r * xf
        x = xf.copy()
        if clamped.any():
            x[clamped] = phi_inverse(r[clamped])
    return _finish(prm, rw, t, u, kappa, log_a, r_p, xf, x, s)


def _finish(prm, rw, t, u, kappa, log_a, r_p, xf, x, s) -> _Split:
    """Energy, value and the envelope-theorem slope dV/dT of a converged split."""
    em1 = np.expm1(x)
    hx = h_from_expm1(x, em1)
    with np.errstate(invalid="ignore"):
        phx = np.where(x > 0, em1 / x, 1.0)
    energy = prm.compute_j.sum() + np.sum(rw.shannon * phx, axis=1)
    value = prm.w_t * t + prm.w_e * energy
    bw = kappa / x
    lam = np.exp(s)
    lam_n = np.exp(log_a) * hx
    clamped = x < xf
    power = r_p <= rw.r_e
    dbmin = -(bw / u) * _dlog_bmin_dlogu(x, em1, hx, power)
    de_dt = np.sum(-lam_n * bw / u + np.where(clamped, (lam[:, None] - lam_n) * dbmin, 0.0), axis=1)
    slope = prm.w_t + prm.w_e * de_dt
    return _Split(t, u, x, xf, s, energy, value, slope)


def _split_bracketed(prm: _Params, rw: _Rows, t: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Robust split: safeguarded Newton on log lambda with exact ``x_n(lambda)``; (x_free, s)."""
    u = t[:, None] - prm.fixed_s
    kappa = rw.w * LN2 / u
    log_a = np.log(prm.n0 / prm.gain * u)
    xmax = phi_inverse(np.minimum(rw.pmax_over_s * u, rw.r_e))
    log_b = np.log(prm.bandwidth_hz)
    # Above lambda_cap,n = a h(x_max) device n sits at its cap; at the largest one all do and
    # the sum is sum Bmin <= B. At min a h(kappa / B) every device alone gets >= B.
    with np.errstate(divide="ignore"):
        s_hi = np.max(log_a + np.log(h(np.minimum(xmax, 700.0))), axis=1)
        s_lo = np.minimum(np.min(log_a + np.log(h(kappa / prm.bandwidth_hz)), axis=1), s_hi)
    s = 0.5 * (s_lo + s_hi)
    xf = None
    active = np.ones(t.shape, dtype=bool)
    for _ in range(300):
        xf = h_inverse(np.exp(np.minimum(s[:, None] - log_a, 700.0)), xf)
        x = np.minimum(xf, xmax)
        bw = kappa / x
        tot = bw.sum(axis=1)
        f = np.log(tot) - log_b
        em1 = np.expm1(x)
        hx = h_from_expm1(x, em1)
        with np.errstate(divide="ignore", invalid="ignore"):
            dn = np.where(xf < xmax, hx / (x * x * (em1 + 1.0)), 0.0)
        g = -np.sum(bw * dn, axis=1) / tot
        too_much = f > 0
        s_lo = np.where(active & too_much, s, s_lo)
        s_hi = np.where(active & ~too_much, s, s_hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = s - f / g
        ok = np.isfinite(newton) & (newton > s_lo) & (newton < s_hi)
        s_new = np.where(ok, newton, 0.5 * (s_lo + s_hi))
        active &= (np.abs(f) > _SPLIT_TOL) & (s_hi - s_lo > 1e-15 * np.abs(s_hi) + 1e-300)
        if not active.any():
            break
        s = np.where(active, s_new, s)
    xf = h_inverse(np.exp(np.minimum(s[:, None] - log_a, 700.0)), xf)
    return xf, s


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
    x_free: FloatArray
    upload_s: FloatArray
    payload_bits: FloatArray
    capped_at_limit: NDArray[np.bool_]  # T stopped at the zero-latency-weight cap
    slope: FloatArray  # dV/dT (right derivative) at the returned round time, V = w_T T + w_E E


def _solve_rows(
    prm: _Params,
    w: FloatArray,
    rounds: FloatArray,
    rtol: float,
    warm: tuple[FloatArray, FloatArray, FloatArray] | None = None,
    *,
    lazy_t_min: bool = False,
) -> RowSolutions:
    """Continuous optimum per row of payloads ``w`` (M, N) with rounds ``K`` (M,).

    ``warm = (T, log lambda, x_free)`` of nearby solutions starts the round-time search there.
    With ``lazy_t_min`` (and no deadline) the fastest round ``T_min`` is only computed for rows
    whose optimum the joint search does not certify without it; the others report
    ``min_round_latency_s = NaN`` (their optimum lies strictly above ``T_min``).
    """
    m, n = w.shape
    status = np.zeros(m, dtype=np.int64)
    status[~np.isfinite(rounds)] = INFEASIBLE_TARGET
    rw = _rows(prm, w)
    status[(status == OK) & np.any(rw.x_e <= 0, axis=1)] = INFEASIBLE_ENERGY
    t_min = np.full(m, np.inf)
    ok_e = np.flatnonzero(status != INFEASIBLE_ENERGY)
    lazy = lazy_t_min and prm.deadline_s is None
    if ok_e.size:
        if lazy:
            t_min[ok_e] = np.nan
        else:
            t0 = None if warm is None else warm[0][ok_e]
            t_min[ok_e] = _min_round_time(prm, rw.take(ok_e), t0)
    if prm.deadline_s is not None:
        status[(status == OK) & (t_min > prm.deadline_s)] = INFEASIBLE_DEADLINE
    if not status.any():  # every row feasible: no gathering and scattering
        sp, capped, t_min = _search_time(prm, rw, t_min, rtol, warm)
        return RowSolutions(
            status,
            rounds * sp.value,
            rounds,
            sp.t,
            sp.energy,
            t_min,
            sp.log_lam,
            sp.x,
            sp.x_free,
            sp.u,
            w,
            capped,
            sp.slope,
        )
    out_t = np.full(m, np.nan)
    out_e = np.full(m, np.nan)
    out_v = np.full(m, np.inf)
    out_s = np.full(m, np.nan)
    out_x = np.full((m, n), np.nan)
    out_xf = np.full((m, n), np.nan)
    out_u = np.full((m, n), np.nan)
    capped = np.zeros(m, dtype=bool)
    out_slope = np.full(m, np.nan)
    rows = np.flatnonzero(status == OK)
    if rows.size:
        wr = None if warm is None else tuple(a[rows] for a in warm)
        sp, cap_rows, t_min[rows] = _search_time(prm, rw.take(rows), t_min[rows], rtol, wr)
        out_t[rows] = sp.t
        out_e[rows] = sp.energy
        out_v[rows] = sp.value
        out_s[rows] = sp.log_lam
        out_x[rows] = sp.x
        out_xf[rows] = sp.x_free
        out_u[rows] = sp.u
        capped[rows] = cap_rows
        out_slope[rows] = sp.slope
    with np.errstate(invalid="ignore"):
        obj = np.where(status == OK, rounds * out_v, np.inf)
    return RowSolutions(
        status, obj, rounds, out_t, out_e, t_min, out_s, out_x, out_xf, out_u, w, capped, out_slope
    )


#: Newton iterations of the joint round-time search before a row is handed to the bracketed one.
_JOINT_MAX_ITER = 40


def _search_time(
    prm: _Params,
    rw: _Rows,
    t_min: FloatArray,
    rtol: float,
    warm: tuple[FloatArray, FloatArray, FloatArray] | None = None,
) -> tuple[_Split, NDArray[np.bool_], FloatArray]:
    """Minimize the convex ``V(T)`` on ``[t_min, deadline]`` per row.

    Joint Newton (:func:`_joint_search`) on the split and the round time together; rows it
    cannot certify to ``rtol`` (and the degenerate weights ``w_T = 0`` or ``w_E = 0``) are
    solved by the nested bracketed search :func:`_search_time_bracketed`. ``t_min`` may be NaN
    (not computed, warm-started rows without a deadline): the joint search needs no lower end
    when the optimum is interior, and ``T_min`` is computed for the rows it fails on.

    Returns
    -------
    (split, capped, t_min)
        The optimal split per row, the rows stopped at the zero-latency-weight cap, and
        ``t_min`` with the values computed here filled in.
    """
    t_min = np.array(t_min, dtype=np.float64)
    unknown = np.isnan(t_min)
    if prm.w_e == 0.0 or prm.w_t == 0.0:
        if unknown.any():
            t_min[unknown] = _min_round_time(prm, rw.take(np.flatnonzero(unknown)))
        sp, capped = _search_time_bracketed(prm, rw, t_min, rtol, warm)
        return sp, capped, t_min
    m = rw.w.shape[0]
    with np.errstate(all="ignore"):
        sp, ok = _joint_search(prm, rw, t_min, rtol, warm)
    if not ok.all() and (unknown & ~ok).any():
        # Without T_min the search cannot stop at it: compute it and search those rows again.
        idx = np.flatnonzero(unknown & ~ok)
        wr = None if warm is None else tuple(a[idx] for a in warm)
        t_min[idx] = _min_round_time(prm, rw.take(idx), None if wr is None else wr[0])
        with np.errstate(all="ignore"):
            sp_j, ok_j = _joint_search(prm, rw.take(idx), t_min[idx], rtol, wr)
        _put(sp, idx, sp_j)
        ok[idx] = ok_j
    if not ok.all():
        idx = np.flatnonzero(~ok)
        logger.debug("time search: %d of %d rows fall back to the bracketed search", idx.size, m)
        wr = None if warm is None else tuple(a[idx] for a in warm)
        sp_b, _ = _search_time_bracketed(prm, rw.take(idx), t_min[idx], rtol, wr)
        _put(sp, idx, sp_b)
    return sp, np.zeros(m, dtype=bool), t_min


def _joint_search(
    prm: _Params,
    rw: _Rows,
    t_min: FloatArray,
    rtol: float,
    warm: tuple[FloatArray, FloatArray, FloatArray] | None,
) -> tuple[_Split, NDArray[np.bool_]]:
    """Round time, price and split at once: Newton on the whole optimality system per row.

    Unknowns ``v = log(T - t_lb)``, ``s = log lambda`` and ``y_n = log x_free,n``; equations
    ``log h(x_free,n) + log a_n(T) = s`` (every device), ``log sum B_n = log B`` (capped devices
    at ``Bmin_n(T)``) and ``G = log(-w_E E'(T)) - log w_T = 0`` with ``E'`` from the envelope
    theorem (as in :func:`_finish`). Eliminating the ``y_n`` leaves a 2 x 2 system per row, so
    a step costs O(N), and one Newton loop replaces the nested split-in-time search (whose every
    round time needed its own converged split); ``G`` is close to linear in ``v``. A step that
    leaves ``[T_min, deadline]`` first tests that end (is ``V'`` there of the sign that makes it
    optimal?) and is otherwise halved toward it. ``T_min`` may be NaN (unknown): no lower-end
    tests, and a converged row is still optimal (``log sum B_n = log B`` holds only at
    ``T >= T_min``); a row whose optimum is ``T_min`` then either fails to converge or
    converges with every device capped, and is handed back (not ``ok``).

    The result is certified by convexity from its own slope: with ``V'(T) >= 0`` the optimum
    lies in ``[T_min, T]`` (``T_min >= t_lb``), so ``V(T) - V* <= V'(T) (T - T_min)``; with
    ``V'(T) < 0`` it lies right of ``T``, where ``V >= w_T T + w_E E_inf`` also bounds it.

    Returns
    -------
    (split, ok)
        Splits per row and the mask of rows certified to ``V(T) - V* <= rtol V(T)`` (the
        others are not usable).
    """
    m, n = rw.w.shape
    t_lb = rw.t_lb
    deadline = prm.deadline_s
    t_max = np.full(m, np.inf if deadline is None else deadline)
    log_n0g = np.log(prm.n0 / prm.gain)
    wl2 = rw.w * LN2
    log_b = np.log(prm.bandwidth_hz)
    log_ratio = np.log(prm.w_t / prm.w_e)
    energy_cap = prm.budget_j is not None
    g_tol = 0.25 * rtol
    ends: list[tuple[NDArray[np.int64], _Split]] = []  # rows whose optimum is an interval end
    stop = np.zeros(m, dtype=bool)  # rows finished at an interval end, or failed
    failed = np.zeros(m, dtype=bool)
    lo_ok = np.zeros(m, dtype=bool)  # optimum known to lie above T_min
    hi_ok = np.zeros(m, dtype=bool)  # optimum known to lie below the deadline

    if warm is None:
        t = t_min.copy()
        s = np.full(m, np.nan)
        y = np.full((m, n), np.nan)
        cold = np.isnan(t_min)
        if cold.any():
            # T_min unknown: start from an equal split at full power, which is feasible
            # for the power caps (its round time is at least T_min unless an energy cap binds).
            idx = np.flatnonzero(cold)
            share = prm.bandwidth_hz / n
            rate = share * np.log2(1.0 + prm.pmax * prm.gain / (prm.n0 * share))
            t[idx] = np.max(prm.fixed_s + rw.w[idx] / rate, axis=1)
            u = t[idx, None] - prm.fixed_s
            x0 = rw.w[idx] * LN2 / (u * share)
            y[idx] = np.log(x0)
            s[idx] = np.median(np.log(prm.n0 / prm.gain * u) + np.log(h(x0)), axis=1)
    else:
        t = np.minimum(np.fmax(warm[0], t_min), t_max)  # fmax: T_min may be unknown (NaN)
        t = np.where(np.isfinite(t), t, t_min)
        s = np.array(warm[1], dtype=np.float64)
        y = np.log(warm[2])
    at_lo = t <= t_min * (1.0 + 1e-12)
    if at_lo.any():
        # Start at T_min: optimal there if V rises; else step up as far as V' suggests.
        idx = np.flatnonzero(at_lo)
        sp = _split_at_min(prm, rw.take(idx), t_min[idx])
        end = (sp.slope >= 0) | (t_min[idx] >= t_max[idx])
        if end.any():
            ends.append((idx[end], _take(sp, np.flatnonzero(end))))
            stop[idx[end]] = True
        k = np.flatnonzero(~end)
        idx = idx[k]
        g0 = np.log(prm.w_t - sp.slope[k]) - np.log(prm.w_t)
        v0 = np.log(t_min[idx] - t_lb[idx]) + np.clip(0.5 * g0, 0.01, 3.0)
        t[idx] = np.minimum(t_lb[idx] + np.exp(v0), t_max[idx])
        s[idx] = sp.log_lam[k]
        y[idx] = np.log(sp.x_free[k])
        lo_ok[idx] = True
    v = np.log(t - t_lb)
    v_lo = np.log(t_min - t_lb)  # NaN where T_min is unknown
    check_lo = bool(np.isfinite(v_lo).any())
    v_hi = np.log(t_max - t_lb)
    xcap: FloatArray | None = None
    conv = np.zeros(m, dtype=bool)
    for _ in range(_JOINT_MAX_ITER):
        u = t[:, None] - prm.fixed_s
        inv_u = 1.0 / u
        log_a = np.log(u) + log_n0g
        xf = np.exp(y)
        em1 = np.expm1(xf)
        hf = h_from_expm1(xf, em1)
        res = np.log(hf) + log_a - s[:, None]
        dh = xf * xf / (hf / (em1 + 1.0))  # d log h / d log x
        r_p = rw.pmax_over_s * u
        if energy_cap:
            power = r_p <= rw.r_e
            clamped = em1 > np.minimum(r_p, rw.r_e) * xf  # phi(x_free) > r: a cap binds
        else:
            clamped = em1 > r_p * xf
        kappa = wl2 * inv_u
        lam = np.exp(s)
        if clamped.any():
            pc = clamped & power if energy_cap else clamped
            if xcap is None:
                xcap = np.full((m, n), np.nan)
            if pc.any():
                xcap[pc] = phi_inverse(r_p[pc], xcap[pc])
            if energy_cap:
                ec = clamped & ~power
                xcap[ec] = rw.x_e[ec]
            x = np.where(clamped, xcap, xf)
            bw = kappa / x
            tot = bw.sum(axis=1)
            bu = bw * inv_u
            buc = np.where(clamped, bu, 0.0)
            buu = bu - buc
            # Capped devices sit at B_n = Bmin_n(T); their term of E' is
            # -(B/u) (lam (1 + eps) - lam_n eps) with eps = -dlog Bmin/dlog u - 1.
            em1x = np.expm1(x)
            hx = h_from_expm1(x, em1x)
            eps = np.where(pc, em1x / hx, 0.0)
            lam_n = np.exp(log_a) * hx
            lam_c = lam[:, None]
            cterm = lam_c * (1.0 + eps) - lam_n * eps
            deps = -(em1x + 1.0) * (em1x - x) / (hx * hx) * x * eps * inv_u
            dlam_n = lam_n * inv_u * (1.0 + x * x / (hx / (em1x + 1.0)) * eps)
            term_t = (2.0 + eps) * inv_u * cterm - ((lam_c - lam_n) * deps - dlam_n * eps)
            pu = buu.sum(axis=1)
            d = -lam * pu - np.where(clamped, buc * cterm, 0.0).sum(axis=1)
            d_s = -lam * (pu + np.where(clamped, buc * (1.0 + eps), 0.0).sum(axis=1))
            d_t = 2.0 * lam * (buu * inv_u).sum(axis=1)
            d_t += np.where(clamped, buc * term_t, 0.0).sum(axis=1)
            f_t = -(bu.sum(axis=1) + np.where(clamped, buc * eps, 0.0).sum(axis=1)) / tot
            w = np.where(clamped, 0.0, bw / (tot[:, None] * dh))
        else:
            x = xf
            em1x = em1
            bw = kappa / x
            tot = bw.sum(axis=1)
            bu = bw * inv_u
            pu = bu.sum(axis=1)
            d = -lam * pu
            d_s = d
            d_t = 2.0 * lam * (bu * inv_u).sum(axis=1)
            f_t = -pu / tot
            w = bw / (tot[:, None] * dh)
        f = np.log(tot) - log_b
        g = np.log(-d) - log_ratio
        err = np.maximum(np.abs(res).max(axis=1), np.abs(f))
        conv = (err <= _SPLIT_TOL) & (np.abs(g) <= g_tol)
        fin = conv | stop
        if fin.all():
            break
        # Eliminate dy_n = (ds - dT/u_n - res_n)/dh_n: 2 x 2 in (ds, dT) per row.
        wu = w * inv_u
        s1 = w.sum(axis=1)
        s2 = wu.sum(axis=1)
        s3 = (w * res).sum(axis=1)
        s4 = (wu * inv_u).sum(axis=1)
        s5 = (wu * res).sum(axis=1)
        lt = lam * tot
        a12 = s2 + f_t
        a21 = lt * s2 + d_s
        a22 = d_t - lt * s4
        b1 = -f - s3
        b2 = lt * s5 - g * d
        det = -s1 * a22 - a12 * a21
        ds = (b1 * a22 - a12 * b2) / det
        dt = -(s1 * b2 + a21 * b1) / det
        hold = ~np.isfinite(g)
        if hold.any():
            # E' of the wrong sign (far from a split): G means nothing there. Hold T and
            # take the split's own Newton step first.
            ds = np.where(hold, (f + s3) / s1, ds)
            dt = np.where(hold, 0.0, dt)
        span = t - t_lb
        dv = np.minimum(np.maximum(dt / span, -2.0), 2.0)
        ds = np.minimum(np.maximum(ds, -4.0), 4.0)
        dy = (ds[:, None] - (dv * span)[:, None] * inv_u - res) / dh
        np.maximum(dy, -4.0, out=dy)
        np.minimum(dy, 4.0, out=dy)
        bad = ~fin & ~np.isfinite(dv + ds + err)  # dy is finite where these are
        if bad.any():
            failed |= bad
            stop |= bad
            fin |= bad
        v_new = v + dv
        if check_lo:
            below = ~fin & (v_new <= v_lo)
            if below.any():
                new = below & ~lo_ok
                if new.any():
                    idx = np.flatnonzero(new)
                    sp = _split_at_min(prm, rw.take(idx), t_min[idx])
                    end = sp.slope >= 0
                    if end.any():
                        ends.append((idx[end], _take(sp, np.flatnonzero(end))))
                        stop[idx[end]] = True
                        fin[idx[end]] = True
                    lo_ok[idx[~end]] = True
                v_new = np.where(below & lo_ok, 0.5 * (v + v_lo), v_new)
        if deadline is not None:
            above = ~fin & (v_new >= v_hi)
            if above.any():
                new = above & ~hi_ok
                if new.any():
                    idx = np.flatnonzero(new)
                    sp = _split(prm, rw.take(idx), t_max[idx], s[idx], xf[idx])
                    end = sp.slope <= 0
                    if end.any():
                        ends.append((idx[end], _take(sp, np.flatnonzero(end))))
                        stop[idx[end]] = True
                        fin[idx[end]] = True
                    hi_ok[idx[~end]] = True
                v_new = np.where(above & hi_ok, 0.5 * (v + v_hi), v_new)
        if fin.any():
            upd = ~fin
            v = np.where(upd, v_new, v)
            t = np.where(upd, t_lb + np.exp(v_new), t)
            s = np.where(upd, s + ds, s)
            y = np.where(upd[:, None], y + dy, y)
        else:
            v = v_new
            t = t_lb + np.exp(v_new)
            s = s + ds
            y = y + dy
    # The last evaluation is the converged one for every converged row (rows stop moving
    # once converged); value and slope follow from it as in _finish.
    energy = prm.compute_j.sum() + (rw.shannon * (em1x / x)).sum(axis=1)
    value = prm.w_t * t + prm.w_e * energy
    slope = prm.w_t + prm.w_e * d
    v_inf = prm.w_e * (prm.compute_j.sum() + rw.shannon.sum(axis=1))
    t_low = np.fmax(t_min, t_lb)  # a lower end of the interval (t_lb if T_min is unknown)
    gap = np.where(
        slope >= 0,
        slope * (t - t_low),
        -slope * np.minimum(t_max - t, (value - prm.w_t * t - v_inf) / (prm.w_t - slope)),
    )
    cert = (gap <= rtol * value) | (value <= (1.0 + rtol) * (v_inf + prm.w_t * t_low))
    ok = conv & ~failed & cert & np.isfinite(value)
    pinned = ok & ~stop & np.all(x < xf, axis=1)
    if pinned.any():
        # Every device at its cap with the band used up: T is T_min, where the price is not
        # unique (any price above the cap prices clears the band). Report T_min's split with
        # the least price and the slope V'(T_min+), as _split_at_min does; without T_min, hand
        # the row back.
        known = pinned & np.isfinite(t_min)
        if known.any():
            idx = np.flatnonzero(known)
            ends.append((idx, _split_at_min(prm, rw.take(idx), t_min[idx])))
        ok &= ~(pinned & ~known)
    sp = _Split(t, u, x.copy() if x is xf else x, xf, s, energy, value, slope)
    for idx, part in ends:
        _put(sp, idx, part)
        ok[idx] = True
    return sp, ok


def _search_time_bracketed(
    prm: _Params,
    rw: _Rows,
    t_min: FloatArray,
    rtol: float,
    warm: tuple[FloatArray, FloatArray, FloatArray] | None = None,
) -> tuple[_Split, NDArray[np.bool_]]:
    """Minimize the convex ``V(T)`` on ``[t_min, deadline]`` per row (robust, nested method).

    ``V'(T) = w_T - q(T)`` with ``q = -w_E E'(T) > 0`` decreasing. Root finding runs on
    ``G(v) = log q - log w_T`` over ``v = log(T - t_lb)``, where ``E' ~ -c/T^2`` makes G nearly
    linear: secant steps from a start point (``warm = (T, log lambda, x_free)`` of a nearby
    solve, else ``t_min``) until the root is bracketed, then Illinois regula falsi. The stop
    rule is certified by convexity: ``V(T) - V* <= |V'(T)| (hi - lo) <= rtol V``.
    """
    m = rw.w.shape[0]
    t_lb = rw.t_lb
    t_max = np.full(m, np.inf if prm.deadline_s is None else prm.deadline_s)
    capped = np.zeros(m, dtype=bool)
    if warm is None:
        cur = _split_at_min(prm, rw, t_min)
    else:
        t0 = np.clip(warm[0], t_min, t_max)
        t0 = np.where(np.isfinite(t0), t0, t_min)
        cur = _split(prm, rw, t0, warm[1], warm[2])
    if prm.w_e == 0.0:
        # J = K w_T T: the fastest feasible round is optimal.
        return (cur if warm is None else _split_at_min(prm, rw, t_min)), capped
    best = _copy(cur)
    v_inf = prm.w_e * (prm.compute_j.sum() + rw.shannon.sum(axis=1))
    v_floor = v_inf + prm.w_t * t_min
    log_wt = np.log(prm.w_t) if prm.w_t > 0 else -np.inf
    nan = np.full(m, np.nan)
    lo_v, hi_v, lo_g, hi_g = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    lo_sp, hi_sp = _copy(cur), _copy(cur)
    done = np.zeros(m, dtype=bool)

    def gval(sp: _Split) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(prm.w_t - sp.slope) - log_wt

    def absorb(idx: NDArray[np.int64], sp: _Split) -> FloatArray:
        """Record new points as bracket ends; close rows whose optimum is an interval end."""
        g = gval(sp)
        v = np.log(sp.t - t_lb[idx])
        neg = sp.slope < 0  # V still falling: the root lies right (G > 0)
        ineg, ipos = idx[neg], idx[~neg]
        lo_v[ineg], lo_g[ineg] = v[neg], g[neg]
        hi_v[ipos], hi_g[ipos] = v[~neg], g[~neg]
        _put(lo_sp, ineg, _take(sp, np.flatnonzero(neg)))
        _put(hi_sp, ipos, _take(sp, np.flatnonzero(~neg)))
        at_min = ~neg & (sp.t <= t_min[idx])
        at_max = neg & (sp.t >= t_max[idx])
        # V* >= w_T T_min + w_E E_inf: a point this close to the lower bound is certified (this
        # stops tiny latency weights from chasing an optimum at astronomically large T).
        at_max |= neg & (sp.value <= (1.0 + rtol) * v_floor[idx])
        if prm.w_t == 0.0:
            # V falls forever without a deadline: stop within the documented factor of inf V.
            near = neg & (sp.value <= (1.0 + ZERO_LATENCY_WEIGHT_RTOL) * v_inf[idx])
            capped[idx[near & ~at_max]] = True
            at_max |= near
        ends = at_min | at_max
        done[idx[ends]] = True
        _put(best, idx[ends], _take(sp, np.flatnonzero(ends)))
        return g

    last = _copy(cur)
    last_g = absorb(np.arange(m), cur)
    prev_v, prev_g = nan.copy(), nan.copy()
    v_min = np.log(t_min - t_lb)
    v_max = np.log(t_max - t_lb)
    # Phase 1: bracket the root (rows with one end known) by overshooting secant steps.
    for _ in range(200):
        need = ~done & (np.isnan(lo_v) | np.isnan(hi_v))
        if not need.any():
            break
        idx = np.flatnonzero(need)
        v1 = np.log(last.t[idx] - t_lb[idx])
        g1, v0, g0 = last_g[idx], prev_v[idx], prev_g[idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            slope_g = (g1 - g0) / (v1 - v0)
        # E' ~ -c / T^2 suggests dG/dv ~ -2 until two points give a secant.
        slope_g = np.where(np.isfinite(slope_g) & (slope_g < 0), slope_g, -2.0)
        with np.errstate(invalid="ignore"):
            step = -1.5 * g1 / slope_g
        step = np.where(np.isfinite(step), step, 1.0)  # w_T = 0: G = inf, just grow
        step = np.where(g1 > 0, np.clip(step, 0.01, 3.0), np.clip(step, -3.0, -0.01))
        v_new = np.clip(v1 + step, v_min[idx], v_max[idx])
        prev_v[idx], prev_g[idx] = v1, g1
        sp = _split(
            prm, rw.take(idx), t_lb[idx] + np.exp(v_new), last.log_lam[idx], last.x_free[idx]
        )
        _put(last, idx, sp)
        last_g[idx] = absorb(idx, sp)
    # Phase 2: Illinois regula falsi on G(v) for bracketed rows; the G of an end kept twice
    # in a row is halved in the secant formula so that end moves too.
    ga, gb = lo_g.copy(), hi_g.copy()
    side = np.zeros(m, dtype=np.int64)  # -1: lo replaced last, +1: hi replaced last
    for _ in range(200):
        width = hi_sp.t - lo_sp.t
        gap = np.minimum(-lo_sp.slope * width, hi_sp.slope * width)
        vmin = np.minimum(lo_sp.value, hi_sp.value)
        fin = (gap <= rtol * vmin) | (width <= 1e-15 * hi_sp.t)
        todo = ~done & ~fin
        if not todo.any():
            break
        idx = np.flatnonzero(todo)
        va, vb, fa, fb = lo_v[idx], hi_v[idx], ga[idx], gb[idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            v_new = vb - fb * (vb - va) / (fb - fa)
        wdt = vb - va
        bad = ~np.isfinite(v_new) | (v_new <= va + 1e-6 * wdt) | (v_new >= vb - 1e-6 * wdt)
        v_new = np.where(bad, 0.5 * (va + vb), v_new)
        sp = _split(
            prm, rw.take(idx), t_lb[idx] + np.exp(v_new), last.log_lam[idx], last.x_free[idx]
        )
        _put(last, idx, sp)
        g = absorb(idx, sp)
        neg = sp.slope < 0
        ineg, ipos = idx[neg], idx[~neg]
        ga[ineg] = g[neg]
        gb[ipos] = g[~neg]
        gb[ineg[side[ineg] == -1]] *= 0.5
        ga[ipos[side[ipos] == 1]] *= 0.5
        side[ineg] = -1
        side[ipos] = 1
    # Rows not stopped at an end of [T_min, deadline] take the better end of their bracket.
    rows = np.flatnonzero(~done)
    if rows.size:
        use_hi = hi_sp.value[rows] < lo_sp.value[rows]
        _put(best, rows[use_hi], _take(hi_sp, rows[use_hi]))
        _put(best, rows[~use_hi], _take(lo_sp, rows[~use_hi]))
    return best, capped


def _split_at_min(prm: _Params, rw: _Rows, t_min: FloatArray) -> _Split:
    """The split at ``T_min``: every device at its cap, priced at the largest cap price."""
    u = t_min[:, None] - prm.fixed_s
    kappa = rw.w * LN2 / u
    log_a = np.log(prm.n0 / prm.gain * u)
    r_p = rw.pmax_over_s * u
    x = phi_inverse(np.minimum(r_p, rw.r_e))
    s = np.max(log_a + np.log(h(x)), axis=1)
    # x_free >= x: the price clears the market only with every device held at its cap.
    xf = np.maximum(h_inverse(np.exp(np.minimum(s[:, None] - log_a, 700.0)), x), x)
    return _finish(prm, rw, t_min, u, kappa, log_a, r_p, xf, x, s)


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


def fmt_up(x: float, digits: int = 6) -> str:
    """``x`` to ``digits`` significant digits rounded *up*: a printed relaxation must suffice."""
    x = float(x)
    if not np.isfinite(x) or x <= 0:
        return f"{x:g}"
    q = 10.0 ** (np.floor(np.log10(x)) - digits + 1)
    return f"{np.ceil(x / q) * q:.{digits}g}"


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
            f"compute + Shannon-limit upload energy {fmt_up(need.max())} J of device "
            f"{scenario.devices.ids[int(np.argmax(need))]!r} at these bits; raise it above "
            f"{fmt_up(need.max())} J"
        )
    if code == INFEASIBLE_DEADLINE:
        return (
            f"deadline: round_deadline_s = {scenario.constraints.round_deadline_s:g} s is below "
            f"the fastest possible round {fmt_up(t_min)} s at these bits; raise it to at least "
            f"{fmt_up(t_min)} s"
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
    rw = _rows(prm, payload_bits(scenario, b)[None, :])
    if np.any(rw.x_e <= 0):
        raise SolverArgumentError(
            "bits: " + infeasibility_message(scenario, b, INFEASIBLE_ENERGY, np.inf)
        )
    t_min = float(_min_round_time(prm, rw)[0])
    if t < t_min:
        raise SolverArgumentError(
            f"round_latency_s={t:.9g}: below the fastest feasible round {t_min:.9g} s at these "
            "bits; pass at least that"
        )
    sp = _split(prm, rw, np.array([t]))
    x, u = sp.x[0], sp.u[0]
    bw = rw.w[0] * LN2 / u / x
    pw = np.minimum(prm.n0 * bw * np.expm1(x) / prm.gain, prm.pmax)
    return bw, pw, float(sp.energy[0])


# ------------------------------------------------------------------------------------------------
# Feasibility of the whole problem (bits free)
# ------------------------------------------------------------------------------------------------

#: Bit vectors enumerated exactly by :func:`diagnose` (larger instances use a Lagrangian choice).
DIAGNOSE_ENUMERATION_LIMIT = 200_000


@dataclass(frozen=True, eq=False)
class Feasibility:
    """Whether any bit vector admits a feasible allocation, and if not, what to relax.

    Attributes
    ----------
    feasible : bool
    message : str
        Empty when feasible; else one line naming the binding constraint and the relaxation.
    bits : ndarray of int, shape (N,) or None
        A bit vector with a feasible continuous block (the most bits allowed per device when
        nothing couples them, else one that fits the deadline with the least bandwidth).
    exact : bool
        False when a large instance's bandwidth check used the Lagrangian choice, whose verdict
        "infeasible" may then be pessimistic by at most one device's bandwidth.
    """

    feasible: bool
    message: str
    bits: NDArray[np.int64] | None
    exact: bool = True


def _level_tables(scenario: Scenario, prm: _Params):
    lv = scenario.bits.array
    wl = payload_bits(scenario, lv)  # (L,)
    s_nl = prm.n0 * LN2 * wl[None, :] / prm.gain[:, None]  # Shannon-limit energy (N, L)
    pen = scenario.convergence.q * scenario.rho[:, None] / np.square(np.exp2(lv) - 1.0)
    room = scenario.convergence.epsilon - scenario.convergence.phi0
    return lv, wl, s_nl, pen, room


def _bmin_table(prm: _Params, s_nl: FloatArray, wl: FloatArray, t: float, budget) -> FloatArray:
    """``Bmin_{n,l}`` at round time ``t`` (inf where the level cannot make it), Hz."""
    u = (t - prm.fixed_s)[:, None]
    r = prm.pmax[:, None] * np.maximum(u, 0.0) / s_nl
    if budget is not None:
        r = np.minimum(r, budget[:, None] / s_nl)
    xm = phi_inverse(r)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = wl[None, :] * LN2 / (u * xm)
    return np.where((xm > 0) & (u > 0), b, np.inf)


def _knapsack(cost: FloatArray, pen: FloatArray, room: float) -> tuple[float, NDArray[np.int64]]:
    """Min ``sum_n cost[n, b_n]`` s.t. ``sum_n pen[n, b_n] < room``; returns (value, level idx).

    Exact by enumeration when ``L^N`` is small, else the Lagrangian choice
    ``argmin cost + mu pen`` with the smallest ``mu`` that meets the margin (value inf if none).
    """
    n, nl = cost.shape
    rows = np.arange(n)
    fin = np.isfinite(cost)
    # The most bits each device can take; if even that misses the margin, nothing works.
    top = np.where(fin, np.arange(nl)[None, :], -1).max(axis=1)
    if np.any(top < 0) or not pen[rows, top].sum() < room:
        return np.inf, top
    if not np.any(cost[fin]):
        return 0.0, top  # nothing to trade: take the most bits
    if nl**n <= DIAGNOSE_ENUMERATION_LIMIT:
        idx = np.indices((nl,) * n).reshape(n, -1).T  # (M, N)
        tot = cost[rows, idx].sum(axis=1)
        ok = pen[rows, idx].sum(axis=1) < room
        tot = np.where(ok & np.isfinite(tot), tot, np.inf)
        k = int(np.argmin(tot))
        return float(tot[k]), idx[k]
    base = np.where(fin, cost, np.inf)

    def choose(mu: float) -> NDArray[np.int64]:
        return np.argmin(base + mu * pen, axis=1)

    b = choose(0.0)
    if pen[rows, b].sum() < room:
        return float(cost[rows, b].sum()), b
    # Smallest price mu on the margin meeting it (bisection on log mu); top meets it.
    spread = np.ptp(np.where(fin, cost, np.nan)[fin]) if fin.any() else 1.0
    lo, hi = -np.inf, np.log(max(spread, 1e-300) / max(float(pen.min()), 1e-300)) + 2.0
    for _ in range(200):
        if pen[rows, choose(np.exp(hi))].sum() < room:
            break
        lo, hi = hi, hi + 4.0
    lo = hi - 60.0 if not np.isfinite(lo) else lo
    for _ in range(48):
        mid = 0.5 * (lo + hi)
        if pen[rows, choose(np.exp(mid))].sum() < room:
            hi = mid
        else:
            lo = mid
    b = choose(np.exp(hi))
    if not pen[rows, b].sum() < room:
        b = top
    return float(cost[rows, b].sum()), b


def diagnose(scenario: Scenario, ref: Reference | None = None) -> Feasibility:
    """Decide whether any bits admit a feasible allocation; name the relaxation if not.

    Feasibility at given bits needs (formulation §5, §6): the target ``eps > Phi0 + Phi_q(b)``,
    every device's energy cap above its compute + Shannon-limit upload energy, and, with a
    deadline D, ``sum_n Bmin_n(D, b_n) <= B`` (``Bmin`` falls with time and rises with bits).
    Choosing bits is then a multiple-choice knapsack (least bandwidth subject to the margin),
    solved exactly by enumeration for small instances. The smallest deadline and energy cap that
    work are found by bisection on that monotone check.
    """
    ref = ref if ref is not None else reference(scenario)
    prm = _params(scenario, ref)
    why = _target_message(scenario)
    if why is not None:
        return Feasibility(False, why, None)
    cap = scenario.constraints.device_energy_j
    deadline = prm.deadline_s
    if cap is None and deadline is None:
        # Only the target couples the bits, and the dispatcher checked it at max bits.
        return Feasibility(True, "", np.full(scenario.n_devices, scenario.bits.max))
    lv, wl, s_nl, pen, room = _level_tables(scenario, prm)
    n, nl = s_nl.shape
    exact = nl**n <= DIAGNOSE_ENUMERATION_LIMIT

    def energy_ok(budget: FloatArray | None) -> NDArray[np.bool_]:
        if budget is None:
            return np.ones((n, nl), dtype=bool)
        return budget[:, None] > s_nl

    def check(t: float | None, budget: FloatArray | None) -> tuple[bool, float, NDArray]:
        """(feasible, least bandwidth needed, level idx) at deadline t and upload budget."""
        ok = energy_ok(budget)
        if t is None:
            cost = np.where(ok, 0.0, np.inf)
        else:
            cost = np.where(ok, _bmin_table(prm, s_nl, wl, t, budget), np.inf)
        val, idx = _knapsack(cost, pen, room)
        return bool(val <= prm.bandwidth_hz), val, idx

    budget = prm.budget_j
    ok0, _, idx0 = check(None, budget)
    if not ok0:
        # The energy cap alone rules out enough bits: smallest cap over the N x L thresholds
        # ce_n + S_{n,l} (strictly above), then, with a deadline, bisect upward from there.
        need = prm.compute_j[:, None] + s_nl
        cands = np.unique(need)
        lo_i, hi_i = 0, cands.size - 1
        while lo_i < hi_i:
            mid = (lo_i + hi_i) // 2
            if check(None, np.nextafter(cands[mid], np.inf) - prm.compute_j)[0]:
                hi_i = mid
            else:
                lo_i = mid + 1
        c_need = float(cands[lo_i])
        if deadline is not None:
            c_need = _bisect_up(
                lambda c: check(deadline, c - prm.compute_j)[0], c_need, 2.0 * c_need + 1.0
            )
        return Feasibility(
            False,
            f"energy: device_energy_j = {cap:g} J is too low for the bits the convergence "
            f"target needs (compute + upload energy{' within the deadline' if deadline else ''}); "
            f"raise it above {fmt_up(c_need)} J",
            None,
            exact,
        )
    if deadline is None:
        return Feasibility(True, "", lv[idx0], exact)
    ok1, bw_need, idx1 = check(deadline, budget)
    if ok1:
        return Feasibility(True, "", lv[idx1], exact)
    # Deadline binding: the fastest possible round over feasible bits, by bisection on D.
    t_lo = float(np.max(prm.fixed_s))
    t_hi = max(deadline, t_lo) * 2.0
    for _ in range(200):
        if check(t_hi, budget)[0]:
            break
        t_hi *= 2.0
    d_need = _bisect_up(lambda t: check(t, budget)[0], max(deadline, t_lo), t_hi)
    extra = (
        f", or raise bandwidth_hz to at least {fmt_up(bw_need)} Hz" if np.isfinite(bw_need) else ""
    )
    return Feasibility(
        False,
        f"deadline: round_deadline_s = {deadline:g} s is below the fastest possible round "
        f"{fmt_up(d_need)} s (full power, the fewest bits the target allows); raise it to at least "
        f"{fmt_up(d_need)} s{extra}",
        None,
        exact,
    )


def _bisect_up(ok, lo: float, hi: float) -> float:
    """Smallest value in [lo, hi] with ``ok`` true (ok monotone, ok(hi) true), rounded up."""
    for _ in range(200):
        if ok(lo):
            return lo
        for _ in range(200):
            if ok(hi):
                break
            hi *= 2.0
        break
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if ok(mid):
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-9 * hi:
            break
    # Report a value that works, with a hair of slack for rounding in the caller's check.
    return float(hi * (1.0 + 1e-9))


def _target_message(scenario: Scenario) -> str | None:
    from sflam_opt.bounds import target_infeasibility

    return target_infeasibility(scenario)

"""The KKT bandwidth split of the continuous block at a fixed round time.

See ``docs/formulation.md``, section "Structure that the solvers use". At a round time ``T``
every device uploads for its whole slot ``u_n = T - c_n``; in the spectral variable
``x_n = W_n ln2 / (B_n u_n)`` the marginal value of bandwidth is ``a_n h(x_n)`` with
``a_n = N0 u_n / g_n``, and the power and energy caps read ``x_n <= x_max,n``. The optimal split
prices bandwidth with one multiplier ``lambda``: ``x_n = min(x_max,n, h^{-1}(lambda / a_n))``, with
``lambda`` set so that ``sum B_n = B``.

:func:`split_at` solves this by a joint Newton iteration (O(N) per step) with the bracketed
method :func:`split_bracketed` as fallback; :func:`split_at_min` gives the split at the fastest
feasible round ``T_min`` (:func:`min_round_time`), where every device sits at its cap.
:func:`finish_split` adds the round energy and the envelope-theorem slope ``dV/dT`` that the
round-time search (:mod:`sflam_opt.solvers.kernel.roundtime`) needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from sflam_opt.numeric import LN2, FloatArray, IntArray
from sflam_opt.solvers.kernel.params import KernelParams, RowConstants
from sflam_opt.solvers.lambertw import h, h_from_expm1, h_inverse, phi_inverse

__all__ = [
    "SPLIT_TOL",
    "Split",
    "dlog_bmin_dlogu",
    "finish_split",
    "min_round_time",
    "split_at",
    "split_at_min",
    "split_bracketed",
]

logger = logging.getLogger(__name__)


def dlog_bmin_dlogu(x: FloatArray, em1: FloatArray, hx: FloatArray, power: FloatArray):
    """``-(u / Bmin) dBmin/du``: 1 for the energy cap, ``1 + (e^x - 1)/h(x)`` for the power cap."""
    with np.errstate(divide="ignore", invalid="ignore"):
        extra = np.where(power, em1 / hx, 0.0)
    return 1.0 + np.where(np.isfinite(extra), extra, 0.0)


def min_round_time(prm: KernelParams, rw: RowConstants, t0: FloatArray | None = None) -> FloatArray:
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
        # Far right steps may overflow T; inf there reads as "feasible", which is right.
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            dt = np.exp(v)
            u = (t_lb + dt)[:, None] - prm.fixed_s
            r_p = rw.pmax_over_s * np.maximum(u, 0.0)
        power = r_p <= rw.r_e
        xmax = phi_inverse(np.minimum(r_p, rw.r_e), xw)
        xw = xmax
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            bmin = rw.w * LN2 / (u * xmax)
            tot = bmin.sum(axis=1)
            f = np.log(tot) - log_b
            em1 = np.expm1(xmax)
            d = dlog_bmin_dlogu(xmax, em1, h_from_expm1(xmax, em1), power)
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
        with np.errstate(over="ignore", invalid="ignore"):
            width = np.exp(v_hi) - np.exp(v_lo)
            # 1e-14 of T is rounding level; |F| <= 1e-15: sum Bmin equals B to rounding.
            closed = np.isfinite(v_hi) & (width <= 1e-14 * (t_lb + np.exp(v_hi)))
        active &= ~closed & ~(feas & (np.abs(f) <= 1e-15))
        if not active.any():
            break
        with np.errstate(invalid="ignore", divide="ignore"):
            step = -f / g
        step = np.where(np.isfinite(step), np.clip(step, -4.0, 4.0), np.where(feas, -4.0, 4.0))
        # F within rounding of 0 on the infeasible side gives a step below v's resolution:
        # move by a few ulps instead, so that the feasible side is reached and closes the bracket.
        ulps = 4.0 * np.abs(np.spacing(v))
        newton = np.where(np.abs(step) < ulps, v + np.copysign(ulps, step), v + step)
        inside = (newton > v_lo) & (newton < v_hi)
        both = np.isfinite(v_lo) & np.isfinite(v_hi)
        v_new = np.where(inside | ~both, newton, 0.5 * (v_lo + v_hi))
        v = np.where(active, v_new, v)
    with np.errstate(over="ignore"):
        return t_lb + np.exp(v_hi)


@dataclass
class Split:
    """Optimal split at given round times, for rows; arrays (M, N) or (M,)."""

    t: FloatArray
    u: FloatArray
    x: FloatArray  # spectral variable of the split
    x_free: FloatArray  # h^{-1}(lambda / a): the device's x if it were not held at a cap
    log_lam: FloatArray  # (M,) log of the bandwidth price lambda, J/Hz
    energy: FloatArray  # (M,) round energy, J
    value: FloatArray  # (M,) w_T T + w_E E
    slope: FloatArray  # (M,) dV/dT

    def take(self, idx: IntArray) -> Split:
        """The rows ``idx`` as a new split."""
        return Split(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    def put(self, idx: IntArray, src: Split) -> None:
        """Overwrite rows ``idx`` with the rows of ``src`` (in place)."""
        for f in self.__dataclass_fields__:
            getattr(self, f)[idx] = getattr(src, f)

    def copy(self) -> Split:
        """A deep copy."""
        return Split(*(np.copy(getattr(self, f)) for f in self.__dataclass_fields__))


# Newton tolerances of the split: log-residuals at rounding level (the iteration is quadratic).
SPLIT_TOL = 1e-12
_SPLIT_MAX_NEWTON = 40


def split_at(
    prm: KernelParams,
    rw: RowConstants,
    t: FloatArray,
    log_lam0: FloatArray | None = None,
    x0: FloatArray | None = None,
) -> Split:
    """Optimal bandwidth split at round times ``t`` (M,), assuming ``t >= T_min`` per row.

    Joint Newton on ``(log lambda, log x_n)`` for ``log h(x_n) = log lambda - log a_n`` and
    ``sum W_n ln2 / (u_n x_n) = B`` (arrow-shaped Jacobian, solved in O(N)), with devices whose
    free ``x`` would break a cap held at ``x_max``. Rows that do not converge (clamping can
    cycle) are redone by the bracketed method :func:`split_bracketed`.
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
    # Scratch arrays of the loop (at N = 1e6 fresh temporaries cost page faults); xf is our own.
    em1, res, d, bw, tmp = (np.empty((m, n)) for _ in range(5))
    for _ in range(_SPLIT_MAX_NEWTON):
        np.expm1(xf, out=em1)
        with np.errstate(invalid="ignore", divide="ignore"):
            clamped = em1 > np.multiply(r, xf, out=tmp)  # phi(x_free) > r: the cap binds
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
        np.log(hf, out=res)
        res += log_a
        res -= s[:, None]
        # d log h / d log x = xf^2 / (hf / (em1 + 1)) (no overflow up to x = 700)
        np.divide(hf, np.add(em1, 1.0, out=tmp), out=tmp)
        np.divide(np.multiply(xf, xf, out=d), tmp, out=d)
        np.divide(kappa, x, out=bw)
        tot = bw.sum(axis=1)
        f = np.log(tot) - log_b
        wt = np.divide(bw, np.multiply(tot[:, None], d, out=tmp), out=tmp)
        wt[clamped] = 0.0
        den = wt.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ds = (f + np.sum(np.multiply(wt, res, out=wt), axis=1)) / den
        res_max = np.maximum(res.max(axis=1), -res.min(axis=1))  # max |res|
        done = (res_max <= SPLIT_TOL) & (np.abs(f) <= SPLIT_TOL)
        if done.all():
            break
        ds = np.clip(np.where(np.isfinite(ds), ds, 0.0), -4.0, 4.0)
        dt = np.subtract(ds[:, None], res, out=tmp)
        np.clip(np.divide(dt, d, out=dt), -4.0, 4.0, out=dt)
        xf *= np.exp(dt, out=dt)  # (x, which may be xf, is only read again after a break)
        s = s + ds
    bad = ~done | ~np.isfinite(s)
    if bad.any():
        idx = np.flatnonzero(bad)
        logger.debug("split: %d of %d rows fall back to the bracketed method", idx.size, m)
        xf_b, s_b = split_bracketed(prm, rw.take(idx), t[idx])
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
    return finish_split(prm, rw, t, u, kappa, log_a, r_p, xf, x, s)


def finish_split(prm, rw, t, u, kappa, log_a, r_p, xf, x, s) -> Split:
    """Energy, value and the envelope-theorem slope dV/dT of a converged split."""
    em1 = np.expm1(x)
    hx = h_from_expm1(x, em1)
    with np.errstate(invalid="ignore"):
        phx = np.where(x > 0, em1 / x, 1.0)
    energy = prm.compute_j_total + np.sum(rw.shannon * phx, axis=1)
    value = prm.w_t * t + prm.w_e * energy
    bw = kappa / x
    lam = np.exp(s)
    lam_n = np.exp(log_a) * hx
    clamped = x < xf
    if clamped.any():
        power = r_p <= rw.r_e
        dbmin = -(bw / u) * dlog_bmin_dlogu(x, em1, hx, power)
        cap_term = np.where(clamped, (lam[:, None] - lam_n) * dbmin, 0.0)
        de_dt = np.sum(-lam_n * bw / u + cap_term, axis=1)
    else:  # no capped device (e.g. long rounds): the same sum without the zero terms
        de_dt = np.sum(-lam_n * bw / u, axis=1)
    slope = prm.w_t + prm.w_e * de_dt
    return Split(t, u, x, xf, s, energy, value, slope)


def split_bracketed(
    prm: KernelParams, rw: RowConstants, t: FloatArray
) -> tuple[FloatArray, FloatArray]:
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
        active &= (np.abs(f) > SPLIT_TOL) & (s_hi - s_lo > 1e-15 * np.abs(s_hi) + 1e-300)
        if not active.any():
            break
        s = np.where(active, s_new, s)
    xf = h_inverse(np.exp(np.minimum(s[:, None] - log_a, 700.0)), xf)
    return xf, s


def split_at_min(prm: KernelParams, rw: RowConstants, t_min: FloatArray) -> Split:
    """The split at ``T_min``: every device at its cap, priced at the largest cap price."""
    u = t_min[:, None] - prm.fixed_s
    kappa = rw.w * LN2 / u
    log_a = np.log(prm.n0 / prm.gain * u)
    r_p = rw.pmax_over_s * u
    x = phi_inverse(np.minimum(r_p, rw.r_e))
    s = np.max(log_a + np.log(h(x)), axis=1)
    # x_free >= x: the price clears the market only with every device held at its cap.
    xf = np.maximum(h_inverse(np.exp(np.minimum(s[:, None] - log_a, 700.0))), x)
    return finish_split(prm, rw, t_min, u, kappa, log_a, r_p, xf, x, s)

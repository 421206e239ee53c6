"""Vectorized special-function inverses for the exact continuous block.

See ``docs/formulation.md``, section "Structure that the solvers use".

The continuous block works in the spectral variable ``x = W ln2 / (B u)`` (nats per Hz-second of a
device's upload). Two scalar maps of ``x`` appear there:

* ``h(x) = (x - 1) e^x + 1``: the marginal value of bandwidth, ``-de/dB = a h(x)``. Its inverse is
  ``1 + W0((y - 1)/e)`` (principal Lambert W).
* ``phi(x) = (e^x - 1)/x``: power and per-device energy caps read ``phi(x) <= r``. Its inverse is
  ``-W_{-1}(-e^{-1/r}/r) - 1/r`` (lower Lambert branch).

Both inverses are computed here by safeguarded Newton iterations on numpy arrays, started from
bounds that make the iteration monotone, which is much faster than :func:`scipy.special.lambertw`
(complex arithmetic) and keeps full relative accuracy near the branch point (x -> 0), where
``1 + W0(z)`` cancels catastrophically.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from sflam_opt.numeric import FloatArray

__all__ = ["h", "h_from_expm1", "h_inverse", "phi", "phi_inverse"]


# Below this x the closed forms lose digits to cancellation; the Taylor series is exact to 1e-14.
_SERIES_X = 0.02
_MAX_ITER = 100
# Newton converges quadratically here: after a (relative) step below this, the error left is
# about c step^2 with c = F''/(2F') <= ~1 in relative terms for both maps, i.e. at rounding
# level; waiting for smaller steps costs a full pass at N = 1e6 and changes the last bit at most.
_STEP_TOL = 1e-8
_LOG_X_MAX = float(np.log(700.0))
# Above this y (roots above ~6) h_inverse starts from a few fixed-point steps (_large_root).
_BIG_Y = float(np.exp(8.0))
# Below this y (roots below ~0.014) h_inverse starts from the series of the root.
_SERIES_Y = 1e-4


def h(x: ArrayLike) -> FloatArray:
    """``h(x) = (x - 1) e^x + 1 = x e^x - (e^x - 1)`` for ``x >= 0``, to full relative precision.

    Parameters
    ----------
    x : array_like
        Nonnegative reals.

    Returns
    -------
    ndarray
        Same shape as ``x``; ``h(0) = 0``, ``h(x) ~ x^2/2`` near 0.
    """
    x = np.asarray(x, dtype=np.float64)
    return h_from_expm1(x, np.expm1(x))


def h_from_expm1(x: FloatArray, em1: FloatArray) -> FloatArray:
    """:func:`h` given ``em1 = expm1(x)`` already computed (saves the costly exponential)."""
    small = x < _SERIES_X
    if np.all(small):  # e.g. every device of a very long round: no gather and scatter
        return _h_series(x)
    out = x * em1 - (em1 - x)
    if np.any(small):
        # The series on every entry and a masked copy beat a gather and scatter of the few.
        np.copyto(out, _h_series(x), where=small)
    return out


def _h_series(x: FloatArray) -> FloatArray:
    """``h(x)`` by its Taylor series, exact to 1e-14 for ``x < 0.02``: (k - 1)/k! x^k, k = 2..7.

    Horner's scheme in place on two buffers (the expression's own temporaries cost page faults
    at N = 1e6), with the same operations in the same order:
    ``(x * x) * (0.5 + x * (1/3 + x * (1/8 + x * (1/30 + x * (1/144 + x/840)))))``.
    """
    out = np.divide(x, 840.0)
    for c in (1 / 144, 1 / 30, 1 / 8, 1 / 3):
        out += c
        out *= x
    out += 0.5
    out *= np.multiply(x, x)
    return out


def phi(x: ArrayLike) -> FloatArray:
    """``phi(x) = (e^x - 1)/x`` with ``phi(0) = 1``.

    Returns
    -------
    ndarray
        Same shape as ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        val = np.expm1(x) / x
    return np.where(x == 0.0, 1.0, val)


def phi_inverse(r: ArrayLike, x0: ArrayLike | None = None) -> FloatArray:
    """The positive root ``x`` of ``(e^x - 1)/x = r``, ``r > 1``: ``-W_{-1}(-e^{-1/r}/r) - 1/r``.

    Solved as ``F(x) = x - log(1 + r x) = 0``: F is convex with ``F(0) = 0``, so Newton started
    right of the root (at ``min(2 (r - 1), 2 ln r + 1)``, both upper bounds) decreases
    monotonically to it.

    Parameters
    ----------
    r : array_like
        Ratios ``> 1``; entries ``<= 1`` give 0 (no positive root) and ``inf`` gives ``inf``.
    x0 : array_like, optional
        Warm start (e.g. the root for a nearby ``r``).

    Returns
    -------
    ndarray
        Same shape as ``r``.
    """
    r = np.asarray(r, dtype=np.float64)
    ok = np.isfinite(r) & (r > 1.0)
    rr = np.where(ok, r, 2.0)
    good = None
    if x0 is not None:
        # Right of F's minimum (r - 1)/r, one Newton step from either side of the root lands
        # right of it (F convex), so the monotone iteration below can start there.
        xw = np.broadcast_to(np.asarray(x0, dtype=np.float64), rr.shape)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            rxw = rr * xw
            xn = xw - (xw - np.log1p(rxw)) / (1.0 - rr / (1.0 + rxw))
            good = np.isfinite(xn) & (xw > (rr - 1.0) / rr)
    if good is None or not good.all():
        # Upper bounds of the root; one fixed-point step x <- log(1 + r x) keeps an upper bound
        # (F(x) > 0 there and the map is increasing) and contracts by about 1/x.
        x = np.log1p(rr * np.minimum(2.0 * (rr - 1.0), 2.0 * np.log(rr) + 1.0))
        if good is not None:
            x = np.where(good & (xn < x), xn, x)
    else:
        x = xn  # every warm step is good (computing the bounds as well costs a third)
    # The Newton loop on three scratch arrays (at N = 1e6 fresh temporaries cost page faults).
    x = np.asarray(x)  # a 0-d result of a scalar r becomes an array that out= can write to
    rx, f, fp = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    for _ in range(_MAX_ITER):
        np.multiply(rr, x, out=rx)
        np.subtract(x, np.log1p(rx, out=f), out=f)  # F(x) = x - log(1 + r x)
        np.subtract(1.0, np.divide(rr, np.add(1.0, rx, out=fp), out=fp), out=fp)  # F'(x)
        with np.errstate(invalid="ignore", divide="ignore"):
            step = np.divide(f, fp, out=f)
        step[~(fp > 0)] = 0.0
        np.maximum(step, 0.0, out=step)  # monotone from the right; rounding must not cross
        np.subtract(x, step, out=x)
        if not np.any(step > np.multiply(x, _STEP_TOL, out=rx)):
            break
    out = np.where(ok, x, 0.0)
    return np.where(np.isposinf(r), np.inf, out)


def _large_root(y: FloatArray) -> FloatArray:
    """Near roots of ``h(x) = y`` for ``y > _BIG_Y`` (values elsewhere are not used).

    ``h(x) = y`` reads ``x = log(y - 1) - log(x - 1)``, a contraction by ``1/(x - 1) < 0.2`` for
    these roots: three steps from ``log(y - 1)`` leave a relative error below 1e-4, from which
    Newton needs two steps instead of five or six from the upper bound.
    """
    lg = np.log(np.maximum(y, _BIG_Y) - 1.0)
    x = lg.copy()
    for _ in range(3):
        x = lg - np.log(x - 1.0)
    return x


def h_inverse(y: ArrayLike, x0: ArrayLike | None = None) -> FloatArray:
    """The root ``x >= 0`` of ``h(x) = y`` (``1 + W0((y - 1)/e)``), vectorized.

    Newton on ``t = log x`` for ``log h(e^t) = log y``: that map is increasing and convex, so
    Newton converges from any start (after at most one overshoot to the right), and quadratically
    from a warm start ``x0``.

    Parameters
    ----------
    y : array_like
        Nonnegative values; 0 gives 0, ``inf`` gives ``inf``.
    x0 : array_like, optional
        Starting points (e.g. the previous solution); default is an upper bound of the root.

    Returns
    -------
    ndarray
        Same shape as ``y``.
    """
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y) & (y > 0)
    yy = np.where(ok, y, 1.0)
    # Small roots: h(x) = x^2/2 + x^3/3 + x^4/8 + ... inverts to x = s - s^2/3 + 11 s^3/72 +
    # O(s^4), s = sqrt(2y): closer than any warm start (one or two Newton steps to rounding).
    s = np.sqrt(2.0 * yy)
    series = yy < _SERIES_Y
    if series.all():  # e.g. every device of a very long round: no other start needed
        x = s * (1.0 - s * (1.0 / 3.0 - s * (11.0 / 72.0)))
    else:
        if x0 is None:
            # h(x) >= x^2/2 and h(1 + ln y) >= y for y >= e: both give upper bounds of the root.
            x = np.minimum(s, 1.0 + np.log(np.maximum(yy, np.e)))
            big = yy > _BIG_Y
            if big.any():
                x = np.where(big, _large_root(yy), x)
        else:
            x = np.asarray(x0, dtype=np.float64)
            x = np.where(ok & np.isfinite(x) & (x > 0), x, s)
            x = np.broadcast_to(x, yy.shape).copy()
        if series.any():
            sm = np.minimum(s, 1.0)  # the series' own entries; no overflow elsewhere
            x = np.where(series, sm * (1.0 - sm * (1.0 / 3.0 - sm * (11.0 / 72.0))), x)
    log_y = np.log(yy)
    t = np.asarray(np.log(x))  # an array (also for a scalar y), updated in place below
    # The Newton loop on scratch arrays (at N = 1e6 fresh temporaries cost page faults).
    em1, step, d = np.empty_like(t), np.empty_like(t), np.empty_like(t)
    for _ in range(_MAX_ITER):
        np.expm1(x, out=em1)
        hx = h_from_expm1(x, em1)
        np.subtract(np.log(hx, out=step), log_y, out=step)  # f = log h(x) - log y
        # d log h / d log x = x^2 e^x / h(x); divide first: no overflow up to x = 700
        np.divide(hx, np.add(em1, 1.0, out=em1), out=em1)
        np.divide(np.multiply(x, x, out=d), em1, out=d)
        np.divide(step, d, out=step)
        # Cap big steps: far from the root the convex map can overshoot a lot in t.
        np.clip(step, -10.0, 10.0, out=step)
        # Roots beyond x = 700 would need y > e^700; stay where expm1 is finite.
        np.minimum(np.subtract(t, step, out=t), _LOG_X_MAX, out=t)
        x = np.exp(t)
        if not np.any(np.abs(step, out=d) > _STEP_TOL):
            break
    if ok.all():  # no zero or infinite y to patch in
        return x
    out = np.where(ok, x, 0.0)
    return np.where(np.isposinf(y), np.inf, out)

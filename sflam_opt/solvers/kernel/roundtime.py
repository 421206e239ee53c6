"""Round-time search of the continuous block: the best ``T`` for fixed bits.

See ``docs/formulation.md``, section "Structure that the solvers use". For fixed bits the optimal
value ``V(T) = w_T T + w_E E(T)`` of the split at round time ``T`` is convex in ``T`` (partial
minimization of a jointly convex problem), and the envelope theorem gives its derivative in
closed form:

    V'(T) = w_T + w_E sum_n [ -lambda_n B_n / u_n + [clamped] (lambda - lambda_n) dBmin_n/dT ]

with ``lambda_n = a_n h(x_n)``. The best ``T`` on ``[T_min, deadline]`` is the root of ``V'``.
:func:`joint_search` finds it by one Newton iteration on the split and ``T`` together (``V''`` by
implicit differentiation of the split, O(N) per step); :func:`search_time_bracketed` is the
fallback, a bracketed secant (Illinois) search over converged splits. Both stop on a convexity
certificate ``V(T) - V* <= rtol V(T)``. :func:`search_time` runs the first and hands the rows it
cannot certify to the second.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray

from sflam_opt.numeric import LN2, FloatArray, IntArray
from sflam_opt.solvers.kernel.params import ZERO_LATENCY_WEIGHT_RTOL, KernelParams, RowConstants
from sflam_opt.solvers.kernel.split import (
    SPLIT_TOL,
    Split,
    min_round_time,
    split_at,
    split_at_min,
)
from sflam_opt.solvers.lambertw import h, h_from_expm1, phi_inverse

__all__ = ["joint_search", "search_time", "search_time_bracketed"]

logger = logging.getLogger(__name__)


#: Newton iterations of the joint round-time search before a row is handed to the bracketed one.
_JOINT_MAX_ITER = 40


def search_time(
    prm: KernelParams,
    rw: RowConstants,
    t_min: FloatArray,
    rtol: float,
    warm: tuple[FloatArray, FloatArray, FloatArray] | None = None,
) -> tuple[Split, NDArray[np.bool_], FloatArray]:
    """Minimize the convex ``V(T)`` on ``[t_min, deadline]`` per row.

    Joint Newton (:func:`joint_search`) on the split and the round time together; rows it
    cannot certify to ``rtol`` (and the degenerate weights ``w_T = 0`` or ``w_E = 0``) are
    solved by the nested bracketed search :func:`search_time_bracketed`. ``t_min`` may be NaN
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
            t_min[unknown] = min_round_time(prm, rw.take(np.flatnonzero(unknown)))
        sp, capped = search_time_bracketed(prm, rw, t_min, rtol, warm)
        return sp, capped, t_min
    m = rw.w.shape[0]
    with np.errstate(all="ignore"):
        sp, ok = joint_search(prm, rw, t_min, rtol, warm)
    if not ok.all() and (unknown & ~ok).any():
        # Without T_min the search cannot stop at it: compute it and search those rows again.
        idx = np.flatnonzero(unknown & ~ok)
        wr = None if warm is None else tuple(a[idx] for a in warm)
        t_min[idx] = min_round_time(prm, rw.take(idx), None if wr is None else wr[0])
        with np.errstate(all="ignore"):
            sp_j, ok_j = joint_search(prm, rw.take(idx), t_min[idx], rtol, wr)
        sp.put(idx, sp_j)
        ok[idx] = ok_j
    if not ok.all():
        idx = np.flatnonzero(~ok)
        logger.debug("time search: %d of %d rows fall back to the bracketed search", idx.size, m)
        wr = None if warm is None else tuple(a[idx] for a in warm)
        sp_b, _ = search_time_bracketed(prm, rw.take(idx), t_min[idx], rtol, wr)
        sp.put(idx, sp_b)
    return sp, np.zeros(m, dtype=bool), t_min


def joint_search(
    prm: KernelParams,
    rw: RowConstants,
    t_min: FloatArray,
    rtol: float,
    warm: tuple[FloatArray, FloatArray, FloatArray] | None,
) -> tuple[Split, NDArray[np.bool_]]:
    """Round time, price and split at once: Newton on the whole optimality system per row.

    Unknowns ``v = log(T - t_lb)``, ``s = log lambda`` and ``y_n = log x_free,n``; equations
    ``log h(x_free,n) + log a_n(T) = s`` (every device), ``log sum B_n = log B`` (capped devices
    at ``Bmin_n(T)``) and ``G = log(-w_E E'(T)) - log w_T = 0`` with ``E'`` from the envelope
    theorem (as in :func:`finish_split`). Eliminating the ``y_n`` leaves a 2 x 2 system per row, so
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
    ends: list[tuple[IntArray, Split]] = []  # rows whose optimum is an interval end
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
        sp = split_at_min(prm, rw.take(idx), t_min[idx])
        end = (sp.slope >= 0) | (t_min[idx] >= t_max[idx])
        if end.any():
            ends.append((idx[end], sp.take(np.flatnonzero(end))))
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
        conv = (err <= SPLIT_TOL) & (np.abs(g) <= g_tol)
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
                    sp = split_at_min(prm, rw.take(idx), t_min[idx])
                    end = sp.slope >= 0
                    if end.any():
                        ends.append((idx[end], sp.take(np.flatnonzero(end))))
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
                    sp = split_at(prm, rw.take(idx), t_max[idx], s[idx], xf[idx])
                    end = sp.slope <= 0
                    if end.any():
                        ends.append((idx[end], sp.take(np.flatnonzero(end))))
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
        # the least price and the slope V'(T_min+), as split_at_min does; without T_min, hand
        # the row back.
        known = pinned & np.isfinite(t_min)
        if known.any():
            idx = np.flatnonzero(known)
            ends.append((idx, split_at_min(prm, rw.take(idx), t_min[idx])))
        ok &= ~(pinned & ~known)
    sp = Split(t, u, x.copy() if x is xf else x, xf, s, energy, value, slope)
    for idx, part in ends:
        sp.put(idx, part)
        ok[idx] = True
    return sp, ok


def search_time_bracketed(
    prm: KernelParams,
    rw: RowConstants,
    t_min: FloatArray,
    rtol: float,
    warm: tuple[FloatArray, FloatArray, FloatArray] | None = None,
) -> tuple[Split, NDArray[np.bool_]]:
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
        cur = split_at_min(prm, rw, t_min)
    else:
        t0 = np.clip(warm[0], t_min, t_max)
        t0 = np.where(np.isfinite(t0), t0, t_min)
        cur = split_at(prm, rw, t0, warm[1], warm[2])
    if prm.w_e == 0.0:
        # J = K w_T T: the fastest feasible round is optimal.
        return (cur if warm is None else split_at_min(prm, rw, t_min)), capped
    best = cur.copy()
    v_inf = prm.w_e * (prm.compute_j.sum() + rw.shannon.sum(axis=1))
    v_floor = v_inf + prm.w_t * t_min
    log_wt = np.log(prm.w_t) if prm.w_t > 0 else -np.inf
    nan = np.full(m, np.nan)
    lo_v, hi_v, lo_g, hi_g = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    lo_sp, hi_sp = cur.copy(), cur.copy()
    done = np.zeros(m, dtype=bool)

    def gval(sp: Split) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(prm.w_t - sp.slope) - log_wt

    def absorb(idx: IntArray, sp: Split) -> FloatArray:
        """Record new points as bracket ends; close rows whose optimum is an interval end."""
        g = gval(sp)
        v = np.log(sp.t - t_lb[idx])
        neg = sp.slope < 0  # V still falling: the root lies right (G > 0)
        ineg, ipos = idx[neg], idx[~neg]
        lo_v[ineg], lo_g[ineg] = v[neg], g[neg]
        hi_v[ipos], hi_g[ipos] = v[~neg], g[~neg]
        lo_sp.put(ineg, sp.take(np.flatnonzero(neg)))
        hi_sp.put(ipos, sp.take(np.flatnonzero(~neg)))
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
        best.put(idx[ends], sp.take(np.flatnonzero(ends)))
        return g

    last = cur.copy()
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
        sp = split_at(
            prm, rw.take(idx), t_lb[idx] + np.exp(v_new), last.log_lam[idx], last.x_free[idx]
        )
        last.put(idx, sp)
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
        sp = split_at(
            prm, rw.take(idx), t_lb[idx] + np.exp(v_new), last.log_lam[idx], last.x_free[idx]
        )
        last.put(idx, sp)
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
        best.put(rows[use_hi], hi_sp.take(rows[use_hi]))
        best.put(rows[~use_hi], lo_sp.take(rows[~use_hi]))
    return best, capped

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

At large N (no energy cap) the joint search's cap-free evaluations run in cache-sized blocks
(:mod:`.chunks`), with results bit-identical to the whole-array code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from sflam_opt.numeric import LN2, FloatArray, IntArray
from sflam_opt.solvers.kernel.chunks import CHUNK, Chunks
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
    m = rw.w.shape[0]
    if prm.w_e == 0.0 or prm.w_t == 0.0:
        if prm.w_t == 0.0 and warm is not None:
            # V falls for ever: the search only moves T up from the start, which needs T_min
            # only to be feasible (sum Bmin <= B); rows that are keep T_min unknown.
            unknown &= ~_feasible_at(prm, rw, warm[0])
        if unknown.any():
            idx = np.flatnonzero(unknown)
            rows = rw if idx.size == m else rw.take(idx)
            t_min[idx] = min_round_time(prm, rows, None if warm is None else warm[0][idx])
        sp, capped = search_time_bracketed(prm, rw, t_min, rtol, warm)
        return sp, capped, t_min
    with np.errstate(all="ignore"):
        sp, ok = joint_search(prm, rw, t_min, rtol, warm)
    if not ok.all() and (unknown & ~ok).any():
        # Without T_min the search cannot stop at it: compute it and search those rows again.
        idx = np.flatnonzero(unknown & ~ok)
        wr = None if warm is None else tuple(a[idx] for a in warm)
        # Start from the warm round time, else where the joint search stopped (near T_min when
        # it handed the row back for sitting at every cap).
        t_min[idx] = min_round_time(prm, rw.take(idx), sp.t[idx] if wr is None else wr[0])
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


def _feasible_at(prm: KernelParams, rw: RowConstants, t: FloatArray) -> NDArray[np.bool_]:
    """Rows whose least bandwidths at round times ``t`` (M,) surely fit the band (``t >= T_min``).

    The caps' x, ``phi^{-1}(r)``, exceeds ``log r`` (``phi(log r) = (r - 1)/log r < r``), so
    bandwidths at ``x = log r`` bound the least ones from above: one logarithm per device instead
    of :func:`phi_inverse`, and far above ``T_min`` (the use here) just as conclusive.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        u = t[:, None] - prm.fixed_s
        x_lo = np.log(np.minimum(rw.pmax_over_s * np.maximum(u, 0.0), rw.r_e))
        tot = (rw.w * LN2 / (u * np.where(x_lo > 0, x_lo, 0.0))).sum(axis=1)
    return np.isfinite(t) & (t > rw.t_lb) & (tot <= prm.bandwidth_hz)


@dataclass(frozen=True)
class _JointConsts:
    """Per-call constants of :func:`joint_search`; arrays (M,), (N,) or (M, N)."""

    t_lb: FloatArray
    t_max: FloatArray
    n0g: FloatArray  # N0 / g_n (N,)
    wl2: FloatArray
    log_b: float
    log_ratio: float
    energy_cap: bool
    g_tol: float
    chunks: Chunks | None  # cache-sized blocks for the cap-free evaluation at large N


@dataclass
class _JointState:
    """Iterate of :func:`joint_search` and what is known about each row's interval ends."""

    t: FloatArray  # round time (M,)
    s: FloatArray  # log lambda (M,)
    y: FloatArray  # log x_free (M, N)
    v: FloatArray = field(init=False)  # log(T - t_lb), set once the start is final
    stop: NDArray[np.bool_] = field(init=False)  # finished at an interval end, or failed
    failed: NDArray[np.bool_] = field(init=False)
    lo_ok: NDArray[np.bool_] = field(init=False)  # optimum known to lie above T_min
    hi_ok: NDArray[np.bool_] = field(init=False)  # optimum known to lie below the deadline
    ends: list[tuple[IntArray, Split]] = field(default_factory=list)  # optimum at an end
    xcap: FloatArray | None = None  # each device's cap x (warm start of phi_inverse)
    all_capped: NDArray[np.bool_] | bool = False  # every device capped at the last iterate
    work: dict[str, FloatArray] = field(default_factory=dict)  # buffers reused every step

    def buffer(self, name: str) -> FloatArray:
        """An (M, N) scratch array that lives as long as the search (fresh pages cost time)."""
        buf = self.work.get(name)
        if buf is None:
            buf = self.work[name] = np.empty(self.y.shape)
        return buf

    def __post_init__(self) -> None:
        m = self.t.shape[0]
        self.stop = np.zeros(m, dtype=bool)
        self.failed = np.zeros(m, dtype=bool)
        self.lo_ok = np.zeros(m, dtype=bool)
        self.hi_ok = np.zeros(m, dtype=bool)

    def end_at(self, idx: IntArray, sp: Split, end: NDArray[np.bool_]) -> None:
        """Rows ``idx[end]`` are optimal at the interval end whose split ``sp`` holds."""
        if end.any():
            self.ends.append((idx[end], sp.take(np.flatnonzero(end))))
            self.stop[idx[end]] = True


@dataclass
class _JointTerms:
    """The optimality system of :func:`joint_search` evaluated at one iterate."""

    u: FloatArray  # upload times (M, N)
    inv_u: FloatArray
    xf: FloatArray  # free spectral variables (M, N)
    x: FloatArray  # xf with capped devices at their cap (the same array if none is)
    em1x: FloatArray  # expm1(x)
    res: FloatArray  # log h(x_free) + log a - s (M, N)
    dh: FloatArray  # d log h / d log x at x_free (M, N)
    lam: FloatArray  # bandwidth price (M,)
    tot: FloatArray  # sum B_n (M,)
    d: FloatArray  # E'(T) / lambda-units as in the module docstring (M,)
    d_s: FloatArray  # d of ``d`` by s (M,)
    d_t: FloatArray  # d of ``d`` by T (M,)
    f_t: FloatArray  # d log sum B / dT at fixed x_free (M,)
    w: FloatArray | None  # B_n / dh_n, 0 at capped devices (M, N); None: chunked
    f: FloatArray  # log sum B - log B (M,)
    g: FloatArray  # log(-d) - log(w_T / w_E) (M,)
    err: FloatArray  # split residual (M,)
    step_sums: tuple[FloatArray, ...] | None = None  # _step_sums, summed by the chunked pass
    chunks: Chunks | None = None  # set by the chunked evaluation


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
    jc = _joint_consts(prm, rw, rtol)
    st = _joint_start(prm, rw, t_min, warm, jc)
    _start_at_lower_end(prm, rw, t_min, jc, st)
    if st.stop.all():  # every row optimal at T_min (e.g. a large latency weight)
        return _ends_only(st.ends), np.ones(st.t.shape[0], dtype=bool)
    st.v = np.log(st.t - jc.t_lb)
    v_lo = np.log(t_min - jc.t_lb)  # NaN where T_min is unknown
    check_lo = bool(np.isfinite(v_lo).any())
    unknown_lo = bool(np.isnan(t_min).any())
    v_hi = np.log(jc.t_max - jc.t_lb)
    for _ in range(_JOINT_MAX_ITER):
        tm = _joint_terms(prm, rw, jc, st)
        conv = (tm.err <= SPLIT_TOL) & (np.abs(tm.g) <= jc.g_tol)
        fin = conv | st.stop
        if fin.all():
            break
        dv, ds, dy = _joint_step(tm, st, jc)
        bad = ~fin & ~np.isfinite(dv + ds + tm.err)  # dy is finite where these are
        if unknown_lo and tm.x is not tm.xf:
            # Every device capped twice running, T_min unknown: the row is heading for T_min,
            # where it would be handed back anyway (see the docstring); hand it back now.
            capped = np.isnan(t_min) & np.all(tm.x < tm.xf, axis=1)
            bad |= ~fin & capped & st.all_capped
            st.all_capped = capped
        if bad.any():
            st.failed |= bad
            st.stop |= bad
            fin |= bad
            if fin.all():  # nothing moves: the next evaluation would repeat this one
                break
        v_new = st.v + dv
        if check_lo:
            v_new = _guard_lower_end(prm, rw, t_min, st, fin, v_new, v_lo)
        if prm.deadline_s is not None:
            v_new = _guard_upper_end(prm, rw, jc, st, tm, fin, v_new, v_hi)
        _joint_move(st, jc, fin, v_new, ds, dy)
    return _joint_finish(prm, rw, t_min, rtol, jc, st, tm, conv)


def _ends_only(ends: list[tuple[IntArray, Split]]) -> Split:
    """The splits of rows that all stopped at an interval end, in row order."""
    order = np.concatenate([idx for idx, _ in ends])
    parts = [part for _, part in ends]
    if len(parts) == 1 and np.array_equal(order, np.arange(order.size)):
        return parts[0]
    fields = Split.__dataclass_fields__
    merged = Split(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))
    return merged.take(np.argsort(order))


def _joint_consts(prm: KernelParams, rw: RowConstants, rtol: float) -> _JointConsts:
    m, n = rw.w.shape
    return _JointConsts(
        t_lb=rw.t_lb,
        t_max=np.full(m, np.inf if prm.deadline_s is None else prm.deadline_s),
        n0g=prm.n0g,
        wl2=rw.w * LN2,
        log_b=np.log(prm.bandwidth_hz),
        log_ratio=np.log(prm.w_t / prm.w_e),
        energy_cap=prm.budget_j is not None,
        g_tol=0.25 * rtol,
        chunks=Chunks(n, CHUNK) if n >= 2 * CHUNK and prm.budget_j is None else None,
    )


def _joint_start(
    prm: KernelParams,
    rw: RowConstants,
    t_min: FloatArray,
    warm: tuple[FloatArray, FloatArray, FloatArray] | None,
    jc: _JointConsts,
) -> _JointState:
    """The first iterate: the warm start, else ``T_min``, else (unknown) an equal split."""
    m, n = rw.w.shape
    if warm is not None:
        t = np.minimum(np.fmax(warm[0], t_min), jc.t_max)  # fmax: T_min may be unknown (NaN)
        t = np.where(np.isfinite(t), t, t_min)
        return _JointState(t, np.array(warm[1], dtype=np.float64), np.log(warm[2]))
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
    return _JointState(t, s, y)


def _start_at_lower_end(
    prm: KernelParams, rw: RowConstants, t_min: FloatArray, jc: _JointConsts, st: _JointState
) -> None:
    """Rows starting at ``T_min``: optimal there if V rises; else step up as V' suggests."""
    at_lo = st.t <= t_min * (1.0 + 1e-12)
    if not at_lo.any():
        return
    idx = np.flatnonzero(at_lo)
    sp = split_at_min(prm, rw.take(idx), t_min[idx])
    end = (sp.slope >= 0) | (t_min[idx] >= jc.t_max[idx])
    st.end_at(idx, sp, end)
    k = np.flatnonzero(~end)
    idx = idx[k]
    g0 = np.log(prm.w_t - sp.slope[k]) - np.log(prm.w_t)
    v0 = np.log(t_min[idx] - jc.t_lb[idx]) + np.clip(0.5 * g0, 0.01, 3.0)
    st.t[idx] = np.minimum(jc.t_lb[idx] + np.exp(v0), jc.t_max[idx])
    st.s[idx] = sp.log_lam[k]
    st.y[idx] = np.log(sp.x_free[k])
    st.lo_ok[idx] = True


def _joint_terms(
    prm: KernelParams, rw: RowConstants, jc: _JointConsts, st: _JointState
) -> _JointTerms:
    """Residuals of the optimality system and the derivatives a Newton step needs."""
    if jc.chunks is not None and st.xcap is None:
        tm = _free_terms_chunked(prm, rw, jc, st, jc.chunks)
        if tm is not None:
            return tm
    u = st.t[:, None] - prm.fixed_s
    inv_u = 1.0 / u
    a = u * jc.n0g
    xf = np.exp(st.y)
    em1 = np.expm1(xf)
    hf = h_from_expm1(xf, em1)
    res = np.log(hf * a) - st.s[:, None]  # log h(x_free) + log a - s
    dh = xf * xf / (hf / (em1 + 1.0))  # d log h / d log x
    r_p = rw.pmax_over_s * u
    power = None
    if jc.energy_cap:
        power = r_p <= rw.r_e
        clamped = em1 > np.minimum(r_p, rw.r_e) * xf  # phi(x_free) > r: a cap binds
    else:
        clamped = em1 > r_p * xf
    kappa = jc.wl2 * inv_u
    lam = np.exp(st.s)
    if clamped.any():
        pc = clamped & power if power is not None else clamped
        x = _cap_x(rw, st, r_p, clamped, pc, power, xf)
        em1x, sums = _capped_sums(inv_u, a, x, kappa, lam, dh, clamped, pc)
    else:
        x, em1x = xf, em1
        sums = _free_sums(inv_u, x, kappa, lam, dh)
    tot, d, d_s, d_t, f_t, w = sums
    f = np.log(tot) - jc.log_b
    g = np.log(-d) - jc.log_ratio
    err = np.maximum(np.abs(res).max(axis=1), np.abs(f))
    return _JointTerms(u, inv_u, xf, x, em1x, res, dh, lam, tot, d, d_s, d_t, f_t, w, f, g, err)


def _free_terms_chunked(
    prm: KernelParams, rw: RowConstants, jc: _JointConsts, st: _JointState, chunks: Chunks
) -> _JointTerms | None:
    """:func:`_joint_terms` block by block when no device is capped (None if one is).

    The same element-wise steps as the whole-array evaluation, :func:`_free_sums` and
    :func:`_step_sums` (whose sums are taken here, while each block is in cache), and sums
    combined along numpy's tree (:class:`Chunks`), so the result is bit-identical to them.
    """
    names = ("u", "inv_u", "xf", "em1", "res", "dh")
    out = {k: st.buffer(k) for k in names}
    u_b, iu_b, xf_b, em1_b, res_b, dh_b = (out[k] for k in names)
    if "terms" not in st.work:
        widest = max(c.stop - c.start for c in chunks.slices)
        st.work["terms"] = np.empty((8, st.y.shape[0], widest))
    stack = st.work["terms"]  # the eight summands of a block, summed by one reduction
    sums: list[FloatArray] = []
    res_max: list[FloatArray] = []
    s_col = st.s[:, None]
    t_col = st.t[:, None]
    for c in chunks.slices:
        # Written straight into the buffers' blocks (out=): the same operations, no copies.
        u = np.subtract(t_col, prm.fixed_s[c], out=u_b[:, c])
        inv_u = np.divide(1.0, u, out=iu_b[:, c])
        a = np.multiply(u, jc.n0g[c])
        xf = np.exp(st.y[:, c], out=xf_b[:, c])
        em1 = np.expm1(xf, out=em1_b[:, c])
        if np.any(em1 > rw.pmax_over_s[:, c] * u * xf):
            return None
        hf = h_from_expm1(xf, em1)
        a *= hf
        res = np.log(a, out=res_b[:, c])
        res -= s_col
        den = em1 + 1.0
        np.divide(hf, den, out=den)
        dh = np.multiply(xf, xf, out=dh_b[:, c])
        dh /= den  # xf^2 / (hf / (em1 + 1)): d log h / d log x
        # bw, bw/u, bw/u^2, w, w/u, w res, w/u^2, w res/u with w = bw/dh (see _step_sums)
        blk = stack[:, :, : u.shape[1]]
        bw = np.multiply(jc.wl2[:, c], inv_u, out=blk[0])
        bw /= xf
        np.multiply(bw, inv_u, out=blk[1])
        np.multiply(blk[1], inv_u, out=blk[2])
        w = np.divide(bw, dh, out=blk[3])
        wu = np.multiply(w, inv_u, out=blk[4])
        np.multiply(w, res, out=blk[5])
        np.multiply(wu, inv_u, out=blk[6])
        np.multiply(wu, res, out=blk[7])
        sums.append(blk.sum(axis=-1))  # row by row: the same pairwise sums as each alone
        res_max.append(np.maximum(res.max(axis=1), -res.min(axis=1)))  # max |res|
    tot, pu, puu, *step = chunks.total(sums)
    lam = np.exp(st.s)
    d = -lam * pu
    f = np.log(tot) - jc.log_b
    g = np.log(-d) - jc.log_ratio
    err = np.maximum(np.max(np.stack(res_max, axis=1), axis=1), np.abs(f))
    xf, em1 = out["xf"], out["em1"]
    return _JointTerms(
        out["u"], out["inv_u"], xf, xf, em1, out["res"], out["dh"], lam, tot, d, d,
        2.0 * lam * puu, -pu / tot, None, f, g, err, tuple(x / tot for x in step), chunks,
    )  # fmt: skip


def _cap_x(rw, st, r_p, clamped, pc, power, xf) -> FloatArray:
    """``xf`` with the capped devices at their cap's x (power: ``phi^{-1}(r_p)``, energy: x_e)."""
    if st.xcap is None:
        st.xcap = np.full(xf.shape, np.nan)
    xcap = st.xcap
    if pc.any():
        xcap[pc] = phi_inverse(r_p[pc], xcap[pc])
    if power is not None:
        ec = clamped & ~power
        xcap[ec] = rw.x_e[ec]
    return np.where(clamped, xcap, xf)


def _free_sums(inv_u, x, kappa, lam, dh) -> tuple[FloatArray, ...]:
    """``(tot, d, d_s, d_t, f_t, w)`` of :class:`_JointTerms` when no device is capped."""
    bw = kappa / x
    tot = bw.sum(axis=1)
    bu = bw * inv_u
    pu = bu.sum(axis=1)
    d = -lam * pu
    d_t = 2.0 * lam * (bu * inv_u).sum(axis=1)
    f_t = -pu / tot
    return tot, d, d, d_t, f_t, bw / dh


def _capped_sums(inv_u, a, x, kappa, lam, dh, clamped, pc) -> tuple[FloatArray, tuple]:
    """``expm1(x)`` and ``(tot, d, d_s, d_t, f_t, w)`` of :class:`_JointTerms` with caps."""
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
    lam_n = a * hx
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
    w = np.where(clamped, 0.0, bw / dh)
    return em1x, (tot, d, d_s, d_t, f_t, w)


def _joint_step(
    tm: _JointTerms, st: _JointState, jc: _JointConsts
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The capped Newton step ``(dv, ds, dy)``."""
    # Eliminate dy_n = (ds - dT/u_n - res_n)/dh_n: 2 x 2 in (ds, dT) per row.
    s1, s2, s3, s4, s5 = _step_sums(tm)
    lt = tm.lam * tm.tot
    a12 = s2 + tm.f_t
    a21 = lt * s2 + tm.d_s
    a22 = tm.d_t - lt * s4
    b1 = -tm.f - s3
    b2 = lt * s5 - tm.g * tm.d
    det = -s1 * a22 - a12 * a21
    ds = (b1 * a22 - a12 * b2) / det
    dt = -(s1 * b2 + a21 * b1) / det
    hold = ~np.isfinite(tm.g)
    if hold.any():
        # E' of the wrong sign (far from a split): G means nothing there. Hold T and
        # take the split's own Newton step first.
        ds = np.where(hold, (tm.f + s3) / s1, ds)
        dt = np.where(hold, 0.0, dt)
    span = st.t - jc.t_lb
    dv = np.minimum(np.maximum(dt / span, -2.0), 2.0)
    ds = np.minimum(np.maximum(ds, -4.0), 4.0)
    dy_buf = st.buffer("dy") if tm.chunks is not None else None
    return dv, ds, _newton_dy(tm, ds, dv * span, dy_buf)


def _step_sums(tm: _JointTerms) -> tuple[FloatArray, ...]:
    """Sums over the devices of ``w``, ``w/u``, ``w res``, ``w/u^2``, ``w res/u``, each (M,).

    The elimination weights are ``w_n = B_n / (dh_n sum B)``; the sums are taken of
    ``B_n / dh_n`` (:attr:`_JointTerms.w`) and divided by ``sum B`` once.
    """
    if tm.step_sums is not None:
        return tm.step_sums
    w, inv_u, res = tm.w, tm.inv_u, tm.res
    wu = w * inv_u
    raw = (w, wu, w * res, wu * inv_u, wu * res)
    return tuple(val.sum(axis=1) / tm.tot for val in raw)


def _newton_dy(
    tm: _JointTerms, ds: FloatArray, dt: FloatArray, out: FloatArray | None
) -> FloatArray:
    """``dy_n = (ds - dT/u_n - res_n)/dh_n``, capped to [-4, 4], shape (M, N).

    Chunked evaluations write it into ``out``.
    """
    if tm.chunks is None or out is None:
        dy = (ds[:, None] - dt[:, None] * tm.inv_u - tm.res) / tm.dh
    else:
        dy = out
        ds_col, dt_col = ds[:, None], dt[:, None]
        for c in tm.chunks.slices:
            part = np.multiply(dt_col, tm.inv_u[:, c], out=dy[:, c])
            np.subtract(ds_col, part, out=part)
            part -= tm.res[:, c]
            part /= tm.dh[:, c]
            np.clip(part, -4.0, 4.0, out=part)
        return dy
    np.clip(dy, -4.0, 4.0, out=dy)
    return dy


def _guard_lower_end(prm, rw, t_min, st, fin, v_new, v_lo) -> FloatArray:
    """Steps below ``T_min``: test that end once (optimal there?), else halve toward it."""
    below = ~fin & (v_new <= v_lo)
    if not below.any():
        return v_new
    new = below & ~st.lo_ok
    if new.any():
        idx = np.flatnonzero(new)
        sp = split_at_min(prm, rw.take(idx), t_min[idx])
        end = sp.slope >= 0
        st.end_at(idx, sp, end)
        fin[idx[end]] = True
        st.lo_ok[idx[~end]] = True
    return np.where(below & st.lo_ok, 0.5 * (st.v + v_lo), v_new)


def _guard_upper_end(prm, rw, jc, st, tm, fin, v_new, v_hi) -> FloatArray:
    """Steps past the deadline: test that end once (optimal there?), else halve toward it."""
    above = ~fin & (v_new >= v_hi)
    if not above.any():
        return v_new
    new = above & ~st.hi_ok
    if new.any():
        idx = np.flatnonzero(new)
        sp = split_at(prm, rw.take(idx), jc.t_max[idx], st.s[idx], tm.xf[idx])
        end = sp.slope <= 0
        st.end_at(idx, sp, end)
        fin[idx[end]] = True
        st.hi_ok[idx[~end]] = True
    return np.where(above & st.hi_ok, 0.5 * (st.v + v_hi), v_new)


def _joint_move(st, jc, fin, v_new, ds, dy) -> None:
    """Apply the step to the rows not finished."""
    if fin.any():
        upd = ~fin
        st.v = np.where(upd, v_new, st.v)
        st.t = np.where(upd, jc.t_lb + np.exp(v_new), st.t)
        st.s = np.where(upd, st.s + ds, st.s)
        st.y = np.where(upd[:, None], st.y + dy, st.y)
    else:
        st.v = v_new
        st.t = jc.t_lb + np.exp(v_new)
        st.s = st.s + ds
        np.add(st.y, dy, out=st.y)  # y is the search's own array (see _joint_start)


def _joint_finish(prm, rw, t_min, rtol, jc, st, tm, conv) -> tuple[Split, NDArray[np.bool_]]:
    """The splits and the rows certified by convexity (see :func:`joint_search`)."""
    # The last evaluation is the converged one for every converged row (rows stop moving
    # once converged); value and slope follow from it as in _finish.
    t, x, t_max = st.t, tm.x, jc.t_max
    energy = prm.compute_j_total + (rw.shannon * (tm.em1x / x)).sum(axis=1)
    value = prm.w_t * t + prm.w_e * energy
    slope = prm.w_t + prm.w_e * tm.d
    v_inf = prm.w_e * (prm.compute_j_total + rw.shannon.sum(axis=1))
    t_low = np.fmax(t_min, jc.t_lb)  # a lower end of the interval (t_lb if T_min is unknown)
    gap = np.where(
        slope >= 0,
        slope * (t - t_low),
        -slope * np.minimum(t_max - t, (value - prm.w_t * t - v_inf) / (prm.w_t - slope)),
    )
    cert = (gap <= rtol * value) | (value <= (1.0 + rtol) * (v_inf + prm.w_t * t_low))
    ok = conv & ~st.failed & cert & np.isfinite(value)
    pinned = ok & ~st.stop & (False if x is tm.xf else np.all(x < tm.xf, axis=1))
    if pinned.any():
        # Every device at its cap with the band used up: T is T_min, where the price is not
        # unique (any price above the cap prices clears the band). Report T_min's split with
        # the least price and the slope V'(T_min+), as split_at_min does; without T_min, hand
        # the row back.
        known = pinned & np.isfinite(t_min)
        if known.any():
            idx = np.flatnonzero(known)
            st.ends.append((idx, split_at_min(prm, rw.take(idx), t_min[idx])))
        ok &= ~(pinned & ~known)
    sp = Split(t, tm.u, x.copy() if x is tm.xf else x, tm.xf, st.s, energy, value, slope)
    for idx, part in st.ends:
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
    t_max = np.full(m, np.inf if prm.deadline_s is None else prm.deadline_s)
    if prm.w_e == 0.0:
        # J = K w_T T: the fastest feasible round is optimal.
        return split_at_min(prm, rw, t_min), np.zeros(m, dtype=bool)
    if warm is None:
        cur = split_at_min(prm, rw, t_min)
    else:
        # fmax: T_min may be unknown (NaN) where the warm start is known to be feasible.
        t0 = np.minimum(np.fmax(warm[0], t_min), t_max)
        t0 = np.where(np.isfinite(t0), t0, t_min)
        cur = split_at(prm, rw, t0, warm[1], warm[2])
    br = _Bracket(prm, rw, t_min, t_max, rtol, cur)
    if prm.w_t == 0.0 and prm.deadline_s is None:
        br.jump()
    br.enclose()
    br.narrow()
    return br.result(), br.capped


class _Bracket:
    """State of :func:`search_time_bracketed`: per row, the best bracket of the root of ``G``.

    ``lo_*`` hold the latest point with ``V' < 0`` (root to its right), ``hi_*`` the latest
    with ``V' >= 0``; ``done`` rows stopped at an end of ``[T_min, deadline]`` with ``best``
    their split; ``last`` is each row's latest split (warm start of the next).
    """

    def __init__(self, prm, rw, t_min, t_max, rtol, cur: Split) -> None:
        m = rw.w.shape[0]
        self.prm, self.rw, self.t_min, self.t_max, self.rtol = prm, rw, t_min, t_max, rtol
        self.t_lb = rw.t_lb
        self.capped = np.zeros(m, dtype=bool)
        self.best = cur.copy()
        self.v_inf = prm.w_e * (prm.compute_j_total + rw.shannon.sum(axis=1))
        # T_min may be unknown (NaN, latency weight 0): t_lb is a lower end too.
        self.v_floor = self.v_inf + prm.w_t * np.fmax(t_min, rw.t_lb)
        self.log_wt = np.log(prm.w_t) if prm.w_t > 0 else -np.inf
        nan = np.full(m, np.nan)
        self.lo_v, self.hi_v, self.lo_g, self.hi_g = nan.copy(), nan.copy(), nan.copy(), nan.copy()
        self.lo_sp, self.hi_sp = cur.copy(), cur.copy()
        self.done = np.zeros(m, dtype=bool)
        self.last = cur.copy()
        self.last_g = self.absorb(np.arange(m), cur)

    def gval(self, sp: Split) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(self.prm.w_t - sp.slope) - self.log_wt

    def absorb(self, idx: IntArray, sp: Split) -> FloatArray:
        """Record new points as bracket ends; close rows whose optimum is an interval end."""
        prm, rtol = self.prm, self.rtol
        g = self.gval(sp)
        v = np.log(sp.t - self.t_lb[idx])
        neg = sp.slope < 0  # V still falling: the root lies right (G > 0)
        ineg, ipos = idx[neg], idx[~neg]
        self.lo_v[ineg], self.lo_g[ineg] = v[neg], g[neg]
        self.hi_v[ipos], self.hi_g[ipos] = v[~neg], g[~neg]
        self.lo_sp.put(ineg, sp.take(np.flatnonzero(neg)))
        self.hi_sp.put(ipos, sp.take(np.flatnonzero(~neg)))
        at_min = ~neg & (sp.t <= self.t_min[idx])
        at_max = neg & (sp.t >= self.t_max[idx])
        # V* >= w_T T_min + w_E E_inf: a point this close to the lower bound is certified (this
        # stops tiny latency weights from chasing an optimum at astronomically large T).
        at_max |= neg & (sp.value <= (1.0 + rtol) * self.v_floor[idx])
        if prm.w_t == 0.0:
            # V falls forever without a deadline: stop within the documented factor of inf V.
            near = neg & (sp.value <= (1.0 + ZERO_LATENCY_WEIGHT_RTOL) * self.v_inf[idx])
            self.capped[idx[near & ~at_max]] = True
            at_max |= near
        ends = at_min | at_max
        self.done[idx[ends]] = True
        self.best.put(idx[ends], sp.take(np.flatnonzero(ends)))
        return g

    def evaluate(self, idx: IntArray, v_new: FloatArray) -> tuple[Split, FloatArray]:
        """The split at ``v = log(T - t_lb)`` for rows ``idx``, recorded; with its G."""
        last = self.last
        sp = split_at(
            self.prm,
            self.rw.take(idx),
            self.t_lb[idx] + np.exp(v_new),
            last.log_lam[idx],
            last.x_free[idx],
        )
        last.put(idx, sp)
        return sp, self.absorb(idx, sp)

    def grid(self, idx: IntArray) -> FloatArray:
        """The round times :meth:`enclose` visits from ``last`` when ``V'`` is never finite-signed
        (latency weight 0: G = inf and every step is one e-fold), shape (len(idx), K), K <= 760.

        The same floating-point operations as :meth:`enclose`, so the times are identical.
        """
        t_lb = self.t_lb[idx]
        with np.errstate(divide="ignore"):
            v_min = np.log(np.fmax(self.t_min[idx], t_lb) - t_lb)
        v_max = np.log(self.t_max[idx] - t_lb)
        cols = [self.last.t[idx]]
        with np.errstate(over="ignore"):
            while np.all(np.isfinite(cols[-1])) and len(cols) < 760:
                v1 = np.log(cols[-1] - t_lb)
                cols.append(t_lb + np.exp(np.clip(v1 + 1.0, v_min, v_max)))
        return np.stack(cols, axis=1)

    def jump(self) -> None:
        """Latency weight 0 without a deadline: :meth:`enclose`'s answer with few evaluations.

        There every enclose step grows ``T - t_lb`` by e until ``V`` is within
        :data:`ZERO_LATENCY_WEIGHT_RTOL` of its infimum. ``V`` falls with ``T``, so that stop is
        the first grid time (:meth:`grid`) that passes, found here by predicting it from
        ``V - V_inf ~ 1/T`` and checking that it passes and the time before it does not. Rows
        this does not settle in a few evaluations are left at their latest failing grid time,
        from which :meth:`enclose` goes on as before. The first prediction is the long-round
        limit (:meth:`_long_round_time`), later ones interpolate the evaluated points.
        """
        idx = np.flatnonzero(~self.done)
        if not idx.size:
            return
        grid = self.grid(idx)
        rows = np.arange(idx.size)
        kmax = grid.shape[1] - 1
        lo = np.zeros(idx.size, dtype=np.intp)  # latest known failing grid index
        hi = np.full(idx.size, kmax + 1)  # earliest known passing grid index
        d_thr = ZERO_LATENCY_WEIGHT_RTOL * self.v_inf[idx]
        pts = {"t": self.last.t[idx].copy(), "d": self.last.value[idx] - self.v_inf[idx]}
        pts["t0"], pts["d0"] = np.full(idx.size, np.nan), np.full(idx.size, np.nan)
        pts["tw"] = pts["t"].copy()  # round time of the warm start (lam, xf)
        t_star = self._long_round_time(idx, d_thr)
        seed = np.isfinite(t_star) & (t_star > pts["t"])
        pts["t"][seed], pts["d"][seed] = t_star[seed], d_thr[seed]
        lam, xf = self.last.log_lam[idx].copy(), self.last.x_free[idx].copy()
        lo_sp = self.last.take(idx)
        hi_sp = self.last.take(idx)
        bad = np.zeros(idx.size, dtype=bool)
        for _ in range(12):
            act = np.flatnonzero(~bad & (hi > lo + 1))
            if not act.size:
                break
            k = self._predict(grid[act], pts, act, d_thr[act], lo[act], hi[act])
            t = grid[act, k]
            ratio = t / pts["tw"][act]
            rw = self.rw if act.size == self.done.size else self.rw.take(idx[act])
            with np.errstate(all="ignore"):  # a poor start only costs Newton steps
                sp = split_at(
                    self.prm,
                    rw,
                    t,
                    lam[act] - np.log(ratio),  # lambda ~ 1/T and x ~ 1/T for long rounds
                    np.minimum(xf[act] / ratio[:, None], 700.0),
                )
            ok = np.isfinite(sp.value) & (sp.slope < 0)
            bad[act[~ok]] = True
            pas = ok & self._passes(idx[act], sp)
            fail = ok & ~pas
            hi[act[pas]], lo[act[fail]] = k[pas], k[fail]
            hi_sp.put(act[pas], sp.take(np.flatnonzero(pas)))
            lo_sp.put(act[fail], sp.take(np.flatnonzero(fail)))
            pts["t0"][act[ok]], pts["d0"][act[ok]] = pts["t"][act[ok]], pts["d"][act[ok]]
            pts["t"][act[ok]] = pts["tw"][act[ok]] = t[ok]
            pts["d"][act[ok]] = sp.value[ok] - self.v_inf[idx[act[ok]]]
            lam[act[ok]], xf[act[ok]] = sp.log_lam[ok], sp.x_free[ok]
        found = ~bad & (hi == lo + 1)
        # Found rows end at their first passing time; the others resume at their last failing one.
        last = lo_sp
        last.put(rows[found], hi_sp.take(rows[found]))
        self.last.put(idx, last)
        self.last_g[idx] = self.absorb(idx, last)

    def _long_round_time(self, idx: IntArray, d_thr: FloatArray) -> FloatArray:
        """Round time at which ``V - V_inf`` reaches ``d_thr`` in the long-round limit, (K,).

        For ``T >> c_n`` every device's ``x_n`` is small, ``h(x) ~ x^2/2`` gives
        ``x_n = A sqrt(g_n) / (B T)`` with ``A = sum_n W_n ln2 / sqrt(g_n)`` (the band used up),
        and ``E - E_inf = sum_n S_n x_n / 2 = N0 A^2 / (2 B T)``.
        """
        prm = self.prm
        a = (self.rw.w[idx] * (LN2 / np.sqrt(prm.gain))).sum(axis=1)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            return prm.w_e * prm.n0 * a * a / (2.0 * prm.bandwidth_hz * d_thr)

    def _passes(self, idx: IntArray, sp: Split) -> NDArray[np.bool_]:
        """Where :meth:`absorb` would stop a falling ``V`` (slope < 0) at ``sp``."""
        near = sp.value <= (1.0 + ZERO_LATENCY_WEIGHT_RTOL) * self.v_inf[idx]
        return near | (sp.value <= (1.0 + self.rtol) * self.v_floor[idx])

    @staticmethod
    def _predict(grid, pts, act, d_thr, lo, hi) -> IntArray:
        """Grid index where ``V - V_inf`` should reach ``d_thr``, strictly inside (lo, hi)."""
        t, d = pts["t"][act], pts["d"][act]
        t0, d0 = pts["t0"][act], pts["d0"][act]
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.log(d0 / d) / np.log(t / t0)  # V - V_inf ~ T^-p from the last two points
        p = np.where(np.isfinite(p), np.clip(p, 0.5, 2.0), 1.0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            target = t * np.exp(np.log(d / d_thr) / p)
        k = np.sum(grid < np.where(np.isfinite(target), target, np.inf)[:, None], axis=1)
        return np.clip(k, lo + 1, hi - 1)

    def enclose(self) -> None:
        """Phase 1: bracket the root (rows with one end known) by overshooting secant steps."""
        t_lb = self.t_lb
        nan = np.full(self.done.shape, np.nan)
        prev_v, prev_g = nan.copy(), nan.copy()
        with np.errstate(divide="ignore"):
            v_min = np.log(np.fmax(self.t_min, t_lb) - t_lb)  # -inf where T_min is unknown
        v_max = np.log(self.t_max - t_lb)
        for _ in range(200):
            need = ~self.done & (np.isnan(self.lo_v) | np.isnan(self.hi_v))
            if not need.any():
                break
            idx = np.flatnonzero(need)
            v1 = np.log(self.last.t[idx] - t_lb[idx])
            g1, v0, g0 = self.last_g[idx], prev_v[idx], prev_g[idx]
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
            _, self.last_g[idx] = self.evaluate(idx, v_new)

    def narrow(self) -> None:
        """Phase 2: Illinois regula falsi on G(v) for bracketed rows.

        The G of an end kept twice in a row is halved in the secant formula so that end moves too.
        """
        lo_sp, hi_sp = self.lo_sp, self.hi_sp
        ga, gb = self.lo_g.copy(), self.hi_g.copy()
        side = np.zeros(self.done.shape, dtype=np.int64)  # -1: lo replaced last, +1: hi
        for _ in range(200):
            width = hi_sp.t - lo_sp.t
            gap = np.minimum(-lo_sp.slope * width, hi_sp.slope * width)
            vmin = np.minimum(lo_sp.value, hi_sp.value)
            fin = (gap <= self.rtol * vmin) | (width <= 1e-15 * hi_sp.t)
            todo = ~self.done & ~fin
            if not todo.any():
                break
            idx = np.flatnonzero(todo)
            va, vb, fa, fb = self.lo_v[idx], self.hi_v[idx], ga[idx], gb[idx]
            with np.errstate(invalid="ignore", divide="ignore"):
                v_new = vb - fb * (vb - va) / (fb - fa)
            wdt = vb - va
            bad = ~np.isfinite(v_new) | (v_new <= va + 1e-6 * wdt) | (v_new >= vb - 1e-6 * wdt)
            v_new = np.where(bad, 0.5 * (va + vb), v_new)
            sp, g = self.evaluate(idx, v_new)
            neg = sp.slope < 0
            ineg, ipos = idx[neg], idx[~neg]
            ga[ineg] = g[neg]
            gb[ipos] = g[~neg]
            gb[ineg[side[ineg] == -1]] *= 0.5
            ga[ipos[side[ipos] == 1]] *= 0.5
            side[ineg] = -1
            side[ipos] = 1

    def result(self) -> Split:
        """Rows not stopped at an end of [T_min, deadline] take the better end of their bracket."""
        best, lo_sp, hi_sp = self.best, self.lo_sp, self.hi_sp
        rows = np.flatnonzero(~self.done)
        if rows.size:
            use_hi = hi_sp.value[rows] < lo_sp.value[rows]
            best.put(rows[use_hi], hi_sp.take(rows[use_hi]))
            best.put(rows[~use_hi], lo_sp.take(rows[~use_hi]))
        return best

"""Baseline allocations that the optimizers are measured against.

The problem is the one of ``docs/formulation.md``, section "The problem".

Each baseline optimizes a restricted problem exactly (up to a certified numerical tolerance) and
honours ``[constraints]``; infeasibility is a status whose message names the binding constraint
and the smallest relaxation *within that baseline's restriction*.

* ``equal``: B/N of the band, full power, the largest bit width: the reference that normalizes J.
* ``fixed-bits``: one bit width for every device (option ``bits``), bandwidth and power optimized
  by the exact continuous block (:mod:`sflam_opt.solvers.kernel`).
* ``bandwidth-only``: full power, the largest bit width, bandwidth (and round time) optimized.
  At ``p = Pmax`` a device's spectral efficiency ``y = ln(1 + Pmax g / (N0 B))`` fixes both its
  upload time ``S phi(y) / Pmax`` and energy ``S phi(y)`` (``S = N0 W ln2 / g``); the split at a
  given round time prices bandwidth with one multiplier, and the round time is a convex 1-D search.
* ``power-only``: B/N each, the largest bit width, power optimized: every device uses its whole
  slot ``T - c_n``, so J is a convex function of T alone (derivative in closed form).
* ``bits-only``: B/N each and full power, bits optimized exactly: for a round-time threshold
  ``tau`` the ratio J separates per device, so Dinkelbach's method over ``theta`` needs, per
  ``theta``, the best ``tau`` among the N x L candidate device latencies, found by one sorted sweep
  with cumulative sums (Dinkelbach 1967, Management Science 13(7)).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from sflam_opt.allocation import Allocation
from sflam_opt.bounds import rounds_needed
from sflam_opt.costs import (
    Reference,
    compute_energy_j,
    equal_allocation,
    fixed_time_s,
    payload_bits,
    rate_bps,
    reference,
    violations,
)
from sflam_opt.errors import SolverArgumentError
from sflam_opt.numeric import LN2, FloatArray, IntArray
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.base import SolveResult, register_solver
from sflam_opt.solvers.kernel import (
    ZERO_LATENCY_NOTE,
    ZERO_LATENCY_WEIGHT_RTOL,
    bandwidth_alternative,
    deadline_message,
    energy_cap_message,
    relax_message,
    solve_continuous,
)
from sflam_opt.solvers.lambertw import h, h_from_expm1, phi, phi_inverse
from sflam_opt.validation import check_int, is_int

__all__ = [
    "solve_bandwidth_only",
    "solve_bits_only",
    "solve_equal",
    "solve_fixed_bits",
    "solve_power_only",
]

logger = logging.getLogger(__name__)


@register_solver("equal")
def solve_equal(scenario: Scenario) -> SolveResult:
    """Equal split: B_n = B/N, p_n = Pmax_n, b_n = max(L) (J = 1 by definition)."""
    alloc = equal_allocation(scenario)
    bad = violations(scenario, alloc)
    if bad:
        return SolveResult(
            alloc,
            "infeasible",
            "equal allocation violates: " + "; ".join(bad),
            backend="closed-form",
            iterations=[1.0],
        )
    return SolveResult(
        alloc,
        "converged",
        "equal split (closed form, nothing optimized)",
        backend="closed-form",
        iterations=[1.0],
    )


# ------------------------------------------------------------------------------------------------
# fixed-bits
# ------------------------------------------------------------------------------------------------


@register_solver("fixed-bits")
def solve_fixed_bits(scenario: Scenario, *, bits: int | None = None) -> SolveResult:
    """One bit width for all devices (default: the largest), bandwidth and power optimized."""
    levels = scenario.bits.levels
    if bits is None:
        bits = levels[-1]
    if not is_int(bits) or bits not in levels:
        raise SolverArgumentError(
            f"bits={bits!r}: not an allowed bit width of this scenario; choose one of "
            f"{list(levels)}"
        )
    b = np.full(scenario.n_devices, int(bits), dtype=np.int64)
    if not np.isfinite(rounds_needed(scenario, b)):
        from sflam_opt.bounds import phi_q

        need = scenario.convergence.phi0 + float(phi_q(scenario, b))
        higher = [lv for lv in levels if lv > bits]
        hint = f"use bits >= {higher[0]}" if higher else "raise epsilon"
        return SolveResult(
            None,
            "infeasible",
            f"convergence: epsilon = {scenario.convergence.epsilon:g} is not above "
            f"phi0 + Phi_q = {need:.6g} at {bits} bits for every device; {hint}",
            backend="numpy",
        )
    sol = solve_continuous(scenario, b)
    if not sol.feasible:
        return SolveResult(None, sol.status, sol.message, backend="numpy")
    alloc = Allocation(b, sol.bandwidth_hz, sol.power_w, scenario.devices.ids)
    return SolveResult(
        alloc,
        "optimal",
        f"{bits} bits for every device; bandwidth and power optimal (exact continuous block)",
        backend="numpy",
        iterations=[sol.objective],
        info={"round_latency_s": sol.round_latency_s},
    )


# ------------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------------


def _monotone_root(
    fun: Callable[[FloatArray], tuple[FloatArray, FloatArray]],
    lo: FloatArray,
    hi: FloatArray,
    x0: FloatArray | None = None,
    tol: float = 1e-13,
) -> FloatArray:
    """Root of an increasing ``fun`` per element on ``[lo, hi]`` (finite, bracketing).

    ``fun(x) -> (value, derivative)``. Safeguarded Newton: a step leaving the bracket bisects.
    """
    lo, hi = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
    x = 0.5 * (lo + hi) if x0 is None else np.clip(np.asarray(x0, dtype=np.float64), lo, hi)
    active = np.ones(x.shape, dtype=bool)
    for _ in range(300):
        f, d = fun(x)
        pos = f > 0
        hi = np.where(active & pos, x, hi)
        lo = np.where(active & ~pos, x, lo)
        with np.errstate(invalid="ignore", divide="ignore"):
            xn = x - f / d
        ok = np.isfinite(xn) & (xn > lo) & (xn < hi)
        xn = np.where(ok, xn, 0.5 * (lo + hi))
        active &= (np.abs(f) > tol) & (hi - lo > tol * np.maximum(np.abs(hi), 1.0))
        if not active.any():
            break
        x = np.where(active, xn, x)
    return x


def _zero_weight_message(ref: Reference) -> str:
    return ZERO_LATENCY_NOTE if ref.latency_weight == 0.0 else ""


def _energy_cap_check(scenario: Scenario, need_j: FloatArray, what: str) -> str | None:
    cap = scenario.constraints.device_energy_j
    if cap is None or np.all(cap > need_j):
        return None
    return energy_cap_message(scenario, need_j, what)


# ------------------------------------------------------------------------------------------------
# power-only: B_n = B/N, b = max(L), p optimized
# ------------------------------------------------------------------------------------------------


@register_solver("power-only")
def solve_power_only(scenario: Scenario) -> SolveResult:
    """Equal bandwidth, the largest bit width; transmit power (and round time) optimized."""
    from scipy.optimize import brentq  # scipy.optimize: imported on first use, not by fast

    ref = reference(scenario)
    n = scenario.n_devices
    n0, g = scenario.noise_w_per_hz, scenario.gain
    pmax = scenario.devices.max_power_w
    bw = np.full(n, scenario.system.bandwidth_hz / n)
    b = np.full(n, scenario.bits.max, dtype=np.int64)
    w = payload_bits(scenario, b)
    s = n0 * w * LN2 / g  # Shannon-limit upload energy, J
    c = fixed_time_s(scenario)
    ce = compute_energy_j(scenario)
    cons = scenario.constraints
    why = _energy_cap_check(
        scenario, ce + s, "at the largest bits (compute + Shannon-limit upload energy)"
    )
    if why is not None:
        return SolveResult(None, "infeasible", why, backend="numpy")
    # x = W ln2 / (B_n u): the power cap is x <= ln(1 + Pmax g / (N0 B_n)), the energy cap
    # S phi(x) <= budget is x <= phi^{-1}(budget / S); both bound u from below.
    x_cap = np.log1p(pmax * g / (n0 * bw))
    if cons.device_energy_j is not None:
        x_cap = np.minimum(x_cap, phi_inverse((cons.device_energy_j - ce) / s))
    t_lo = float(np.max(c + w * LN2 / (bw * x_cap)))
    if cons.round_deadline_s is not None and t_lo > cons.round_deadline_s:
        return SolveResult(
            None,
            "infeasible",
            deadline_message(
                cons.round_deadline_s, t_lo, "with equal bandwidth and the largest bits"
            ),
            backend="numpy",
        )
    w_t, w_e = ref.w_latency, ref.w_energy

    def xs(t: float) -> FloatArray:
        return np.minimum(w * LN2 / (bw * (t - c)), x_cap)

    def value(t: float) -> float:
        return w_t * t + w_e * float(np.sum(ce + s * phi(xs(t))))

    def slope(t: float) -> float:
        # de_n/du_n = -(N0 B_n / g_n) h(x_n)
        return w_t - w_e * float(np.sum(n0 * bw / g * h(xs(t))))

    t_hi = cons.round_deadline_s
    capped = False
    if t_hi is None:
        t_hi = t_lo + max(t_lo - float(np.max(c)), 1e-9)
        v_inf = w_e * float(np.sum(ce + s))
        for _ in range(200):
            if (w_t > 0 and slope(t_hi) > 0) or (
                w_t == 0 and value(t_hi) <= (1 + ZERO_LATENCY_WEIGHT_RTOL) * v_inf
            ):
                break
            t_hi = t_lo + 2.0 * (t_hi - t_lo)
        capped = w_t == 0
    if w_e == 0 or slope(t_lo) >= 0:
        t = t_lo
    elif slope(t_hi) <= 0:
        t = t_hi
    else:
        t = brentq(slope, t_lo, t_hi, xtol=1e-14 * t_hi, rtol=1e-15, maxiter=500)
    x = xs(t)
    p = np.minimum(n0 * bw * np.expm1(x) / g, pmax)
    alloc = Allocation(b, bw, p, scenario.devices.ids)
    j = float(rounds_needed(scenario, b)) * value(t)
    msg = "equal bandwidth, largest bits; power and round time optimal (convex 1-D search)"
    return SolveResult(
        alloc,
        "optimal",
        msg + (_zero_weight_message(ref) if capped else ""),
        backend="numpy",
        iterations=[j],
        info={"round_latency_s": t},
    )


# ------------------------------------------------------------------------------------------------
# bandwidth-only: p = Pmax, b = max(L), B optimized
# ------------------------------------------------------------------------------------------------


class _FullPowerSplit:
    """Energy-optimal bandwidth split at full power, with per-device lower bounds.

    Device n at spectral efficiency ``y`` uses ``B = a/(e^y - 1)``, ``a = Pmax g / N0``, takes
    ``S phi(y) / Pmax`` to upload and spends ``S phi(y)``. The marginal energy saved per Hz is
    ``lambda_n(y) = S h(y) (e^y - 1)^2 / (a y^2 e^y)``, increasing in y.
    """

    def __init__(self, scenario: Scenario, w: FloatArray) -> None:
        self.n0, self.g = scenario.noise_w_per_hz, scenario.gain
        self.pmax = scenario.devices.max_power_w
        self.a = self.pmax * self.g / self.n0
        self.s = self.n0 * w * LN2 / self.g
        self.c = fixed_time_s(scenario)
        self.ce = compute_energy_j(scenario)
        self.band = float(scenario.system.bandwidth_hz)
        cap = scenario.constraints.device_energy_j
        self.y_e = (
            np.full(w.shape, np.inf) if cap is None else phi_inverse((cap - self.ce) / self.s)
        )

    def y_max(self, t: float) -> FloatArray:
        """Largest y meeting round time t and the energy cap (0 where impossible)."""
        u = t - self.c
        return np.minimum(phi_inverse(np.where(u > 0, self.pmax * u / self.s, 0.0)), self.y_e)

    def _log_lam(self, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        em1 = np.expm1(y)
        hy = h_from_expm1(y, em1)
        val = np.log(self.s / self.a) + np.log(hy) + 2 * np.log(em1) - 2 * np.log(y) - y
        dval = y * (em1 + 1) / hy + 2 * (em1 + 1) / em1 - 2 / y - 1
        return val, dval

    def y_of_price(self, log_lam: float, y0: FloatArray | None = None) -> FloatArray:
        """Unconstrained y_n at price lambda (Newton on log y)."""

        def fun(t: FloatArray) -> tuple[FloatArray, FloatArray]:
            y = np.exp(t)
            val, dval = self._log_lam(y)
            return val - log_lam, dval * y

        n = self.s.size
        t0 = None if y0 is None else np.log(y0)
        return np.exp(_monotone_root(fun, np.full(n, -60.0), np.full(n, 6.5), t0))

    def split(self, t: float) -> tuple[FloatArray, float]:
        """(y, E) of the energy-optimal split at round time t (assumed feasible)."""
        from scipy.optimize import brentq  # imported on first use, not by fast
        from scipy.special import logsumexp

        ym = self.y_max(t)
        cache: dict[str, FloatArray] = {}

        def total(log_lam: float) -> float:
            y = np.minimum(self.y_of_price(log_lam, cache.get("y")), ym)
            cache["y"] = np.maximum(y, 1e-300)
            with np.errstate(over="ignore", under="ignore"):
                tot = float(np.sum(self.a / np.expm1(y)))
            if not 0.0 < tot < np.inf:
                # a_n / (e^y_n - 1) underflows for very weak channels: sum in logs instead.
                with np.errstate(divide="ignore"):
                    log_em1 = np.where(y > 30.0, y + np.log1p(-np.exp(-y)), np.log(np.expm1(y)))
                return float(logsumexp(np.log(self.a) - log_em1) - np.log(self.band))
            return float(np.log(tot) - np.log(self.band))

        lam_hi = float(np.max(self._log_lam(np.minimum(ym, 700.0))[0]))
        if total(lam_hi) >= 0:  # every device at its cap already fills B
            y = ym
        else:
            # log lambda grows about twice as fast as y, so the bracket may need to reach
            # thousands of units below lam_hi: steps of 10, then geometric.
            lo = lam_hi - 10.0
            bracketed = False
            for i in range(260):
                if total(lo) > 0:
                    bracketed = True
                    break
                lo -= 10.0 if i < 200 else 10.0 * 2.0 ** (i - 199)
            if not bracketed:
                ls = lo  # the band never binds within float range: the cheapest price
            else:
                try:
                    ls = brentq(total, lo, lam_hi, xtol=1e-13, rtol=1e-15, maxiter=500)
                except ValueError:
                    ls = lam_hi  # total(lam_hi) re-evaluates to >= 0: the root is lam_hi
            y = np.minimum(self.y_of_price(ls), ym)
        return y, float(np.sum(self.ce + self.s * phi(y)))

    def min_bandwidth(self, t: float) -> float:
        ym = self.y_max(t)
        with np.errstate(divide="ignore"):
            return float(np.sum(np.where(ym > 0, self.a / np.expm1(ym), np.inf)))


@register_solver("bandwidth-only")
def solve_bandwidth_only(scenario: Scenario) -> SolveResult:
    """Full power, the largest bit width; bandwidth split (and round time) optimized."""
    from scipy.optimize import brentq, minimize_scalar  # imported on first use, not by fast

    ref = reference(scenario)
    n = scenario.n_devices
    b = np.full(n, scenario.bits.max, dtype=np.int64)
    sp = _FullPowerSplit(scenario, payload_bits(scenario, b))
    cons = scenario.constraints
    if cons.device_energy_j is not None:
        # At full power the cap bounds y from above, i.e. needs a least bandwidth whatever the
        # round time (infinite when the cap is at or below compute + Shannon-limit energy).
        with np.errstate(divide="ignore"):
            need_bw = float(np.sum(sp.a / np.expm1(sp.y_e)))
        if not need_bw < sp.band:

            def fits(cap: float) -> bool:
                y = phi_inverse((cap - sp.ce) / sp.s)
                with np.errstate(divide="ignore"):
                    return bool(np.sum(sp.a / np.expm1(y)) < sp.band)

            lo, hi = cons.device_energy_j, 2.0 * cons.device_energy_j
            while not fits(hi):
                lo, hi = hi, 2.0 * hi
            for _ in range(100):
                mid = 0.5 * (lo + hi)
                lo, hi = (lo, mid) if fits(mid) else (mid, hi)
            msg = relax_message(
                "device_energy_j",
                cons.device_energy_j,
                "J",
                "cannot be met at full power and the largest bits within the band",
                hi,
                also=bandwidth_alternative(need_bw, above=True),
            )
            return SolveResult(None, "infeasible", msg, backend="numpy")
    # Fastest round: sum of the least bandwidths meeting T equals the band.
    t_floor = float(np.max(sp.c + sp.s / sp.pmax))  # unlimited bandwidth at full power

    def excess(t: float) -> float:
        return np.log(sp.min_bandwidth(t)) - np.log(sp.band)

    t_hi = 2.0 * t_floor
    for _ in range(200):
        if excess(t_hi) <= 0:
            break
        t_hi = t_floor + 2.0 * (t_hi - t_floor)
    t_lo = t_floor * (1 + 1e-15)
    if excess(t_lo) <= 0:
        # The band is not what limits the round (a device so far that its full-power rate,
        # not its bandwidth, sets T): the fastest round is at the unlimited-band bound.
        t_min = t_lo
    else:
        t_min = float(brentq(excess, t_lo, t_hi, xtol=1e-14 * t_hi, maxiter=500))
    while excess(t_min) > 0:  # land on the feasible side of the root
        t_min = float(np.nextafter(t_min, np.inf) * (1 + 1e-15))
    if cons.round_deadline_s is not None and t_min > cons.round_deadline_s:
        msg = deadline_message(
            cons.round_deadline_s,
            t_min,
            "at full power and the largest bits",
            also=bandwidth_alternative(sp.min_bandwidth(cons.round_deadline_s)),
        )
        return SolveResult(None, "infeasible", msg, backend="numpy")
    w_t, w_e = ref.w_latency, ref.w_energy
    # Beyond the round time of the split with no time limit, E stops falling.
    y_free, _ = sp.split(np.inf)
    t_free = float(np.max(sp.c + sp.s * phi(y_free) / sp.pmax))
    t_top = t_free if cons.round_deadline_s is None else min(t_free, cons.round_deadline_s)
    t_top = max(t_top, t_min)

    def value(t: float) -> float:
        return w_t * t + w_e * sp.split(t)[1]

    if w_e == 0 or t_top <= t_min:
        t = t_min
    elif w_t == 0:
        t = t_top
    else:
        res = minimize_scalar(
            value, bounds=(t_min, t_top), method="bounded", options={"xatol": 1e-12 * t_top}
        )
        cands = [(value(t_min), t_min), (value(t_top), t_top), (float(res.fun), float(res.x))]
        t = min(cands)[1]
    y, energy = sp.split(t)
    bw = sp.a / np.expm1(y)
    bw = bw * min(1.0, sp.band / float(bw.sum()))  # rounding: never exceed the band
    alloc = Allocation(b, bw, sp.pmax.copy(), scenario.devices.ids)
    j = float(rounds_needed(scenario, b)) * (w_t * t + w_e * energy)
    return SolveResult(
        alloc,
        "optimal",
        "full power, largest bits; bandwidth split and round time optimal (convex 1-D search)",
        backend="numpy",
        iterations=[j],
        info={"round_latency_s": t},
    )


# ------------------------------------------------------------------------------------------------
# bits-only: B_n = B/N, p = Pmax, bits optimized exactly
# ------------------------------------------------------------------------------------------------


@register_solver("bits-only")
def solve_bits_only(scenario: Scenario, *, max_iter: int = 100) -> SolveResult:
    """Equal bandwidth and full power; bits optimized exactly (Dinkelbach + threshold sweep)."""
    max_iter = check_int(max_iter, "max_iter", minimum=1, error=SolverArgumentError)
    ref = reference(scenario)
    alloc0 = equal_allocation(scenario)
    n = scenario.n_devices
    lv = scenario.bits.array
    nl = lv.size
    r = rate_bps(scenario, alloc0.bandwidth_hz, alloc0.power_w)  # (N,)
    up = payload_bits(scenario, lv)[None, :] / r[:, None]  # (N, L) upload s
    t_nl = fixed_time_s(scenario)[:, None] + up
    e_nl = compute_energy_j(scenario)[:, None] + alloc0.power_w[:, None] * up
    conv = scenario.convergence
    pen = conv.q * scenario.rho[:, None] / np.square(np.exp2(lv) - 1.0)[None, :]
    room = conv.epsilon - conv.phi0
    kc = conv.a / (scenario.training.learning_rate * scenario.training.local_iters)
    cons = scenario.constraints
    allowed = np.ones((n, nl), dtype=bool)
    if cons.device_energy_j is not None:
        allowed &= e_nl <= cons.device_energy_j
    if cons.round_deadline_s is not None:
        allowed &= t_nl <= cons.round_deadline_s
    top = np.where(allowed, np.arange(nl)[None, :], -1).max(axis=1)
    rows = np.arange(n)
    if np.any(top < 0) or not pen[rows, top].sum() < room:
        return SolveResult(
            None, "infeasible", _bits_only_infeasible(scenario, t_nl, e_nl, pen, room), "numpy"
        )
    w_t, w_e = ref.w_latency, ref.w_energy
    # Events: device n may use level l once tau >= T_nl. T_nl rises with l, so each device's
    # usable set is a prefix of its levels.
    tau0 = float(np.max(np.where(allowed, t_nl, np.inf).min(axis=1)))
    order = np.argsort(t_nl, axis=None, kind="stable")
    ev_n, ev_l = np.unravel_index(order, t_nl.shape)
    ev_t = t_nl.ravel()[order]
    late = (ev_t > tau0) & allowed[ev_n, ev_l]
    ev_n, ev_l, ev_t = ev_n[late], ev_l[late], ev_t[late]
    start = np.where(allowed & (t_nl <= tau0), np.arange(nl)[None, :], -1).max(axis=1)

    def ratio(bi: IntArray) -> tuple[float, float]:
        num = w_t * float(t_nl[rows, bi].max()) + w_e * float(e_nl[rows, bi].sum())
        return num, room - float(pen[rows, bi].sum())

    def best_at(theta: float) -> tuple[float, IntArray]:
        cost = np.where(allowed, w_e * e_nl + theta * pen, np.inf)
        pm = np.minimum.accumulate(cost, axis=1)  # best over the usable prefix
        g0 = float(pm[rows, start].sum())
        delta = pm[ev_n, ev_l] - pm[ev_n, ev_l - 1]
        phis = np.concatenate([[w_t * tau0 + g0], w_t * ev_t + g0 + np.cumsum(delta)])
        k = int(np.argmin(phis))
        tau = tau0 if k == 0 else float(ev_t[k - 1])
        usable = allowed & (t_nl <= tau)
        bi = np.argmin(np.where(usable, cost, np.inf), axis=1)
        return float(phis[k]) - theta * room, bi

    bi = top.copy()
    num, den = ratio(bi)
    theta = num / den
    history = [kc * theta]
    status = "max_iter"
    for _ in range(int(max_iter)):
        f, cand = best_at(theta)
        num, den = ratio(cand)
        if den > 0 and num / den < theta * (1 - 1e-15):
            bi, theta = cand, num / den
            history.append(kc * theta)
            continue
        status = "optimal"  # min(N - theta D) = 0 at theta: Dinkelbach's optimality certificate
        break
    bits = lv[bi]
    alloc = Allocation(bits, alloc0.bandwidth_hz, alloc0.power_w, scenario.devices.ids)
    msg = (
        "equal bandwidth, full power; bits optimal (Dinkelbach with round-time sweep)"
        if status == "optimal"
        else f"stopped after max_iter = {max_iter} Dinkelbach steps"
    )
    return SolveResult(alloc, status, msg, backend="numpy", iterations=history)


def _bits_only_infeasible(
    scenario: Scenario,
    t_nl: FloatArray,
    e_nl: FloatArray,
    pen: FloatArray,
    room: float,
) -> str:
    """Binding constraint of bits-only: which relaxation lets enough bits through."""
    cons = scenario.constraints
    n, nl = t_nl.shape
    rows = np.arange(n)
    # Smallest threshold on (deadline, energy cap) letting each device use enough levels: scan
    # the candidate values of the binding quantity with the other constraint as is.
    for name, vals, other, unit, key in (
        ("deadline", t_nl, e_nl, "s", "round_deadline_s"),
        ("energy", e_nl, t_nl, "J", "device_energy_j"),
    ):
        limit = cons.round_deadline_s if name == "deadline" else cons.device_energy_j
        olim = cons.device_energy_j if name == "deadline" else cons.round_deadline_s
        if limit is None:
            continue
        ok_other = np.ones_like(vals, dtype=bool) if olim is None else other <= olim
        for cand in np.unique(vals[ok_other]):
            allowed = ok_other & (vals <= cand)
            top = np.where(allowed, np.arange(nl)[None, :], -1).max(axis=1)
            if np.all(top >= 0) and pen[rows, top].sum() < room:
                if cand > limit:
                    return relax_message(
                        key,
                        limit,
                        unit,
                        "leaves too few bits at equal bandwidth and full power",
                        cand,
                    )
                break
    return (
        "deadline and energy cap together leave too few bits at equal bandwidth and full "
        "power; relax both"
    )

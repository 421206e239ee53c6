"""The joint continuous block in CVXPY: bandwidth, upload time and power at fixed bits.

``docs/formulation.md`` §6.7 gives the scaled form. With the bits fixed the problem is convex
(§6.1), and at a fixed round time ``T`` every device sends for its whole slot ``u_n = T - c_n``, so
it reduces to a bandwidth split. In the dimensionless variables

- ``y_n = 1 / x_n = B_n u_n / (W_n ln2)``, the inverse spectral efficiency (the band fraction is
  ``beta_n = B_n / B = k_n y_n`` with ``k_n = W_n ln2 / (B u_n)``),
- ``zeta_n`` with ``s_n zeta_n >= y_n exp(1 / y_n)``, ``s_n`` the value of ``y exp(1/y)`` at a
  reference ``y`` (the previous solve), so every ``zeta_n`` is near 1,

the upload energy is ``S_n (s_n zeta_n - y_n)`` with ``S_n = N0 W_n ln2 / g_n`` (the Shannon-limit
energy, where the gain, noise and payload fold into one number per device), and the block at ``T``
is the exponential-cone program

    minimize  sum_n c_n (s_n zeta_n - y_n)
    s.t.      ExpCone(1 / s_n, y_n / s_n, zeta_n),   sum_n k_n y_n <= 1,
              y_lo_n <= y_n <= y_hi_n,   zeta_n <= zeta_hi_n

with ``c_n = S_n / sum S``. The power and energy caps are the bound ``y_n >= y_lo_n = 1 / x_max,n``
(``phi(x_max,n) = min(Pmax_n u_n, Emax - compute_n) / S_n``), which keeps every cone off its
boundary (``y -> 0``); the band constraint bounds ``y`` above. Devices the band price shows to be
held at their caps are taken out of the cone, and devices of low spectral efficiency enter with
their energy expanded to second order in ``x`` and are re-solved to a fixed point (``_Search._solve``; §6.7
says why). The program is DPP, compiled once per number of slots (twice: with and without
the expansion's cones, §6.7); the round
time is a bounded 1-D search over ``log T`` (``V(T) = w_T T + w_E E*(T)`` is convex, §6.4), each
step re-solving parameters only. At the fastest feasible round ``T_min`` every device is at its
caps and the point is known in closed form, so the search never solves a cone program with a
single feasible point.

Nothing here uses ``fast``'s kernel: ``phi^{-1}`` and ``T_min`` are solved with scipy's root
finders on this module's own functions. ``solve(s, "exact", continuous="cvxpy")`` uses this block
as an independent check of the kernel, and ``bcd`` uses it as its continuous block.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import cvxpy as cp
import numpy as np
from scipy.optimize import brentq, elementwise, minimize_scalar

from sflam_opt.costs import Reference, compute_energy_j, fixed_time_s, payload_bits
from sflam_opt.numeric import LN2, FloatArray, IntArray
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.cvx import BlockSolve, _DPPBlock, register_block

__all__ = ["JointBlock", "JointSolution", "phi_inv", "solve_joint"]

logger = logging.getLogger(__name__)

#: Relative tolerance of the round-time search on ``log T``; ``V`` is flat at its minimum, so the
#: error in ``V`` is far smaller (of order the square of this).
T_RTOL = 1e-7
#: Without a deadline and with no latency weight ``V`` falls toward its infimum forever; the round
#: time is the first doubling within this relative distance of it (as in §6.4).
INFIMUM_RTOL = 1e-6
#: A round time this close to ``T_min`` (relative) is taken as ``T_min`` (the closed-form point).
_AT_TMIN = 1e-9
#: Relative slack of the check that a device held at its caps wants no more band.
PIN_RTOL = 1e-9
#: Devices whose reference spectral efficiency is below this enter the cone with their energy
#: expanded to second order in ``x`` (``JointBlock.set``; §6.7 says why), re-solved from their own
#: solution until it stops moving (Newton-like, quadratic convergence). ``phi' >= x phi''`` holds
#: up to ``x = 1``.
X_LINEAR = 0.5
#: The expansion's reference is converged when no expanded device's ``x`` moves by more than this
#: (relative): the expansion's slope error is then of order ``(x0 1e-3)^2``.
LINEAR_RTOL = 1e-3
#: Cone solves per round time at most (pins put back and expansion references updated).
MAX_ROUNDS = 8


def phi(x: FloatArray) -> FloatArray:
    """``phi(x) = (e^x - 1) / x`` (1 at 0), elementwise."""
    x = np.asarray(x, dtype=np.float64)
    safe = np.where(x == 0, 1.0, x)
    with np.errstate(over="ignore"):
        return np.where(x == 0, 1.0, np.expm1(safe) / safe)


def h(x: FloatArray) -> FloatArray:
    """``h(x) = (x - 1) e^x + 1`` (§6.2), written ``(x - 1) expm1(x) + x`` to keep its relative
    accuracy as ``x -> 0`` (``h ~ x^2 / 2``); elementwise. ``S_n h(x_n)`` is the upload energy
    one unit of ``y_n`` saves."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return (x - 1.0) * np.expm1(x) + x


def phi_d2(x: FloatArray) -> FloatArray:
    """``phi''(x) = sum_{k>=2} k (k-1) x^(k-2) / (k+1)!`` for ``0 <= x <= 1`` (the series; the
    closed form ``(e^x (x^2 - 2x + 2) - 2) / x^3`` cancels as ``x -> 0``), elementwise."""
    x = np.minimum(np.asarray(x, dtype=np.float64), 1.0)
    out, term = np.zeros(x.shape), np.ones(x.shape)  # term = x^(k-2)
    fact = 6.0  # (k+1)! at k = 2
    for k in range(2, 22):
        out += k * (k - 1) * term / fact
        term, fact = term * x, fact * (k + 2)
    return out


#: Below this ``r``, :func:`h_inv` uses the series of ``h`` at 0 instead of the root search.
_H_SERIES = 1e-12


def h_inv(r: FloatArray) -> FloatArray:
    """The ``x > 0`` with ``h(x) = r > 0``, elementwise (bracketed root finding on ``log h``).

    ``x^2 / 2 <= h(x) <= x^2 e^x / 2`` and ``h(x) >= e^x`` for ``x >= 2`` bracket the root.
    """
    r = np.asarray(r, dtype=np.float64)
    # The ends in closed form: h(0) = 0 and h(inf) = inf. Extreme gains and prices reach them
    # (r underflows to 0 or overflows to inf), where the bracket below would give NaN.
    inner = (r > _H_SERIES) & np.isfinite(r)
    ri = np.where(inner, r, 1.0)
    # Below _H_SERIES, h(x) = x^2/2 + x^3/3 + O(x^4) inverts to sqrt(2r) (1 - sqrt(2r)/3) to a
    # relative O(r); the bracketed search there loses log h to rounding and returns NaN.
    s2r = np.sqrt(2.0 * np.maximum(r, 0.0))
    small = s2r * (1.0 - s2r / 3.0)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        lr = np.log(ri)
        hi = np.minimum(np.sqrt(2.0 * ri), np.maximum(2.0, lr)) * (1.0 + 1e-9)
        lo = 0.5 * np.minimum(np.sqrt(2.0 * ri / np.e), 1.0)
        res = elementwise.find_root(
            lambda x, t: np.log(h(x)) - t,
            (lo, hi),
            args=(lr,),
            tolerances={"xrtol": 1e-12, "xatol": 0.0},
        )
    return np.where(inner, np.asarray(res.x), np.where(np.isfinite(r), small, np.inf))


def phi_inv(r: FloatArray) -> FloatArray:
    """The ``x > 0`` with ``phi(x) = r``, elementwise: 0 where ``r <= 1``, inf where ``r = inf``.

    Bracketed root finding (:func:`scipy.optimize.elementwise.find_root`) on ``log phi``:
    ``phi(x) >= e^x / x`` minus a little, so ``x = 2 ln r + 2`` is above the root.
    """
    r = np.asarray(r, dtype=np.float64)
    out = np.zeros(r.shape)
    ok = np.isfinite(r) & (r > 1.0)
    out[np.isinf(r)] = np.inf
    if np.any(ok):
        lr = np.log(r[ok])
        res = elementwise.find_root(
            lambda x, t: np.log(phi(x)) - t,
            (np.full(lr.shape, 0.0), 2.0 * lr + 2.0),
            args=(lr,),
            tolerances={"xrtol": 1e-14, "xatol": 0.0},
        )
        out[ok] = res.x
    return out


class JointBlock(_DPPBlock):
    """The bandwidth split at a fixed round time, in the scaled variables of the module docstring.

    The variable is ``r_n = y_n / y0_n`` (``y0`` a reference, so ``r`` is near 1) and the cone is
    shifted by the reference spectral efficiency ``x0 = 1 / y0``: ``ExpCone(x0 (1 - r), r, w)``
    is ``r exp(x0 (1 - r) / r) <= w``, i.e. ``y exp(1 / y) <= s w`` with ``s = y0 exp(x0)``. At the
    reference the cone point is ``(0, 1, 1)`` whatever ``x0`` is, where the unshifted cone would
    hold ``exp(x0)`` (1e6 for a strong device) against 1.

    Parameters (set with :meth:`set`), shape (N,): ``k`` band fraction per unit of ``y``,
    ``cost`` >= 0, ``y_lo`` the lower bound of ``y`` (the caps), ``ref`` the reference ``y0``.
    The upper bound of ``y`` and the caps' largest ``phi(1/y)`` are implied by the band
    constraint and ``y_lo``.
    """

    kind = "joint"
    #: The factor the objective was divided by in the last :meth:`set`.
    scale = 1.0

    def solver_options(self, solver: str) -> dict[str, Any]:
        """Clarabel with its default tolerances (the scaled form needs no tuning); the
        fallbacks as for the other blocks."""
        return {} if solver == "CLARABEL" else super().solver_options(solver)

    def __init__(self, n: int) -> None:
        r = cp.Variable(n, name="r")
        w = cp.Variable(n, name="w")
        v = cp.Variable(n, name="v")
        q = cp.Variable(n, name="q")
        names = ("x0", "k_y0", "cost_s", "cost_y0", "r_lo", "slope", "curv", "on")
        p = {name: cp.Parameter(n, nonneg=True, name=name) for name in names}
        #: The band constraint; its dual is the band price (:meth:`band_price`).
        self.band = p["k_y0"] @ r <= 1
        # The exponential cones, the band and the caps: the whole block when no device is
        # expanded.
        core: list[cp.Constraint] = [
            cp.constraints.ExpCone(p["x0"] - cp.multiply(p["x0"], r), r, w),
            self.band,
            r >= p["r_lo"],
        ]
        # v r >= on^2 and q r >= on^2 (1 - r)^2 (rotated second-order cones): for devices of low
        # spectral efficiency (on = 1) v >= 1 / r and q >= (1 - r)^2 / r, their energy to second
        # order in x = x0 / r; for the others (on = 0) v, q >= 0, and their positive weights put
        # them at 0.
        expansion: list[cp.Constraint] = [
            cp.SOC(v + r, cp.vstack([2.0 * p["on"], v - r]), axis=0),
            cp.SOC(q + r, cp.vstack([2.0 * (p["on"] - cp.multiply(p["on"], r)), q - r]), axis=0),
        ]
        energy = p["cost_s"] @ w - p["cost_y0"] @ r
        obj = cp.Minimize(energy + p["slope"] @ v + p["curv"] @ q)
        super().__init__(obj, core + expansion, {"r": r, "w": w}, p)
        #: The block without the expansion (no v, q and their cones), solved when no device is
        #: expanded, the usual case. There the full block's v = q = 0 sit on the boundary of
        #: their cones at the optimum, and Clarabel stopped short of its tolerances
        #: (InsufficientProgress, AlmostSolved) on faded draws that this program solves.
        self._plain = (cp.Minimize(energy), core)
        #: Whether the last :meth:`set` expanded any device (selects the program).
        self.expanded = False

    def _key(self, solver: str) -> tuple[str, bool]:
        return (solver, self.expanded)

    def _build(self) -> cp.Problem:
        return super()._build() if self.expanded else cp.Problem(*self._plain)

    def band_price(self) -> float:
        """The band constraint's multiplier after the last solve: the objective's fall per unit
        of band fraction (``cost_n h(x_n) = price k_n`` for every device off its caps); nan if
        the last solve gave none."""
        dual = self.band.dual_value
        if dual is None:
            return float("nan")
        return float(np.asarray(dual).reshape(())) * self.scale

    def set(
        self,
        k: FloatArray,
        cost: FloatArray,
        y_lo: FloatArray,
        ref: FloatArray,
        linear: np.ndarray | None = None,
    ) -> None:
        """Load the values for the next solve, per device (spread over slots, see ``_set``).

        A device of ``c`` copies splits its payload: each copy has ``k / c`` and ``cost / c``;
        ``y`` itself, and so ``y0`` and ``y_lo``, are intensive.

        Devices where ``linear`` (bool, shape (N,)) is true get the energy
        ``cost (phi(x0) + phi'(x0) (x - x0) + phi''(x0) / 2 x0 (x - x0)^2 / x)``, ``phi`` to
        second order in ``x = 1 / y`` at the reference: the terms ``cost h(x0) / x0 * v`` and
        ``cost phi''(x0) / 2 x0^2 * q`` with ``v >= 1 / r``, ``q >= (1 - r)^2 / r``
        (``phi' = h / x^2``); their exponential cone is reduced to ``r <= w`` at zero cost. The optimum of that program is the block's
        optimum when ``y = ref`` for those devices (``_Search._solve`` iterates to that point).
        """
        self._layout(k.shape[0])
        copies = self._slot_copies()
        k_s, cost_s = self._spread(k / copies), self._spread(cost / copies)
        y0 = self._spread(ref)
        x0 = 1.0 / y0
        lin = np.zeros(y0.shape, bool) if linear is None else self._spread(np.asarray(linear))
        with np.errstate(over="ignore"):
            s = np.where(lin, y0, y0 * np.exp(x0))
        # phi to second order at x0 in x = x0 / r: phi(x0) + phi'(x0) (x - x0) plus
        # phi''(x0) / 2 times x0 (x - x0)^2 / x = x0^2 (1 - r)^2 / r (the same to second order,
        # and ~1 / r rather than 1 / r^2 as r -> 0).
        slope = np.where(lin, cost_s * h(x0) / x0, 0.0)
        curv = np.where(lin, cost_s * 0.5 * phi_d2(x0) * x0**2, 0.0)
        # The reduced cone r <= w of an expanded device costs slope (w - r): zero at w = r,
        # and priced on the device's own scale so that w stays bounded.
        c_cone = np.where(lin, slope / y0, cost_s)
        # Devices off the expansion get v = q = 0, held there by a weight on their own scale.
        slope = np.where(lin, slope, cost_s)
        curv = np.where(lin, curv, cost_s)
        # The objective's largest coefficient is made 1 (:meth:`band_price` undoes it): the
        # expanded devices leave out their Shannon-limit constant, and what remains can be
        # orders of magnitude below 1.
        self.scale = float(max(np.max(c_cone * s), np.max(slope), np.max(curv)))
        p = self.params
        p["x0"].value = np.where(lin, 0.0, x0)
        p["k_y0"].value = k_s * y0
        p["cost_s"].value = c_cone * s / self.scale
        p["cost_y0"].value = c_cone * y0 / self.scale
        p["slope"].value = slope / self.scale
        p["curv"].value = curv / self.scale
        p["on"].value = lin.astype(np.float64)
        p["r_lo"].value = self._spread(y_lo) / y0
        self.expanded = bool(lin.any())

    def y(self, values: dict[str, FloatArray], ref: FloatArray) -> FloatArray:
        """``y`` per device of a solution (``ref`` as given to :meth:`set`)."""
        return values["r"] * ref


register_block("joint", JointBlock)


@dataclass
class JointSolution:
    """The joint block's optimum at one bit vector.

    Attributes
    ----------
    status : {"optimal", "infeasible", "failed"}
    value : float
        ``V = w_T T + w_E E`` as a ratio to the reference (``J`` at ``K = K0``); inf if infeasible.
    round_s : float
        Round time T (s).
    bandwidth_hz, power_w : ndarray, shape (N,)
        The allocation (empty unless ``status == "optimal"``).
    solves : list of BlockSolve
        Every cone solve of the round-time search, in order (the final one at each round time).
    recentred : list of str
        First-backend failures that a continuation step in ``T`` replaced (see ``_Search``).
    price_j : float
        The band's price at ``round_s``: upload energy (J) one more unit of band fraction saves
        (nan when the optimum is ``T_min``, where every device is at its caps).
    message : str
    """

    status: str
    value: float = np.inf
    round_s: float = np.nan
    bandwidth_hz: FloatArray = field(default_factory=lambda: np.zeros(0))
    power_w: FloatArray = field(default_factory=lambda: np.zeros(0))
    solves: list[BlockSolve] = field(default_factory=list)
    message: str = ""
    built: bool = False
    recentred: list[str] = field(default_factory=list)
    price_j: float = np.nan


class _Round:
    """Scenario constants at fixed bits, in the module's dimensionless terms."""

    def __init__(self, scenario: Scenario, bits: IntArray, ref: Reference) -> None:
        self.scenario, self.ref = scenario, ref
        self.total_hz = float(scenario.system.bandwidth_hz)
        self.c = fixed_time_s(scenario)
        self.comp = compute_energy_j(scenario)
        self.payload_nats = payload_bits(scenario, bits) * LN2
        self.gain = scenario.gain
        self.pmax = scenario.devices.max_power_w.astype(np.float64)
        self.shannon_j = scenario.noise_w_per_hz * self.payload_nats / self.gain
        cap = scenario.constraints.device_energy_j
        self.phi_energy = (
            np.full(self.c.shape, np.inf) if cap is None else ((cap - self.comp) / self.shannon_j)
        )
        self.x_energy = phi_inv(self.phi_energy)
        self.deadline = scenario.constraints.round_deadline_s
        self.cost = self.shannon_j / float(self.shannon_j.sum())

    def caps(self, t: float) -> tuple[FloatArray, FloatArray]:
        """Largest ``phi`` and ``x`` the caps allow at round time ``t``, shape (N,) each."""
        u = t - self.c
        phi_hi = np.minimum(np.where(u > 0, self.pmax * u / self.shannon_j, 0.0), self.phi_energy)
        return phi_hi, np.minimum(
            phi_inv(np.where(u > 0, self.pmax * u / self.shannon_j, 0.0)), self.x_energy
        )

    def band_needed(self, t: float) -> float:
        """``sum_n Bmin_n(t) / B``: the band fraction the caps need at round time ``t``."""
        u = t - self.c
        _, x_max = self.caps(t)
        with np.errstate(divide="ignore"):
            return float(np.sum(self.payload_nats / (self.total_hz * u * x_max)))

    def split(self, t: float, price: float) -> FloatArray:
        """``y`` per device when the band costs ``price`` at round time ``t`` (each device's
        ``cost_n h(x_n) = price k_n``, clipped to its caps), shape (N,)."""
        k = self.payload_nats / (self.total_hz * (t - self.c))
        _, x_max = self.caps(t)
        return 1.0 / np.minimum(h_inv(price * k / self.cost), x_max)

    def price(self, t: float) -> float:
        """The band price at which :meth:`split` fills the band at round time ``t``
        (``t > T_min``), to a relative 1e-6: the reference of a search's first cone solve."""
        k = self.payload_nats / (self.total_hz * (t - self.c))
        _, x_max = self.caps(t)
        marg = self.cost * h(x_max) / k  # the price above which device n sits at its caps
        lo, hi = np.log(float(marg.min())) - 2.0, np.log(float(marg.max())) + 1.0
        band = lambda lp: float(np.sum(k * self.split(t, float(np.exp(lp))))) - 1.0  # noqa: E731
        while band(lo) <= 0.0:
            lo -= 10.0
        if band(hi) >= 0.0:
            return float(np.exp(hi))
        return float(np.exp(brentq(band, lo, hi, xtol=1e-6)))

    def t_min(self) -> float:
        """The fastest feasible round time (inf when a device's energy cap leaves no rate)."""
        if np.any(self.x_energy <= 0):
            return np.inf
        t_lb = float(np.max(self.c + self.shannon_j / self.pmax))
        d = max(t_lb, 1e-12)
        while not self.band_needed(t_lb + d) <= 1.0:
            d *= 2.0
            if d > 1e12 * max(t_lb, 1.0):
                return np.inf
        return float(
            np.exp(
                brentq(
                    lambda lt: self.band_needed(t_lb + np.exp(lt)) - 1.0,
                    np.log(d) - 60.0,
                    np.log(d),
                    xtol=1e-14,
                    rtol=1e-14,
                )
            )
            + t_lb
        )

    def value(self, t: float, phi_used: FloatArray) -> float:
        """``V`` at round time ``t`` with upload energies ``S_n phi_n``."""
        e = float(np.sum(self.comp + self.shannon_j * phi_used))
        return float(self.ref.objective(self.ref.rounds, t, e))

    def allocation(self, t: float, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Bandwidth (Hz) and power (W) of ``y`` at round time ``t``."""
        u = t - self.c
        bw = self.payload_nats * y / u
        bw = bw * min(1.0, self.total_hz / float(bw.sum()))
        x = self.payload_nats / (bw * u)
        with np.errstate(over="ignore"):
            pw = np.minimum(self.scenario.noise_w_per_hz * bw * np.expm1(x) / self.gain, self.pmax)
        return bw, pw


class _Search:
    """The round-time search: one cone solve per round time, scaled by the previous solve."""

    def __init__(self, rnd: _Round, order: tuple[str, ...], block_size: int | None) -> None:
        from sflam_opt.solvers.cvx import get_block

        n = rnd.c.size
        self.rnd, self.order = rnd, order
        self.block, self.built = get_block("joint", n, block_size)
        self.solves: list[BlockSolve] = []
        self.y_ref: FloatArray | None = None
        #: Round times solved so far and their ``y`` (the references of later solves).
        self.solved: list[tuple[float, FloatArray]] = []
        #: First-backend attempts discarded for a continuation step (see :meth:`value`).
        self.recentred: list[str] = []
        self.best: tuple[float, float, FloatArray] | None = None  # (V, T, y)
        #: Band price at the best round time (J of upload energy per unit band fraction).
        self.best_price = np.nan
        #: Band price of the last solve (full-problem units, see :meth:`_solve_free`).
        self.price = np.nan
        self.t_min = rnd.t_min()

    def at_t_min(self) -> float:
        """``V(T_min)``: every device at its caps, in closed form."""
        rnd, t = self.rnd, self.t_min
        phi_hi, x_max = rnd.caps(t)
        y = 1.0 / x_max
        v = rnd.value(t, phi(x_max))
        self._keep(v, t, y)
        if not self.solved:
            self.y_ref = y
            self.solved.append((t, y))
        return v

    def _reference(self, t: float, y_lo: FloatArray) -> FloatArray:
        """The reference ``y0`` at ``t``: the solution at the nearest round time solved so far
        (in ``log T``), else :attr:`y_ref` (the caps' point or a closed-form split)."""
        if self.solved:
            near = min(self.solved, key=lambda ty: abs(np.log(ty[0] / t)))
            return near[1]
        return self.y_ref if self.y_ref is not None else y_lo

    def _keep(self, v: float, t: float, y: FloatArray, price: float = np.nan) -> None:
        if self.best is None or v < self.best[0]:
            self.best = (v, t, y)
            self.best_price = price * float(self.rnd.shannon_j.sum())

    def value(self, t: float) -> float:
        """``V(t)`` by one cone solve (inf when it fails).

        If the first backend fails from the nearest solved round time's reference, one
        continuation step is taken before the other backends: a solve halfway (in ``log T``)
        between the two, whose solution is then the reference at ``t`` (counted in
        :attr:`recentred`).
        """
        if t <= self.t_min * (1.0 + _AT_TMIN):
            return self.at_t_min()
        first = self.order[:1]
        out, v = self._solve(t, first if self.solved else self.order)
        if (not out.ok or out.status != "optimal") and self.solved:
            self.recentred.append("; ".join(out.attempts))
            near = min(self.solved, key=lambda ty: abs(np.log(ty[0] / t)))[0]
            mid, _ = self._solve(float(np.sqrt(near * t)), first)
            if not mid.ok:
                self.recentred.append("; ".join(mid.attempts))
            out, v = self._solve(t, self.order)
        self.solves.append(out)
        return v

    def _solve(self, t: float, order: tuple[str, ...]) -> tuple[BlockSolve, float]:
        """One cone solve at round time ``t`` with backends ``order``; the outcome and ``V``.

        Devices of low spectral efficiency held at their caps are taken out of the cone
        (:meth:`_pin_guess`, §6.7); if the solve's band price shows one of them wants more band
        than its cap leaves it, it is put back and the block re-solved. Devices with ``x`` below
        :data:`X_LINEAR` at the reference enter expanded to second order (:meth:`JointBlock.set`), and the
        block is re-solved from its own solution until their ``x`` moves by at most
        :data:`LINEAR_RTOL`. Every solve but the last is recorded in :attr:`solves` here.
        """
        rnd = self.rnd
        u = t - rnd.c
        k = rnd.payload_nats / (rnd.total_hz * u)
        phi_hi, x_max = rnd.caps(t)
        y_lo, y_hi = 1.0 / x_max, 1.0 / k
        if np.isfinite(self.price):
            ref = np.clip(self._reference(t, y_lo), y_lo, y_hi)
        else:  # a search's first cone solve: the caps' point is far from the split at t
            self.price = rnd.price(t)
            ref = np.clip(rnd.split(t, self.price), y_lo, y_hi)
        pin = self._pin_guess(k, x_max)
        for rounds in range(1, MAX_ROUNDS + 1):
            linear = ~pin & (1.0 / ref < X_LINEAR)
            out, y, price, ref = self._solve_free(~pin, k, y_lo, ref, order, linear)
            if not out.ok:
                return out, np.inf
            wrong = pin & (rnd.cost * h(x_max) > price * k * (1.0 + PIN_RTOL))
            moved = float(np.max(np.abs(ref[linear] / y[linear] - 1.0), initial=0.0))
            if not np.any(wrong) and moved <= LINEAR_RTOL:
                break
            if rounds < MAX_ROUNDS:
                self.solves.append(out)  # an intermediate solve; value() records the last
            pin, ref = pin & ~wrong, y
        else:
            logger.debug("joint block at T=%g: %d rounds, x moved %.2g", t, MAX_ROUNDS, moved)
        self.price = price
        self.y_ref = y
        self.solved.append((t, y))
        bw, _ = rnd.allocation(t, y)
        x = rnd.payload_nats / (bw * u)
        v = rnd.value(t, np.minimum(phi(x), phi_hi))
        self._keep(v, t, y, price)
        return out, v

    def _pin_guess(self, k: FloatArray, x_max: FloatArray) -> np.ndarray:
        """Devices to hold at their caps outside the cone (§6.7): those the band price of the
        last solve (or of :meth:`_Round.price`) says want no more band than their caps leave
        them, ``cost_n h(x_max,n) <= price k_n``. Never every device."""
        pin = self.rnd.cost * h(x_max) <= self.price * k
        if np.all(pin) or float(np.sum(k[pin] / x_max[pin])) >= 1.0:
            pin[:] = False
        return pin

    def _solve_free(  # noqa: PLR0913 - the round's per-device data
        self,
        free: np.ndarray,
        k: FloatArray,
        y_lo: FloatArray,
        ref: FloatArray,
        order: tuple[str, ...],
        linear: np.ndarray,
    ) -> tuple[BlockSolve, FloatArray, float, FloatArray]:
        """The cone over the ``free`` devices, the others at ``y_lo`` (their band set aside);
        the energy of ``linear`` devices expanded at ``ref`` (:meth:`JointBlock.set`).

        Returns the outcome, ``y`` of every device, the band price in the full problem's
        units (the block's budget is the band left, ``1 - sum_pinned k y_lo``) and the
        reference used (``ref`` clipped to the bounds and onto the band).
        """
        left = 1.0 - float(np.sum(k[~free] * y_lo[~free]))
        kf, lo = k[free] / left, y_lo[free]
        ref_f = np.clip(ref[free], lo, 1.0 / kf)
        over = float(np.sum(kf * (ref_f - lo)))
        if np.sum(kf * ref_f) > 1.0 and over > 0.0:
            # A reference from a longer round needs more band than there is: shrink it toward
            # the caps onto the band constraint, where the optimum lies (§6.3).
            ref_f = lo + (ref_f - lo) * ((1.0 - float(np.sum(kf * lo))) / over)
        block = self.block
        block.set(kf, self.rnd.cost[free], lo, ref_f, linear[free])  # type: ignore[attr-defined]
        out = block.solve(order)
        y, used = y_lo.copy(), ref.copy()
        used[free] = ref_f
        if not out.ok:
            return out, y, np.nan, used
        y[free] = np.clip(block.y(out.values, ref_f), lo, 1.0 / kf)  # type: ignore[attr-defined]
        return out, y, block.band_price() / left, used  # type: ignore[attr-defined]


def _upper_time(search: _Search, v_min: float) -> float:
    """A round time at or past the optimum.

    The deadline if there is one; with a latency weight, where ``w_T T`` alone exceeds
    ``V(T_min)``; otherwise (``V`` then falls toward its infimum forever) the first doubling of
    ``T`` at which a feasible split, the bandwidth of devices off their caps shared as
    ``sqrt(S_n k_n)`` (the optimum as ``x -> 0``), is within :data:`INFIMUM_RTOL` of the infimum.
    """
    rnd = search.rnd
    if rnd.deadline is not None:
        return float(rnd.deadline)
    floor = rnd.value(0.0, np.ones(rnd.c.size))  # V at every device's Shannon-limit energy
    om = rnd.ref.latency_weight
    if om > 0:
        return max(search.t_min * 2.0, (v_min - floor) * rnd.ref.latency_s / om)
    t = search.t_min
    for _ in range(200):
        t *= 2.0
        phi_hi, x_max = rnd.caps(t)
        k = rnd.payload_nats / (rnd.total_hz * (t - rnd.c))
        share = np.sqrt(rnd.shannon_j * k)
        beta = np.maximum(share / share.sum(), k / x_max)
        if beta.sum() <= 1.0 and rnd.value(t, phi(k / beta)) <= floor * (1.0 + INFIMUM_RTOL):
            search.solved.append((t, beta / k))  # the cone solve at t starts from this split
            break
    return t


def solve_joint(
    scenario: Scenario,
    bits: IntArray,
    ref: Reference,
    order: tuple[str, ...],
    *,
    block_size: int | None = None,
) -> JointSolution:
    """The continuous optimum at ``bits`` by the joint cone block and a search over ``log T``.

    Parameters
    ----------
    scenario : Scenario
    bits : ndarray of int, shape (N,)
    ref : Reference
        The scenario's equal-baseline reference (``V`` is a ratio to it).
    order : tuple of str
        Cone backends in order (:func:`~sflam_opt.solvers.cvx.solver_order`).
    block_size : int, optional
        Compile the block for this many slots (>= N; see :func:`~sflam_opt.solvers.cvx.get_block`).

    Returns
    -------
    JointSolution
        ``infeasible`` when no round time meets the caps and the band (or ``T_min`` exceeds the
        deadline); ``failed`` when no cone solve succeeded and ``T_min`` is not optimal either.
    """
    rnd = _Round(scenario, np.asarray(bits), ref)
    search = _Search(rnd, order, block_size)
    t_lo = search.t_min
    if not np.isfinite(t_lo) or (rnd.deadline is not None and t_lo > rnd.deadline):
        why = (
            "no round time meets the caps"
            if not np.isfinite(t_lo)
            else (f"the fastest round {t_lo:.6g} s exceeds the deadline {rnd.deadline:g} s")
        )
        return JointSolution("infeasible", message=why, built=search.built)
    v_min = search.at_t_min()
    om = rnd.ref.latency_weight
    if om < 1.0:
        t_hi = _upper_time(search, v_min)
        if om == 0.0:
            # Without a latency weight V does not increase in T: the optimum is at t_hi.
            search.value(t_hi)
        elif t_hi > t_lo * (1.0 + _AT_TMIN):
            res = minimize_scalar(
                lambda lt: search.value(float(np.exp(lt))),
                bounds=(np.log(t_lo), np.log(t_hi)),
                method="bounded",
                options={"xatol": T_RTOL},
            )
            # The bounded search never evaluates its ends: the deadline may be the optimum.
            if rnd.deadline is not None and res.x > np.log(t_hi) - 10 * T_RTOL:
                search.value(t_hi)
    assert search.best is not None
    v, t, y = search.best
    if not np.isfinite(v) or (search.solves and not any(out.ok for out in search.solves)):
        return JointSolution(
            "failed", solves=search.solves, message="no cone solve succeeded", built=search.built
        )
    bw, pw = rnd.allocation(t, y)
    failed = [s for s in search.solves if not s.ok]
    msg = f"{len(failed)} of {len(search.solves)} cone solves failed" if failed else ""
    return JointSolution(
        "optimal",
        v,
        t,
        bw,
        pw,
        search.solves,
        msg,
        search.built,
        search.recentred,
        search.best_price,
    )

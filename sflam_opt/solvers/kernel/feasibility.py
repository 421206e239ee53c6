"""Feasibility diagnosis of the whole problem (bits free): is any bit vector feasible?

See ``docs/formulation.md``, sections "The problem" and "Structure that the solvers use". With
the bits free, feasibility needs the convergence target, every device's energy cap above its
compute + Shannon-limit upload energy, and with a deadline ``D`` the band to cover
``sum_n Bmin_n(D, b_n)``. Choosing the bits is then a multiple-choice knapsack (least bandwidth
subject to the convergence margin), exact by enumeration for small instances and by a Lagrangian
choice otherwise; the smallest deadline or energy cap that works is found by bisection on that
monotone check and named in the message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sflam_opt.bounds import target_infeasibility
from sflam_opt.costs import Reference, payload_bits, reference
from sflam_opt.numeric import LN2, FloatArray, IntArray
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.kernel.messages import (
    bandwidth_alternative,
    deadline_message,
    relax_message,
)
from sflam_opt.solvers.kernel.params import KernelParams, kernel_params
from sflam_opt.solvers.lambertw import phi_inverse

__all__ = ["DIAGNOSE_ENUMERATION_LIMIT", "Feasibility", "diagnose"]

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
    bits: IntArray | None
    exact: bool = True


def _level_tables(
    scenario: Scenario, prm: KernelParams
) -> tuple[IntArray, FloatArray, FloatArray, FloatArray, float]:
    """Levels (L,), payloads (L,), Shannon-limit energies (N, L), penalties (N, L), margin room."""
    lv = scenario.bits.array
    wl = payload_bits(scenario, lv)  # (L,)
    s_nl = prm.n0 * LN2 * wl[None, :] / prm.gain[:, None]  # Shannon-limit energy (N, L)
    pen = scenario.convergence.q * scenario.rho[:, None] / np.square(np.exp2(lv) - 1.0)
    room = scenario.convergence.epsilon - scenario.convergence.phi0
    return lv, wl, s_nl, pen, room


def _bmin_table(
    prm: KernelParams, s_nl: FloatArray, wl: FloatArray, t: float, budget
) -> FloatArray:
    """``Bmin_{n,l}`` at round time ``t`` (inf where the level cannot make it), Hz."""
    u = (t - prm.fixed_s)[:, None]
    r = prm.pmax[:, None] * np.maximum(u, 0.0) / s_nl
    if budget is not None:
        r = np.minimum(r, budget[:, None] / s_nl)
    xm = phi_inverse(r)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = wl[None, :] * LN2 / (u * xm)
    return np.where((xm > 0) & (u > 0), b, np.inf)


def _knapsack(cost: FloatArray, pen: FloatArray, room: float) -> tuple[float, IntArray]:
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

    def choose(mu: float) -> IntArray:
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

    Feasibility at given bits needs (``docs/formulation.md``, "The problem"): the target ``eps > Phi0 + Phi_q(b)``,
    every device's energy cap above its compute + Shannon-limit upload energy, and, with a
    deadline D, ``sum_n Bmin_n(D, b_n) <= B`` (``Bmin`` falls with time and rises with bits).
    Choosing bits is then a multiple-choice knapsack (least bandwidth subject to the margin),
    solved exactly by enumeration for small instances. The smallest deadline and energy cap that
    work are found by bisection on that monotone check.
    """
    why = target_infeasibility(scenario)
    if why is not None:
        return Feasibility(False, why, None)
    cap = scenario.constraints.device_energy_j
    if cap is None and scenario.constraints.round_deadline_s is None:
        # Only the target couples the bits, and the dispatcher checked it at max bits.
        return Feasibility(True, "", np.full(scenario.n_devices, scenario.bits.max))
    ref = ref if ref is not None else reference(scenario)
    prm = kernel_params(scenario, ref)
    deadline = prm.deadline_s
    lv, wl, s_nl, pen, room = _level_tables(scenario, prm)
    n, nl = s_nl.shape
    exact = nl**n <= DIAGNOSE_ENUMERATION_LIMIT

    def energy_ok(budget: FloatArray | None) -> npt.NDArray[np.bool_]:
        if budget is None:
            return np.ones((n, nl), dtype=bool)
        return budget[:, None] > s_nl

    def check(t: float | None, budget: FloatArray | None) -> tuple[bool, float, IntArray]:
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
        within = " within the deadline" if deadline else ""
        msg = relax_message(
            "device_energy_j",
            float(cap),  # type: ignore[arg-type]
            "J",
            "is too low for the bits the convergence target needs "
            f"(compute + upload energy{within})",
            c_need,
            above=True,
        )
        return Feasibility(False, msg, None, exact)
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
    msg = deadline_message(
        deadline,
        d_need,
        "(full power, the fewest bits the target allows)",
        also=bandwidth_alternative(bw_need),
    )
    return Feasibility(False, msg, None, exact)


def _bisect_up(ok: Callable[[float], bool], lo: float, hi: float) -> float:
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

"""The bits block of ``bcd``: best quantization bit widths at fixed bandwidth and power.

``docs/formulation.md``, section "Structure that the solvers use", last bullet. With every device's bandwidth B_n and power p_n fixed, its rate R_n is
fixed, so its round latency ``T_n(l) = c_n + W_n(l) / R_n`` and energy
``E_n(l) = e^c_n + p_n W_n(l) / R_n`` are known for every allowed bit width ``l``, and

    J(b) = Kc (w_T max_n T_n(b_n) + w_E sum_n E_n(b_n)) / (eps - Phi0 - sum_n rho_n q pen(b_n)),

``Kc = A / (eta tau)``, ``pen(b) = 1 / (2^b - 1)^2`` (sections "Convergence bound and rounds needed" and "The problem"). J is a ratio of a
non-decreasing cost to a positive increasing margin, so Dinkelbach's method applies: with
``theta = J(b_k)``, minimize ``N(b) - theta D(b)`` over one-hot level choices ``x_{n,l}`` and a
round time ``t >= sum_l x_{n,l} T_n(l)``; a negative minimum gives a strictly better ``b_{k+1}``, a
zero minimum proves ``b_k`` optimal (Dinkelbach 1967, "On nonlinear fractional programming",
Management Science 13(7)). Each step is a small MILP solved by HiGHS (:func:`scipy.optimize.milp`),
or, for ``method="relax"``, its LP relaxation rounded by fixing the LP round time and letting every
device pick its cheapest level that fits, then repairing the convergence margin.

``method="sweep"`` solves the same step exactly without a MILP: for a round time t every device
independently takes its cheapest level with ``T_n(l) <= t``, and the best t is one of the N L
latencies, found by one sorted pass with cumulative sums. It reaches the same optimum as the MILP
at a cost that grows far more slowly with N; relax-and-round is approximate (its J can be worse).
docs/results.md has the timings.

Levels that would break the round deadline or the per-device energy cap at the fixed (B, p) are
removed from the choice, so every returned bit vector is feasible.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from sflam_opt.bounds import quantization_penalty
from sflam_opt.costs import (
    Reference,
    compute_energy_j,
    fixed_time_s,
    payload_bits,
    rate_bps,
    reference,
)
from sflam_opt.errors import SolverArgumentError
from sflam_opt.numeric import FloatArray, IntArray
from sflam_opt.scenario import Scenario

__all__ = [
    "BITS_METHODS",
    "BitsBlockResult",
    "LevelTable",
    "bits_objective",
    "dinkelbach",
    "dinkelbach_step",
    "dinkelbach_value",
    "level_table",
    "solve_bits",
]

logger = logging.getLogger(__name__)


#: Methods of :func:`solve_bits`.
BITS_METHODS = ("milp", "sweep", "relax")

#: Relative slack when deciding whether a level meets the deadline / energy cap at fixed (B, p);
#: well inside the 1e-6 tolerance that :func:`sflam_opt.costs.evaluate` checks.
_FEAS_RTOL = 1e-9


@dataclass(frozen=True, eq=False)
class LevelTable:
    """Per-device, per-level cost of one round at fixed bandwidth and power.

    Attributes
    ----------
    levels : ndarray of int, shape (L,)
        Allowed bit widths, ascending.
    latency_s : ndarray, shape (N, L)
        Round latency T_n(l) of device n at level l, seconds.
    energy_j : ndarray, shape (N, L)
        Round energy E_n(l) of device n at level l (compute + upload), joules.
    penalty : ndarray, shape (N, L)
        Contribution ``rho_n q / (2^l - 1)^2`` of device n at level l to Phi_q.
    allowed : ndarray of bool, shape (N, L)
        Levels that keep the device within the deadline and energy cap.
    rounds_scale : float
        ``Kc = A / (eta tau)``: rounds K = Kc / margin.
    margin0 : float
        ``eps - Phi0``: the margin is ``margin0 - sum_n penalty[n, b_n]``.
    w_latency, w_energy : float
        Weights of K T and K E in J (see :class:`sflam_opt.costs.Reference`).
    """

    levels: IntArray
    latency_s: FloatArray
    energy_j: FloatArray
    penalty: FloatArray
    allowed: NDArray[np.bool_]
    rounds_scale: float
    margin0: float
    w_latency: float
    w_energy: float

    @property
    def n_devices(self) -> int:
        return int(self.latency_s.shape[0])

    def index_of(self, bits: ArrayLike) -> IntArray:
        """Level index of each device's bit width, shape (N,); AllocationError-free lookup."""
        b = np.asarray(bits, dtype=np.int64)
        idx = np.searchsorted(self.levels, b)
        idx = np.clip(idx, 0, self.levels.size - 1)
        if not np.array_equal(self.levels[idx], b):
            raise SolverArgumentError(
                f"bits: {b.tolist()} contains widths outside the allowed set "
                f"{self.levels.tolist()}; pick bits from [bits] of the scenario"
            )
        return idx


def level_table(
    scenario: Scenario,
    bandwidth_hz: ArrayLike,
    power_w: ArrayLike,
    ref: Reference | None = None,
    keep: ArrayLike | None = None,
) -> LevelTable:
    """Latency, energy and quantization penalty of every (device, level) pair at fixed (B, p).

    Parameters
    ----------
    scenario : Scenario
    bandwidth_hz, power_w : array_like, shape (N,)
        Fixed bandwidth (Hz, > 0) and transmit power (W, > 0).
    ref : Reference, optional
        Normalization of J (computed when omitted).
    keep : array_like of int, shape (N,), optional
        Bit widths that stay allowed whatever the constraints say (the incumbent's, which is
        feasible up to the evaluation tolerance), so the block always has a feasible choice.

    Returns
    -------
    LevelTable
    """
    ref = ref if ref is not None else reference(scenario)
    levels = scenario.bits.array
    rate = rate_bps(scenario, bandwidth_hz, power_w)  # (N,)
    payload = payload_bits(scenario, levels)  # (L,)
    upload = payload[None, :] / rate[:, None]  # (N, L)
    latency = fixed_time_s(scenario)[:, None] + upload
    energy = compute_energy_j(scenario)[:, None] + np.asarray(power_w, float)[:, None] * upload
    conv = scenario.convergence
    penalty = conv.q * scenario.rho[:, None] * quantization_penalty(levels)[None, :]
    allowed = np.isfinite(latency)
    cons = scenario.constraints
    if cons.round_deadline_s is not None:
        allowed &= latency <= cons.round_deadline_s * (1 + _FEAS_RTOL)
    if cons.device_energy_j is not None:
        allowed &= energy <= cons.device_energy_j * (1 + _FEAS_RTOL)
    if keep is not None:
        kidx = np.searchsorted(levels, np.asarray(keep, dtype=np.int64))
        allowed[np.arange(kidx.size), np.clip(kidx, 0, levels.size - 1)] = True
    t = scenario.training
    return LevelTable(
        levels=levels,
        latency_s=latency,
        energy_j=energy,
        penalty=penalty,
        allowed=allowed,
        rounds_scale=conv.a / (t.learning_rate * t.local_iters),
        margin0=conv.epsilon - conv.phi0,
        w_latency=ref.w_latency,
        w_energy=ref.w_energy,
    )


def _parts(table: LevelTable, idx: IntArray) -> tuple[FloatArray, FloatArray]:
    """Cost ``w_T T + w_E E`` (times Kc) and margin ``D`` of level choices ``idx`` (..., N)."""
    idx = np.asarray(idx, dtype=np.int64)
    rows = np.arange(table.n_devices)
    lat = table.latency_s[rows, idx]
    en = table.energy_j[rows, idx]
    pen = table.penalty[rows, idx]
    cost = table.rounds_scale * (
        table.w_latency * lat.max(axis=-1) + table.w_energy * en.sum(axis=-1)
    )
    return cost, table.margin0 - pen.sum(axis=-1)


def bits_objective(table: LevelTable, idx: ArrayLike) -> FloatArray | float:
    """J of level choices ``idx`` (shape (..., N)); inf where the target is unreachable."""
    cost, margin = _parts(table, np.asarray(idx))
    with np.errstate(divide="ignore", invalid="ignore"):
        val = np.where(margin > 0, cost / np.where(margin > 0, margin, 1.0), np.inf)
    return float(val) if np.ndim(val) == 0 else val


def dinkelbach_value(table: LevelTable, idx: ArrayLike, theta: float) -> FloatArray | float:
    """Dinkelbach function ``N(b) - theta D(b)`` of level choices ``idx`` (shape (..., N))."""
    cost, margin = _parts(table, np.asarray(idx))
    val = cost - theta * margin
    return float(val) if np.ndim(val) == 0 else val


@dataclass
class BitsBlockResult:
    """Outcome of :func:`solve_bits`.

    Attributes
    ----------
    bits : ndarray of int, shape (N,)
        Best bit widths found (the start when nothing better exists).
    objective : float
        J of ``bits`` at the fixed (B, p).
    steps : int
        Dinkelbach steps (sub-problem solves).
    status : str
        ``"optimal"`` (MILP Dinkelbach proved optimality at this (B, p)), ``"rounded"``
        (relax-and-round stopped improving), ``"step_cap"`` or ``"failed"`` (a sub-problem solve
        failed; ``bits`` is the best found before).
    method : str
        ``"milp"`` or ``"relax"``.
    backend : str
        ``"HiGHS"``.
    history : list of float
        J after each accepted step, starting with the start's.
    """

    bits: IntArray
    objective: float
    steps: int
    status: str
    method: str
    backend: str = "HiGHS"
    history: list[float] = field(default_factory=list)
    message: str = ""


def _subproblem_matrices(table: LevelTable) -> tuple[sp.csr_array, float]:
    """Constraint matrix of the one-hot MILP: one-hot rows, then ``sum_l T x - t <= 0`` rows."""
    n, nl = table.latency_s.shape
    t_scale = float(np.max(table.latency_s[table.allowed]))
    rows = np.repeat(np.arange(n), nl)
    cols = np.arange(n * nl)
    onehot = sp.csr_array((np.ones(n * nl), (rows, cols)), shape=(n, n * nl + 1))
    lat = sp.csr_array(
        (
            np.concatenate([(table.latency_s / t_scale).ravel(), -np.ones(n)]),
            (np.concatenate([rows, np.arange(n)]), np.concatenate([cols, np.full(n, n * nl)])),
        ),
        shape=(n, n * nl + 1),
    )
    return sp.vstack([onehot, lat], format="csr"), t_scale


def _subproblem(
    table: LevelTable, theta: float, *, integral: bool
) -> tuple[IntArray | None, float | None, str]:
    """One Dinkelbach step: minimize ``N(b) - theta D(b)`` (constant ``-theta margin0`` dropped).

    Returns the level choice (None on failure), the LP round time in seconds (relaxation only) and
    a status message.
    """
    n, nl = table.latency_s.shape
    a, t_scale = _subproblem_matrices(table)
    kc = table.rounds_scale
    c = np.concatenate(
        [
            (kc * table.w_energy * table.energy_j + theta * table.penalty).ravel(),
            [kc * table.w_latency * t_scale],
        ]
    )
    lb = np.concatenate([np.ones(n), np.full(n, -np.inf)])
    ub = np.concatenate([np.ones(n), np.zeros(n)])
    upper = np.concatenate([table.allowed.astype(np.float64).ravel(), [np.inf]])
    lower = np.zeros(n * nl + 1)
    if integral:
        integrality = np.concatenate([np.ones(n * nl), [0.0]])
        res = milp(
            c,
            integrality=integrality,
            bounds=Bounds(lower, upper),
            constraints=LinearConstraint(a, lb, ub),
            options={"mip_rel_gap": 1e-10, "presolve": True},
        )
        if res.status != 0 or res.x is None:
            return None, None, f"HiGHS MILP: {res.message}"
        x = res.x[:-1].reshape(n, nl)
        return np.argmax(x, axis=1).astype(np.int64), None, "ok"
    res = linprog(
        c,
        A_ub=a[n:],
        b_ub=ub[n:],
        A_eq=a[:n],
        b_eq=lb[:n],
        bounds=np.column_stack([lower, upper]),
        method="highs",
    )
    if res.status != 0 or res.x is None:
        return None, None, f"HiGHS LP: {res.message}"
    t_lp = float(res.x[-1]) * t_scale
    return _round_at(table, theta, t_lp), t_lp, "ok"


def _sweep(table: LevelTable, theta: float) -> IntArray:
    """Exact minimizer of ``N(b) - theta D(b)`` by sweeping the round time (no MILP).

    For a round time ``t`` every device independently takes its cheapest allowed level with
    ``T_n(l) <= t``; the optimum is attained at ``t`` equal to one of the N L latencies. Walking
    the latencies in ascending order, a device's best cost is the prefix minimum of its row
    (latency grows with bits at a fixed rate), so the total is a cumulative sum of per-event
    changes: O(N L log(N L)) for the whole step.
    """
    n, nl = table.latency_s.shape
    kc = table.rounds_scale
    per = np.where(
        table.allowed, kc * table.w_energy * table.energy_j + theta * table.penalty, np.inf
    )
    # Latency is increasing along each row (payload grows with bits at a fixed rate); sorting
    # the row anyway keeps the sweep exact if that ever changes.
    order = np.argsort(table.latency_s, axis=1, kind="stable")
    lat = np.take_along_axis(table.latency_s, order, axis=1)
    best = np.minimum.accumulate(np.take_along_axis(per, order, axis=1), axis=1)
    prev = np.concatenate([np.full((n, 1), np.inf), best[:, :-1]], axis=1)
    had, has = np.isfinite(prev), np.isfinite(best)
    d_sum = np.where(had, best - np.where(had, prev, 0.0), np.where(has, best, 0.0))
    d_cnt = (has & ~had).astype(np.int64)
    ev = np.argsort(lat.ravel(), kind="stable")
    total = np.cumsum(d_sum.ravel()[ev])
    count = np.cumsum(d_cnt.ravel()[ev])
    t_ev = lat.ravel()[ev]
    f = np.where(count == n, kc * table.w_latency * t_ev + total, np.inf)
    t_best = float(t_ev[int(np.argmin(f))])
    fits = table.allowed & (table.latency_s <= t_best)
    return np.argmin(np.where(fits, per, np.inf), axis=1).astype(np.int64)


def dinkelbach_step(table: LevelTable, theta: float, method: str = "milp") -> IntArray | None:
    """Level indices minimizing ``N(b) - theta D(b)`` (one Dinkelbach step), shape (N,).

    ``"milp"`` and ``"sweep"`` are exact (the same minimum); ``"relax"`` rounds the LP
    relaxation. None when HiGHS fails.
    """
    if method not in BITS_METHODS:
        raise SolverArgumentError(
            f"method={method!r}: unknown; choose one of {', '.join(BITS_METHODS)}"
        )
    if method == "sweep":
        return _sweep(table, theta)
    return _subproblem(table, theta, integral=method == "milp")[0]


def _round_at(table: LevelTable, theta: float, t_round: float) -> IntArray:
    """Every device's cheapest allowed level whose latency fits in ``t_round`` seconds.

    The LP's round time ``t`` bounds a convex combination of each device's latencies, so at least
    one level per device with non-zero weight fits; if rounding noise leaves none, the device takes
    its fastest allowed level.
    """
    kc = table.rounds_scale
    per = kc * table.w_energy * table.energy_j + theta * table.penalty
    fits = table.allowed & (table.latency_s <= t_round * (1 + 1e-9))
    fastest = np.argmin(np.where(table.allowed, table.latency_s, np.inf), axis=1)
    idx = np.argmin(np.where(fits, per, np.inf), axis=1)
    return np.where(fits.any(axis=1), idx, fastest).astype(np.int64)


def _repair_margin(table: LevelTable, idx: IntArray) -> IntArray | None:
    """Raise bits until the convergence margin is positive, cheapest penalty cut first.

    Each pass moves the device whose next allowed level buys the most margin per unit of cost; at
    most N * L passes. Returns None when even the largest allowed levels cannot reach the target.
    """
    idx = idx.copy()
    rows = np.arange(table.n_devices)
    kc = table.rounds_scale
    unit = kc * (table.w_energy * table.energy_j + table.w_latency * table.latency_s)
    nl = table.levels.size
    for _ in range(table.n_devices * nl):
        if table.margin0 - table.penalty[rows, idx].sum() > 0:
            return idx
        # Next allowed level above the current one, per device (nl when none).
        above = table.allowed & (np.arange(nl)[None, :] > idx[:, None])
        nxt = np.where(above.any(axis=1), np.argmax(above, axis=1), nl)
        ok = nxt < nl
        if not ok.any():
            return None
        nxt_c = np.minimum(nxt, nl - 1)
        gain = table.penalty[rows, idx] - table.penalty[rows, nxt_c]
        extra = np.maximum(unit[rows, nxt_c] - unit[rows, idx], 1e-300)
        score = np.where(ok, gain / extra, -np.inf)
        k = int(np.argmax(score))
        idx[k] = nxt[k]
    return idx if table.margin0 - table.penalty[rows, idx].sum() > 0 else None


def solve_bits(
    scenario: Scenario,
    bandwidth_hz: ArrayLike,
    power_w: ArrayLike,
    start_bits: ArrayLike,
    *,
    method: str = "milp",
    ref: Reference | None = None,
    max_steps: int = 50,
    rtol: float = 1e-12,
) -> BitsBlockResult:
    """Best bit widths at fixed bandwidth and power, by Dinkelbach's method.

    Parameters
    ----------
    scenario : Scenario
    bandwidth_hz, power_w : array_like, shape (N,)
        Fixed bandwidth (Hz) and power (W) of every device.
    start_bits : array_like of int, shape (N,)
        A feasible start (allowed widths, reachable target); returned if nothing is better.
    method : {"milp", "relax"}
        ``"milp"``: exact one-hot MILP per step (HiGHS), global optimum at this (B, p).
        ``"relax"``: LP relaxation per step, rounded at the LP round time and repaired.
    ref : Reference, optional
        Normalization of J.
    max_steps : int
        Cap on Dinkelbach steps.
    rtol : float
        A step must lower ``N - theta D`` below ``-rtol * N`` to count as an improvement.

    Returns
    -------
    BitsBlockResult
    """
    if method not in BITS_METHODS:
        raise SolverArgumentError(
            f"bits_method={method!r}: unknown; choose one of {', '.join(BITS_METHODS)}"
        )
    table = level_table(scenario, bandwidth_hz, power_w, ref=ref, keep=start_bits)
    return dinkelbach(
        table, table.index_of(start_bits), method=method, max_steps=max_steps, rtol=rtol
    )


def dinkelbach(
    table: LevelTable,
    start: IntArray,
    *,
    method: str = "milp",
    max_steps: int = 50,
    rtol: float = 1e-12,
) -> BitsBlockResult:
    """Dinkelbach's method on a level table from the level indices ``start`` (shape (N,)).

    See :func:`solve_bits`; this entry point takes any :class:`LevelTable`, e.g. one whose
    energies price bandwidth instead of fixing it.
    """
    if method not in BITS_METHODS:
        raise SolverArgumentError(
            f"bits_method={method!r}: unknown; choose one of {', '.join(BITS_METHODS)}"
        )
    idx = np.asarray(start, dtype=np.int64)
    rows = np.arange(idx.size)
    theta = bits_objective(table, idx)
    history = [theta]
    if not np.isfinite(theta):
        return BitsBlockResult(
            table.levels[idx],
            theta,
            0,
            "failed",
            method,
            history=history,
            message="start bits do not reach the convergence target",
        )
    status, message = "step_cap", f"stopped after {max_steps} Dinkelbach steps"
    steps = 0
    for _ in range(max_steps):
        steps += 1
        if method == "sweep":
            cand, msg = _sweep(table, theta), "ok"
        else:
            cand, _, msg = _subproblem(table, theta, integral=method == "milp")
        if cand is None:
            status, message = "failed", msg
            logger.warning("bits block: %s", msg)
            break
        if method == "relax" and table.margin0 - table.penalty[rows, cand].sum() <= 0:
            cand = _repair_margin(table, cand)
            if cand is None:
                status, message = "rounded", "rounding could not keep the target reachable"
                break
        cost, margin = _parts(table, cand)
        value = float(cost - theta * margin)
        if not value < -rtol * abs(float(cost)):
            exact = method != "relax"
            status = "optimal" if exact else "rounded"
            message = (
                "Dinkelbach: no level choice beats theta (global optimum of this table)"
                if exact
                else "relax-and-round: the rounded step no longer improves J"
            )
            break
        idx = cand
        theta = float(cost / margin)
        history.append(theta)
    return BitsBlockResult(
        table.levels[idx].astype(np.int64),
        theta,
        steps,
        status,
        method,
        history=history,
        message=message,
    )

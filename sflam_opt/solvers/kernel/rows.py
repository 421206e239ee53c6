"""The continuous block's row API: optimal bandwidth and power for fixed bit vectors.

See ``docs/formulation.md``, section "Structure that the solvers use". For fixed bits ``b`` the
rounds ``K(b)`` are a constant and J is ``K (w_T T + w_E E)``. :func:`solve_rows` finds, for a
batch of bit vectors at once (one per row), the exact optimum over bandwidth, power and round
time: it sorts out the rows that no round time makes feasible (status codes of
:mod:`sflam_opt.solvers.kernel.params`), computes the fastest round ``T_min`` where needed and
runs the round-time search (:mod:`sflam_opt.solvers.kernel.roundtime`).

:func:`solve_continuous_rows`, :func:`solve_continuous` and :func:`bandwidth_split` are the same
computation behind scenario-level arguments, with messages for the infeasible rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sflam_opt.bounds import rounds_needed
from sflam_opt.costs import Reference, payload_bits, reference
from sflam_opt.errors import SolverArgumentError
from sflam_opt.numeric import LN2, FloatArray, IntArray
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.base import check_tolerance
from sflam_opt.solvers.kernel.messages import ZERO_LATENCY_NOTE, infeasibility_message
from sflam_opt.solvers.kernel.params import (
    FAILED,
    INFEASIBLE_DEADLINE,
    INFEASIBLE_ENERGY,
    INFEASIBLE_TARGET,
    OK,
    KernelParams,
    kernel_params,
    row_constants,
)
from sflam_opt.solvers.kernel.roundtime import search_time
from sflam_opt.solvers.kernel.split import min_round_time, split_at

logger = logging.getLogger(__name__)

__all__ = [
    "ContinuousSolution",
    "RowSolutions",
    "bandwidth_split",
    "row_allocation",
    "solve_continuous",
    "solve_continuous_rows",
    "solve_rows",
]


@dataclass(frozen=True, eq=False)
class RowSolutions:
    """Batched continuous optima for M bit vectors; arrays have shape (M,) or (M, N).

    ``status`` holds row codes: 0 optimal, 1 energy cap too low, 2 deadline too early,
    3 target unreachable. Infeasible rows have NaN times/energies and ``objective = inf``.
    """

    status: IntArray
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

    def row(self, k: int) -> RowSolutions:
        """Row ``k`` as a one-row batch."""
        return RowSolutions(*(getattr(self, f)[k : k + 1] for f in self.__dataclass_fields__))

    @staticmethod
    def stack(parts: list[RowSolutions]) -> RowSolutions:
        """The batches ``parts`` as one batch, rows in order."""
        fields = RowSolutions.__dataclass_fields__
        return RowSolutions(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))


def solve_rows(
    prm: KernelParams,
    w: FloatArray,
    rounds: FloatArray,
    rtol: float,
    warm: tuple[FloatArray, FloatArray, FloatArray] | None = None,
    *,
    lazy_t_min: bool = False,
    start_at_min: NDArray[np.bool_] | None = None,
) -> RowSolutions:
    """Continuous optimum per row of payloads ``w`` (M, N) with rounds ``K`` (M,).

    ``warm = (T, log lambda, x_free)`` of nearby solutions starts the round-time search there.
    With ``lazy_t_min`` (and no deadline) the fastest round ``T_min`` is only computed for rows
    whose optimum the joint search does not certify without it; the others report
    ``min_round_latency_s = NaN`` (their optimum lies strictly above ``T_min``), except rows
    flagged in ``start_at_min`` (M,) (their warm start sat at its own ``T_min``, as at a large
    latency weight): those compute ``T_min`` first and start the search there, where one split
    usually certifies the optimum.
    """
    m, n = w.shape
    status = np.zeros(m, dtype=np.int64)
    status[~np.isfinite(rounds)] = INFEASIBLE_TARGET
    rw = row_constants(prm, w)
    if prm.budget_j is not None:  # without a cap x_e is inf
        status[(status == OK) & np.any(rw.x_e <= 0, axis=1)] = INFEASIBLE_ENERGY
    t_min = np.full(m, np.inf)
    ok_e = np.flatnonzero(status != INFEASIBLE_ENERGY)
    lazy = lazy_t_min and prm.deadline_s is None
    if ok_e.size:
        if lazy:
            t_min[ok_e] = np.nan
            sel = ok_e if start_at_min is None or warm is None else ok_e[start_at_min[ok_e]]
            if sel.size and warm is not None and start_at_min is not None:
                rows_e = rw if sel.size == m else rw.take(sel)
                t_min[sel] = min_round_time(prm, rows_e, warm[0][sel])
                t0 = np.array(warm[0], dtype=np.float64)
                t0[sel] = t_min[sel]
                warm = (t0, warm[1], warm[2])
        else:
            t0 = None if warm is None else warm[0][ok_e]
            t_min[ok_e] = min_round_time(prm, rw.take(ok_e), t0)
    # T_min is finite for every row that passed the energy check (Bmin falls to 0 as T grows).
    status[(status == OK) & np.isposinf(t_min)] = FAILED
    if prm.deadline_s is not None:
        status[(status == OK) & (t_min > prm.deadline_s)] = INFEASIBLE_DEADLINE
    if not status.any():  # every row feasible: no gathering and scattering
        sp, capped, t_min = search_time(prm, rw, t_min, rtol, warm)
        return _flag_failures(
            RowSolutions(
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
        sp, cap_rows, t_min[rows] = search_time(prm, rw.take(rows), t_min[rows], rtol, wr)
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
    return _flag_failures(
        RowSolutions(
            status,
            obj,
            rounds,
            out_t,
            out_e,
            t_min,
            out_s,
            out_x,
            out_xf,
            out_u,
            w,
            capped,
            out_slope,
        )
    )


def _flag_failures(sol: RowSolutions) -> RowSolutions:
    """Mark rows whose search ended without a finite optimum as :data:`FAILED` (in place)."""
    ok = sol.status == OK
    finite = (
        np.isfinite(sol.objective)
        & np.isfinite(sol.round_latency_s)
        & np.all(np.isfinite(sol.x) & (sol.x > 0) & np.isfinite(sol.upload_s), axis=1)
    )
    bad = ok & ~finite
    if bad.any():
        logger.warning("continuous block: %d of %d rows failed numerically", bad.sum(), bad.size)
        sol.status[bad] = FAILED
        sol.objective[bad] = np.inf
    return sol


@dataclass(frozen=True, eq=False)
class ContinuousSolution:
    """Optimum of J over bandwidth and power for fixed bits.

    Attributes
    ----------
    status : str
        ``"optimal"``, ``"infeasible"`` or ``"failed"`` (numerical failure).
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
        """True when status is "optimal"."""
        return self.status == "optimal"


def _check_bits(scenario: Scenario, bits: ArrayLike, *, rows: bool) -> IntArray:
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
    prm = kernel_params(scenario, ref)
    w = payload_bits(scenario, b)
    k = np.asarray(rounds_needed(scenario, b), dtype=np.float64).reshape(b.shape[0])
    return solve_rows(prm, w, k, float(rtol))


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
    """Exact optimum of J over bandwidth and power for fixed bits.

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
    rtol = check_tolerance(rtol, "rtol", upper=1.0, example="1e-10")
    ref = ref if ref is not None else reference(scenario)
    sol = solve_continuous_rows(scenario, b[None, :], ref=ref, rtol=rtol)
    n = scenario.n_devices
    nan = np.full(n, np.nan)
    code = int(sol.status[0])
    t_min = float(sol.min_round_latency_s[0])
    if code == FAILED:
        msg = "continuous block: no finite optimum found at these bits (numerical failure)"
        return ContinuousSolution("failed", msg, nan, nan, nan, np.nan, np.nan, np.inf, t_min)
    if code != OK:
        msg = infeasibility_message(scenario, b, code, t_min)
        return ContinuousSolution("infeasible", msg, nan, nan, nan, np.nan, np.nan, np.inf, t_min)
    bw, pw = row_allocation(scenario, sol, 0)
    msg = "optimal bandwidth and power for fixed bits (exact continuous block)"
    if sol.capped_at_limit[0]:
        msg += ZERO_LATENCY_NOTE
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
    prm = kernel_params(scenario, ref)
    rw = row_constants(prm, payload_bits(scenario, b)[None, :])
    if np.any(rw.x_e <= 0):
        raise SolverArgumentError(
            "bits: " + infeasibility_message(scenario, b, INFEASIBLE_ENERGY, np.inf)
        )
    t_min = float(min_round_time(prm, rw)[0])
    if t < t_min:
        raise SolverArgumentError(
            f"round_latency_s={t:.9g}: below the fastest feasible round {t_min:.9g} s at these "
            "bits; pass at least that"
        )
    sp = split_at(prm, rw, np.array([t]))
    x, u = sp.x[0], sp.u[0]
    bw = rw.w[0] * LN2 / u / x
    pw = np.minimum(prm.n0 * bw * np.expm1(x) / prm.gain, prm.pmax)
    return bw, pw, float(sp.energy[0])

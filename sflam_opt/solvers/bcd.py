"""``bcd``: block coordinate descent over bandwidth, upload time/power and bits (issue 5).

The SFLAM paper (arXiv 2504.09114) optimizes bits, powers and bandwidths by block coordinate
descent; formulation §6 gives the structure this solver uses. Each outer iteration runs three
blocks, each exact for its own variables with the others fixed:

(ii) upload times / power and the round time with the bandwidth fixed
     (:class:`~sflam_opt.solvers.cvx.UploadBlock`, an exponential-cone program in CVXPY);
(i)  bandwidth with the upload times fixed (:class:`~sflam_opt.solvers.cvx.BandwidthBlock`);
(iii) bits with bandwidth and power fixed: Dinkelbach over one-hot levels
     (:func:`~sflam_opt.solvers.bits.solve_bits`, a MILP per step for small N).

(ii) runs first so that every device's upload fills the round before (i) re-splits the band.
Blocks (i) and (ii) are DPP problems built once per problem shape and re-solved by changing
parameters only. Every block result is rebuilt into an allocation, scored with the cost model and
accepted only if J does not increase, so the recorded J per outer iteration never increases.

The power cap couples (i) and (ii): a device at its cap can only get faster by receiving more
bandwidth *and* a shorter slot at once, which neither block can do alone. When an outer iteration
improves J by less than ``tol``, the exact joint continuous step for the current bits
(:func:`~sflam_opt.solvers.continuous.solve_continuous`) is tried; if it improves J by more than
``tol`` that is a *stall escape*, counted in ``info["stall_escapes"]`` with the relative gap it
closed in ``info["stall_gaps"]``, and the descent continues from there.

Blocks and stall escape alone stop at partial optima of the bits: block (iii) judges a bit width
at the other devices' fixed bandwidth, so it never sees the bandwidth a smaller payload would free
for them, and under a binding deadline no single block can trade bits for time. Measured on
``tests/reference_scenarios.small_set(50)`` (45 feasible, no warm start): plain BCD reached 0.1%
of the global optimum on 47% of instances (median gap 1.3e-3; one deadline-bound start stayed at
449x the optimum), with the stall escape on 56%. Two joint bits steps therefore follow a failed
stall escape (``info["bits_escapes"]``): a bits proposal that prices bandwidth at the continuous
optimum's multiplier (the Lagrangian choice that ``fast`` also uses), and for small N the best
one-level change of one device, each scored by the exact continuous block. With them every
instance was within 4e-7 of the optimum.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sflam_opt.allocation import Allocation
from sflam_opt.bounds import margin, quantization_penalty, rounds_needed, target_infeasibility
from sflam_opt.costs import (
    Reference,
    breakdown,
    compute_energy_j,
    equal_allocation,
    fixed_time_s,
    payload_bits,
    rate_bps,
    reference,
    violations,
)
from sflam_opt.errors import SolverArgumentError
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.base import SolveResult, check_start_bits, register_solver
from sflam_opt.solvers.bits import LevelTable, dinkelbach, solve_bits
from sflam_opt.solvers.continuous import (
    ContinuousSolution,
    diagnose,
    row_allocation,
    solve_continuous,
    solve_continuous_rows,
)
from sflam_opt.solvers.cvx import (
    MHZ,
    BandwidthBlock,
    BlockSolve,
    UploadBlock,
    get_block,
    solver_order,
)
from sflam_opt.solvers.lambertw import h_inverse, phi_inverse

__all__ = [
    "AUTO_MILP_MAX_DEVICES",
    "BASELINES",
    "BITS_OPTIONS",
    "NEIGHBOUR_MAX_DEVICES",
    "solve_bcd",
]

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
LN2 = float(np.log(2.0))

#: ``bits_method="auto"`` uses the MILP up to this many devices. Measured on the default scenario
#: (2 cores): a Dinkelbach MILP step takes ~13 ms at N = 10, ~50 ms at N = 100, ~0.4 s at
#: N = 300 and ~6 s at N = 1000, while the exact round-time sweep solves the same step in
#: 0.2 ms / 1.3 ms / 2.4 ms at N = 10 / 100 / 1000 with identical results.
AUTO_MILP_MAX_DEVICES = 30
#: Values of the ``bits_method`` option.
BITS_OPTIONS = ("auto", "milp", "sweep", "relax")
#: Baselines tried for the warm start (those registered), best feasible one wins.
BASELINES = ("equal", "fixed-bits", "bandwidth-only", "power-only", "bits-only")
#: The one-level bits neighbourhood escape runs up to this many devices: one batched exact
#: continuous solve of 2N bit vectors costs ~3 ms at N = 10 and ~35 ms at N = 100, but ~5 s at
#: N = 1000 (measured, 2 cores).
NEIGHBOUR_MAX_DEVICES = 100
#: Relative constraint slack accepted for an intermediate point; far inside the 1e-6 that
#: :func:`sflam_opt.costs.evaluate` checks, so solver round-off never reaches the result.
_ACCEPT_TOL = 1e-8
#: Round-time cap of the upload block, in units of the current round time, when nothing else
#: bounds T (no deadline and no latency weight): keeps the cone program well scaled.
_T_CAP_FACTOR = 1e3


@dataclass
class _Point:
    """A feasible allocation and its J."""

    bits: NDArray[np.int64]
    bandwidth_hz: FloatArray
    power_w: FloatArray
    objective: float

    def allocation(self, scenario: Scenario) -> Allocation:
        return Allocation(
            self.bits.copy(), self.bandwidth_hz.copy(), self.power_w.copy(), scenario.devices.ids
        )


class _Model:
    """Scenario constants and the scoring of candidate points."""

    def __init__(self, scenario: Scenario, ref: Reference) -> None:
        self.scenario = scenario
        self.ref = ref
        self.n0 = scenario.noise_w_per_hz
        self.gain = scenario.gain
        self.pmax = scenario.devices.max_power_w.astype(np.float64)
        self.fixed_s = fixed_time_s(scenario)
        self.compute_j = compute_energy_j(scenario)
        self.total_hz = float(scenario.system.bandwidth_hz)
        self.deadline = scenario.constraints.round_deadline_s
        self.energy_cap = scenario.constraints.device_energy_j
        # Bandwidth at which full power gives SNR 1: the power cap in bandwidth units, Hz.
        self.snr_hz = self.pmax * self.gain / self.n0

    def score(self, bits: NDArray[np.int64], bw: FloatArray, pw: FloatArray) -> _Point | None:
        """The point if it is feasible (to :data:`_ACCEPT_TOL`), else None."""
        if not (np.all(np.isfinite(bw)) and np.all(np.isfinite(pw))):
            return None
        if np.any(bw <= 0) or np.any(pw <= 0):
            return None
        alloc = Allocation(bits, bw, pw, self.scenario.devices.ids)
        bd = breakdown(self.scenario, alloc)
        if violations(self.scenario, alloc, bd, tol=_ACCEPT_TOL):
            return None
        k = float(rounds_needed(self.scenario, bits))
        j = float(self.ref.objective(k, bd.latency_s.max(), bd.energy_j.sum()))
        return _Point(bits.copy(), bw.copy(), pw.copy(), j)

    def x_energy_cap(self, payload: FloatArray) -> FloatArray:
        """Largest spectral variable ``x = W ln2 / (B u)`` the energy cap allows, shape (N,).

        Upload energy is ``S phi(x)`` with ``S = N0 W ln2 / g`` (the Shannon-limit energy).
        """
        if self.energy_cap is None:
            return np.full(payload.shape, np.inf)
        shannon = self.n0 * payload * LN2 / self.gain
        return phi_inverse((self.energy_cap - self.compute_j) / shannon)

    def upload_s(self, p: _Point) -> FloatArray:
        return payload_bits(self.scenario, p.bits) / rate_bps(
            self.scenario, p.bandwidth_hz, p.power_w
        )

    def power_for(self, bits: NDArray[np.int64], bw: FloatArray, up: FloatArray) -> FloatArray:
        """Power that sends the payload in ``up`` seconds on ``bw`` Hz, clipped to Pmax."""
        x = payload_bits(self.scenario, bits) * LN2 / (bw * up)
        return np.minimum(self.n0 * bw * np.expm1(x) / self.gain, self.pmax)


def _check_options(max_iter: Any, tol: Any, bits_method: Any, escape: Any, warm_start: Any) -> None:
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise SolverArgumentError(f"max_iter={max_iter!r}: need a whole number >= 1, e.g. 50")
    if (
        isinstance(tol, bool)
        or not isinstance(tol, int | float | np.floating)
        or not 0 < float(tol) < 1
    ):
        raise SolverArgumentError(f"tol={tol!r}: need a number in (0, 1), e.g. 1e-6")
    if bits_method not in BITS_OPTIONS:
        raise SolverArgumentError(
            f"bits_method={bits_method!r}: unknown; choose one of {', '.join(BITS_OPTIONS)}"
        )
    for name, val in (("escape", escape), ("warm_start", warm_start)):
        if not isinstance(val, bool | np.bool_):
            raise SolverArgumentError(f"{name}={val!r}: need True or False")


def _warm_start(
    model: _Model,
    use_baselines: bool,
    info: dict[str, Any],
    start_bits: NDArray[np.int64] | None = None,
) -> tuple[_Point | None, str]:
    """Best feasible starting point, and a message explaining infeasibility when there is none.

    Given ``start_bits``, the exact continuous optimum at those bits, if feasible. Otherwise, with
    ``use_baselines`` every registered baseline of :data:`BASELINES` is solved and the best
    feasible allocation wins; without, the equal split. If none is feasible (a deadline or an
    energy cap binds), the exact continuous optimum at bits that the feasibility diagnosis found.
    """
    from sflam_opt.solvers.base import available_solvers, solve

    scn = model.scenario
    if start_bits is not None:
        cs = solve_continuous(scn, start_bits, ref=model.ref)
        pt = model.score(start_bits, cs.bandwidth_hz, cs.power_w) if cs.feasible else None
        if pt is not None:
            info["warm_start"] = "start_bits"
            return pt, ""
    best: _Point | None = None
    tried: dict[str, float | None] = {}
    registered = available_solvers() if use_baselines else {}
    names = [n for n in BASELINES if n in registered] if use_baselines else ["equal"]
    for name in names:
        if name == "equal":
            a = equal_allocation(scn)
        else:
            res = solve(scn, name)
            if not res.success or res.allocation is None:
                tried[name] = None
                continue
            a = res.allocation
        pt = model.score(a.bits, a.bandwidth_hz, a.power_w)
        tried[name] = None if pt is None else pt.objective
        if pt is not None and (best is None or pt.objective < best.objective):
            best, info["warm_start"] = pt, name
    info["warm_start_candidates"] = tried
    if best is not None:
        return best, ""
    # No baseline is feasible (a deadline or energy cap binds): ask the feasibility diagnosis for
    # bits that fit, or for the one-line relaxation that would make the scenario feasible.
    diag = diagnose(scn, model.ref)
    if not diag.feasible or diag.bits is None:
        return None, diag.message or "no feasible allocation found"
    cs = solve_continuous(scn, diag.bits, ref=model.ref)
    pt = model.score(diag.bits, cs.bandwidth_hz, cs.power_w) if cs.feasible else None
    if pt is None:
        return None, cs.message or "no feasible allocation found at the diagnosed bits"
    info["warm_start"] = "continuous at diagnosed bits"
    return pt, ""


def _upload_step(
    model: _Model, blk: UploadBlock, cur: _Point, order: tuple[str, ...]
) -> tuple[_Point | None, BlockSolve]:
    """Block (ii): best upload times (so powers) and round time with bandwidth fixed."""
    bw = cur.bandwidth_hz
    w = payload_bits(model.scenario, cur.bits)
    k_rounds = float(rounds_needed(model.scenario, cur.bits))
    up = model.upload_s(cur)
    t0 = float(np.max(model.fixed_s + up))
    m = w * LN2 / (bw * t0)
    # Caps as x <= x_cap (x = W ln2 / (B u)): power via log1p(SNR), energy via phi^{-1}.
    x_cap = np.minimum(np.log1p(model.snr_hz / bw), model.x_energy_cap(w))
    vmin = m / x_cap
    a_n = model.n0 * bw * t0 / model.gain  # J per unit of (y - v)
    tmax = model.deadline / t0 if model.deadline is not None else _T_CAP_FACTOR
    cost = k_rounds * model.ref.w_energy * a_n
    wt = k_rounds * model.ref.w_latency * t0
    # Scale the objective to ~1 at the current point (the argmin is unchanged): with a small
    # weight on one term, unscaled costs of 1e-8 left every cone solver "inaccurate".
    scale = wt + k_rounds * model.ref.w_energy * float(np.sum(cur.power_w * up))
    v0 = up / t0
    blk.set(m, vmin, model.fixed_s / t0, cost / scale, wt / scale, tmax, v0 * np.exp(m / v0))
    out = blk.solve(order)
    if not out.ok:
        return None, out
    u = np.maximum(out.values["v"], vmin) * t0
    if model.deadline is not None:
        u = np.minimum(u, model.deadline - model.fixed_s)
    return model.score(cur.bits, bw, model.power_for(cur.bits, bw, u)), out


def _bandwidth_step(
    model: _Model, blk: BandwidthBlock, cur: _Point, order: tuple[str, ...]
) -> tuple[_Point | None, BlockSolve]:
    """Block (i): best bandwidth split with every device's upload time fixed."""
    up = model.upload_s(cur)
    w = payload_bits(model.scenario, cur.bits)
    k_hz = w * LN2 / up
    # Power cap: (N0 k / g) phi(x) <= Pmax; energy cap: S phi(x) <= cap - compute (x = k / B).
    x_cap = np.minimum(phi_inverse(model.snr_hz / k_hz), model.x_energy_cap(w))
    a_n = model.n0 * up / model.gain * MHZ  # J per MHz of (z - B)
    # Only the energy depends on B here; weight each device's energy by 1 / (current total) so
    # the objective is ~1 (the argmin is unchanged; zero weight stays zero).
    energy = float(np.sum(cur.power_w * up))
    cost = a_n / energy if model.ref.w_energy > 0 else np.zeros_like(a_n)
    b0 = cur.bandwidth_hz / MHZ
    k = k_hz / MHZ
    blk.set(k, k / x_cap, cost, model.total_hz / MHZ, b0, b0 * np.exp(k / b0))
    out = blk.solve(order)
    if not out.ok:
        return None, out
    bw = np.maximum(blk.bandwidth(out.values, b0) * MHZ, k_hz / x_cap)
    bw = bw * min(1.0, model.total_hz / float(bw.sum()))
    return model.score(cur.bits, bw, model.power_for(cur.bits, bw, up)), out


def _min_bandwidth(model: _Model, t: float) -> tuple[FloatArray, FloatArray]:
    """Least bandwidth ``Bmin`` (Hz) meeting the caps at round time ``t``, per device and level.

    Returns ``(bmin, shannon)``, both shape (N, L); ``bmin`` is inf where no bandwidth works
    (cap ratio ``r <= 1``) and ``shannon`` is the Shannon-limit upload energy ``S`` (J).
    """
    scn = model.scenario
    u = (t - model.fixed_s)[:, None]  # (N, 1)
    w = payload_bits(scn, scn.bits.array)[None, :]  # (1, L)
    shannon = model.n0 * w * LN2 / model.gain[:, None]
    r = model.pmax[:, None] * u / shannon
    if model.energy_cap is not None:
        r = np.minimum(r, (model.energy_cap - model.compute_j)[:, None] / shannon)
    x_cap = phi_inverse(r)
    with np.errstate(divide="ignore"):
        bmin = np.where(x_cap > 0, w * LN2 / (u * x_cap), np.inf)
    return bmin, shannon


def _priced_bits(model: _Model, cur: _Point, cs: ContinuousSolution) -> NDArray[np.int64] | None:
    """Bits proposal that charges every bit width for the bandwidth it uses, at the optimum's T.

    At the continuous optimum for the current bits (round time T, bandwidth multiplier) the
    problem separates per device once bandwidth has a price ``pi`` (J-units per Hz):

    - with an energy weight, ``pi = w_E lambda`` (lambda = -de_n/dB_n, from the exact block);
      device n at level l then uploads for ``u_n = T - c_n`` with
      ``x = min(h^{-1}(lambda / a_n), x_cap)`` (formulation §6) and costs
      ``w_E (e_n + lambda B_n)``;
    - latency only: T is the smallest round with ``sum_n Bmin_n(T) <= B``, so one Hz is worth
      ``pi = w_T / (-d sum Bmin / dT)`` and level l costs ``pi Bmin_n(T, l)``.

    Unlike block (iii) this sees the bandwidth a smaller payload frees for the others. Dinkelbach
    on the priced table (exact sweep) gives the proposal; the caller checks it with the exact
    continuous block. None when no price applies or nothing changes.
    """
    scn = model.scenario
    levels = scn.bits.array
    n = scn.n_devices
    t_round = cs.round_latency_s
    bmin, shannon = _min_bandwidth(model, t_round)
    ok = np.isfinite(bmin)
    w_e, w_t = model.ref.w_energy, model.ref.w_latency
    lam = cs.bandwidth_price
    if w_e > 0:
        if not (np.isfinite(lam) and lam > 0):
            return None
        u = (t_round - model.fixed_s)[:, None]  # (N, 1)
        wl = payload_bits(scn, levels)[None, :] * LN2  # (1, L)
        x_free = h_inverse(lam / (model.n0 * u / model.gain[:, None]))  # independent of l
        x = np.minimum(x_free, wl / (u * np.where(ok, bmin, np.inf)))
        x = np.where(ok & (x > 0), x, 1.0)
        cost = w_e * (model.compute_j[:, None] + shannon * np.expm1(x) / x + lam * wl / (u * x))
        cost -= w_e * lam * model.total_hz / n
    elif w_t > 0:
        h = 1e-6
        idx = np.searchsorted(levels, cur.bits)
        rows = np.arange(n)
        hi = _min_bandwidth(model, t_round * (1 + h))[0][rows, idx].sum()
        lo = _min_bandwidth(model, t_round * (1 - h))[0][rows, idx].sum()
        slope = (lo - hi) / (2 * h * t_round)  # -d sum Bmin / dT, Hz/s
        if not (np.isfinite(slope) and slope > 0):
            return None
        price = w_t / slope
        cost = np.where(ok, price * (bmin - model.total_hz / n), 0.0)
    else:
        return None
    conv, tr = scn.convergence, scn.training
    table = LevelTable(
        levels=levels,
        latency_s=np.full(cost.shape, t_round),
        energy_j=cost,
        penalty=conv.q * scn.rho[:, None] * quantization_penalty(levels)[None, :],
        allowed=ok,
        rounds_scale=conv.a / (tr.learning_rate * tr.local_iters),
        margin0=conv.epsilon - conv.phi0,
        w_latency=w_t,
        w_energy=1.0,
    )
    start = np.searchsorted(levels, cur.bits)
    if not ok[np.arange(n), start].all():
        return None
    res = dinkelbach(table, start, method="sweep")
    if res.status != "optimal" or np.array_equal(res.bits, cur.bits):
        return None
    return res.bits


def _neighbour_rows(model: _Model, bits: NDArray[np.int64]) -> NDArray[np.int64]:
    """Bit vectors one allowed level away from ``bits`` on one device, shape (M, N)."""
    levels = model.scenario.bits.array
    idx = np.searchsorted(levels, bits)
    n = bits.size
    rows = []
    for step in (-1, 1):
        nxt = idx + step
        dev = np.flatnonzero((nxt >= 0) & (nxt < levels.size))
        cand = np.repeat(bits[None, :], dev.size, axis=0)
        cand[np.arange(dev.size), dev] = levels[nxt[dev]]
        rows.append(cand)
    out = np.concatenate(rows, axis=0).reshape(-1, n)
    return out[np.asarray(margin(model.scenario, out)) > 0]


def _escape(
    model: _Model,
    cur: _Point,
    tol: float,
    stall_gaps: list[float],
    joint_gaps: dict[str, list[float]],
) -> _Point | None:
    """Joint steps tried when the blocks stall; the first that improves J by > tol wins.

    1. The exact continuous optimum at the current bits (the stall escape proper).
    2. A bits proposal that prices bandwidth (:func:`_priced_bits`), with its exact continuous
       optimum.
    3. For up to :data:`NEIGHBOUR_MAX_DEVICES` devices, the best of all bit vectors one level
       away on one device, each with its exact continuous optimum (one batched solve).
    """
    scn, ref = model.scenario, model.ref

    def gain(p: _Point | None) -> float:
        return (cur.objective - p.objective) / cur.objective if p is not None else -1.0

    cs = solve_continuous(scn, cur.bits, ref=ref)
    if cs.feasible:
        cand = model.score(cur.bits, cs.bandwidth_hz, cs.power_w)
        if gain(cand) > tol:
            stall_gaps.append(gain(cand))
            return cand
        prop = _priced_bits(model, cur, cs)
        if prop is not None:
            cs2 = solve_continuous(scn, prop, ref=ref)
            cand = model.score(prop, cs2.bandwidth_hz, cs2.power_w) if cs2.feasible else None
            if gain(cand) > tol:
                joint_gaps["priced"].append(gain(cand))
                return cand
    if scn.n_devices <= NEIGHBOUR_MAX_DEVICES:
        rows = _neighbour_rows(model, cur.bits)
        if rows.shape[0]:
            sol = solve_continuous_rows(scn, rows, ref=ref)
            for r in np.argsort(sol.objective, kind="stable")[:3]:
                if not np.isfinite(sol.objective[r]):
                    break
                bw, pw = row_allocation(scn, sol, int(r))
                cand = model.score(rows[r], bw, pw)
                if gain(cand) > tol:
                    joint_gaps["neighbour"].append(gain(cand))
                    return cand
    return None


@register_solver("bcd")
def solve_bcd(
    scenario: Scenario,
    *,
    max_iter: int = 50,
    tol: float = 1e-6,
    cvx_solver: str | None = None,
    bits_method: str = "auto",
    escape: bool = True,
    warm_start: bool = True,
    start_bits: ArrayLike | None = None,
    block_size: int | None = None,
) -> SolveResult:
    """Block coordinate descent: CVXPY bandwidth and upload blocks, exact bits block (default).

    Parameters
    ----------
    scenario : Scenario
    max_iter : int
        Cap on outer iterations (each runs all three blocks).
    tol : float
        Stop when an outer iteration (plus a stall escape) improves J by less than this, relative.
    cvx_solver : str or None
        Cone solver for blocks (i) and (ii): ``None`` = Clarabel with ECOS then SCS as fallbacks;
        a name puts that solver first.
    bits_method : {"auto", "milp", "sweep", "relax"}
        Dinkelbach sub-problem of the bits block: one-hot MILP (HiGHS), the exact round-time
        sweep, or LP relaxation with rounding and repair. ``"auto"``: MILP up to
        :data:`AUTO_MILP_MAX_DEVICES` devices, sweep above.
    escape : bool
        When an iteration stalls, try the exact joint continuous step, then the joint bits steps
        (priced proposal, one-level neighbourhood); see the module docstring.
    warm_start : bool
        Start from the best registered baseline instead of the equal split.
    start_bits : array_like of int, shape (N,), optional
        Start from the exact continuous optimum at these bits (e.g. the last round's) instead of
        the baselines, when it is feasible.
    block_size : int, optional
        Build the cone blocks for this many devices (>= N) and switch the extra ones off with
        parameters, so that scenarios with different N up to ``block_size`` share one
        canonicalization (:func:`~sflam_opt.solvers.cvx.get_block`).

    Returns
    -------
    SolveResult
        ``iterations[0]`` is J of the start, then J after each outer iteration (non-increasing).
        ``info``: ``stall_escapes`` and ``stall_gaps`` (relative J each stall escape closed;
        ``stall_gap`` combines them), ``bits_escapes`` / ``bits_escape_gaps`` (joint bits steps),
        ``backends`` (cone backend per block and solve count, bits backend), ``fallbacks`` and
        ``failures`` (one line per block solve that needed another backend or failed),
        ``accepted`` (improving moves per block), ``dinkelbach_steps``, ``warm_start`` and
        ``warm_start_candidates`` (baseline J), ``bits_method``, ``cvx_order``, ``blocks_built``
        (cone problems canonicalized by this call; 0 when a same-size problem was cached).
    """
    _check_options(max_iter, tol, bits_method, escape, warm_start)
    order = solver_order(cvx_solver)
    start = None if start_bits is None else check_start_bits(scenario, start_bits)
    if block_size is not None and (
        not isinstance(block_size, int | np.integer)
        or isinstance(block_size, bool)
        or block_size < scenario.n_devices
    ):
        raise SolverArgumentError(
            f"block_size={block_size!r}: need a whole number >= the {scenario.n_devices} devices"
        )

    t_start = time.perf_counter()
    n = scenario.n_devices
    method = bits_method
    if method == "auto":
        method = "milp" if n <= AUTO_MILP_MAX_DEVICES else "sweep"
    info: dict[str, Any] = {
        "bits_method": method,
        "cvx_order": list(order),
        "stall_escapes": 0,
        "stall_gaps": [],
        "stall_gap": 0.0,
        "bits_escapes": {"priced": 0, "neighbour": 0},
        "bits_escape_gaps": {"priced": [], "neighbour": []},
    }
    why = target_infeasibility(scenario)
    if why is not None:
        return SolveResult(None, "infeasible", why, info=info)
    ref = reference(scenario)
    model = _Model(scenario, ref)
    timings = Counter[str]()

    cur, msg = _warm_start(model, warm_start, info, start)
    timings["warm_start"] = time.perf_counter() - t_start
    if cur is None:
        return SolveResult(None, "infeasible", msg, backend="numpy", info=info)

    up_blk, built_u = get_block("upload", n, block_size)
    bw_blk, built_b = get_block("bandwidth", n, block_size)
    info["blocks_built"] = int(built_u) + int(built_b)
    backends: dict[str, Counter[str]] = {"upload": Counter(), "bandwidth": Counter()}
    fallbacks: list[str] = []
    failures: list[str] = []
    accepted = Counter[str]()
    dinkelbach = 0
    escapes: list[float] = []
    joint: dict[str, list[float]] = {"priced": [], "neighbour": []}
    history = [cur.objective]
    status, message = "max_iter", f"iteration cap max_iter={max_iter} reached"

    def take(cand: _Point | None, block: str) -> None:
        nonlocal cur
        if cand is not None and cand.objective <= cur.objective:
            if cand.objective < cur.objective:
                accepted[block] += 1
            cur = cand

    for it in range(max_iter):
        j_before = cur.objective
        for name, step, blk in (
            ("upload", _upload_step, up_blk),
            ("bandwidth", _bandwidth_step, bw_blk),
        ):
            t0 = time.perf_counter()
            cand, out = step(model, blk, cur, order)  # type: ignore[arg-type]
            timings[f"{name}_block"] += time.perf_counter() - t0
            if out.ok:
                backends[name][out.backend] += 1
                if out.fell_back or out.status != "optimal":
                    fallbacks.append(f"iter {it + 1} {name}: " + "; ".join(out.attempts))
            else:
                failures.append(f"iter {it + 1} {name}: " + "; ".join(out.attempts))
            take(cand, name)
        t0 = time.perf_counter()
        br = solve_bits(scenario, cur.bandwidth_hz, cur.power_w, cur.bits, method=method, ref=ref)
        timings["bits_block"] += time.perf_counter() - t0
        dinkelbach += br.steps
        if br.status == "failed":
            failures.append(f"iter {it + 1} bits: {br.message}")
        elif not np.array_equal(br.bits, cur.bits):
            take(model.score(br.bits, cur.bandwidth_hz, cur.power_w), "bits")
        if (j_before - cur.objective) < tol * j_before:
            if not escape:
                history.append(cur.objective)
                status, message = (
                    "converged",
                    (f"relative improvement below tol={tol:g} after {it + 1} iteration(s)"),
                )
                break
            t0 = time.perf_counter()
            moved = _escape(model, cur, tol, escapes, joint)
            timings["escape"] += time.perf_counter() - t0
            if moved is not None:
                cur = moved
                accepted["escape"] += 1
                history.append(cur.objective)
                continue
            history.append(cur.objective)
            n_esc = len(escapes) + sum(len(v) for v in joint.values())
            status, message = (
                "converged",
                (
                    f"relative improvement below tol={tol:g} after {it + 1} iteration(s)"
                    + (f", {n_esc} escape(s) from block stalls" if n_esc else "")
                ),
            )
            break
        history.append(cur.objective)

    cvx_used = sorted({b for c in backends.values() for b in c})
    bits_backend = "HiGHS" if method in ("milp", "relax") else "numpy"
    info.update(
        stall_escapes=len(escapes),
        stall_gaps=escapes,
        stall_gap=float(1.0 - np.prod(1.0 - np.asarray(escapes))) if escapes else 0.0,
        bits_escapes={k: len(v) for k, v in joint.items()},
        bits_escape_gaps=joint,
        backends={k: dict(v) for k, v in backends.items()} | {"bits": bits_backend},
        fallbacks=fallbacks,
        failures=failures,
        accepted=dict(accepted),
        dinkelbach_steps=dinkelbach,
    )
    return SolveResult(
        cur.allocation(scenario),
        status,
        message,
        backend="+".join(["/".join(cvx_used) or order[0], bits_backend]),
        iterations=history,
        timings=dict(timings),
        info=info,
    )

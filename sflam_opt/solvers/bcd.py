"""``bcd``: block coordinate descent over bandwidth, upload time/power and bits.

The SFLAM paper (arXiv 2504.09114) optimizes bits, powers and bandwidths by block coordinate
descent; ``docs/formulation.md``, section "Structure that the solvers use", gives the structure
this solver uses. Each outer iteration runs three blocks, each exact for its own variables with
the others fixed:

(ii) upload times / power and the round time with the bandwidth fixed
     (:class:`~sflam_opt.solvers.cvx.UploadBlock`, an exponential-cone program in CVXPY);
(i)  bandwidth with the upload times fixed (:class:`~sflam_opt.solvers.cvx.BandwidthBlock`);
(iii) bits with bandwidth and power fixed: Dinkelbach over one-hot levels
     (:func:`~sflam_opt.solvers.bits.solve_bits`). With the default ``bits_method="auto"`` each
     Dinkelbach step is a HiGHS MILP only up to :data:`AUTO_MILP_MAX_DEVICES` (30) devices;
     above that it is the exact numpy round-time sweep, which finds the same optimum.

(ii) runs first so that every device's upload fills the round before (i) re-splits the band.
Blocks (i) and (ii) are DPP problems built once per problem shape and re-solved by changing
parameters only. Every block result is rebuilt into an allocation, scored with the cost model and
accepted only if J does not increase, so the recorded J per outer iteration never increases.

The power cap couples (i) and (ii): a device at its cap can only get faster by receiving more
bandwidth *and* a shorter slot at once, which neither block can do alone. When an outer iteration
improves J by less than ``tol``, the exact joint continuous step for the current bits
(:func:`~sflam_opt.solvers.kernel.solve_continuous_rows`) is tried; if it improves J by more than
``tol`` that is a *stall escape*, counted in ``info["stall_escapes"]`` with the relative gap it
closed in ``info["stall_gaps"]``, and the descent continues from there.

Blocks and stall escape alone stop at partial optima of the bits: block (iii) judges a bit width
at the other devices' fixed bandwidth, so it never sees the bandwidth a smaller payload would free
for them, and under a binding deadline no single block can trade bits for time. Two joint bits
steps therefore follow a failed stall escape (``info["bits_escapes"]``): the bits that price
bandwidth at the continuous optimum's multiplier (:func:`~sflam_opt.solvers.kernel.lagrangian_bits`,
the step ``fast`` iterates), and for small N the best one-level change of one device, each scored
by the exact continuous block. The escapes use ``fast``'s closed-form kernel, so with them bcd's
final J is usually ``fast``'s; ``escape=False, warm_start=False`` gives pure block descent (CVXPY
blocks and the bits block only, started from the equal split; only when the equal split is
infeasible does the start come from the continuous block at bits the feasibility diagnosis found).
docs/results.md reports both.

If no CVXPY block solve succeeds, the status is "failed": the allocation returned is then the
start (or an escape's point), not a block-descent result, and the message says so.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from sflam_opt.allocation import Allocation
from sflam_opt.bounds import margin, rounds_needed, target_infeasibility
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
from sflam_opt.numeric import LN2, FloatArray, IntArray
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.base import SolveResult, check_start_bits, check_tolerance, register_solver
from sflam_opt.solvers.bits import solve_bits
from sflam_opt.solvers.cvx import (
    MHZ,
    BandwidthBlock,
    BlockSolve,
    UploadBlock,
    get_block,
    solver_order,
)
from sflam_opt.solvers.kernel import (
    BitsProblem,
    Incumbent,
    diagnose,
    lagrangian_bits,
    row_allocation,
    solve_continuous,
    solve_continuous_rows,
)
from sflam_opt.solvers.lambertw import phi_inverse
from sflam_opt.validation import check_flag, check_int

__all__ = [
    "AUTO_MILP_MAX_DEVICES",
    "BASELINES",
    "BITS_OPTIONS",
    "NEIGHBOUR_MAX_DEVICES",
    "solve_bcd",
]

logger = logging.getLogger(__name__)

#: ``bits_method="auto"`` uses the HiGHS MILP up to this many devices and the exact numpy
#: round-time sweep above: both find the same optimum, and the MILP's cost grows much faster
#: with N (docs/results.md has the timings).
AUTO_MILP_MAX_DEVICES = 30
#: Values of the ``bits_method`` option.
BITS_OPTIONS = ("auto", "milp", "sweep", "relax")
#: Baselines tried for the warm start (those registered), best feasible one wins.
BASELINES = ("equal", "fixed-bits", "bandwidth-only", "power-only", "bits-only")
#: The one-level bits neighbourhood escape runs up to this many devices: it is one batched exact
#: continuous solve of 2N bit vectors of N devices each, O(N^2) work.
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

    bits: IntArray
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
        self._bits_problem: BitsProblem | None = None

    def bits_problem(self) -> BitsProblem:
        """The kernel's batched continuous solver for this scenario (built on first use)."""
        if self._bits_problem is None:
            self._bits_problem = BitsProblem(self.scenario, self.ref, 1e-10)
        return self._bits_problem

    def score(self, bits: IntArray, bw: FloatArray, pw: FloatArray) -> _Point | None:
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

    def power_for(self, bits: IntArray, bw: FloatArray, up: FloatArray) -> FloatArray:
        """Power that sends the payload in ``up`` seconds on ``bw`` Hz, clipped to Pmax."""
        x = payload_bits(self.scenario, bits) * LN2 / (bw * up)
        # x beyond exp's range needs infinite power: the cap then holds and score() rejects it.
        with np.errstate(over="ignore"):
            return np.minimum(self.n0 * bw * np.expm1(x) / self.gain, self.pmax)


def _check_options(max_iter: Any, tol: Any, bits_method: Any, escape: Any, warm_start: Any) -> None:
    check_int(max_iter, "max_iter", minimum=1, error=SolverArgumentError, hint=", e.g. 50")
    check_tolerance(tol, "tol", upper=1.0, example="1e-6")
    if bits_method not in BITS_OPTIONS:
        raise SolverArgumentError(
            f"bits_method={bits_method!r}: unknown; choose one of {', '.join(BITS_OPTIONS)}"
        )
    check_flag(escape, "escape", error=SolverArgumentError)
    check_flag(warm_start, "warm_start", error=SolverArgumentError)


def _warm_start(
    model: _Model,
    use_baselines: bool,
    info: dict[str, Any],
    start_bits: IntArray | None = None,
) -> tuple[_Point | None, str, str]:
    """Best feasible starting point, or None with a status and a message when there is none.

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
            return pt, "", ""
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
        return best, "", ""
    # No baseline is feasible (a deadline or energy cap binds): ask the feasibility diagnosis for
    # bits that fit, or for the one-line relaxation that would make the scenario feasible.
    diag = diagnose(scn, model.ref)
    if not diag.feasible:
        return None, "infeasible", diag.message
    cs = solve_continuous(scn, diag.bits, ref=model.ref)
    pt = model.score(diag.bits, cs.bandwidth_hz, cs.power_w) if cs.feasible else None
    if pt is None:
        # The diagnosis accepted these bits, so this is a numerical failure of the start.
        return (
            None,
            "failed",
            (
                "no feasible start: the continuous block at the bits the feasibility diagnosis "
                f"accepted gave no feasible point ({cs.message or 'score rejected it'})"
            ),
        )
    info["warm_start"] = "continuous at diagnosed bits"
    return pt, "", ""


def _skipped(reason: str) -> BlockSolve:
    """A block solve not attempted: its data are out of the cone solvers' range."""
    return BlockSolve(False, "failed", None, {}, [f"skipped: {reason}"])


def _solve_block(
    blk: UploadBlock | BandwidthBlock, order: tuple[str, ...], *values: FloatArray | float
) -> BlockSolve:
    """Load ``values`` into ``blk`` (see its ``set``) and solve, unless one is not finite."""
    if not all(np.all(np.isfinite(v)) for v in values):
        return _skipped("the cone program's data are not finite at this point")
    blk.set(*values)  # type: ignore[arg-type]
    return blk.solve(order)


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
    if not np.all(x_cap > 0):
        return None, _skipped("a device's caps leave it no rate at this bandwidth")
    vmin = m / x_cap
    a_n = model.n0 * bw * t0 / model.gain  # J per unit of (y - v)
    tmax = model.deadline / t0 if model.deadline is not None else _T_CAP_FACTOR
    cost = k_rounds * model.ref.w_energy * a_n
    wt = k_rounds * model.ref.w_latency * t0
    # Scale the objective to ~1 at the current point (the argmin is unchanged): with a small
    # weight on one term, unscaled costs of 1e-8 left every cone solver "inaccurate".
    scale = wt + k_rounds * model.ref.w_energy * float(np.sum(cur.power_w * up))
    v0 = up / t0
    with np.errstate(over="ignore"):
        y0 = v0 * np.exp(m / v0)
    out = _solve_block(blk, order, m, vmin, model.fixed_s / t0, cost / scale, wt / scale, tmax, y0)
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
    if not np.all(x_cap > 0):
        return None, _skipped("a device's caps leave it no bandwidth that meets its upload time")
    a_n = model.n0 * up / model.gain * MHZ  # J per MHz of (z - B)
    # Only the energy depends on B here; weight each device's energy by 1 / (current total) so
    # the objective is ~1 (the argmin is unchanged; zero weight stays zero).
    energy = float(np.sum(cur.power_w * up))
    cost = a_n / energy if model.ref.w_energy > 0 else np.zeros_like(a_n)
    b0 = cur.bandwidth_hz / MHZ
    k = k_hz / MHZ
    with np.errstate(over="ignore"):
        z0 = b0 * np.exp(k / b0)
    out = _solve_block(blk, order, k, k / x_cap, cost, model.total_hz / MHZ, b0, z0)
    if not out.ok:
        return None, out
    bw = np.maximum(blk.bandwidth(out.values, b0) * MHZ, k_hz / x_cap)
    bw = bw * min(1.0, model.total_hz / float(bw.sum()))
    return model.score(cur.bits, bw, model.power_for(cur.bits, bw, up)), out


def _neighbour_rows(model: _Model, bits: IntArray) -> IntArray:
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
    2. The bits that price bandwidth at the continuous optimum
       (:func:`~sflam_opt.solvers.kernel.lagrangian_bits`), with their exact continuous optimum.
    3. For up to :data:`NEIGHBOUR_MAX_DEVICES` devices, the best of all bit vectors one level
       away on one device, each with its exact continuous optimum (one batched solve).
    """
    scn, ref = model.scenario, model.ref

    def gain(p: _Point | None) -> float:
        return (cur.objective - p.objective) / cur.objective if p is not None else -1.0

    prob = model.bits_problem()
    sol = prob.solve_rows(cur.bits[None, :])
    if np.isfinite(sol.objective[0]):
        bw, pw = row_allocation(scn, sol, 0)
        cand = model.score(cur.bits, bw, pw)
        if gain(cand) > tol:
            stall_gaps.append(gain(cand))
            return cand
        prop = lagrangian_bits(prob, Incumbent(cur.bits.copy(), sol))
        if not np.array_equal(prop, cur.bits):
            sol2 = prob.solve_rows(prop[None, :])
            cand = None
            if np.isfinite(sol2.objective[0]):
                cand = model.score(prop, *row_allocation(scn, sol2, 0))
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
        Build the cone blocks for this many devices (>= N) and fill the extra slots with exact
        copies of the N devices (parameters only), so that scenarios with different N up to
        ``block_size`` share one canonicalization (:func:`~sflam_opt.solvers.cvx.get_block`).

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
    if block_size is not None:
        check_int(block_size, "block_size", minimum=scenario.n_devices, error=SolverArgumentError)

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

    cur, start_status, msg = _warm_start(model, warm_start, info, start)
    timings["warm_start"] = time.perf_counter() - t_start
    if cur is None:
        return SolveResult(None, start_status, msg, backend="numpy", info=info)

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
    if not cvx_used:
        # No cone block ever produced a point: whatever J was reached came from the start and
        # the closed-form escapes, which must not pass for a block-descent result.
        origin = "the escapes' closed-form steps" if accepted["escape"] else "the start"
        status = "failed"
        message = (
            f"every CVXPY block solve failed ({failures[0] if failures else 'no solve'}); "
            f"the allocation is from {origin} ({info.get('warm_start', 'equal')}), not from "
            "block descent"
        )
        logger.warning("bcd: %s", message)
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

"""``bcd``: block coordinate descent over the continuous variables and the bits.

The SFLAM paper (arXiv 2504.09114) optimizes bits, powers and bandwidths by block coordinate
descent; ``docs/formulation.md`` §8.3 describes this solver. Each outer iteration runs blocks that
are each exact for their own variables with the others fixed:

- the continuous block: bandwidth, upload time, power and round time at fixed bits, one DPP
  exponential-cone program in scaled, dimensionless variables at a fixed round time plus a 1-D
  search over that time (:func:`~sflam_opt.solvers.joint.solve_joint`, §6.7). It is skipped when
  the bits did not change since it last ran (it would return the same point).
- the bits block at fixed bandwidth and power (:func:`~sflam_opt.solvers.bits.solve_bits`;
  ``bits_method="auto"``: HiGHS MILP Dinkelbach steps up to :data:`AUTO_MILP_MAX_DEVICES`
  devices, the exact numpy round-time sweep above);
- when that finds nothing, the bits blocks at a fixed round time with the band, the spectral
  efficiencies or the powers fixed (:mod:`~sflam_opt.solvers.bcd_bits`), which make the trades
  through the shared band that the first bits block cannot see.

Every block result is rebuilt into an allocation, scored with the cost model and accepted only if
J does not increase, so the recorded J per outer iteration never increases. ``escape=False`` is
pure block descent; with ``escape=True`` (default), when an iteration improves J by less than
``tol``, ``fast``'s closed-form steps are tried: the exact continuous optimum at the current bits
(a *stall escape*, ``info["stall_escapes"]`` / ``info["stall_gaps"]``), the bits that price
bandwidth at its multiplier (:func:`~sflam_opt.solvers.kernel.lagrangian_bits`) and, for up to
:data:`NEIGHBOUR_MAX_DEVICES` devices, the best one-level change of one device
(``info["bits_escapes"]``).

If no continuous block solve succeeds, the status is "failed": the allocation returned is then
the start (or an escape's point), not a block-descent result, and the message says so.

``SolveResult.info`` keys:

- ``bits_method``: the bits block's method after resolving ``"auto"``; ``cvx_order``: cone
  backends in the order tried;
- ``warm_start``: where the start came from (a baseline name, ``"equal"``, ``"start_bits"`` or
  ``"continuous at diagnosed bits"``); ``warm_start_candidates``: J of each baseline tried (None
  when infeasible);
- ``outer_iterations``: outer iterations run; ``accepted``: improving moves per block
  (``continuous``, ``bits``, ``bits_band``, ``bits_efficiency``, ``bits_power``,
  ``bits_priced``, ``escape``);
  ``final_step``: the block that produced the final J (``"start"`` if none improved it);
- ``backends``: ``{"continuous": {backend: cone solves}, "bits": "HiGHS" | "numpy"}``;
  ``cone_solves``: cone programs solved; ``cone_solve_s``: their median and max wall time (s);
  ``fallbacks`` / ``failures``: one line per cone solve that needed another backend or an
  inaccurate answer / that failed, or per failed bits block; ``recentred``: one line per
  first-backend failure that a continuation step in the round time replaced (the solve then
  succeeded with the first backend, §6.7); ``blocks_built``: cone programs canonicalized by this
  call (0 when a same-size program was cached), ``cone_compile_s`` the time that took (s; not in
  ``cone_solve_s``);
- ``dinkelbach_steps``: Dinkelbach steps of the first bits block;
- ``stall_escapes``, ``stall_gaps`` (relative J each closed), ``stall_gap`` (combined),
  ``bits_escapes`` and ``bits_escape_gaps`` (per kind, ``priced`` and ``neighbour``): the escapes.

``SolveResult.timings`` (s): ``warm_start``, ``continuous_block``, ``bits_block`` (all bits
blocks) and ``escape``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from sflam_opt.allocation import Allocation
from sflam_opt.bounds import margin, rounds_needed, target_infeasibility
from sflam_opt.costs import (
    Reference,
    breakdown,
    equal_allocation,
    reference,
    violations,
)
from sflam_opt.errors import SolverArgumentError
from sflam_opt.numeric import FloatArray, IntArray
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.base import SolveResult, check_start_bits, check_tolerance, register_solver
from sflam_opt.solvers.kernel import (
    BitsProblem,
    Incumbent,
    diagnose,
    lagrangian_bits,
    row_allocation,
    solve_continuous,
    solve_continuous_rows,
)
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
        self._bits_problem: BitsProblem | None = None
        #: ``g_n / N0``: SNR per watt and hertz, Hz/W.
        self.snr_per_w = scenario.gain / scenario.noise_w_per_hz

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


def _check_options(max_iter: Any, tol: Any, bits_method: Any, escape: Any, warm_start: Any) -> None:
    check_int(max_iter, "max_iter", minimum=1, error=SolverArgumentError, hint=", e.g. 50")
    check_tolerance(tol, "tol", upper=1.0, example="1e-6")
    if bits_method not in BITS_OPTIONS:
        raise SolverArgumentError(
            f"bits_method={bits_method!r}: unknown; choose one of {', '.join(BITS_OPTIONS)}"
        )
    check_flag(escape, "escape", error=SolverArgumentError)
    check_flag(warm_start, "warm_start", error=SolverArgumentError)


#: Baseline name -> its function, called directly (no dispatcher, no re-evaluation).
def _baselines() -> dict[str, Callable[[Scenario], SolveResult]]:
    from sflam_opt.solvers import baselines as bl

    return {
        "fixed-bits": bl.solve_fixed_bits,
        "bandwidth-only": bl.solve_bandwidth_only,
        "power-only": bl.solve_power_only,
        "bits-only": bl.solve_bits_only,
    }


def _best_baseline(model: _Model, use_baselines: bool, info: dict[str, Any]) -> _Point | None:
    """The best feasible of the equal split and (with ``use_baselines``) the other baselines."""
    scn = model.scenario
    best: _Point | None = None
    tried: dict[str, float | None] = {}
    funcs = _baselines() if use_baselines else {}
    for name in ("equal", *funcs) if use_baselines else ("equal",):
        if name == "equal":
            a: Allocation | None = equal_allocation(scn)
        else:
            res = funcs[name](scn)
            a = res.allocation if res.status in ("optimal", "converged") else None
        pt = None if a is None else model.score(a.bits, a.bandwidth_hz, a.power_w)
        tried[name] = None if pt is None else pt.objective
        if pt is not None and (best is None or pt.objective < best.objective):
            best, info["warm_start"] = pt, name
    info["warm_start_candidates"] = tried
    return best


def _warm_start(
    model: _Model,
    use_baselines: bool,
    info: dict[str, Any],
    continuous: Callable[[IntArray], tuple[_Point | None, str]],
    start_bits: IntArray | None = None,
) -> tuple[_Point | None, str, str]:
    """Best feasible starting point, or None with a status and a message when there is none.

    Given ``start_bits``, the exact continuous optimum at those bits, if feasible. Otherwise, with
    ``use_baselines`` every baseline of :data:`BASELINES` is solved (their functions are called
    directly) and the best feasible allocation wins; without, the equal split. If none is
    feasible (a deadline or an energy cap binds), ``continuous`` (the bcd's own continuous block)
    at bits that the feasibility diagnosis found.
    """
    scn = model.scenario
    if start_bits is not None:
        cs = solve_continuous(scn, start_bits, ref=model.ref)
        pt = model.score(start_bits, cs.bandwidth_hz, cs.power_w) if cs.feasible else None
        if pt is not None:
            info["warm_start"] = "start_bits"
            return pt, "", ""
    best = _best_baseline(model, use_baselines, info)
    if best is not None:
        return best, "", ""
    # No baseline is feasible (a deadline or energy cap binds): ask the feasibility diagnosis for
    # bits that fit, or for the one-line relaxation that would make the scenario feasible.
    diag = diagnose(scn, model.ref)
    if not diag.feasible:
        return None, "infeasible", diag.message
    pt, why = continuous(diag.bits)
    if pt is None:
        # The diagnosis accepted these bits, so this is a numerical failure of the start.
        return (
            None,
            "failed",
            (
                "no feasible start: the continuous block at the bits the feasibility diagnosis "
                f"accepted gave no feasible point ({why or 'score rejected it'})"
            ),
        )
    info["warm_start"] = "continuous at diagnosed bits"
    return pt, "", ""


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


class _Descent:
    """The state of one bcd run: the incumbent, its history and what each block did."""

    def __init__(  # noqa: PLR0913 - the solver's options
        self,
        model: _Model,
        order: tuple[str, ...],
        method: str,
        block_size: int | None,
        tol: float,
        escape: bool,
    ) -> None:
        self.model, self.order, self.method = model, order, method
        self.block_size, self.tol, self.escape = block_size, tol, escape
        self.cur: _Point | None = None
        self.history: list[float] = []
        self.timings = Counter[str]()
        self.backends: Counter[str] = Counter()
        self.solve_s: list[float] = []
        self.compile_s = 0.0
        #: (bits, round time, band price) of the last continuous optimum (for bits_priced).
        self.priced_at: tuple[IntArray, float, float] | None = None
        self.fallbacks: list[str] = []
        self.failures: list[str] = []
        self.accepted = Counter[str]()
        self.final_step = "start"
        self.dinkelbach = 0
        self.blocks_built = 0
        self.continuous_ok = 0
        self.recentred: list[str] = []
        self.stall_gaps: list[float] = []
        self.joint_gaps: dict[str, list[float]] = {"priced": [], "neighbour": []}

    def continuous(self, bits: IntArray, label: str = "start") -> tuple[_Point | None, str]:
        """The joint continuous block at ``bits`` (:func:`~sflam_opt.solvers.joint.solve_joint`)."""
        from sflam_opt.solvers.joint import solve_joint  # CVXPY: imported on first use, not by fast

        t0 = time.perf_counter()
        sol = solve_joint(
            self.model.scenario, bits, self.model.ref, self.order, block_size=self.block_size
        )
        self.timings["continuous_block"] += time.perf_counter() - t0
        self.blocks_built += int(sol.built)
        self.recentred += [f"{label} continuous: {r}" for r in sol.recentred]
        for out in sol.solves:
            self.solve_s.append(out.solve_s)
            self.compile_s += out.compile_s
            if out.ok:
                self.backends[str(out.backend)] += 1
                if out.fell_back or out.status != "optimal":
                    self.fallbacks.append(f"{label} continuous: " + "; ".join(out.attempts))
            else:
                self.failures.append(f"{label} continuous: " + "; ".join(out.attempts))
        if sol.status != "optimal":
            return None, sol.message
        self.continuous_ok += 1
        self.priced_at = (np.array(bits, copy=True), sol.round_s, sol.price_j)
        return self.model.score(bits, sol.bandwidth_hz, sol.power_w), sol.message

    def take(self, cand: _Point | None, block: str) -> None:
        """Keep ``cand`` if it does not raise J."""
        assert self.cur is not None
        if cand is not None and cand.objective <= self.cur.objective:
            if cand.objective < self.cur.objective:
                self.accepted[block] += 1
                self.final_step = block
            self.cur = cand

    def bits_step(self, it: int) -> None:
        """Block (iii): the exact bits block at fixed bandwidth and power."""
        cur = self.cur
        assert cur is not None
        from sflam_opt.solvers.bits import solve_bits  # scipy.optimize: imported on first use

        t0 = time.perf_counter()
        br = solve_bits(
            self.model.scenario,
            cur.bandwidth_hz,
            cur.power_w,
            cur.bits,
            method=self.method,
            ref=self.model.ref,
        )
        self.timings["bits_block"] += time.perf_counter() - t0
        self.dinkelbach += br.steps
        if br.status == "failed":
            self.failures.append(f"iter {it} bits: {br.message}")
        elif not np.array_equal(br.bits, cur.bits):
            self.take(self.model.score(br.bits, cur.bandwidth_hz, cur.power_w), "bits")

    def slot_bits_steps(self) -> None:
        """The bits blocks at a fixed round time (:mod:`~sflam_opt.solvers.bcd_bits`).

        Tried when the bandwidth-and-power bits block stalls: first with the band fixed (power
        free), then with the spectral efficiencies fixed (the band shared anew).
        """
        from sflam_opt.solvers.bcd_bits import (  # scipy.optimize: imported on first use
            bits_at_fixed_band,
            bits_at_fixed_efficiency,
            bits_at_fixed_power,
        )

        model = self.model
        blocks = (
            ("bits_band", bits_at_fixed_band),
            ("bits_efficiency", bits_at_fixed_efficiency),
            ("bits_power", bits_at_fixed_power),
        )
        for name, func in blocks:
            cur = self.cur
            assert cur is not None
            t0 = time.perf_counter()
            bd = breakdown(model.scenario, cur.allocation(model.scenario))
            round_s = float(bd.latency_s.max())
            fixed = {
                "bits_band": cur.bandwidth_hz,
                "bits_power": cur.power_w,
                "bits_efficiency": np.log1p(cur.power_w * model.snr_per_w / cur.bandwidth_hz),
            }[name]
            out = func(model.scenario, model.ref, cur.bits, fixed, round_s)
            self.timings["bits_block"] += time.perf_counter() - t0
            if out is not None and not np.array_equal(out[0], cur.bits):
                self.take(model.score(*out), name)

    def priced_step(self, it: int) -> None:
        """Bits at the current round time with the band priced by the continuous block
        (:func:`~sflam_opt.solvers.bcd_bits.bits_at_band_price`), then the continuous block at
        those bits; kept if J falls."""
        from sflam_opt.solvers.bcd_bits import bits_at_band_price

        cur, at = self.cur, self.priced_at
        assert cur is not None
        if at is None or not np.array_equal(at[0], cur.bits):
            return
        t0 = time.perf_counter()
        bits = bits_at_band_price(self.model.scenario, self.model.ref, cur.bits, at[1], at[2])
        self.timings["bits_block"] += time.perf_counter() - t0
        if bits is not None and not np.array_equal(bits, cur.bits):
            self.take(self.continuous(bits, f"iter {it} priced")[0], "bits_priced")

    def iterate(self, it: int, fresh: bool) -> bool:
        """One outer iteration; True when J moved by more than ``tol`` (or an escape moved it).

        The continuous block is skipped when the bits did not change since it last ran
        (``fresh`` False): it would return the same point.
        """
        assert self.cur is not None
        j_before = self.cur.objective
        if fresh:
            self.take(self.continuous(self.cur.bits, f"iter {it}")[0], "continuous")
        self.bits_step(it)
        if (j_before - self.cur.objective) < self.tol * j_before:
            self.slot_bits_steps()
        if (j_before - self.cur.objective) < self.tol * j_before:
            self.priced_step(it)
        if (j_before - self.cur.objective) >= self.tol * j_before:
            return True
        if not self.escape:
            return False
        t0 = time.perf_counter()
        moved = _escape(self.model, self.cur, self.tol, self.stall_gaps, self.joint_gaps)
        self.timings["escape"] += time.perf_counter() - t0
        if moved is None:
            return False
        self.cur = moved
        self.accepted["escape"] += 1
        self.final_step = "escape"
        return True

    def run(self, max_iter: int) -> tuple[str, str]:
        """Iterate until a stall or ``max_iter``; the status and message."""
        assert self.cur is not None
        last_bits: IntArray | None = None
        for it in range(1, max_iter + 1):
            fresh = last_bits is None or not np.array_equal(last_bits, self.cur.bits)
            last_bits = self.cur.bits.copy()
            moved = self.iterate(it, fresh or self.final_step == "escape")
            self.history.append(self.cur.objective)
            if not moved:
                n_esc = len(self.stall_gaps) + sum(len(v) for v in self.joint_gaps.values())
                return "converged", (
                    f"relative improvement below tol={self.tol:g} after {it} iteration(s)"
                    + (f", {n_esc} escape(s) from block stalls" if n_esc else "")
                )
        return "max_iter", f"iteration cap max_iter={max_iter} reached"

    def info(self) -> dict[str, Any]:
        """The run's ``info`` entries (see :func:`solve_bcd`)."""
        gaps = self.stall_gaps
        solve_s = np.asarray(self.solve_s)
        return {
            "stall_escapes": len(gaps),
            "stall_gaps": gaps,
            "stall_gap": float(1.0 - np.prod(1.0 - np.asarray(gaps))) if gaps else 0.0,
            "bits_escapes": {k: len(v) for k, v in self.joint_gaps.items()},
            "bits_escape_gaps": self.joint_gaps,
            "backends": {"continuous": dict(self.backends), "bits": _bits_backend(self.method)},
            "fallbacks": self.fallbacks,
            "failures": self.failures,
            "recentred": self.recentred,
            "accepted": dict(self.accepted),
            "dinkelbach_steps": self.dinkelbach,
            "blocks_built": self.blocks_built,
            "outer_iterations": len(self.history) - 1,
            "cone_solves": int(solve_s.size),
            "cone_solve_s": {
                "median": float(np.median(solve_s)) if solve_s.size else 0.0,
                "max": float(solve_s.max()) if solve_s.size else 0.0,
            },
            "cone_compile_s": self.compile_s,
            "final_step": self.final_step,
        }


def _bits_backend(method: str) -> str:
    return "HiGHS" if method in ("milp", "relax") else "numpy"


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
    """Block coordinate descent: the joint CVXPY continuous block, then the exact bits block.

    Parameters
    ----------
    scenario : Scenario
    max_iter : int
        Cap on outer iterations (each runs the continuous and the bits block).
    tol : float
        Stop when an outer iteration (plus an escape) improves J by less than this, relative.
    cvx_solver : str or None
        Cone solver of the continuous block: ``None`` = Clarabel with ECOS then SCS as fallbacks;
        a name puts that solver first.
    bits_method : {"auto", "milp", "sweep", "relax"}
        Dinkelbach sub-problem of the bits block: one-hot MILP (HiGHS), the exact round-time
        sweep, or LP relaxation with rounding and repair. ``"auto"``: MILP up to
        :data:`AUTO_MILP_MAX_DEVICES` devices, sweep above.
    escape : bool
        When an iteration stalls, try ``fast``'s closed-form joint steps (the continuous optimum,
        the priced bits proposal, the one-level neighbourhood); see the module docstring.
        ``False`` is pure block descent.
    warm_start : bool
        Start from the best baseline instead of the equal split.
    start_bits : array_like of int, shape (N,), optional
        Start from the exact continuous optimum at these bits (e.g. the last round's) instead of
        the baselines, when it is feasible.
    block_size : int, optional
        Build the cone block for this many devices (>= N) and fill the extra slots with exact
        copies of the N devices (parameters only), so that scenarios with different N up to
        ``block_size`` share one canonicalization (:func:`~sflam_opt.solvers.cvx.get_block`).

    Returns
    -------
    SolveResult
        ``iterations[0]`` is J of the start, then J after each outer iteration (non-increasing).
        ``info`` keys are listed in the module docstring.
    """
    from sflam_opt.solvers.cvx import solver_order  # CVXPY: imported on first use, not by fast

    _check_options(max_iter, tol, bits_method, escape, warm_start)
    order = solver_order(cvx_solver)
    start = None if start_bits is None else check_start_bits(scenario, start_bits)
    if block_size is not None:
        check_int(block_size, "block_size", minimum=scenario.n_devices, error=SolverArgumentError)
    method = bits_method
    if method == "auto":
        method = "milp" if scenario.n_devices <= AUTO_MILP_MAX_DEVICES else "sweep"
    info: dict[str, Any] = {"bits_method": method, "cvx_order": list(order)}
    why = target_infeasibility(scenario)
    if why is not None:
        return SolveResult(None, "infeasible", why, info=info)
    t_start = time.perf_counter()
    model = _Model(scenario, reference(scenario))
    run = _Descent(model, order, method, block_size, tol, escape)
    run.cur, start_status, msg = _warm_start(model, warm_start, info, run.continuous, start)
    run.timings["warm_start"] = time.perf_counter() - t_start
    if run.cur is None:
        return SolveResult(None, start_status, msg, backend="numpy", info=info | run.info())
    run.history.append(run.cur.objective)
    status, message = run.run(max_iter)
    info.update(run.info())
    if not run.continuous_ok:
        # No continuous block ever produced a point: whatever J was reached came from the start and
        # the closed-form escapes, which must not pass for a block-descent result.
        origin = "the escapes' closed-form steps" if run.accepted["escape"] else "the start"
        status = "failed"
        message = (
            f"every CVXPY block solve failed ({run.failures[0] if run.failures else 'no solve'}); "
            f"the allocation is from {origin} ({info.get('warm_start', 'equal')}), not from "
            "block descent"
        )
        logger.warning("bcd: %s", message)
    return SolveResult(
        run.cur.allocation(scenario),
        status,
        message,
        backend="+".join(["/".join(sorted(run.backends)) or "numpy", _bits_backend(method)]),
        iterations=run.history,
        timings=dict(run.timings),
        info=info,
    )

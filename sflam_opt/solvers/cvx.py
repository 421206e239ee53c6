"""CVXPY side of ``bcd``: cone-solver choice with fallback, and DPP cone blocks.

``bcd``'s continuous block is :class:`~sflam_opt.solvers.joint.JointBlock` (built here through
:func:`get_block` ``("joint", n)``). :class:`BandwidthBlock` and :class:`UploadBlock` below are the
two separate blocks ``bcd`` used before it (each exact for its variables, but stalling against
each other at the power cap); they remain public building blocks.

See ``docs/formulation.md``, section "Structure that the solvers use". With the bits fixed,
device n's upload energy is
``e_n(B_n, u_n) = (N0 / g_n) B_n u_n (2^{W_n / (B_n u_n)} - 1)``, a perspective of ``exp`` in either
argument, so each block is an exponential-cone program:

- :class:`BandwidthBlock` (block (i)): bandwidth with the upload times fixed. With
  ``k_n = W_n ln2 / u_n`` (computed in numpy, never a product of parameters), ``ExpCone(k, B, z)``
  is ``B exp(k / B) <= z`` and the energy is ``(N0 / g_n) u_n (z_n - B_n)``. Bandwidth is in MHz
  and, inside the cone program, relative to the current split, so the solver sees numbers near 1
  at any N.
- :class:`UploadBlock` (block (ii)): upload times and the round time with the bandwidth fixed.
  With ``v = u / t0`` (``t0`` a time scale) and ``m_n = W_n ln2 / (B_n t0)``, ``ExpCone(m, v, y)``
  is ``v exp(m / v) <= y``, the energy is ``(N0 B_n t0 / g_n)(y_n - v_n)``, the power cap is the
  bound ``v_n >= m_n / ln(1 + K_n / B_n)`` and ``T >= c_n + u_n`` is linear.

Both are DPP: every number that changes between iterations (and between scenarios with the same
number of devices) is a :class:`cvxpy.Parameter`, so after the first solve CVXPY reuses the
cached parametrized program and skips canonicalization. Blocks are cached per thread by (kind, N),
and one :class:`cvxpy.Problem` is kept per backend because CVXPY's cache is keyed by the solver.

Scaling: the third cone component is scaled per device by its current value (unscaled,
``y = v exp(m / v)`` spans orders of magnitude across devices and the interior-point solvers stop
``optimal_inaccurate``), and the bandwidth is relative to the current split (in plain MHz the
per-device numbers shrink with N until Clarabel fails to make progress).

Compile cost: CVXPY's own reordering of exponential-cone rows needs memory quadratic in N
(more than this 24 GB machine had at N = 10,000); the blocks are solved through the custom solver interfaces
of :mod:`sflam_opt.solvers.cone_format`, which reorder in linear time.

Backends: Clarabel first, then ECOS, then SCS when a solve raises or ends inaccurate. Clarabel is
the most accurate of the three against the closed form
(:func:`sflam_opt.solvers.kernel.bandwidth_split`); ECOS and SCS are fallbacks only.
docs/results.md has the accuracy and timing figures.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cvxpy as cp
import numpy as np

from sflam_opt.errors import SolverArgumentError
from sflam_opt.numeric import FloatArray, IntArray
from sflam_opt.solvers.cone_format import solver_instance

__all__ = [
    "DEFAULT_ORDER",
    "EXP_CONE_SOLVERS",
    "MHZ",
    "BandwidthBlock",
    "BlockSolve",
    "UploadBlock",
    "get_block",
    "installed_cone_solvers",
    "solver_order",
]

logger = logging.getLogger(__name__)


#: Hz per MHz: the bandwidth unit inside the cone programs.
MHZ = 1e6
#: CVXPY solvers that handle exponential cones, in order of preference.
EXP_CONE_SOLVERS = ("CLARABEL", "MOSEK", "ECOS", "SCS")
#: Default order: Clarabel, then the fallbacks.
DEFAULT_ORDER = ("CLARABEL", "ECOS", "SCS")

#: Per-backend options. SCS is first-order and weak on exponential cones, so it runs at eps 1e-6
#: (tighter settings rarely end ``optimal``); its looser answer is safe because bcd re-scores
#: every block result with the cost model and keeps it only if J does not increase.
#: Clarabel's duality-gap tolerance is 1e-7 instead of its 1e-8 default: at large N the
#: bandwidth block can stall just above 1e-8 ("AlmostSolved", so ``optimal_inaccurate`` and a
#: costly fallback chain) with a J already far inside bcd's own tolerance of 1e-6.
_SOLVER_OPTS: dict[str, dict[str, Any]] = {
    "CLARABEL": {"tol_gap_abs": 1e-7, "tol_gap_rel": 1e-7},
    "ECOS": {"max_iters": 200},
    "SCS": {"eps_abs": 1e-6, "eps_rel": 1e-6, "max_iters": 10_000},
    "MOSEK": {},
}


def installed_cone_solvers() -> tuple[str, ...]:
    """Installed CVXPY solvers that can solve exponential-cone programs, preferred first."""
    have = set(cp.installed_solvers())
    return tuple(s for s in EXP_CONE_SOLVERS if s in have)


def solver_order(cvx_solver: str | None) -> tuple[str, ...]:
    """Backends to try, in order, for the ``cvx_solver`` option.

    ``None`` gives Clarabel, then ECOS, then SCS (those installed). A name (case-insensitive) puts
    that solver first and keeps the installed defaults as fallbacks.

    Raises
    ------
    SolverArgumentError
        If the name is not an installed exponential-cone solver (the message lists those).
    """
    have = installed_cone_solvers()
    if cvx_solver is None:
        order = tuple(s for s in DEFAULT_ORDER if s in have)
        if not order:
            raise SolverArgumentError(
                "cvx_solver: no exponential-cone solver is installed; pip install clarabel"
            )
        return order
    name = cvx_solver.strip().upper() if isinstance(cvx_solver, str) else None
    if name not in have:
        raise SolverArgumentError(
            f"cvx_solver={cvx_solver!r}: not an installed exponential-cone solver; "
            f"choose one of {', '.join(have)}"
        )
    return (name, *(s for s in DEFAULT_ORDER if s in have and s != name))


@dataclass
class BlockSolve:
    """Outcome of one block solve.

    Attributes
    ----------
    ok : bool
        A solution with status ``optimal`` (or, when every backend was inaccurate, the first
        inaccurate one, flagged by ``status``) is in ``values``.
    status : str
        CVXPY status of the accepted solve, or ``"failed"``.
    backend : str or None
        Backend that produced ``values``.
    values : dict of str to ndarray
        Variable values by name.
    attempts : list of str
        One ``"SOLVER: outcome"`` entry per backend tried, in order.
    solve_s : float
        Wall time, including CVXPY's parameter update but not the one-time canonicalization of
        a backend's problem on its first solve (that is ``compile_s``).
    compile_s : float
        Time of that one-time canonicalization, s (0 once the problem is compiled).
    """

    ok: bool
    status: str
    backend: str | None
    values: dict[str, FloatArray] = field(default_factory=dict)
    attempts: list[str] = field(default_factory=list)
    solve_s: float = 0.0
    compile_s: float = 0.0

    @property
    def fell_back(self) -> bool:
        """True when a backend other than the first one tried produced the result."""
        return self.ok and len(self.attempts) > 1


class _DPPBlock:
    """A DPP problem built once; one :class:`cvxpy.Problem` per backend shares its expressions."""

    kind = "block"

    def __init__(
        self,
        objective: cp.Minimize,
        constraints: list[cp.Constraint],
        variables: dict[str, cp.Variable],
        params: dict[str, cp.Parameter],
    ) -> None:
        self._objective = objective
        self._constraints = constraints
        self.variables = variables
        self.params = params
        self._problems: dict[Any, cp.Problem] = {}
        #: Problems (:meth:`_key`) that have been canonicalized (solved once).
        self._compiled: set[Any] = set()
        #: Devices the problem was built for; :meth:`set` may give fewer (see :meth:`_set`).
        self.size = int(next(iter(variables.values())).shape[0])
        #: Slot -> device of the last :meth:`set`, and copies per device (see :meth:`_set`).
        self._slot: IntArray | None = None
        self._copies: FloatArray | None = None
        self._n = self.size

    def _key(self, solver: str) -> Any:
        """Which of the block's problems ``solver`` uses now (one per backend by default)."""
        return solver

    def _build(self) -> cp.Problem:
        """A new :class:`cvxpy.Problem` of the block (for :meth:`problem`)."""
        return cp.Problem(self._objective, self._constraints)

    def problem(self, solver: str) -> cp.Problem:
        """The :class:`cvxpy.Problem` used with ``solver`` (created on first use)."""
        key = self._key(solver)
        prob = self._problems.get(key)
        if prob is None:
            prob = self._build()
            self._problems[key] = prob
        return prob

    def is_dpp(self) -> bool:
        """Whether the problem is DPP (so re-solves skip canonicalization)."""
        return self.problem(DEFAULT_ORDER[0]).is_dpp()

    #: Per-device parameters that scale with a device's share of the problem (divided among
    #: its copies, see :meth:`_set`); the others are intensive and copied as they are.
    extensive: tuple[str, ...] = ()

    def _set(self, **values: Any) -> None:
        """Load parameter values; per-device vectors may be shorter than :attr:`size`.

        With ``n < size`` devices, each device fills ``size / n`` slots (rounded) as identical
        copies that split its payload, its share of the band and its cost (the parameters in
        :attr:`extensive`). Upload energy is a perspective function, positively homogeneous,
        so copies of one device reach the original optimum with equal parts, and the mean over
        a device's copies of any optimal solution is optimal for the original problem (by
        convexity); :meth:`solve` returns those means. Every slot stays a real device of the
        round, so one canonicalization serves every N up to ``size`` without the badly scaled
        dummy devices that made Clarabel fail.
        """
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
        n = next(a.shape[0] for k, a in arrays.items() if self.params[k].shape != ())
        self._layout(n)
        for name, arr in arrays.items():
            p = self.params[name]
            if p.shape == ():
                arr = arr.reshape(())
            else:
                arr = self._spread(arr / self._slot_copies() if name in self.extensive else arr)
            p.value = arr

    def _layout(self, n: int) -> None:
        """Spread ``n`` devices over the :attr:`size` slots (see :meth:`_set`)."""
        if n > self.size:
            raise ValueError(f"{self.kind} block built for {self.size} devices, got {n}")
        if n < self.size:
            copies = np.full(n, self.size // n, dtype=np.int64)
            copies[: self.size % n] += 1
            self._slot = np.repeat(np.arange(n), copies)
            self._copies = copies.astype(np.float64)
        else:
            self._slot = self._copies = None
        self._n = n

    def _slot_copies(self) -> FloatArray:
        """Copies per device of the last :meth:`_layout`, shape (n,)."""
        return self._copies if self._copies is not None else np.ones(self._n)

    def _spread(self, arr: FloatArray) -> FloatArray:
        """A per-device vector to slots (each copy gets its device's value)."""
        return arr if self._slot is None else arr[self._slot]

    def _per_device(self, value: FloatArray) -> FloatArray:
        """A solution vector over slots back to devices: the mean over each device's copies."""
        if self._slot is None or self._copies is None or value.ndim == 0:
            return value
        sums = np.bincount(self._slot, weights=value, minlength=self._copies.size)
        return sums / self._copies

    def solver_options(self, solver: str) -> dict[str, Any]:
        """Options passed to backend ``solver`` (:data:`_SOLVER_OPTS`)."""
        return _SOLVER_OPTS.get(solver, {})

    def solve(self, order: tuple[str, ...]) -> BlockSolve:
        """Solve with the first backend in ``order`` that ends ``optimal``.

        A backend that raises :class:`cvxpy.SolverError`, returns a non-optimal status or
        non-finite values is recorded and the next one is tried. If none is optimal, the first
        ``optimal_inaccurate`` result is returned with that status.
        """
        t0 = time.perf_counter()
        attempts: list[str] = []
        fallback: BlockSolve | None = None
        compile_s = 0.0
        for solver in order:
            prob = self.problem(solver)
            first = self._key(solver) not in self._compiled
            try:
                with warnings.catch_warnings():
                    # Inaccurate solves are reported in ``attempts``; no stray warnings.
                    warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                    # warm_start=False: otherwise CVXPY re-uses the last Clarabel solver through
                    # its update(), which keeps that solve's equilibration; identical data then
                    # failed there and solved on a fresh solver (docs/formulation.md §6.7).
                    prob.solve(
                        solver=solver_instance(solver),
                        warm_start=False,
                        **self.solver_options(solver),
                    )
            except (cp.SolverError, ArithmeticError, ValueError) as exc:
                compile_s += self._compile_time(prob, solver, first)
                attempts.append(f"{solver}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                logger.debug("%s block: %s raised %s", self.kind, solver, exc)
                continue
            values = {
                k: v.value if v.value is None else self._per_device(np.asarray(v.value))
                for k, v in self.variables.items()
            }
            compile_s += self._compile_time(prob, solver, first)
            finite = all(v is not None and np.all(np.isfinite(v)) for v in values.values())
            status = prob.status if finite else f"{prob.status} (non-finite values)"
            attempts.append(f"{solver}: {status}")
            if finite and prob.status == cp.OPTIMAL:
                vals = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
                took = time.perf_counter() - t0 - compile_s
                return BlockSolve(True, status, solver, vals, attempts, took, compile_s)
            if finite and prob.status == cp.OPTIMAL_INACCURATE and fallback is None:
                vals = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
                fallback = BlockSolve(True, status, solver, vals, [], 0.0)
        took = time.perf_counter() - t0 - compile_s
        if fallback is not None:
            fallback.attempts, fallback.solve_s, fallback.compile_s = attempts, took, compile_s
            return fallback
        return BlockSolve(False, "failed", None, {}, attempts, took, compile_s)

    def _compile_time(self, prob: cp.Problem, solver: str, first: bool) -> float:
        """CVXPY's canonicalization time of the first solve of ``prob`` with ``solver`` (0 on
        later solves, whose parameter update counts as solve time)."""
        if not first:
            return 0.0
        self._compiled.add(self._key(solver))
        return float(getattr(prob, "compilation_time", None) or 0.0)


class BandwidthBlock(_DPPBlock):
    """Block (i): minimize upload energy over bandwidth with upload times fixed.

    The variable is each device's bandwidth relative to a reference split ``B0`` (the current
    one), ``beta_n = B_n / B0_n``, so it is ~1 for every device whatever N is. The cone
    ``B exp(k / B) <= z`` is written as ``ExpCone(k / s, (B0 / s) beta, zh)`` with ``z = s zh``
    and ``s`` the current ``z`` (the cone is homogeneous), so ``zh`` ~ 1 however large
    ``exp(k / B)`` is. The objective is ``sum cost_n (z_n - B_n)``.

    Parameters (set with :meth:`set`), shape (N,) unless scalar; bandwidths in one unit (MHz in
    bcd): ``k`` = W_n ln2 / u_n, ``bmin`` = least bandwidth meeting the power and energy caps,
    ``cost`` >= 0 weight of ``z_n - B_n``, ``total`` = the band, ``ref`` = B0 > 0, ``scale`` =
    s > 0.
    """

    kind = "bandwidth"
    extensive = ("cost_times_s", "cost_times_b0", "b0_over_total")

    def __init__(self, n: int) -> None:
        beta = cp.Variable(n, name="beta")
        zh = cp.Variable(n, name="z_scaled")
        k_s = cp.Parameter(n, nonneg=True, name="k_over_s")
        b0_s = cp.Parameter(n, nonneg=True, name="b0_over_s")
        cost_s = cp.Parameter(n, nonneg=True, name="cost_times_s")
        cost_b0 = cp.Parameter(n, nonneg=True, name="cost_times_b0")
        share = cp.Parameter(n, nonneg=True, name="b0_over_total")
        lo = cp.Parameter(n, nonneg=True, name="bmin_over_b0")
        cons: list[cp.Constraint] = [
            cp.constraints.ExpCone(k_s, cp.multiply(b0_s, beta), zh),
            share @ beta <= 1,
            beta >= lo,
        ]
        params = {
            "k_over_s": k_s,
            "b0_over_s": b0_s,
            "cost_times_s": cost_s,
            "cost_times_b0": cost_b0,
            "b0_over_total": share,
            "bmin_over_b0": lo,
        }
        obj = cp.Minimize(cost_s @ zh - cost_b0 @ beta)
        super().__init__(obj, cons, {"beta": beta, "z_scaled": zh}, params)

    def set(
        self,
        k: FloatArray,
        bmin: FloatArray,
        cost: FloatArray,
        total: float,
        ref: FloatArray,
        scale: FloatArray,
    ) -> None:
        """Load the parameter values for the next solve (see the class docstring)."""
        self._set(
            k_over_s=k / scale,
            b0_over_s=ref / scale,
            cost_times_s=cost * scale,
            cost_times_b0=cost * ref,
            b0_over_total=ref / total,
            bmin_over_b0=bmin / ref,
        )

    def bandwidth(self, values: dict[str, FloatArray], ref: FloatArray) -> FloatArray:
        """Bandwidth of a solution, in the unit of ``ref``."""
        return values["beta"] * ref


class UploadBlock(_DPPBlock):
    """Block (ii): minimize ``wt T + sum cost_n (y_n - v_n)`` over scaled upload times v = u/t0.

    The cone ``v exp(m / v) <= y`` is written as ``ExpCone(m / s, v / s, yh)`` with ``y = s yh``
    and ``s`` the current ``y``, as in :class:`BandwidthBlock`.

    Parameters, shape (N,) unless scalar: ``m`` = W_n ln2 / (B_n t0), ``vmin`` (power and energy
    caps), ``c`` = fixed latency c_n / t0, ``cost`` >= 0, ``wt`` >= 0 weight of the scaled round
    time, ``tmax`` = round-time cap / t0 (the deadline, or a large cap), ``scale`` = s > 0.
    """

    kind = "upload"
    extensive = ("cost_times_s", "cost")

    def __init__(self, n: int) -> None:
        v = cp.Variable(n, name="v")
        yh = cp.Variable(n, name="y_scaled")
        t = cp.Variable(name="T")
        m_s = cp.Parameter(n, nonneg=True, name="m_over_s")
        inv_s = cp.Parameter(n, nonneg=True, name="inv_s")
        cost_s = cp.Parameter(n, nonneg=True, name="cost_times_s")
        cost = cp.Parameter(n, nonneg=True, name="cost")
        vmin = cp.Parameter(n, nonneg=True, name="vmin")
        c = cp.Parameter(n, nonneg=True, name="c")
        wt = cp.Parameter(nonneg=True, name="wt")
        tmax = cp.Parameter(nonneg=True, name="tmax")
        params = {
            "m_over_s": m_s,
            "inv_s": inv_s,
            "cost_times_s": cost_s,
            "cost": cost,
            "vmin": vmin,
            "c": c,
            "wt": wt,
            "tmax": tmax,
        }
        cons: list[cp.Constraint] = [
            cp.constraints.ExpCone(m_s, cp.multiply(inv_s, v), yh),
            v >= vmin,
            t >= c + v,
            t <= tmax,
        ]
        obj = cp.Minimize(wt * t + cost_s @ yh - cost @ v)
        super().__init__(obj, cons, {"v": v, "y_scaled": yh, "T": t}, params)

    def set(
        self,
        m: FloatArray,
        vmin: FloatArray,
        c: FloatArray,
        cost: FloatArray,
        wt: float,
        tmax: float,
        scale: FloatArray,
    ) -> None:
        """Load the parameter values for the next solve (see the class docstring)."""
        self._set(
            m_over_s=m / scale,
            inv_s=1.0 / scale,
            cost_times_s=cost * scale,
            cost=cost,
            vmin=vmin,
            c=c,
            wt=wt,
            tmax=tmax,
        )


_BUILDERS: dict[str, Callable[[int], _DPPBlock]] = {
    "bandwidth": BandwidthBlock,
    "upload": UploadBlock,
}


def register_block(kind: str, builder: Callable[[int], _DPPBlock]) -> None:
    """Make ``get_block(kind, n)`` build blocks with ``builder(n)``."""
    _BUILDERS[kind] = builder


#: Blocks kept per thread; large-N problems hold canonicalized matrices, so the cache is small.
_CACHE_SIZE = 8
_local = threading.local()


def get_block(kind: str, n: int, size: int | None = None) -> tuple[_DPPBlock, bool]:
    """The cached block of this kind and size (built on first request), and whether it was built.

    Blocks depend only on (kind, N): every scenario number is a parameter, so scenarios of the
    same size share one canonicalization. The cache is per thread, so concurrent solves never
    share parameter values.

    ``size`` (>= ``n``) builds the block for that many devices instead; it then serves any
    ``n <= size`` by spreading each device over several slots as exact copies
    (:meth:`_DPPBlock._set`), so a host whose number of participants changes every round
    compiles once.
    """
    if size is not None:
        if size < n:
            raise ValueError(f"block size {size} is below the {n} devices to solve")
        n = size
    cache: OrderedDict[tuple[str, int], _DPPBlock] | None = getattr(_local, "blocks", None)
    if cache is None:
        cache = OrderedDict()
        _local.blocks = cache
    key = (kind, int(n))
    blk = cache.get(key)
    if blk is not None:
        cache.move_to_end(key)
        return blk, False
    blk = _BUILDERS[kind](int(n))
    cache[key] = blk
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return blk, True

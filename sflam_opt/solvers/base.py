"""Common result type, solver registry and the ``solve`` dispatcher.

Modelled on :func:`scipy.optimize.minimize`: one entry point picks a method by name, every method
returns the same :class:`SolveResult`, and failure to converge or infeasibility is a *status* with a
message, never an exception. Only invalid arguments raise (:class:`SolverArgumentError`).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sflam_opt.allocation import Allocation
from sflam_opt.bounds import target_infeasibility
from sflam_opt.costs import Evaluation, evaluate
from sflam_opt.errors import SolverArgumentError
from sflam_opt.scenario import Scenario
from sflam_opt.validation import check_real

__all__ = [
    "STATUSES",
    "SolveResult",
    "SolverFunc",
    "available_solvers",
    "check_options",
    "check_start_bits",
    "check_tolerance",
    "get_block_solver",
    "get_solver",
    "register_block_solver",
    "register_builtins",
    "register_solver",
    "solve",
    "solver_for",
    "solver_options",
]

logger = logging.getLogger(__name__)

#: Every status a solver may return. "optimal": proven global optimum (exact methods);
#: "converged": a stationary point / stopping rule met; "infeasible": no allocation satisfies the
#: constraints (message names the binding one and the smallest relaxation); "max_iter": iteration
#: cap reached (allocation is the best found, feasible); "failed": numerical failure.
STATUSES = ("optimal", "converged", "infeasible", "max_iter", "failed")


@dataclass
class SolveResult:
    """What every solver returns.

    Attributes
    ----------
    allocation : Allocation or None
        The decision (None only when infeasible or failed without any feasible point).
    status : str
        One of :data:`STATUSES`.
    message : str
        One line explaining the status.
    solver : str
        Registered solver name.
    backend : str or None
        Numerical backend actually used (e.g. "CLARABEL", "numpy", "HiGHS").
    objective : float
        J of the allocation (1 = equal baseline); inf when there is none.
    iterations : list of float
        J after each outer iteration (one entry for one-shot methods).
    solve_time_s : float
        Wall time spent in the solver (scenario loading excluded).
    timings : dict
        Optional finer wall-time split, seconds.
    evaluation : Evaluation or None
        Full cost breakdown and constraint check of ``allocation``.
    info : dict
        Solver-specific diagnostics (e.g. stall escapes, Dinkelbach steps, fallbacks); the keys
        of each solver, with their meaning, are listed in :mod:`sflam_opt.solvers.info`.
    """

    allocation: Allocation | None
    status: str
    message: str
    solver: str = ""
    backend: str | None = None
    objective: float = float("inf")
    iterations: list[float] = field(default_factory=list)
    solve_time_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    evaluation: Evaluation | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        """True when a feasible allocation was returned."""
        return self.status in ("optimal", "converged", "max_iter") and self.allocation is not None

    def to_dict(self, scenario: Scenario) -> dict[str, Any]:
        """The ``sflam-opt solve --json`` object (a CLI contract)."""
        out: dict[str, Any] = {
            "status": self.status,
            "message": self.message,
            "solver": self.solver,
            "backend": self.backend,
            "objective": _num(self.objective),
            "rounds": None,
            "rounds_ceil": None,
            "round_latency_s": None,
            "round_energy_j": None,
            "total_latency_s": None,
            "total_energy_j": None,
            "solve_time_s": self.solve_time_s,
            "iterations": [_num(j) for j in self.iterations],
            "devices": [],
        }
        ev, alloc = self.evaluation, self.allocation
        if ev is not None and alloc is not None:
            out.update(
                rounds=_num(ev.rounds),
                rounds_ceil=_num(ev.rounds_ceil),
                round_latency_s=_num(ev.round_latency_s),
                round_energy_j=_num(ev.round_energy_j),
                total_latency_s=_num(ev.total_latency_s),
                total_energy_j=_num(ev.total_energy_j),
                violations=list(ev.violations),
            )
            bd = ev.breakdown
            devices = alloc.device_rows(
                scenario.devices.ids,
                rate_bps=bd.rate_bps,
                upload_s=bd.upload_s,
                latency_s=bd.latency_s,
                energy_j=bd.energy_j,
            )
            out["devices"] = devices
        if self.info:
            out["info"] = _jsonable(self.info)
        return out


def _num(x: float) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _num(float(obj))
    return obj


class SolverFunc(Protocol):
    """Signature of a registered solver: ``f(scenario, **options) -> SolveResult``."""

    def __call__(self, scenario: Scenario, **options: Any) -> SolveResult: ...


_REGISTRY: dict[str, SolverFunc] = {}
_DESCRIPTIONS: dict[str, str] = {}
#: Resource-block versions of registered solvers (``docs/formulation.md`` §10), by name.
_BLOCK_REGISTRY: dict[str, SolverFunc] = {}


def register_solver(name: str, description: str = "") -> Callable[[SolverFunc], SolverFunc]:
    """Decorator registering a solver under ``name`` (used by ``solve`` and ``--solver``)."""

    def deco(func: SolverFunc) -> SolverFunc:
        if name in _REGISTRY and _REGISTRY[name] is not func:
            raise RuntimeError(f"solver name {name!r} registered twice")
        _REGISTRY[name] = func
        doc = (inspect.getdoc(func) or "").splitlines()
        _DESCRIPTIONS[name] = description or (doc[0] if doc else "")
        return func

    return deco


def _builtins() -> None:
    # The explicit table of built-in solvers, loaded on first use rather than with the package:
    # it imports CVXPY, which would add about half a second to every CLI command, most of which
    # never solve anything.
    from sflam_opt.solvers import registry  # noqa: F401


def available_solvers() -> dict[str, str]:
    """Registered solver names with a one-line description each."""
    _builtins()
    return dict(sorted(_DESCRIPTIONS.items()))


def get_solver(name: str) -> SolverFunc:
    """The solver registered as ``name``; SolverArgumentError listing valid names otherwise."""
    _builtins()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise SolverArgumentError(
            f"solver={name!r}: unknown solver; choose one of {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def register_block_solver(name: str, func: SolverFunc) -> None:
    """Register ``func`` as the resource-block version of solver ``name`` (used by ``solve``)."""
    _BLOCK_REGISTRY[name] = func


def get_block_solver(name: str) -> SolverFunc:
    """The resource-block version of solver ``name``.

    Raises
    ------
    SolverArgumentError
        If ``name`` has none; the message names the solvers that have one.
    """
    _builtins()
    if name not in _BLOCK_REGISTRY:
        raise SolverArgumentError(
            f"solver={name!r}: does not support resource blocks; choose one of "
            f"{', '.join(sorted(_BLOCK_REGISTRY))}"
        )
    return _BLOCK_REGISTRY[name]


def register_builtins(
    solvers: Mapping[str, SolverFunc],
    block_solvers: Mapping[str, SolverFunc],
    descriptions: Mapping[str, str],
) -> None:
    """Register the built-in solver tables of :mod:`sflam_opt.solvers.registry`.

    A solver that its module also registers by decorator must be the same function; a solver of
    an ``sflam_opt`` module registered by decorator but missing from the table is an error, so
    the table stays the complete list of built-ins.

    Raises
    ------
    RuntimeError
        If the table and the registry disagree (a programming error, found at import).
    """
    missing = sorted(
        k
        for k, f in _REGISTRY.items()
        if k not in solvers and f.__module__.startswith("sflam_opt.")
    )
    if missing:
        raise RuntimeError(f"solvers {missing} are registered but not in the SOLVERS table")
    for name, func in solvers.items():
        register_solver(name, descriptions.get(name, ""))(func)
    for name, func in block_solvers.items():
        if name not in solvers:
            raise RuntimeError(f"block solver {name!r} has no solver of that name")
        register_block_solver(name, func)


def solver_for(scenario: Scenario, name: str) -> SolverFunc:
    """The function that :func:`solve` runs for solver ``name`` on this scenario.

    The resource-block version (``docs/formulation.md`` §10) when the scenario has blocks.

    Raises
    ------
    SolverArgumentError
        Unknown name, or a block scenario and a solver without a block version.
    """
    func = get_solver(name)
    return get_block_solver(name) if scenario.resource_blocks is not None else func


def solver_options(func: SolverFunc) -> tuple[str, ...] | None:
    """The keyword-only options of a solver function; None if it takes any (``**options``)."""
    params = inspect.signature(func).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def check_options(
    name: str,
    func: SolverFunc,
    options: Mapping[str, Any],
    reserved: Mapping[str, str] | None = None,
) -> None:
    """The one check of solver options, shared by :func:`solve` and the Allocator.

    Parameters
    ----------
    name : str
        Registered solver name (for the message).
    func : SolverFunc
        The function that will run (:func:`solver_for`).
    options : mapping
        The options given.
    reserved : mapping of str to str, optional
        Options the caller sets itself, each with who sets it (e.g. ``"the Allocator"``):
        giving one is an error, and they are left out of the list of valid options.

    Raises
    ------
    SolverArgumentError
        ``"key=value: not an option of solver 'name'; valid options: ..."``, or naming a
        reserved option and who sets it.
    """
    reserved = reserved or {}
    valid = solver_options(func)
    for key in options:
        if key in reserved:
            raise SolverArgumentError(
                f"{key}: set by {reserved[key]} each round; leave it out of the options"
            )
        if valid is not None and key not in valid:
            shown = [k for k in valid if k not in reserved]
            raise SolverArgumentError(
                f"{key}={options[key]!r}: not an option of solver {name!r}; valid options: "
                f"{', '.join(shown) or 'none'}"
            )


def solve(scenario: Scenario, solver: str = "bcd", **options: Any) -> SolveResult:
    """Minimize J (``docs/formulation.md``, "The problem") over bits, bandwidth and power with the named method.

    Parameters
    ----------
    scenario : Scenario
        The problem instance.
    solver : str
        Registered method name (see :func:`available_solvers`), default ``"bcd"``.
    **options
        Passed to the solver; unknown options raise :class:`SolverArgumentError`.

    Returns
    -------
    SolveResult
        With ``evaluation`` filled in and ``solve_time_s`` measured here. A solver that raises
        anything but :class:`SolverArgumentError` gives status "failed" with the exception in
        the message (and the traceback in the log).

    Raises
    ------
    SolverArgumentError
        Unknown solver name or invalid option (the only exceptions).
    """
    if not isinstance(scenario, Scenario):
        raise SolverArgumentError(f"scenario: expected a Scenario, got {type(scenario).__name__}")
    func = solver_for(scenario, solver)
    check_options(solver, func, options)
    t0 = time.perf_counter()
    why = target_infeasibility(scenario)
    try:
        if why is not None:
            res = SolveResult(None, "infeasible", why, solver=solver)
        else:
            res = func(scenario, **options)
        if res.allocation is not None:
            res.evaluation = evaluate(scenario, res.allocation)
            res.objective = res.evaluation.objective
    except SolverArgumentError:
        raise
    except Exception as exc:
        # Last resort: a valid input must get a status, never a traceback. The solver's own
        # statuses cover the known failure modes; this catches the unknown ones.
        logger.exception("solver %s raised", solver)
        text = str(exc).splitlines()[0] if str(exc) else ""
        res = SolveResult(
            None, "failed", f"{solver}: internal error: {type(exc).__name__}: {text}".rstrip(": ")
        )
    res.solve_time_s = time.perf_counter() - t0
    res.solver = solver
    ev = res.evaluation
    if ev is not None and res.status not in ("infeasible", "failed") and ev.violations:
        # A solver bug must never be reported as success.
        logger.warning("solver %s returned violations: %s", solver, ev.violations)
        res.status = "failed"
        res.message = "returned allocation violates: " + "; ".join(ev.violations)
    if res.status not in STATUSES:
        raise RuntimeError(f"solver {solver!r} returned unknown status {res.status!r}")
    logger.debug("solve(%s): %s J=%s in %.3fs", solver, res.status, res.objective, res.solve_time_s)
    return res


def check_tolerance(value: Any, name: str, *, upper: float, example: str) -> float:
    """A solver's relative tolerance option: a number in ``(0, upper)``.

    Raises
    ------
    SolverArgumentError
        ``"name=value: need a finite number in (0, upper), e.g. example"``.
    """
    return check_real(
        value,
        name,
        lower=0.0,
        upper=upper,
        open_lower=True,
        open_upper=True,
        error=SolverArgumentError,
        hint=f", e.g. {example}",
    )


def check_start_bits(scenario: Scenario, start_bits: ArrayLike) -> NDArray[np.int64]:
    """The ``start_bits`` warm-start option as an int vector of allowed levels, shape (N,).

    Raises
    ------
    SolverArgumentError
        Naming the first entry that is not one of the scenario's bit levels, or a wrong length.
    """
    try:
        arr = np.asarray(start_bits, dtype=np.float64)
    except (TypeError, ValueError):
        raise SolverArgumentError(
            f"start_bits: need {scenario.n_devices} bit widths, got {start_bits!r}"
        ) from None
    if arr.shape != (scenario.n_devices,):
        raise SolverArgumentError(
            f"start_bits: need one bit width per device ({scenario.n_devices}), got shape "
            f"{arr.shape}"
        )
    bad = ~np.isin(arr, scenario.bits.array)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise SolverArgumentError(
            f"start_bits[{k}] = {float(arr[k])!r}: not an allowed bit width; choose from "
            f"{list(scenario.bits.levels)}"
        )
    return arr.astype(np.int64)

"""CVXPY cone-solver interfaces whose compile step stays linear in the number of devices.

Why: before a parametrized (DPP) cone program reaches the solver, CVXPY reorders the rows of its
parameter-to-data tensor ``A`` so that each exponential cone's three entries are adjacent
(``ConicSolver.format_constraints``). It does so by multiplying a row-permutation matrix with
``A`` reshaped to one row per constraint row and one column per (variable, parameter) pair; the
sparse product allocates a workspace as wide as that reshaped matrix, (n_vars + 1) x
(n_params + 1) entries, so memory and time grow with N^2 for our blocks (N devices, O(N)
variables and parameters each): gigabytes per block at a few thousand devices, which made
``bcd`` unusable at N = 10,000 on a 24 GB machine.

The reordering is a signed permutation of the rows of the constraint block (zero-cone rows are
negated, nonnegative rows kept, exponential-cone and second-order-cone rows interleaved), so it can be applied to the
row indices of ``A`` directly, in time and memory linear in its nonzeros. The classes below are
CVXPY custom solvers (the documented ``problem.solve(solver=instance)`` extension point) that do
exactly that and otherwise behave as Clarabel, ECOS and SCS. Problems with other cone types fall
back to CVXPY's own reordering. ``tests/test_cvx.py`` checks that both give the same matrix.

The override relies on CVXPY internals (``ConicSolver.format_constraints(problem,
exp_cone_order)``, the ``A``, ``x``, ``constraints``, ``reduced_A`` and ``formatted`` attributes
of ``ParamConeProg`` and the ``ReducedMat(matrix_data, var_len)`` constructor). At import,
:func:`configure` checks that they have that shape; if not (a CVXPY release that changed them),
:func:`solver_instance` hands out the plain solver names, so CVXPY formats the problem itself
(correct, but quadratic in N), and one warning is logged.
"""

from __future__ import annotations

import copy
import inspect
import logging
from typing import Any

import numpy as np
import scipy.sparse as sp
from cvxpy.constraints import SOC, ExpCone, NonNeg, Zero
from cvxpy.reductions.solvers.conic_solvers.clarabel_conif import CLARABEL
from cvxpy.reductions.solvers.conic_solvers.ecos_conif import ECOS
from cvxpy.reductions.solvers.conic_solvers.scs_conif import SCS

from sflam_opt.numeric import IntArray

__all__ = [
    "LINEAR_FORMAT_SOLVERS",
    "configure",
    "cvxpy_mismatch",
    "row_permutation",
    "solver_instance",
]

logger = logging.getLogger(__name__)


def row_permutation(
    constraints: list[Any], exp_cone_order: list[int]
) -> tuple[IntArray, IntArray] | None:
    """Where each constraint row goes, and its sign, in CVXPY's solver-ready row order.

    Parameters
    ----------
    constraints : list of cvxpy constraints
        The canonical constraints of a ``ParamConeProg``, in order.
    exp_cone_order : list of int
        The solver's order of the exponential cone's three arguments.

    Returns
    -------
    (target, sign) : tuple of ndarray, shape (m,) each, or None
        Row ``i`` of the constraint block moves to row ``target[i]`` and is multiplied by
        ``sign[i]`` (-1 for zero-cone rows). None when a constraint is of a type this module
        does not reorder (CVXPY's own reordering is then used).
    """
    targets: list[IntArray] = []
    signs: list[IntArray] = []
    offset = 0
    for con in constraints:
        kind = type(con)
        if kind is Zero or kind is NonNeg:
            size = int(con.size)
            targets.append(offset + np.arange(size, dtype=np.int64))
            signs.append(np.full(size, -1 if kind is Zero else 1, dtype=np.int64))
        elif kind is ExpCone:
            sizes = [int(arg.size) for arg in con.args]
            k = sizes[0]
            if len(sizes) != 3 or any(s != k for s in sizes):
                return None
            size = 3 * k
            which = np.repeat(np.arange(3), k)
            entry = np.tile(np.arange(k, dtype=np.int64), 3)
            order = np.asarray(exp_cone_order, dtype=np.int64)
            targets.append(offset + 3 * entry + order[which])
            signs.append(np.ones(size, dtype=np.int64))
        elif kind is SOC:
            # Cone i is t_i followed by column i of X (X flattened column by column).
            t, x = con.args
            k = int(t.size)
            dim = x.shape[0] if x.shape else 1
            if con.axis != 0 or int(x.size) != k * dim:
                return None
            size = k * (dim + 1)
            within = np.arange(k * dim, dtype=np.int64)
            cone, part = np.divmod(within, dim)
            targets.append(
                offset + np.concatenate([(dim + 1) * np.arange(k), (dim + 1) * cone + 1 + part])
            )
            signs.append(np.ones(size, dtype=np.int64))
        else:
            return None
        offset += size
    if not targets:
        return None
    return np.concatenate(targets), np.concatenate(signs)


class _LinearFormat:
    """Mixin: ``format_constraints`` by a row permutation of ``A`` (module docstring)."""

    @classmethod
    def format_constraints(cls, problem: Any, exp_cone_order: list[int]) -> Any:
        mapping = row_permutation(problem.constraints, exp_cone_order)
        a = problem.A
        m_total = a.shape[0]
        n_x = int(problem.x.size) + 1
        if mapping is None or m_total % n_x or mapping[0].size != m_total // n_x:
            return super().format_constraints(problem, exp_cone_order)  # type: ignore[misc]
        target, sign = mapping
        m = target.size
        coo = a.tocoo()
        rows = coo.row.astype(np.int64)
        block, within = np.divmod(rows, m)
        data = coo.data * sign[within]
        new_a = sp.coo_matrix((data, (block * m + target[within], coo.col)), shape=a.shape)
        out = copy.copy(problem)
        out.A = new_a
        out.reduced_A = type(problem.reduced_A)(new_a, problem.x.size)
        out.formatted = True
        return out


class LinearFormatClarabel(_LinearFormat, CLARABEL):
    """Clarabel with the linear-time constraint reordering."""

    def name(self) -> str:
        return "SFLAM_CLARABEL"


class LinearFormatECOS(_LinearFormat, ECOS):
    """ECOS with the linear-time constraint reordering."""

    def name(self) -> str:
        return "SFLAM_ECOS"


class LinearFormatSCS(_LinearFormat, SCS):
    """SCS with the linear-time constraint reordering."""

    def name(self) -> str:
        return "SFLAM_SCS"


#: CVXPY solver name -> custom solver class with the linear-time reordering.
LINEAR_FORMAT_SOLVERS: dict[str, type] = {
    "CLARABEL": LinearFormatClarabel,
    "ECOS": LinearFormatECOS,
    "SCS": LinearFormatSCS,
}
_INSTANCES: dict[str, Any] = {}
#: Why the linear-time formatting is off (None: it is on); set by :func:`configure`.
_DISABLED: str | None = None


def _params(func: Any) -> list[str]:
    return [p for p in inspect.signature(func).parameters if p not in ("self", "cls")]


def cvxpy_mismatch() -> str | None:
    """Why the CVXPY internals overridden here do not have the expected shape, or None."""
    try:
        from cvxpy.reductions.dcp2cone.cone_matrix_stuffing import ParamConeProg
        from cvxpy.reductions.solvers.conic_solvers.conic_solver import ConicSolver
        from cvxpy.reductions.utilities import ReducedMat
    except ImportError as exc:
        return f"CVXPY moved an internal module ({exc})"
    if _params(ConicSolver.format_constraints) != ["problem", "exp_cone_order"]:
        return "ConicSolver.format_constraints does not take (problem, exp_cone_order)"
    if _params(ReducedMat.__init__)[:2] != ["matrix_data", "var_len"]:
        return "ReducedMat() does not take (matrix_data, var_len)"
    init = inspect.getsource(ParamConeProg.__init__)
    for attr in ("A", "x", "constraints", "reduced_A", "formatted"):
        if f"self.{attr} =" not in init:
            return f"ParamConeProg no longer sets .{attr}"
    for cls in (CLARABEL, ECOS, SCS):
        if "format_constraints" in vars(cls):
            return f"CVXPY's {cls.__name__} formats its own constraints"
    return None


def configure() -> str | None:
    """Check CVXPY (:func:`cvxpy_mismatch`) and turn the linear-time formatting on or off.

    Returns the reason it is off, or None. Logs one warning when it is off.
    """
    global _DISABLED
    _DISABLED = cvxpy_mismatch()
    if _DISABLED is not None:
        logger.warning(
            "cone_format: %s; using CVXPY's own constraint formatting (memory grows with N^2)",
            _DISABLED,
        )
    return _DISABLED


def solver_instance(name: str) -> Any:
    """What to pass as ``problem.solve(solver=...)`` for CVXPY solver ``name``.

    The linear-format custom solver for Clarabel, ECOS and SCS; the name itself otherwise, and
    always when :func:`configure` found CVXPY's internals changed.
    """
    cls = LINEAR_FORMAT_SOLVERS.get(name)
    if cls is None or _DISABLED is not None:
        return name
    inst = _INSTANCES.get(name)
    if inst is None:
        inst = _INSTANCES[name] = cls()
    return inst


configure()

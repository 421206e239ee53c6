"""Solvers for the SFLAM allocation problem, dispatched by name.

The problem is the one of ``docs/formulation.md``, section "The problem". The built-in solvers
are listed by name in :data:`SOLVERS` (:mod:`sflam_opt.solvers.registry`, loaded on first use
because it imports CVXPY); what each puts in ``SolveResult.info`` is in
:mod:`sflam_opt.solvers.info`.
"""

from typing import Any

from sflam_opt.solvers.base import (
    STATUSES,
    SolveResult,
    available_solvers,
    get_solver,
    register_solver,
    solve,
)

__all__ = ["STATUSES", "SolveResult", "available_solvers", "get_solver", "register_solver", "solve"]


def __getattr__(name: str) -> Any:
    # SOLVERS and BLOCK_SOLVERS without importing every solver with the package.
    if name in ("SOLVERS", "BLOCK_SOLVERS"):
        from sflam_opt.solvers import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Solvers for the SFLAM allocation problem, dispatched by name.

The problem is the one of ``docs/formulation.md``, section "The problem".
"""

from sflam_opt.solvers.base import (
    STATUSES,
    SolveResult,
    available_solvers,
    get_solver,
    register_solver,
    solve,
)

__all__ = ["STATUSES", "SolveResult", "available_solvers", "get_solver", "register_solver", "solve"]

"""Solvers for the SFLAM allocation problem (formulation §5), dispatched by name."""

from sflam_opt.solvers.base import (
    STATUSES,
    SolveResult,
    available_solvers,
    get_solver,
    register_solver,
    solve,
)

__all__ = ["STATUSES", "SolveResult", "available_solvers", "get_solver", "register_solver", "solve"]

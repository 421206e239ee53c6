"""Baseline allocations that the optimizers are measured against (formulation §5).

``equal``: B/N of the band, full power, the largest bit width — the reference that normalizes J.
"""

from __future__ import annotations

from sflam_opt.costs import equal_allocation, violations
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.base import SolveResult, register_solver

__all__ = ["solve_equal"]


@register_solver("equal")
def solve_equal(scenario: Scenario) -> SolveResult:
    """Equal split: B_n = B/N, p_n = Pmax_n, b_n = max(L) (J = 1 by definition)."""
    alloc = equal_allocation(scenario)
    bad = violations(scenario, alloc)
    if bad:
        return SolveResult(
            alloc,
            "infeasible",
            "equal allocation violates: " + "; ".join(bad),
            backend="closed-form",
            iterations=[1.0],
        )
    return SolveResult(
        alloc,
        "converged",
        "equal split (closed form, nothing optimized)",
        backend="closed-form",
        iterations=[1.0],
    )

"""The built-in solvers, by name: the table that :func:`sflam_opt.solve` dispatches on.

In the style of scipy.optimize's ``_minimize``: every method is an imported function listed here
under its name, with no import by name. :data:`SOLVERS` holds the solvers, :data:`BLOCK_SOLVERS`
the version each runs on a resource-block scenario (``docs/formulation.md`` §10). What each puts
in :attr:`~sflam_opt.solvers.base.SolveResult.info` is listed in :mod:`sflam_opt.solvers.info`.

This module is imported on the first dispatch (:func:`~sflam_opt.solvers.base.get_solver`,
``available_solvers``, ``solve``), not with the package, because it imports CVXPY.
:func:`~sflam_opt.solvers.base.register_solver` adds a third-party solver at run time.
"""

from __future__ import annotations

from sflam_opt.solvers import baselines, bcd, exact, fast, matching
from sflam_opt.solvers.base import SolverFunc, register_builtins

__all__ = ["BLOCK_SOLVERS", "DESCRIPTIONS", "SOLVERS"]

#: Every built-in solver, by the name that ``solve(scenario, name)`` and ``--solver`` take.
SOLVERS: dict[str, SolverFunc] = {
    "bandwidth-only": baselines.solve_bandwidth_only,
    "bcd": bcd.solve_bcd,
    "bits-only": baselines.solve_bits_only,
    "equal": baselines.solve_equal,
    "exact": exact.solve_exact,
    "fast": fast.solve_fast,
    "fixed-bits": baselines.solve_fixed_bits,
    "greedy": matching.solve_greedy,
    "power-only": baselines.solve_power_only,
    "round-robin": matching.solve_round_robin,
}

#: The solvers that accept resource-block scenarios, and the function each runs on one.
BLOCK_SOLVERS: dict[str, SolverFunc] = dict(matching.BLOCK_SOLVERS)

#: One-line descriptions shown by ``sflam-opt solvers``; a solver not listed here is described
#: by the first line of its docstring.
DESCRIPTIONS: dict[str, str] = {
    "exact": "global optimum by branch and bound over all bit vectors (small N)",
    "fast": "exact continuous block + Dinkelbach bits search, no general solver",
    "greedy": "resource blocks: best-gain greedy assignment, power and bits optimized",
    "round-robin": "resource blocks: round-robin assignment, power and bits optimized",
}

register_builtins(SOLVERS, BLOCK_SOLVERS, DESCRIPTIONS)

"""The solver kernel: the exact continuous block and what the bits searches build on it.

See ``docs/formulation.md``, section "Structure that the solvers use". This package is the one
interface that ``fast``, ``exact``, ``bcd`` and the baselines use; its modules have one job each:

* :mod:`.params`: scenario constants (:class:`KernelParams`) and per-row constants;
* :mod:`.split`: the KKT bandwidth split at a fixed round time (Newton, bracketed fallback);
* :mod:`.roundtime`: the convex search for the best round time;
* :mod:`.chunks`: cache-sized blocks over the devices whose sums equal numpy's (large N);
* :mod:`.rows`: batched and single bit-vector solves (:func:`solve_rows`,
  :func:`solve_continuous`, :func:`bandwidth_split`);
* :mod:`.feasibility`: whether any bits are feasible and what to relax (:func:`diagnose`);
* :mod:`.messages`: the one-line infeasibility messages;
* :mod:`.pricing`: the bits choice priced by the continuous optimum (:func:`lagrangian_bits`).
"""

from sflam_opt.solvers.kernel.feasibility import DIAGNOSE_ENUMERATION_LIMIT, Feasibility, diagnose
from sflam_opt.solvers.kernel.messages import (
    ZERO_LATENCY_NOTE,
    bandwidth_alternative,
    deadline_message,
    energy_cap_message,
    fmt_up,
    infeasibility_message,
    relax_message,
)
from sflam_opt.solvers.kernel.params import (
    FAILED,
    INFEASIBLE_DEADLINE,
    INFEASIBLE_ENERGY,
    INFEASIBLE_TARGET,
    OK,
    ZERO_LATENCY_WEIGHT_RTOL,
    KernelParams,
    kernel_params,
)
from sflam_opt.solvers.kernel.pricing import BitsProblem, Incumbent, lagrangian_bits
from sflam_opt.solvers.kernel.rows import (
    ContinuousSolution,
    RowSolutions,
    bandwidth_split,
    row_allocation,
    solve_continuous,
    solve_continuous_rows,
    solve_rows,
)

__all__ = [
    "DIAGNOSE_ENUMERATION_LIMIT",
    "FAILED",
    "INFEASIBLE_DEADLINE",
    "INFEASIBLE_ENERGY",
    "INFEASIBLE_TARGET",
    "OK",
    "ZERO_LATENCY_NOTE",
    "ZERO_LATENCY_WEIGHT_RTOL",
    "BitsProblem",
    "ContinuousSolution",
    "Feasibility",
    "Incumbent",
    "KernelParams",
    "RowSolutions",
    "bandwidth_alternative",
    "bandwidth_split",
    "deadline_message",
    "diagnose",
    "energy_cap_message",
    "fmt_up",
    "infeasibility_message",
    "kernel_params",
    "lagrangian_bits",
    "relax_message",
    "row_allocation",
    "solve_continuous",
    "solve_continuous_rows",
    "solve_rows",
]

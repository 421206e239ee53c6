"""sflam-opt: joint quantization, power and bandwidth allocation for split federated learning.

Public API::

    from sflam_opt import Scenario, Allocation, solve, evaluate
    scenario = Scenario.default(devices=10, seed=0)
    result = solve(scenario, solver="bcd")
    print(result.status, result.objective, result.allocation.bits)
"""

from sflam_opt.allocation import Allocation
from sflam_opt.allocator import Allocator, RoundRecord
from sflam_opt.bounds import bound, min_epsilon, phi_q, rounds_needed
from sflam_opt.costs import Evaluation, breakdown, equal_allocation, evaluate, objective
from sflam_opt.errors import (
    AllocationError,
    DataError,
    ScenarioError,
    SflamError,
    SolverArgumentError,
    TrainingConfigError,
)
from sflam_opt.estimator import ConvergenceConstants, ConvergenceEstimator, UnsupportedFitError
from sflam_opt.scenario import Scenario
from sflam_opt.solvers import SolveResult, available_solvers, solve

__version__ = "0.1.0"

__all__ = [
    "Allocation",
    "AllocationError",
    "Allocator",
    "ConvergenceConstants",
    "ConvergenceEstimator",
    "DataError",
    "Evaluation",
    "RoundRecord",
    "Scenario",
    "ScenarioError",
    "SflamError",
    "SolveResult",
    "SolverArgumentError",
    "TrainingConfigError",
    "UnsupportedFitError",
    "available_solvers",
    "bound",
    "breakdown",
    "equal_allocation",
    "evaluate",
    "min_epsilon",
    "objective",
    "phi_q",
    "rounds_needed",
    "solve",
]

"""Domain exceptions of sflam-opt, all in one place.

Every exception the library raises for something a user did or typed derives from
:class:`SflamError`; its message is a single line naming the offending field and the fix, and it
is exactly what the CLI prints (``error: <message>``) before exiting with the class's
:attr:`~SflamError.exit_code`:

====  ==========================================================================
code  meaning
====  ==========================================================================
1     the run failed although the input was fine (:class:`SflamRuntimeError`)
2     bad input or arguments (:class:`SflamError` and most subclasses)
3     the problem is infeasible (:class:`InfeasibleError`)
====  ==========================================================================

Solver failures and infeasibility are *statuses* on a result inside the library, not exceptions;
:class:`InfeasibleError` is for callers (the trainer) that need a solution to go on.
"""

from __future__ import annotations

__all__ = [
    "AllocationError",
    "DataError",
    "InfeasibleError",
    "OutputError",
    "RunDirectoryError",
    "ScenarioError",
    "SflamError",
    "SflamRuntimeError",
    "SolverArgumentError",
    "TrainingConfigError",
    "TrainingRuntimeError",
]


class SflamError(Exception):
    """Base class: invalid input or arguments. ``str(err)`` is a one-line, user-facing message."""

    #: Process exit code the CLI uses for this error.
    exit_code: int = 2


class ScenarioError(SflamError):
    """A scenario file or scenario object is malformed or inconsistent."""


class AllocationError(SflamError):
    """An allocation file or object is malformed or does not fit its scenario."""


class SolverArgumentError(SflamError, ValueError):
    """A solver was asked for by an unknown name or given an invalid option."""


class DataError(SflamError):
    """A data set directory or file is missing or corrupt."""


class TrainingConfigError(SflamError, ValueError):
    """Invalid trainer arguments (protocol, model preset, device counts, ...)."""


class OutputError(SflamError):
    """An output path (``--out``) cannot be written: bad parent, read-only, not a file, ..."""


class RunDirectoryError(SflamError):
    """A run directory is in use by another process, or holds a run that would be replaced."""


class InfeasibleError(SflamError):
    """The scenario has no feasible allocation, and the caller cannot go on without one."""

    exit_code = 3


class SflamRuntimeError(SflamError):
    """The input was valid but the run failed (diverged, a subprocess died, ...); exit code 1."""

    exit_code = 1


class TrainingRuntimeError(SflamRuntimeError):
    """Training failed at run time: non-finite loss or activations, a lost worker, ..."""

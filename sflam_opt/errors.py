"""Domain exceptions of sflam-opt, all in one place.

Every exception the library raises for bad input derives from :class:`SflamError`; its message is
a single line naming the offending field and the fix, and it is exactly what the CLI prints before
exiting with code 2. Solver failures and infeasibility are *statuses* on a result, not exceptions.
"""

from __future__ import annotations


class SflamError(Exception):
    """Base class: invalid input or arguments. ``str(err)`` is a one-line, user-facing message."""


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


class TrainingRuntimeError(SflamError):
    """A training run failed at run time (diverged, non-finite values, a lost worker); exit code 1."""

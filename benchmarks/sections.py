"""The registry of benchmark sections: what ``python -m benchmarks`` can run, report and check.

A section is a module with four functions:

- ``run(ctx: BenchContext) -> Any``: measure, write ``figures/<name>.json`` (with
  ``ctx.meta(...)`` under ``"meta"``: it records the git commit measured) plus any CSV and PNG
  files through ``ctx``;
- ``draw(figures: Path) -> list[Path]``: redraw its PNG files from its data files alone;
- ``report(figures: Path, doc: Mapping) -> list[str]``: its markdown in ``results.md``, linking
  every data file it wrote (``python -m benchmarks check`` lists files no report links);
- ``headlines(figures: Path, doc: Mapping) -> list[str]``: sentences for the report's top.

Adding a section is one call at the end of this file, naming the code it measures::

    register(
        "alloc",
        "benchmarks.allocator",
        "Per-round allocator: ...",
        measures=(*SOLVERS, "sflam_opt/allocator.py", "benchmarks/allocator.py"),
    )

It then gets a ``python -m benchmarks alloc`` command, runs in ``all`` (and in ``quick`` unless
``quick=False``), and its part of ``results.md`` appears in registration order.
``measures`` lists the files and directories (relative to the repository root, as ``git``
pathspecs) whose change makes the section's published figures out of date: ``python -m
benchmarks check`` lists the section when any of them changed after the commit recorded in its
``figures/<name>.json``. Build it from the groups below plus the section's own measuring modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, cast

__all__ = [
    "FAST",
    "MODEL",
    "REPORTS",
    "SECTIONS",
    "SOLVERS",
    "TRAINING",
    "Report",
    "Section",
    "register",
]

#: The system model every solver and training run evaluates (paths for ``measures``).
MODEL = (
    "sflam_opt/scenario.py",
    "sflam_opt/scenario_parser.py",
    "sflam_opt/scenario_parts.py",
    "sflam_opt/device_arrays.py",
    "sflam_opt/device_tables.py",
    "sflam_opt/validation.py",
    "sflam_opt/costs.py",
    "sflam_opt/bounds.py",
    "sflam_opt/allocation.py",
    "sflam_opt/numeric.py",
)
#: The solvers and the model they solve.
SOLVERS = ("sflam_opt/solvers", *MODEL)
#: The ``fast`` solver alone: its kernel, the dispatcher and the model. Training runs choose their
#: bits with ``fast`` (every training benchmark's profile sets ``train_solver = "fast"``), so a
#: change to ``bcd``, ``exact`` or the cone blocks leaves their figures true.
FAST = (
    "sflam_opt/solvers/__init__.py",
    "sflam_opt/solvers/base.py",
    "sflam_opt/solvers/fast.py",
    "sflam_opt/solvers/kernel",
    "sflam_opt/solvers/lambertw.py",
    *MODEL,
)
#: The trainer, its protocols, models and data, the per-round Allocator and the solver that
#: gives its bits.
TRAINING = (
    "sflam_opt/training",
    "sflam_opt/estimator.py",
    "sflam_opt/codec.py",
    "sflam_opt/allocator.py",
    *FAST,
)


class SectionModule(Protocol):
    """What a section's module provides (see the module docstring)."""

    def run(self, ctx: Any) -> Any: ...

    def draw(self, figures: Path) -> list[Path]: ...

    def report(self, figures: Path, doc: Mapping[str, Any]) -> list[str]: ...

    def headlines(self, figures: Path, doc: Mapping[str, Any]) -> list[str]: ...


@dataclass(frozen=True)
class Section:
    """One registered benchmark section.

    Attributes
    ----------
    name : str
        Command name and stem of its data file ``figures/<name>.json``.
    module : str
        Dotted name of the module implementing :class:`SectionModule`; imported on first use,
        so a section's heavy imports (torch) cost nothing when it does not run.
    help : str
        One line for ``--help``.
    quick : bool
        Whether ``python -m benchmarks quick`` runs it (at the ``quick`` profile's sizes).
    measures : tuple of str
        Paths (git pathspecs from the repository root) of the code the section measures.
    """

    name: str
    module: str
    help: str
    quick: bool = True
    measures: tuple[str, ...] = ()

    def load(self) -> SectionModule:
        """The section's module."""
        mod: ModuleType = importlib.import_module(self.module)
        return cast(SectionModule, mod)


@dataclass(frozen=True)
class Report:
    """A report outside ``results.md`` whose data files record no commit.

    Attributes
    ----------
    path : str
        The report, from the repository root.
    data : tuple of str
        Its committed data (paths from the root); the last commit that changed them is taken
        as the commit that produced the report.
    measures : tuple of str
        Paths of the code it measures, as for :attr:`Section.measures`.
    """

    path: str
    data: tuple[str, ...]
    measures: tuple[str, ...]


#: Registered sections in run and report order.
SECTIONS: dict[str, Section] = {}

#: Names that are commands of their own and so cannot be section names.
RESERVED = frozenset({"all", "quick", "report", "check", "theory", "distributed"})


def register(
    name: str, module: str, help: str, *, quick: bool = True, measures: tuple[str, ...] = ()
) -> Section:
    """Register a section under ``name`` (see the module docstring); returns it."""
    if name in RESERVED or name in SECTIONS:
        raise ValueError(f"benchmark section name {name!r} is taken")
    SECTIONS[name] = Section(name, module, help, quick, tuple(measures))
    return SECTIONS[name]


#: Reports other than results.md, by name (``python -m benchmarks theory report`` renders one).
REPORTS: dict[str, Report] = {
    "theory": Report(
        "docs/theory-results.md",
        data=("docs/theory", "sflam_opt/training/calibrations"),
        measures=(*TRAINING, "benchmarks/theory.py"),
    ),
}

register(
    "solve",
    "benchmarks.solve",
    "Solver speed ladder, optimality gap, savings, Pareto front, BCD behaviour.",
    measures=(*SOLVERS, "sflam_opt/sweep.py", "benchmarks/solve.py", "benchmarks/cold.py"),
)
register(
    "faded",
    "benchmarks.solve_faded",
    "The solve section's faded-channels table alone (fast, bcd, bcd-pure on faded draws).",
    quick=False,
    measures=(*SOLVERS, "benchmarks/solve_faded.py"),
)
register(
    "train",
    "benchmarks.train",
    "Training: protocols x Dirichlet alpha x seeds on digits; solver vs uniform bits.",
    measures=(*TRAINING, "benchmarks/train.py"),
)
register(
    "memory",
    "benchmarks.memory",
    "Device peak memory of vit-b32: SFLAM device vs FL device at several batches.",
    measures=(
        "sflam_opt/training/memory.py",
        "sflam_opt/training/models.py",
        "sflam_opt/training/protocols",
        "sflam_opt/training/quantizer.py",
        "benchmarks/memory.py",
    ),
)
register(
    "alloc",
    "benchmarks.allocator",
    "Per-round Allocator.step against a fresh solve, under fading and partial participation.",
    quick=False,
    measures=(*SOLVERS, "sflam_opt/allocator.py", "benchmarks/allocator.py"),
)
register(
    "blocks",
    "benchmarks.blocks",
    "Resource blocks: matching against exact, round-robin and greedy; bcd speed ladder.",
    quick=False,
    measures=(*SOLVERS, "sflam_opt/blocks.py", "benchmarks/blocks.py"),
)
register(
    "fastprof",
    "benchmarks.fast_profile",
    "Where the fast solver's time goes at N = 1e6: warm and first call in a fresh process.",
    measures=(*FAST, "benchmarks/fast_profile.py"),
)
register(
    "scale",
    "benchmarks.scale",
    "Every CLI step (scenario, solve, evaluate, sweep, bad input) at N = 1e4, 1e5, 1e6.",
    quick=False,
    # Every step runs `fast`; the registry (which imports the other solvers' modules, whose
    # heavy imports are lazy) is the rest of the solver code a CLI call executes.
    measures=(
        *FAST,
        "sflam_opt/solvers/registry.py",
        "sflam_opt/cli.py",
        "sflam_opt/io.py",
        "sflam_opt/jsonio.py",
        "sflam_opt/allocation.py",
        "sflam_opt/allocation_json.py",
        "sflam_opt/allocation_npz.py",
        "sflam_opt/console.py",
        "sflam_opt/sweep.py",
        "benchmarks/scale.py",
    ),
)
register(
    "uncalibrated",
    "benchmarks.uncalibrated",
    "Online bound on configurations never calibrated: G/bound after the fit, accuracy, bytes.",
    quick=False,
    measures=(
        *TRAINING,
        "benchmarks/uncalibrated.py",
        "sflam_opt/integrations",
        "examples/flower/in_process.py",
        "examples/flower/sflam_flower",
    ),
)

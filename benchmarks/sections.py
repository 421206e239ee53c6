"""The registry of benchmark sections: what ``python -m benchmarks`` can run and report.

A section is a module with four functions:

- ``run(ctx: BenchContext) -> Any``: measure, write ``figures/<name>.json`` (with
  ``ctx.meta(...)`` under ``"meta"``) plus any CSV and PNG files through ``ctx``;
- ``draw(figures: Path) -> list[Path]``: redraw its PNG files from its data files alone;
- ``report(figures: Path, doc: Mapping) -> list[str]``: its markdown in ``results.md``;
- ``headlines(figures: Path, doc: Mapping) -> list[str]``: sentences for the report's top.

Adding a section is one line at the end of this file, e.g.::

    register("alloc", "benchmarks.alloc", "Per-round allocator: ...")

It then gets a ``python -m benchmarks alloc`` command, runs in ``all`` (and in ``quick`` unless
``quick=False``), and its part of ``results.md`` appears in registration order.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, cast

__all__ = ["SECTIONS", "Section", "SectionModule", "register"]


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
    """

    name: str
    module: str
    help: str
    quick: bool = True

    def load(self) -> SectionModule:
        """The section's module."""
        mod: ModuleType = importlib.import_module(self.module)
        return cast(SectionModule, mod)


#: Registered sections in run and report order.
SECTIONS: dict[str, Section] = {}

#: Names that are commands of their own and so cannot be section names.
RESERVED = frozenset({"all", "quick", "report"})


def register(name: str, module: str, help: str, *, quick: bool = True) -> Section:
    """Register a section under ``name`` (see the module docstring); returns it."""
    if name in RESERVED or name in SECTIONS:
        raise ValueError(f"benchmark section name {name!r} is taken")
    SECTIONS[name] = Section(name, module, help, quick)
    return SECTIONS[name]


register(
    "solve",
    "benchmarks.solve",
    "Solver speed ladder, optimality gap, savings, Pareto front, BCD behaviour.",
)
register(
    "train",
    "benchmarks.train",
    "Training: protocols x Dirichlet alpha x seeds on digits; solver vs uniform bits.",
)
register(
    "memory",
    "benchmarks.memory",
    "Device peak memory of vit-b32: SFLAM device vs FL device at several batches.",
)
register(
    "defaults",
    "benchmarks.defaults",
    "Training with every `sflam-opt train` default: all protocols x seeds (README's figures).",
    quick=False,
)
register(
    "alloc",
    "benchmarks.allocator_section",
    "Per-round Allocator.step against a fresh solve, under fading and partial participation.",
    quick=False,
)
register(
    "blocks",
    "benchmarks.blocks_section",
    "Resource blocks: matching against exact, round-robin and greedy; bcd speed ladder.",
    quick=False,
)
register(
    "uncalibrated",
    "benchmarks.uncalibrated",
    "Online bound on configurations never calibrated: G/bound after the fit, accuracy, bytes.",
    quick=False,
)

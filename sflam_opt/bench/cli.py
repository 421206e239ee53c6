"""``sflam-opt bench``: reproduce every figure sflam-opt publishes (issue 7).

``sflam-opt bench {solve,train,memory,all,quick} [--out DIR]``. ``all`` and the single sections
write into ``docs/`` by default (``results.md`` + ``figures/``); ``quick`` runs reduced sizes of
every benchmark (for CI) into a fresh temporary directory unless ``--out`` is given. Progress goes
to stderr.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from sflam_opt.bench.common import PROFILES, BenchContext, Profile
from sflam_opt.errors import SolverArgumentError

__all__ = ["bench_app", "register", "run_sections"]

err = Console(stderr=True)

bench_app = typer.Typer(
    help="Benchmarks: solver speed/optimality/savings, training, device memory; writes "
    "results.md with figures.",
    no_args_is_help=True,
)

SECTION_NAMES = ("solve", "train", "memory")

OutOption = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Output directory (results.md and figures/)."),
]
ProfileOption = Annotated[
    str, typer.Option("--profile", help="Sizes: 'all' (published results) or 'quick' (CI).")
]
CifarOption = Annotated[
    Path | None,
    typer.Option(
        "--cifar10-dir",
        help="CIFAR-10 python-version directory for the ViT-B/32 run (needs a CUDA device too).",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the ``bench`` sub-app to the main ``sflam-opt`` app."""
    app.add_typer(bench_app, name="bench")


def _profile(name: str) -> Profile:
    if name not in PROFILES:
        raise SolverArgumentError(
            f"--profile {name!r}: unknown profile; choose one of {', '.join(PROFILES)}"
        )
    return PROFILES[name]


def _command(sub: str, out: Path, profile: str | None, cifar10_dir: Path | None) -> str:
    parts = ["sflam-opt", "bench", sub]
    if profile is not None and profile != "all":
        parts += ["--profile", profile]
    parts += ["--out", str(out)]
    if cifar10_dir is not None:
        parts += ["--cifar10-dir", str(cifar10_dir)]
    return " ".join(parts)


def run_sections(
    sections: tuple[str, ...],
    out: Path,
    profile: Profile,
    command: str,
    *,
    cifar10_dir: Path | None = None,
    progress: Callable[[str, str, float], None] | None = None,
) -> tuple[dict[str, float], list[str]]:
    """Run the named sections into ``out`` and render ``out/results.md`` after each.

    Parameters
    ----------
    sections : tuple of str
        Any of ``"solve"``, ``"train"``, ``"memory"``, in the order to run.
    out : Path
        Output directory.
    profile : Profile
        Benchmark sizes.
    command : str
        Command line recorded under every figure.
    cifar10_dir : Path, optional
        CIFAR-10 directory for the optional ViT-B/32 training run.
    progress : callable, optional
        ``progress(section, label, advance)``; ``advance`` is ``inf`` once when a section ends.

    Returns
    -------
    (dict, list of str)
        Wall time of each section (seconds), and the errors recorded in the data files
        (:func:`sflam_opt.bench.report.recorded_errors`).
    """
    from sflam_opt.bench import report

    times: dict[str, float] = {}
    written: list[Path] = []
    for sec in sections:

        def prog(label: str, advance: float, sec: str = sec) -> None:
            if progress is not None:
                progress(sec, label, advance)

        ctx = BenchContext(Path(out), profile, command, prog)
        t0 = time.perf_counter()
        if sec == "solve":
            from sflam_opt.bench import solve

            solve.run(ctx)
        elif sec == "train":
            from sflam_opt.bench import train

            train.run(ctx, cifar10_dir=cifar10_dir)
        elif sec == "memory":
            from sflam_opt.bench import memory

            memory.run(ctx)
        else:
            raise SolverArgumentError(f"section {sec!r}: choose from {', '.join(SECTION_NAMES)}")
        times[sec] = time.perf_counter() - t0
        if progress is not None:
            progress(sec, f"done in {times[sec]:.1f} s", math.inf)
        written += ctx.written
        report.write(Path(out))
    return times, report.recorded_errors(written)


def _run_cli(
    sections: tuple[str, ...],
    out: Path,
    profile: Profile,
    command: str,
    cifar10_dir: Path | None = None,
) -> None:
    columns = (
        TextColumn("[bold]{task.fields[section]:<7}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    t0 = time.perf_counter()
    with Progress(*columns, console=err, transient=False) as bar:
        tasks = {s: bar.add_task("waiting", total=1.0, section=s, start=False) for s in sections}
        started: set[str] = set()

        def progress(section: str, label: str, advance: float) -> None:
            if section not in started:
                started.add(section)
                bar.start_task(tasks[section])
            if math.isinf(advance):  # the section ended: freeze its clock now
                bar.update(tasks[section], completed=1.0, description=label)
                bar.stop_task(tasks[section])
            else:
                bar.update(tasks[section], advance=advance, description=label)

        times, errors = run_sections(
            sections, out, profile, command, cifar10_dir=cifar10_dir, progress=progress
        )
    err.print(
        f"wrote {Path(out) / 'results.md'} and {Path(out) / 'figures'}/ "
        f"({', '.join(f'{s} {t:.1f} s' for s, t in times.items())}; "
        f"total {time.perf_counter() - t0:.1f} s)",
        highlight=False,
    )
    if errors:
        for e in errors[:20]:
            err.print(f"recorded error: {e}", markup=False, highlight=False, soft_wrap=True)
        err.print(
            f"{len(errors)} error(s) recorded in the outputs (see results.md); exiting 1",
            highlight=False,
        )
        raise typer.Exit(1)


def _section_command(sec: str) -> Callable[..., Any]:
    def cmd(
        out: OutOption = None,
        profile: ProfileOption = "all",
        cifar10_dir: CifarOption = None,
    ) -> None:
        prof = _profile(profile)
        target = out if out is not None else Path("docs")
        _run_cli((sec,), target, prof, _command(sec, target, profile, cifar10_dir), cifar10_dir)

    cmd.__doc__ = {
        "solve": "Solver speed ladder, optimality gap, savings, Pareto front, BCD behaviour.",
        "train": "Training: protocols x Dirichlet alpha x seeds on digits; solver vs uniform bits.",
        "memory": "Device peak memory of vit-b32: SFLAM device vs FL device at several batches.",
    }[sec]
    return cmd


for _sec in SECTION_NAMES:
    bench_app.command(_sec)(_section_command(_sec))


@bench_app.command("all")
def bench_all(out: OutOption = None, cifar10_dir: CifarOption = None) -> None:
    """Every benchmark at full size (budget: 30 minutes on 2 cores); default output docs/."""
    target = out if out is not None else Path("docs")
    _run_cli(
        SECTION_NAMES,
        target,
        PROFILES["all"],
        _command("all", target, None, cifar10_dir),
        cifar10_dir,
    )


@bench_app.command("quick")
def bench_quick(out: OutOption = None, cifar10_dir: CifarOption = None) -> None:
    """Reduced sizes of every benchmark (CI; budget 3 minutes); default output a new temp dir."""
    target = out if out is not None else Path(tempfile.mkdtemp(prefix="sflam-bench-quick-"))
    _run_cli(
        SECTION_NAMES,
        target,
        PROFILES["quick"],
        _command("quick", target, None, cifar10_dir),
        cifar10_dir,
    )


@bench_app.command("report")
def bench_report(out: OutOption = None) -> None:
    """Redraw the figures and re-render results.md from the data files already in --out."""
    from sflam_opt.bench import plots, report
    from sflam_opt.bench.common import FIGURES
    from sflam_opt.errors import DataError

    target = out if out is not None else Path("docs")
    figures = target / FIGURES
    if not figures.is_dir():
        raise DataError(
            f"--out {target}: no {FIGURES}/ directory with benchmark data; run "
            f"`sflam-opt bench all --out {target}` first"
        )
    pngs = plots.all_figures(figures)
    path = report.write(target)
    err.print(f"redrew {len(pngs)} figure(s) and wrote {path}", highlight=False)

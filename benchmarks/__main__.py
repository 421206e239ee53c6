"""``python -m benchmarks``: reproduce every figure sflam-opt publishes, from a repository checkout.

``python -m benchmarks {<section>,all,quick,report,check} [--out DIR]``, where the sections are
those registered in :mod:`benchmarks.sections` (``solve``, ``train``, ``memory``, ...). ``all`` and
the single sections write into ``docs/`` by default (``results.md`` + ``figures/``); ``quick`` runs
reduced sizes of the quick sections (for CI) into a fresh temporary directory unless ``--out`` is
given; ``report`` redraws the figures and ``results.md`` from the data files already there;
``check`` lists the results whose measured code changed since they were made
(:mod:`benchmarks.check`). Progress goes to stderr. Exit status: 0 (always for ``check``), 1 when
a run recorded errors in its outputs, 2 on bad arguments.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks import distributed, report, theory
from benchmarks.common import FIGURES, PROFILES, BenchContext, Profile
from benchmarks.sections import SECTIONS
from sflam_opt.errors import DataError, SflamError, SolverArgumentError

__all__ = ["app", "main", "run_sections"]

#: How users run this module; recorded under every figure.
PROG = "python -m benchmarks"

err = Console(stderr=True)

app = typer.Typer(
    help="Benchmarks: solver speed/optimality/savings, training, device memory; writes "
    "results.md with figures.",
    no_args_is_help=True,
    add_completion=False,
)

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


def _profile(name: str) -> Profile:
    if name not in PROFILES:
        raise SolverArgumentError(
            f"--profile {name!r}: unknown profile; choose one of {', '.join(PROFILES)}"
        )
    return PROFILES[name]


def _command(sub: str, out: Path, profile: str | None, cifar10_dir: Path | None) -> str:
    parts = [PROG, sub]
    if profile is not None and profile != "all":
        parts += ["--profile", profile]
    parts += ["--out", str(out)]
    if cifar10_dir is not None:
        parts += ["--cifar10-dir", str(cifar10_dir)]
    return " ".join(parts)


def run_sections(
    sections: Sequence[str],
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
    sections : sequence of str
        Registered section names (:data:`benchmarks.sections.SECTIONS`), in the order to run.
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
        (:func:`benchmarks.report.recorded_errors`).
    """
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise SolverArgumentError(f"section {unknown[0]!r}: choose from {', '.join(SECTIONS)}")
    times: dict[str, float] = {}
    written: list[Path] = []
    for sec in sections:

        def prog(label: str, advance: float, sec: str = sec) -> None:
            if progress is not None:
                progress(sec, label, advance)

        ctx = BenchContext(Path(out), profile, command, prog, cifar10_dir=cifar10_dir)
        t0 = time.perf_counter()
        SECTIONS[sec].load().run(ctx)
        times[sec] = time.perf_counter() - t0
        if progress is not None:
            progress(sec, f"done in {times[sec]:.1f} s", math.inf)
        written += ctx.written
        report.write(Path(out))
    return times, report.recorded_errors(written)


def _run_cli(
    sections: Sequence[str],
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
        f"wall time {time.perf_counter() - t0:.1f} s in all)",
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

    cmd.__doc__ = SECTIONS[sec].help
    return cmd


for _name in SECTIONS:
    app.command(_name)(_section_command(_name))
app.add_typer(theory.app, name="theory")
app.command("distributed")(distributed.command)


@app.command("all")
def bench_all(out: OutOption = None, cifar10_dir: CifarOption = None) -> None:
    """Every benchmark at full size; default output docs/."""
    target = out if out is not None else Path("docs")
    _run_cli(
        tuple(SECTIONS),
        target,
        PROFILES["all"],
        _command("all", target, None, cifar10_dir),
        cifar10_dir,
    )


@app.command("quick")
def bench_quick(out: OutOption = None, cifar10_dir: CifarOption = None) -> None:
    """Reduced sizes of the quick benchmarks (CI; budget 3 minutes); default output a temp dir."""
    target = out if out is not None else Path(tempfile.mkdtemp(prefix="sflam-bench-quick-"))
    _run_cli(
        tuple(name for name, sec in SECTIONS.items() if sec.quick),
        target,
        PROFILES["quick"],
        _command("quick", target, None, cifar10_dir),
        cifar10_dir,
    )


@app.command("report")
def bench_report(out: OutOption = None) -> None:
    """Redraw the figures and re-render results.md from the data files already in --out."""
    target = out if out is not None else Path("docs")
    figures = target / FIGURES
    if not figures.is_dir():
        raise DataError(
            f"--out {target}: no {FIGURES}/ directory with benchmark data; run "
            f"`{PROG} all --out {target}` first"
        )
    pngs = [
        png
        for name, sec in SECTIONS.items()
        if (figures / f"{name}.json").exists()
        for png in sec.load().draw(figures)
    ]
    path = report.write(target)
    err.print(f"redrew {len(pngs)} figure(s) and wrote {path}", highlight=False)


@app.command("check")
def bench_check(out: OutOption = None) -> None:
    """List results whose measured code changed since they were made, and orphan data files."""
    from benchmarks.check import check, format_findings

    print(format_findings(check(out if out is not None else Path("docs"))))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark CLI; bad arguments give one line on stderr and exit 2."""
    try:
        app(args=list(sys.argv[1:] if argv is None else argv), prog_name=PROG)
    except SflamError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except OSError as exc:  # disk full, permission denied: say what, no traceback
        where = f" {exc.filename}" if exc.filename else ""
        err.print(
            f"error: cannot access{where}: {exc.strerror or exc}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return 1
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

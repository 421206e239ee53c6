"""Ownership of a training run directory (``train --out DIR``).

:func:`claim_run_dir` checks and locks ``DIR`` before a run starts:

* ``DIR`` must be writable (or creatable), checked with a probe file;
* a directory that already holds files is refused, unless the run resumes it (``resume``) or the
  user asked to replace it (``overwrite``, which deletes the previous run's files first, so that
  a run killed half-way never leaves a directory mixing two runs); only files a run writes are
  deleted, anything else in the directory makes it refuse;
* an exclusive :func:`fcntl.flock` lock on ``DIR/.lock`` is held for the run's lifetime, so that
  a second process writing into the same directory is refused with "DIR is in use by pid N"
  instead of interleaving its checkpoints with the first one's. The kernel drops the lock when
  the process ends, however it ends.

:func:`sigterm_interrupts` makes SIGTERM stop a run as Ctrl-C does (``KeyboardInterrupt``), and
:func:`interrupted_message` is the line ``train`` then prints: the last round saved and how to
continue (every round's checkpoint is written atomically, so ``--resume`` picks up there).
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from sflam_opt.errors import RunDirectoryError
from sflam_opt.io import check_writable
from sflam_opt.training.trainer import (
    CHECKPOINT_NAME,
    CURVES_NAME,
    METRICS_NAME,
    SUMMARY_NAME,
    load_metrics,
)

__all__ = ["LOCK_NAME", "claim_run_dir", "interrupted_message", "sigterm_interrupts"]

#: Lock file inside a run directory; it holds the pid of the process that owns the run.
LOCK_NAME = ".lock"


def _lock(directory: Path) -> int:
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunDirectoryError(
            f"out: cannot create the lock file {path}: {exc.strerror}"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            owner = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
        finally:
            os.close(fd)
        raise RunDirectoryError(
            f"out: {directory} is in use by pid {owner}; wait for that run to finish or give "
            "another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    return fd


_RUN_FILES = frozenset({CHECKPOINT_NAME, CURVES_NAME, METRICS_NAME, SUMMARY_NAME})


def _is_run_file(name: str) -> bool:
    """A file a training run writes (or a temporary file of one, left by a kill)."""
    if name in _RUN_FILES:
        return True
    return (
        name.startswith(".")
        and name.endswith(".tmp")
        and name[1:].split(".sflam-")[0] in _RUN_FILES
    )


def _clear(directory: Path, names: list[str]) -> None:
    """Delete a previous run's files; refuse if anything else is there (not ours to delete)."""
    foreign = [n for n in names if not _is_run_file(n)]
    if foreign:
        raise RunDirectoryError(
            f"overwrite: {directory} holds files that are not from a training run "
            f"({', '.join(foreign[:3])}); give another --out"
        )
    for name in names:
        (directory / name).unlink()


@contextmanager
def claim_run_dir(
    out: str | os.PathLike[str] | None, *, resume: bool, overwrite: bool
) -> Iterator[Path | None]:
    """Check, lock and (with ``overwrite``) empty a run directory for the ``with`` block.

    Parameters
    ----------
    out : str or PathLike, optional
        The run directory; ``None`` (nothing written) makes this a no-op.
    resume : bool
        The run continues the one in ``out``; its files are kept.
    overwrite : bool
        Delete the files of a previous run in ``out`` (after taking the lock).

    Yields
    ------
    Path or None
        ``out`` as a path.

    Raises
    ------
    RunDirectoryError
        ``out`` holds files and neither ``resume`` nor ``overwrite`` is set, both are set, or
        another process holds the lock.
    OutputError
        ``out`` cannot be written.
    """
    if out is None:
        yield None
        return
    directory = Path(out)
    if resume and overwrite:
        raise RunDirectoryError("overwrite: --overwrite and --resume exclude each other; pick one")
    if resume and not directory.is_dir():
        yield directory  # nothing to resume: the trainer says so, and nothing is created
        return
    check_writable(directory, directory=True)
    directory.mkdir(parents=True, exist_ok=True)
    fd = _lock(directory)
    try:
        existing = sorted(p.name for p in directory.iterdir() if p.name != LOCK_NAME)
        if existing and not resume:
            if not overwrite:
                shown = ", ".join(existing[:3]) + (", ..." if len(existing) > 3 else "")
                raise RunDirectoryError(
                    f"out: {directory} already holds files ({shown}); add --resume to continue "
                    "that run, --overwrite to replace it, or give an empty directory"
                )
            _clear(directory, existing)
        yield directory
    finally:
        os.close(fd)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` (as Ctrl-C's SIGINT does).

    Only the main thread can install signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_message(out: str | os.PathLike[str] | None, rounds_seen: int) -> str:
    """What ``train`` prints when Ctrl-C or SIGTERM stops it.

    Parameters
    ----------
    out : str or PathLike, optional
        The run directory (``--out``), if any.
    rounds_seen : int
        The last round the caller saw finish; the rounds saved in ``out`` take precedence.

    Returns
    -------
    str
        ``"interrupted after round R; continue with --resume"``, or why there is nothing to
        resume (no ``--out``, or no round finished yet).
    """
    done = rounds_seen
    if out is not None and (Path(out) / METRICS_NAME).is_file():
        done = len(load_metrics(out))  # written right after each round's checkpoint
    if out is None:
        return (
            f"interrupted after round {done}; nothing was saved: give --out DIR to be able to "
            "continue with --resume"
        )
    if done == 0:
        return "interrupted before round 1 finished; nothing to resume: start again"
    return f"interrupted after round {done}; continue with --resume"

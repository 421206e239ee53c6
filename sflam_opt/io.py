"""Safe file output: every ``--out`` of every command is written through this module.

The rule depends on what the target is:

* a **regular file** (or a path that does not exist yet) is replaced atomically: the data goes to
  a temporary file next to it, is flushed to disk, then renamed over the target. A failure
  half-way (exception, Ctrl-C, full disk) never leaves a truncated file and never destroys the
  previous version;
* a **symbolic link** is followed: its final target is written by the same rule and the link
  stays a link;
* a **character device or FIFO** (``/dev/null``, ``/dev/stdout``, a pipe) is written in place,
  with no rename, so it is never replaced by a regular file; so is a regular file reached through
  ``/dev/fd`` or ``/proc/*/fd`` (a shell redirection), which is appended to;
* anything else (a directory, a block device, a socket) is refused.

Temporary files are named ``.NAME.sflam-PID-RANDOM.tmp``. Ones left behind by a process that was
killed (its pid no longer runs) are removed at the next write to the same target.

A path that cannot be written (its parent is a file, a read-only directory, ``/proc``...) raises
:class:`~sflam_opt.errors.OutputError` (exit code 2); a write that fails half-way (disk full)
raises :class:`~sflam_opt.errors.SflamRuntimeError` (exit code 1). Both name the path the user
gave, never the temporary file. :func:`check_writable` runs the same checks up front, so that a command can
refuse a bad ``--out`` before it starts long work.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from sflam_opt.errors import OutputError, SflamRuntimeError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable",
    "write_stream",
]

_TMP_TAG = ".sflam-"
_TMP_SUFFIX = ".tmp"
# Paths that name a file descriptor the process already has open (shell redirections).
_FD_DIRS = ("/dev/fd/", "/proc/self/fd/", "/dev/stdout", "/dev/stderr")


def _resolve(target: Path) -> Path:
    """``target`` with symbolic links followed (a dangling link gives the path it points to).

    Descriptor paths (``/dev/stdout``, ``/dev/fd/N``) are kept: the kernel opens what they name.
    """
    if str(target).startswith(_FD_DIRS):
        return target
    if os.path.islink(target):
        return Path(os.path.realpath(target))
    return target


def _is_fd_path(target: Path, real: Path) -> bool:
    rtext = str(real)
    return str(target).startswith(_FD_DIRS) or (rtext.startswith("/proc/") and "/fd/" in rtext)


def _stat(path: Path) -> os.stat_result | None:
    """``os.stat(path)``, or None when there is nothing there (or a parent is not a directory)."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _describe(mode: int) -> str | None:
    """Why a file of this mode cannot be written, or None if it can."""
    if stat.S_ISDIR(mode):
        return "is a directory; give a file path"
    if stat.S_ISBLK(mode):
        return "is a block device; give a file path"
    if stat.S_ISSOCK(mode):
        return "is a socket; give a file path"
    return None


def _os_reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return "a parent of it is not a directory"
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    return (exc.strerror or str(exc)).lower()


def _fail(user: Path, reason: str) -> OutputError:
    return OutputError(f"cannot write {user}: {reason}")


def _tmp_pid(name: str, stem: str) -> int | None:
    """The pid recorded in a temporary file name of ``stem``, or None if it is not one."""
    if not (name.startswith(stem) and name.endswith(_TMP_SUFFIX)):
        return None
    middle = name[len(stem) : -len(_TMP_SUFFIX)]
    pid, _, rand = middle.partition("-")
    return int(pid) if pid.isdigit() and rand else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(real: Path) -> None:
    """Delete temporary files of ``real`` whose writer no longer runs (killed mid-write)."""
    stem = f".{real.name}{_TMP_TAG}"
    try:
        names = os.listdir(real.parent)
    except OSError:
        return
    for name in names:
        pid = _tmp_pid(name, stem)
        if pid is not None and not _alive(pid):
            try:
                os.unlink(real.parent / name)
            except OSError:
                pass


def _mode_for(st: os.stat_result | None) -> int:
    if st is not None:
        return st.st_mode & 0o7777
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _nearest_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _probe(user: Path, directory: Path) -> None:
    """Create and delete a temporary file in ``directory``: the only honest writability test
    (permission bits say nothing for root, read-only mounts and ``/proc``)."""
    name = directory / f".probe{_TMP_TAG}{os.getpid()}-{secrets.token_hex(4)}{_TMP_SUFFIX}"
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise _fail(user, f"{directory} is not writable ({_os_reason(exc)})") from None
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass


def check_writable(path: str | os.PathLike[str], *, directory: bool = False) -> Path:
    """Check that ``path`` can be written by this module, without writing it.

    Parameters
    ----------
    path : str or PathLike
        The output path the user gave.
    directory : bool
        ``path`` is an output directory (files are written inside it) rather than a file.

    Returns
    -------
    Path
        ``path`` as given.

    Raises
    ------
    OutputError
        One line naming ``path``: its parent is a file, it or its directory is not writable, or
        it is a directory (for a file) / not a directory (for a directory).
    """
    user = Path(path)
    real = _resolve(user)
    st = _stat(real)
    if directory:
        if st is not None:
            if not stat.S_ISDIR(st.st_mode):
                raise _fail(user, "it exists and is not a directory; give a directory path")
            _probe(user, real)
            return user
        base = _nearest_existing(real.parent)
    else:
        if st is not None:
            why = _describe(st.st_mode)
            if why is not None:
                raise _fail(user, why)
            if not stat.S_ISREG(st.st_mode):  # character device or FIFO: written in place
                if not os.access(real, os.W_OK):
                    raise _fail(user, "permission denied")
                return user
            if _is_fd_path(user, real):
                return user
        base = _nearest_existing(real.parent)
    bst = _stat(base)
    if bst is None or not stat.S_ISDIR(bst.st_mode):
        raise _fail(user, f"{base} is not a directory")
    _probe(user, base)
    return user


def write_stream(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` by calling ``write(fh)`` on a binary file object (module rules apply).

    Parameters
    ----------
    path : str or PathLike
        The output path the user gave.
    write : callable
        Writes the content to the file object it gets; it may be called with a temporary file.

    Returns
    -------
    Path
        ``path`` as given.

    Raises
    ------
    OutputError
        The path cannot be written (one line naming ``path``).
    """
    user = Path(path)
    real = _resolve(user)
    st = _stat(real)
    if st is not None:
        why = _describe(st.st_mode)
        if why is not None:
            raise _fail(user, why)
        if not stat.S_ISREG(st.st_mode) or _is_fd_path(user, real):
            _write_in_place(user, real, st, write)
            return user
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(user, _os_reason(exc)) from None
    _write_atomic(user, real, st, write)
    return user


def _write_in_place(
    user: Path, real: Path, st: os.stat_result, write: Callable[[IO[bytes]], None]
) -> None:
    flags = os.O_WRONLY | (os.O_APPEND if stat.S_ISREG(st.st_mode) else 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        raise _fail(user, _os_reason(exc)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
    except OSError as exc:
        if exc.errno == errno.EPIPE:  # the reader went away, as with `| head`
            return
        raise SflamRuntimeError(f"cannot write {user}: {_os_reason(exc)}") from None


def _write_atomic(
    user: Path, real: Path, st: os.stat_result | None, write: Callable[[IO[bytes]], None]
) -> None:
    _remove_stale(real)
    tmp = real.parent / (f".{real.name}{_TMP_TAG}{os.getpid()}-{secrets.token_hex(4)}{_TMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise _fail(user, _os_reason(exc)) from None
    try:
        # os.open creates 0600; give the file the mode a plain open() would (or keep the old one).
        os.chmod(tmp, _mode_for(st))
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, real)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):  # disk full, I/O error: the write failed, exit code 1
            raise SflamRuntimeError(f"cannot write {user}: {_os_reason(exc)}") from None
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` (atomically for regular files; see the module rules)."""
    return write_stream(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    """Serialize ``obj`` as JSON and write it to ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")

"""``python -m benchmarks check``: which published results no longer describe the code.

A section of ``results.md`` records the commit it measured (``meta.machine.git_commit`` in its
``figures/<name>.json``) and declares the code it measures (``measures`` in
:mod:`benchmarks.sections`); it is *stale* when ``git diff --name-only <commit>..HEAD`` over those
paths is not empty. A report outside ``results.md`` (:data:`benchmarks.sections.REPORTS`) takes the
last commit that changed its data files instead. The check also lists data files under the
reports' data directories that no report links (*orphans*) and files a report links that do not
exist (*missing*). It reads git and the files only, prints a short list and never fails: it
informs a release, it does not gate CI.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import FIGURES, read_json
from benchmarks.sections import REPORTS, SECTIONS, Report, Section
from sflam_opt.errors import DataError

__all__ = ["Finding", "check", "format_findings", "repo_root", "same_code"]

#: How many changed paths a stale line names before "and N more".
SHOWN_PATHS = 8

# A markdown link target, and a path written out in prose or a comment (``docs/theory/runs/*.json``).
_LINK = re.compile(r"\]\(([^)\s#]+)")
_PROSE_PATH = re.compile(r"(?<![\w/.-])((?:docs|sflam_opt|benchmarks)/[\w./*-]*[\w*])")


@dataclass(frozen=True)
class Finding:
    """One line of the check: what kind, about what, and why."""

    kind: str  # "stale", "not run", "unknown commit", "unchecked", "orphan", "missing"
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"


def _git(root: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise DataError(f"git {' '.join(args)}: {out.stderr.strip() or 'failed'}")
    return out.stdout


def repo_root(path: Path) -> Path:
    """The root of the git checkout holding ``path``; DataError when there is none."""
    try:
        return Path(_git(path, "rev-parse", "--show-toplevel").strip())
    except DataError:
        raise DataError(
            f"--out {path}: not inside a git checkout; the check compares commits, so run it "
            "in a clone of sflam-opt"
        ) from None


def _stale(root: Path, subject: str, commit: str, measures: Sequence[str]) -> list[Finding]:
    """The finding for ``subject`` measured at ``commit``: stale, unknown commit or nothing."""
    try:
        _git(root, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    except DataError:
        return [Finding("unknown commit", subject, f"{commit} is not in this repository; rerun")]
    changed = _changed(root, commit, "HEAD", measures)
    if not changed:
        return []
    ago = int(_git(root, "rev-list", "--count", f"{commit}..HEAD"))
    shown = ", ".join(changed[:SHOWN_PATHS])
    more = f" and {len(changed) - SHOWN_PATHS} more" if len(changed) > SHOWN_PATHS else ""
    return [
        Finding(
            "stale",
            subject,
            f"made at {commit} ({ago} commits ago); {len(changed)} measured file(s) changed "
            f"since: {shown}{more}",
        )
    ]


def _changed(root: Path, a: str, b: str, measures: Sequence[str]) -> list[str]:
    """Files under ``measures`` that differ between commits ``a`` and ``b``."""
    return _git(root, "diff", "--name-only", f"{a}..{b}", "--", *measures).split()


def same_code(root: Path, a: str, b: str, measures: Sequence[str]) -> bool | None:
    """Whether commits ``a`` and ``b`` hold the same files under ``measures``; None if unknown
    (no git, or a commit this checkout lacks)."""
    try:
        return not _changed(root, a, b, measures)
    except (DataError, OSError):
        return None


def _undeclared(root: Path, subject: str, measures: Sequence[str]) -> list[Finding]:
    if not measures:
        return [Finding("unchecked", subject, "declares no measured paths (add measures=...)")]
    gone = [p for p in measures if not _git(root, "ls-files", "--", p).strip()]
    return [
        Finding("unchecked", subject, f"measured path {p} matches no tracked file; update it")
        for p in gone
    ]


def _sections(root: Path, out: Path, sections: Mapping[str, Section]) -> list[Finding]:
    report = _rel(root, out / "results.md")
    found: list[Finding] = []
    for name, sec in sections.items():
        subject = f"{name} ({report})"
        found += _undeclared(root, subject, sec.measures)
        path = out / FIGURES / f"{name}.json"
        if not path.exists():
            found.append(Finding("not run", subject, f"no {_rel(root, path)}"))
            continue
        commit = read_json(path).get("meta", {}).get("machine", {}).get("git_commit")
        if not commit:
            found.append(Finding("unknown commit", subject, f"{_rel(root, path)} records none"))
        elif sec.measures:
            found += _stale(root, subject, commit, sec.measures)
    return found


def _reports(root: Path, reports: Mapping[str, Report]) -> list[Finding]:
    found: list[Finding] = []
    for name, rep in reports.items():
        if not (root / rep.path).exists():
            continue
        subject = f"{name} ({rep.path})"
        found += _undeclared(root, subject, rep.measures)
        commit = _git(root, "log", "-1", "--format=%h", "--", *rep.data).strip()
        if not commit:
            found.append(Finding("unknown commit", subject, "its data files are not committed"))
        elif rep.measures:
            found += _stale(root, subject, commit, rep.measures)
    return found


def _rel(root: Path, path: Path) -> str:
    return Path(path).resolve().relative_to(root.resolve()).as_posix()


def _targets(root: Path, report: Path) -> set[str]:
    """Paths (from the root; globs kept) that ``report`` links or names."""
    text = report.read_text(encoding="utf-8")
    out = set()
    for target in _LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        out.add(_rel(root, (report.parent / target)) + ("/" if target.endswith("/") else ""))
    out.update(_PROSE_PATH.findall(text))
    return out


def _data_files(root: Path, dirs: Iterable[Path]) -> list[str]:
    files = []
    for d in dirs:
        if d.is_dir():
            files += [_rel(root, p) for p in sorted(d.rglob("*")) if p.is_file()]
    return files


def _is_glob(target: str) -> bool:
    return any(c in target for c in "*?[")


def _links(root: Path, reports: Sequence[Path], data_dirs: Sequence[Path]) -> list[Finding]:
    """Orphan data files (linked by no report) and missing ones (linked, not on disk)."""
    targets = {_rel(root, r): _targets(root, r) for r in reports if r.exists()}
    every = set().union(*targets.values())
    found = [
        Finding("orphan", f, "linked by no report")
        for f in _data_files(root, data_dirs)
        if f not in every and not any(_is_glob(t) and fnmatch.fnmatch(f, t) for t in every)
    ]
    for report, ts in targets.items():
        for t in sorted(ts):
            if _is_glob(t) and not any(root.glob(t)):
                found.append(Finding("missing", t, f"named by {report}, matches no file"))
            elif not _is_glob(t) and not t.endswith("/") and not (root / t).exists():
                found.append(Finding("missing", t, f"linked by {report}, not on disk"))
    return found


def check(
    out: Path,
    *,
    sections: Mapping[str, Section] | None = None,
    reports: Mapping[str, Report] | None = None,
) -> list[Finding]:
    """Every stale, unrun, orphan and missing result under ``out`` (``results.md`` + figures).

    Parameters
    ----------
    out : Path
        The results directory (``docs`` in the repository) inside a git checkout.
    sections, reports : mapping, optional
        The registry to check; default :data:`benchmarks.sections.SECTIONS` and
        :data:`benchmarks.sections.REPORTS`.

    Returns
    -------
    list of Finding
        Empty when every result describes the code at HEAD and every data file is linked.

    Raises
    ------
    DataError
        ``out`` is not a directory inside a git checkout.
    """
    out = Path(out)
    if not out.is_dir():
        raise DataError(f"--out {out}: no such directory; give the results directory (docs)")
    root = repo_root(out)
    sections = SECTIONS if sections is None else sections
    reports = REPORTS if reports is None else reports
    found = _sections(root, out, sections) + _reports(root, reports)
    docs = [out / "results.md", *(root / r.path for r in reports.values())]
    data_dirs = [out / FIGURES]
    for rep in reports.values():
        data_dirs += [root / d for d in rep.data if (root / d).is_dir() and d.startswith("docs")]
    return found + _links(root, docs, data_dirs)


def format_findings(findings: Sequence[Finding]) -> str:
    """The check's output: one line per finding, or a single "nothing stale" line."""
    return "\n".join(map(str, findings)) if findings else "nothing stale"

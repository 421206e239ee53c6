"""Terminal output shared by the CLI modules: consoles, tables and one-line error messages.

User text (paths, device ids, solver messages) may contain ``[...]``, which rich would read as
markup; every console here has markup off.

Tables never break a header word or a number: on a terminal, a column is never narrower than its
longest cell and its longest header word, and a table wider than the terminal is printed at its
own width (the terminal wraps the long lines) rather than squeezed. When the output is not a
terminal (a pipe, a file), tables are plain text: one line per row, columns separated by two
spaces, which ``grep``/``awk`` and diff read as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["consoles", "plain_lines", "print_error", "print_table", "usage_error_line"]


def consoles() -> tuple[Console, Console]:
    """``(stdout, stderr)`` consoles with markup off and soft wrapping.

    Soft wrapping leaves a long line (a message naming a deep path) to the terminal instead of
    breaking it at the console's width: piped output keeps every path and number whole.
    """
    return Console(markup=False, soft_wrap=True), Console(stderr=True, markup=False, soft_wrap=True)


def _cell_texts(column: Any) -> list[str]:
    return [str(c) for c in column.cells]


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` with no header word or number broken (see the module docstring)."""
    if not console.is_terminal:
        console.file.writelines(line + "\n" for line in _plain_table(table))
        return
    for column in table.columns:
        words = str(column.header).split() if table.show_header else []
        column.min_width = max(map(len, _cell_texts(column) + words), default=1)
        column.overflow = "fold"
    need = sum(c.min_width or 1 for c in table.columns) + 3 * len(table.columns) + 1
    console.print(table, width=max(console.width, need), crop=False)


def _plain_table(table: Table) -> list[str]:
    """``table`` as plain lines: title, header, a dashed rule, then one line per row."""
    cols = [_cell_texts(c) for c in table.columns]
    headers = [str(c.header) for c in table.columns] if table.show_header else None
    justify = ["left" if c.justify == "left" else "right" for c in table.columns]
    sections = [k for k, row in enumerate(table.rows) if row.end_section]
    lines = [] if table.title is None else [str(table.title)]
    return lines + plain_lines(headers, list(zip(*cols, strict=True)), justify, sections)


def plain_lines(
    headers: Sequence[str] | None,
    rows: Iterable[Sequence[str]],
    justify: Sequence[str],
    sections: Sequence[int] = (),
) -> list[str]:
    """Rows of cell texts as aligned plain lines (a dashed rule under the header and sections).

    Parameters
    ----------
    headers : sequence of str or None
        Column headers, or None for none.
    rows : iterable of sequences of str
        The cells.
    justify : sequence of str
        ``"left"`` or ``"right"`` per column.
    sections : sequence of int
        Row indices after which a rule is drawn.
    """
    rows = [list(r) for r in rows]
    cells = rows + ([list(headers)] if headers is not None else [])
    widths = [max(map(len, col), default=0) for col in zip(*cells, strict=True)] or [0] * len(
        justify
    )

    def line(row: Sequence[str]) -> str:
        parts = [
            t.ljust(w) if j == "left" else t.rjust(w)
            for t, w, j in zip(row, widths, justify, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line(headers), rule] if headers is not None else []
    ends = set(sections)
    for k, row in enumerate(rows):
        out.append(line(row))
        if k in ends and k != len(rows) - 1:
            out.append(rule)
    return out


def print_error(console: Console, message: str) -> None:
    """Print ``error: message`` as one line, verbatim."""
    console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)


_BOUNDS = {
    "greater_than_equal": ("ge", "less than the minimum"),
    "greater_than": ("gt", "not above"),
    "less_than_equal": ("le", "more than the maximum"),
    "less_than": ("lt", "not below"),
}


def _value_text(exc: Any) -> str:
    """What was wrong with a parameter's value, from the validation error typer wraps."""
    cause = exc.__cause__
    errors = cause.errors() if hasattr(cause, "errors") else []
    message = str(getattr(exc, "message", exc)).strip().rstrip(".")
    if not errors:
        return _click_value_text(message)
    first = errors[0]
    value, kind, ctx = first.get("input"), str(first.get("type", "")), first.get("ctx") or {}
    if kind.startswith("int_"):
        return f"{value!r} is not an integer"
    if kind.startswith("float_"):
        return f"{value!r} is not a number"
    if kind.startswith("bool_"):
        return f"{value!r} is not true or false"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"{value} is {words} {ctx.get(key)}"
    text = str(first.get("msg", message)).rstrip(".")
    return f"{text[:1].lower()}{text[1:]}, got {value!r}"


#: click's own wording of a bad value (typer versions that let click convert values), and ours.
_CLICK_VALUE = (
    (re.compile(r"^'?(?P<v>.*?)'? is not a valid integer(?: range)?$"), "{v!r} is not an integer"),
    (re.compile(r"^'?(?P<v>.*?)'? is not a valid float(?: range)?$"), "{v!r} is not a number"),
    (re.compile(r"^'?(?P<v>.*?)'? is not a valid boolean$"), "{v!r} is not true or false"),
    (
        re.compile(r"^(?P<v>\S+) is not in the range x>=(?P<b>\S+)$"),
        "{v} is less than the minimum {b}",
    ),
    (
        re.compile(r"^(?P<v>\S+) is not in the range x<=(?P<b>\S+)$"),
        "{v} is more than the maximum {b}",
    ),
)


def _click_value_text(message: str) -> str:
    """click's message for a bad value, in the wording of :func:`_value_text`."""
    for pattern, template in _CLICK_VALUE:
        m = pattern.match(message)
        if m:
            return template.format(**m.groupdict())
    return message


def usage_error_line(exc: Any) -> str:
    """One line for a command-line parsing error of the CLI framework (click via typer).

    ``--rounds abc`` gives ``--rounds: 'abc' is not an integer``; ``--devices 0`` gives
    ``--devices: 0 is less than the minimum 1``; other usage errors keep the framework's text
    on one line, followed by a pointer to ``--help``.
    """
    param = getattr(exc, "param", None)
    if param is not None and type(exc).__name__ == "BadParameter":
        opts = getattr(param, "opts", None) or []
        name = max(opts, key=len) if param.param_type_name == "option" and opts else None
        name = name or str(param.human_readable_name)
        return " ".join(f"{name}: {_value_text(exc)}".split())
    text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    if type(exc).__name__ == "NoSuchOption" and getattr(exc, "option_name", None):
        text = f"No such option: {exc.option_name}"  # one wording across click versions
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "sflam-opt"
    return " ".join(f"{text.rstrip('.')} (see `{where} --help`)".split())

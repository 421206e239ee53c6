"""Terminal output shared by the CLI modules: consoles, tables and one-line error messages.

User text (paths, device ids, solver messages) may contain ``[...]``, which rich would read as
markup; every console here has markup off. Tables never cut numbers: cells that do not fit the
terminal wrap onto the next line instead of ending in an ellipsis.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["consoles", "print_error", "print_table", "usage_error_line"]


def consoles() -> tuple[Console, Console]:
    """``(stdout, stderr)`` consoles with markup off."""
    return Console(markup=False), Console(stderr=True, markup=False)


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` so that no cell is cut: overlong cells fold onto further lines."""
    for column in table.columns:
        column.overflow = "fold"
    console.print(table)


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

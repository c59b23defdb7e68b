"""The consoles. Created per use so that they follow the current sys.stdout/stderr
(tests swap them); colour and terminal detection (NO_COLOR, pipes, COLUMNS) are rich's.

Piped output is for grep and awk: with no terminal and no COLUMNS, stdout is as wide as its
longest line, so a table keeps one row per line and never breaks a name or a number (rich
would wrap at 80 columns and split ``h.0.ln_1.weight``)."""
from __future__ import annotations

import json
import os
import sys

from rich.console import Console

PIPE_WIDTH = 100_000  # "no limit" for a pipe: tables size to their content, lines do not wrap


def out() -> Console:
    console = Console(file=sys.stdout, highlight=False, soft_wrap=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(file=sys.stdout, highlight=False, soft_wrap=False, width=PIPE_WIDTH)
    return console


def err() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def to_jsonable(value):
    """Plain JSON values from results: tuples to lists, non-finite floats to strings."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
    return value


def print_json(data) -> None:
    """Only JSON on stdout: plain text, no markup, no highlighting."""
    sys.stdout.write(json.dumps(to_jsonable(data), indent=2) + "\n")
    sys.stdout.flush()


def visible(text: str) -> str:
    """*text* with control characters written as escapes (``\\x1b``): an error quotes what a spec or a file
    says, and a terminal must not take it as a command (clear the screen, move the cursor, fake output)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)


def print_error(message: str, place: str | None = None, hint: str | None = None) -> None:
    from rich.markup import escape

    console = err()
    head = f"{place}: {message}" if place else message
    console.print(f"[bold red]error:[/] {escape(visible(head))}", soft_wrap=True)
    if hint:
        console.print(f"  [dim]hint:[/] {escape(visible(hint))}", soft_wrap=True)


def print_warning(message: str) -> None:
    from rich.markup import escape

    err().print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)

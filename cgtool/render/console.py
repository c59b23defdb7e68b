"""The consoles. Created per use so that they follow the current sys.stdout/stderr
(tests swap them); colour and terminal detection (NO_COLOR, pipes, COLUMNS) are rich's."""
from __future__ import annotations

import json
import sys

from rich.console import Console


def out() -> Console:
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


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


def print_error(message: str, place: str | None = None, hint: str | None = None) -> None:
    from rich.markup import escape

    console = err()
    head = f"{place}: {message}" if place else message
    console.print(f"[bold red]error:[/] {escape(head)}", soft_wrap=True)
    if hint:
        console.print(f"  [dim]hint:[/] {escape(hint)}", soft_wrap=True)


def print_warning(message: str) -> None:
    from rich.markup import escape

    err().print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)

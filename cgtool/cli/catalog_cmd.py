"""`cgtool layers` (the layer catalogue) and `cgtool validate` (check many specs by exit code)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import app
from .common import JsonOpt, handle_errors


@app.command("layers")
@handle_errors
def layers_command(
    pattern: Annotated[Optional[str], typer.Argument(help="Only layer types whose name contains this.",
                                                     show_default=False)] = None,
    json: JsonOpt = False,
):
    """The layer types a spec may use (every torch.nn module class), with constructor signatures."""
    from ..api import layers

    _render_layers(layers(pattern), json=json)


@app.command("validate")
@handle_errors
def validate_command(
    specs: Annotated[list[str], typer.Argument(help="Spec files to check (compile and dry-run each).")],
    json: JsonOpt = False,
):
    """Check many specs: compile and dry-run each on meta tensors. Exit 1 if any is invalid."""
    from ..api import validate

    result = validate(specs)
    _render_validation(result, json=json)
    if not result.ok:
        raise typer.Exit(1)


# The two renderers below belong in render/ (a render/catalog.py); they stay here until it exists.


def _render_layers(rows, *, json: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..render.console import out, print_json

    if json:
        print_json({"layers": [{"type": r.type, "signature": r.signature} for r in rows]})
        return
    table = Table("type", "constructor", show_edge=False)
    for r in rows:
        table.add_row(r.type, escape(r.signature))
    out().print(table)


def _render_validation(result, *, json: bool) -> None:
    from ..render.console import err, out, print_json

    if json:
        specs = [{"spec": r.spec, "ok": True, "check": r.check, "params": r.params} if r.ok else
                 {"spec": r.spec, "ok": False, "error": r.error, "hint": r.hint} for r in result.specs]
        print_json({"specs": specs, "ok": result.ok})
        return
    console, errors = out(), err()
    for r in result.specs:
        if r.ok:
            console.print(f"ok     {r.spec}  ({r.params:,} params, shape check {r.check})", markup=False)
        else:
            errors.print(f"error: {r.error}", markup=False)

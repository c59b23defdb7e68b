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
                                                     show_default=False, metavar="PATTERN")] = None,
    json: JsonOpt = False,
):
    """The layer types a spec may use (every torch.nn module class), with constructor signatures.

    Example: cgtool layers Conv
    """
    from ..api import layers
    from ..render.catalog import render_layers

    render_layers(layers(pattern), json=json)


@app.command("validate")
@handle_errors
def validate_command(
    specs: Annotated[list[str], typer.Argument(help="Spec files to check (compile and dry-run each).",
                                                metavar="SPEC...")],
    json: JsonOpt = False,
):
    """Check many specs: compile and dry-run each on meta tensors. Exit 1 if any is invalid.

    Example: cgtool validate configs/*.yaml
    """
    from ..api import validate
    from ..render.catalog import render_validation

    result = validate(specs)
    render_validation(result, json=json)
    if not result.ok:
        raise typer.Exit(1)

"""`cgtool layers` (the layer catalogue) and `cgtool validate` (check many specs by exit code)."""
from __future__ import annotations

import inspect
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
    from rich.markup import escape
    from rich.table import Table

    from ..build.catalog import _describe_params, layer_classes
    from ..render.console import out, print_json

    rows = []
    for name, cls in sorted(layer_classes().items()):
        if pattern and pattern.lower() not in name.lower():
            continue
        try:
            params = _describe_params(inspect.signature(cls))
        except (TypeError, ValueError):
            params = []
        rows.append({"type": name, "signature": f"{name}({', '.join(params)})"})
    if json:
        print_json({"layers": rows})
        return
    table = Table("type", "constructor", show_edge=False)
    for r in rows:
        table.add_row(r["type"], escape(r["signature"]))
    out().print(table)


@app.command("validate")
@handle_errors
def validate_command(
    specs: Annotated[list[str], typer.Argument(help="Spec files to check (compile and dry-run each).")],
    json: JsonOpt = False,
):
    """Check many specs: compile and dry-run each on meta tensors. Exit 1 if any is invalid."""
    from ..build.model import build_model
    from ..errors import CgError
    from ..render.console import err, out, print_json
    from .common import read_text

    results = []
    for path in specs:
        try:
            text, name = read_text(path)
            built = build_model(text, file=name, device="meta")
            results.append({"spec": path, "ok": True, "check": built.check.status, "params": built.param_count})
        except CgError as e:
            results.append({"spec": path, "ok": False, "error": str(e), "hint": e.hint})
    if json:
        print_json({"specs": results, "ok": all(r["ok"] for r in results)})
    else:
        console, errors = out(), err()
        for r in results:
            if r["ok"]:
                console.print(f"ok     {r['spec']}  ({r['params']:,} params, shape check {r['check']})",
                              markup=False)
            else:
                errors.print(f"error: {r['error']}", markup=False)
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)

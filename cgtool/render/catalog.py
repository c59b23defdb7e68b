"""Rendering of `cgtool layers` (the layer catalogue) and `cgtool validate` (one line per spec); JSON."""
from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from .console import err, out, print_json



def render_layers(rows, *, json: bool) -> None:
    if json:
        print_json({"layers": [{"type": r.type, "signature": r.signature} for r in rows]})
        return
    table = Table("type", "constructor", show_edge=False)
    for r in rows:
        table.add_row(r.type, escape(r.signature))
    out().print(table)


def render_validation(result, *, json: bool) -> None:
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
            errors.print(f"error: {r.error}", markup=False, soft_wrap=True)
            if r.hint:
                errors.print(f"  hint: {r.hint}", markup=False, soft_wrap=True)

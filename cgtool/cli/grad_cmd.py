"""`cgtool grad EXPR`: the chain rule as a sum over paths."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import app
from .common import JsonOpt, TimeLimitOpt, handle_errors


@app.command("grad")
@handle_errors
def grad_command(
    expr: Annotated[str, typer.Argument(help='Expression, e.g. "y = (x1 + w) * (x2 + w)" (statements separated '
                                        "by ; or newlines), or - to read it from stdin.", show_default=False,
                                        metavar="EXPR")],
    at: Annotated[Optional[list[str]], typer.Option("--at", help="A leaf's value: NAME=NUMBER or NAME=JSON list "
                                                    "(float64); repeatable. Without any: symbolic answer only.",
                                                    show_default=False, metavar="NAME=VALUE")] = None,
    wrt: Annotated[Optional[list[str]], typer.Option("--wrt", help="Differentiate with respect to NAME; "
                                                     "repeatable (default: every leaf).", show_default=False,
                                                     metavar="NAME")] = None,
    root: Annotated[Optional[str], typer.Option("--root", help="The value to differentiate (default: the last "
                                                "assigned name).", show_default=False, metavar="NAME")] = None,
    max_paths: Annotated[int, typer.Option("--max-paths", min=0, help="Paths listed per wrt, largest "
                                           "|contribution| first.", metavar="N")] = 20,
    json: JsonOpt = False,
    check: Annotated[bool, typer.Option("--check", help="Exit 3 when the sum over paths disagrees with "
                                        "autograd.")] = False,
    max_iterations: Annotated[Optional[int], typer.Option("--max-iterations", min=1, help="Cap on loop "
                                                          "iterations in the expression.", show_default=False,
                                                          metavar="N")] = None,
    time_limit: TimeLimitOpt = None,
):
    """Gradient paths of an expression: each path, its factors, contribution and symbolic form, the sum, and
    the check against autograd.

    Example: cgtool grad "y = (x1 + w) * (x2 + w)" --wrt w
    """
    from ..api import grad
    from ..errors import CheckFailed
    from ..render.console import print_json
    from ..render.grad import grad_json, render_grad

    report = grad(expr, at=at, wrt=wrt, root=root, max_paths=max_paths, max_iterations=max_iterations)
    if json:
        print_json(grad_json(report))
    else:
        render_grad(report)
    if check:
        bad = [g.wrt for g in report.gradients if not g.match]
        if bad:
            raise CheckFailed(f"the sum over paths disagrees with autograd for {', '.join(bad)}")

"""`cgtool paths SPEC --wrt NAME`: gradient paths of a model's parameter through its autograd graph."""
from __future__ import annotations

import enum
from typing import Annotated, Optional

import typer

from . import app
from .common import ArgOpt, DTypeOpt, InputOpt, JsonOpt, MaxIterationsOpt, MaxMemoryOpt, SeedOpt, SpecArg, handle_errors


class Loss(str, enum.Enum):
    sum = "sum"
    mean = "mean"
    norm = "norm"


class Level(str, enum.Enum):
    module = "module"
    op = "op"


@app.command("paths")
@handle_errors
def paths_command(
    spec: SpecArg,
    wrt: Annotated[Optional[str], typer.Option("--wrt", help="A parameter or constant by qualified name "
                                               "(linear.weight), or an input (x).", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="One row per parameter: paths, uses, gradient norm, and "
                                       "whether any path reaches it (and why not).")] = False,
    loss: Annotated[Loss, typer.Option("--loss", help="Reduction of a non-scalar output to the scalar root.")]
    = Loss.sum,
    root: Annotated[Optional[str], typer.Option("--root", help="Another forward value as the root.",
                                                show_default=False)] = None,
    level: Annotated[Level, typer.Option("--level", help="module: module calls and named values; op: every "
                                         "autograd node.")] = Level.module,
    max_paths: Annotated[int, typer.Option("--max-paths", min=0, help="Paths listed, largest contribution "
                                           "first.")] = 10,
    input: InputOpt = None,
    arg: ArgOpt = None,
    dtype: DTypeOpt = None,
    seed: SeedOpt = 0,
    json: JsonOpt = False,
    max_memory: MaxMemoryOpt = None,
    max_iterations: MaxIterationsOpt = None,
):
    """Gradient paths of a model's parameter: exact path count, top paths by contribution, the check against
    autograd's gradient; --all for every parameter."""
    from ..api import paths
    from ..render.paths import render_paths

    result = paths(spec, wrt, args=arg, inputs=input, dtype=dtype, seed=seed, loss=loss.value, root=root,
                   level=level.value, max_paths=max_paths, all=all_, max_memory=max_memory,
                   max_iterations=max_iterations)
    render_paths(result, json=json)

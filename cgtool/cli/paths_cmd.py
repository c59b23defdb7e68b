"""`cgtool paths SPEC --wrt NAME`: gradient paths of a model's parameter through its autograd graph."""
from __future__ import annotations

import enum
from typing import Annotated, Optional

import typer

from . import app
from .common import complete_names, ArgOpt, Level, DTypeOpt, InputOpt, JsonOpt, MaxIterationsOpt, BaseOpt, TimeLimitOpt, MaxMemoryOpt, SeedOpt, SpecArg, handle_errors


class Loss(str, enum.Enum):
    sum = "sum"
    mean = "mean"
    norm = "norm"


@app.command("paths")
@handle_errors
def paths_command(
    spec: SpecArg,
    wrt: Annotated[Optional[str], typer.Option("--wrt", metavar="NAME", help="A parameter or constant by qualified name "
                                               "(linear.weight), or an input (x).", show_default=False,
                                               autocompletion=complete_names)] = None,
    all_: Annotated[bool, typer.Option("--all", help="One row per parameter: paths, uses, gradient norm, and "
                                       "whether any path reaches it (and why not).")] = False,
    loss: Annotated[Loss, typer.Option("--loss", help="Reduction of a non-scalar output to the scalar root.")]
    = Loss.sum,
    root: Annotated[Optional[str], typer.Option("--root", metavar="NAME", help="Another forward value as the root.",
                                                show_default=False)] = None,
    level: Annotated[Level, typer.Option("--level", help="module: module calls and named values; op: every "
                                         "autograd node.")] = Level.module,
    max_paths: Annotated[Optional[int], typer.Option("--max-paths", min=0, metavar="N", help="Paths listed, largest "
                                                     "contribution first [default: 10]: exactly among up to 512 paths, "
                                                     "else found by a best-first search (said in the output).",
                                                     show_default=False)] = None,
    by_length: Annotated[bool, typer.Option("--by-length", help="The path-length spectrum: per length, the exact "
                                            "number of paths and the sum of their contributions.")] = False,
    depth: Annotated[Optional[int], typer.Option("--depth", min=1, metavar="N", help="--by-length counts calls of modules "
                                                 "with parameters at this depth [default: 1]; implies --by-length.",
                                                 show_default=False)] = None,
    count: Annotated[Optional[str], typer.Option("--count", metavar="PATTERN", help="--by-length counts calls of the modules "
                                                 "matching PATTERN instead (* is one name: stages.*.*.branch); implies "
                                                 "--by-length.",
                                                 show_default=False)] = None,
    sample: Annotated[int, typer.Option("--sample", min=0, metavar="N", help="Also estimate each length's mean path norm from "
                                        "N sampled paths of that length (Veit et al. 2016; drawn with --seed); "
                                        "implies --by-length.")] = 0,
    input: InputOpt = None,
    arg: ArgOpt = None,
    dtype: DTypeOpt = None,
    seed: SeedOpt = 0,
    json: JsonOpt = False,
    max_memory: MaxMemoryOpt = None,
    time_limit: TimeLimitOpt = None,
    base: BaseOpt = None,
    max_iterations: MaxIterationsOpt = None,
):
    """Gradient paths of a model's parameter: exact path count, top paths by contribution, the check against
    autograd's gradient; --all for every parameter.

    Example: cgtool paths configs/fancy_mlp.yaml --wrt linear.weight
    """
    from ..api import paths
    from ..render.paths import render_paths
    from ..render.progress import StageProgress

    with StageProgress(enabled=not json) as progress:
        result = paths(spec, wrt, base=base, args=arg, inputs=input, dtype=dtype, seed=seed, loss=loss.value, root=root,
                       level=level.value, max_paths=max_paths, all=all_, by_length=by_length, depth=depth,
                       count=count, sample=sample, max_memory=max_memory, max_iterations=max_iterations,
                       progress=progress)
    render_paths(result, json=json)

"""`cgtool build SPEC`: compile, dry-run shapes, print the module tree and totals."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import app
from .common import (ArgOpt, Device, DeviceOpt, DTypeOpt, InputOpt, JsonOpt, MaxIterationsOpt, BaseOpt, TimeLimitOpt, MaxMemoryOpt, SeedOpt,
                     SpecArg, handle_errors)


@app.command("build")
@handle_errors
def build_command(
    spec: SpecArg,
    input: InputOpt = None,
    arg: ArgOpt = None,
    device: DeviceOpt = Device.cpu,
    dtype: DTypeOpt = None,
    seed: SeedOpt = 0,
    json: JsonOpt = False,
    save: Annotated[Optional[str], typer.Option("--save", help="Write the state_dict to FILE.pt (atomically).",
                                                show_default=False, metavar="FILE")] = None,
    code: Annotated[bool, typer.Option("--code", help="Print the generated forward source.")] = False,
    depth: Annotated[Optional[int], typer.Option("--depth", help="Deepest tree level shown.", min=1,
                                                 show_default=False, metavar="N")] = None,
    max_memory: MaxMemoryOpt = None,
    time_limit: TimeLimitOpt = None,
    base: BaseOpt = None,
    max_iterations: MaxIterationsOpt = None,
):
    """Compile SPEC to a torch.nn module, check shapes with a dry run, and show its module tree.

    Example: cgtool build configs/mlp.yaml --save mlp.pt
    """
    from ..api import describe

    report = describe(spec, base=base, args=arg, inputs=input, device=device, dtype=dtype, seed=seed, save=save,
                      max_memory=max_memory, max_iterations=max_iterations)
    from ..render.build import render_build

    render_build(report, json=json, max_depth=depth, show_code=code)

"""`cgtool build SPEC`: compile, dry-run shapes, print the module tree and totals."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import app
from .common import (ArgOpt, Device, DeviceOpt, DTypeOpt, InputOpt, JsonOpt, MaxIterationsOpt, MaxMemoryOpt, SeedOpt,
                     SpecArg, build_from_cli, handle_errors)


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
                                                show_default=False)] = None,
    code: Annotated[bool, typer.Option("--code", help="Print the generated forward source.")] = False,
    depth: Annotated[Optional[int], typer.Option("--depth", help="Deepest tree level shown.", min=1,
                                                 show_default=False)] = None,
    max_memory: MaxMemoryOpt = None,
    max_iterations: MaxIterationsOpt = None,
):
    """Compile SPEC to a torch.nn module, check shapes with a dry run, and show its module tree."""
    from ..errors import CgError
    from ..render.build import render_structure, structure_json
    from ..render.console import print_json
    from ..inspect.structure import describe

    built, _ = build_from_cli(spec, args=arg, inputs=input, device=device, dtype=dtype, seed=seed,
                              max_memory=max_memory, max_iterations=max_iterations)
    if save:
        if built.device.type == "meta":
            raise CgError("cannot save weights built on the meta device: they have no values", "--save",
                          hint="build with --device cpu to save")
        if not save.endswith((".pt", ".pth")):
            raise CgError("weights are saved as a .pt file", "--save", hint="for example --save weights.pt")
        from ..inspect.tensorfiles import save_output

        save_output(built.module.state_dict(), save)
    structure = describe(built)
    if json:
        data = structure_json(structure, show_code=code)
        if save:
            data["saved"] = save
        print_json(data)
    else:
        render_structure(structure, max_depth=depth, show_code=code)
        if save:
            from ..render.console import out

            out().print(f"saved state_dict to {save}")

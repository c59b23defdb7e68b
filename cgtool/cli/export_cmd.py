"""`cgtool export SPEC --to python|pt2|onnx`: eject to plain PyTorch source, or write the captured program."""
from __future__ import annotations

import enum
from typing import Annotated, Optional

import typer

from . import app
from .common import ArgOpt, DTypeOpt, InputOpt, JsonOpt, MaxIterationsOpt, BaseOpt, TimeLimitOpt, MaxMemoryOpt, SeedOpt, SpecArg, handle_errors


class Target(str, enum.Enum):
    python = "python"
    pt2 = "pt2"
    onnx = "onnx"


@app.command("export")
@handle_errors
def export_command(
    spec: SpecArg,
    to: Annotated[Target, typer.Option("--to", help="python: a standalone nn.Module subclass (the spec's args as "
                                       "constructor arguments); pt2: torch.export.save of the captured program; "
                                       "onnx: the captured program as ONNX (needs the onnx extra).")] = Target.python,
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", metavar="FILE", help="Write to FILE (atomically); python goes to stdout without it.",
        show_default=False)] = None,
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
    """Eject a spec to plain PyTorch source, or write its captured program (pt2, ONNX).

    Example: cgtool export configs/mlp.yaml --to python -o mlp_model.py
    """
    from ..api import export
    from ..render.export import render_export

    result = export(spec, base=base, to=to.value, output=output, args=arg, inputs=input, dtype=dtype, seed=seed,
                    max_memory=max_memory, max_iterations=max_iterations)
    render_export(result, json=json)

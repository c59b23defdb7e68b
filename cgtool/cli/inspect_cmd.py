"""`cgtool params`, `cgtool summary`, `cgtool run`: build a spec, inspect or run it, render."""
from __future__ import annotations

import enum
from typing import Annotated, Optional

import typer

from . import app
from .common import (
    ArgOpt,
    MaxIterationsOpt,
    BaseOpt, TimeLimitOpt, MaxMemoryOpt,
    Device,
    DeviceOpt,
    DTypeOpt,
    InputOpt,
    JsonOpt,
    SeedOpt,
    SpecArg,
    handle_errors,
)


class Format(str, enum.Enum):
    table = "table"
    json = "json"
    csv = "csv"


FormatOpt = Annotated[Optional[Format], typer.Option("--format", help="table (default), json or csv.", show_default=False)]
DepthOpt = Annotated[
    Optional[int],
    typer.Option("--depth", min=0, help="Show layers down to this call depth (0: the model alone); deeper ones "
                 "are folded into their ancestor. Default: all.", show_default=False, metavar="N"),
]
OutputOpt = Annotated[
    Optional[str],
    typer.Option("--output", "-o", help="Save the output to FILE.pt or FILE.npy (a dict of tensors for several "
                 "outputs: .pt), written atomically.", show_default=False, metavar="FILE"),
]
WeightsOpt = Annotated[
    Optional[str],
    typer.Option("--weights", help="Load a state_dict saved by `cgtool build SPEC --save FILE` before running.",
                 show_default=False, metavar="FILE"),
]
TrainOpt = Annotated[
    bool,
    typer.Option("--train", help="Run in training mode (dropout active, batch norm on batch statistics) "
                 "instead of evaluation mode."),
]


@app.command("params")
@handle_errors
def params_cmd(
    spec: SpecArg,
    arg: ArgOpt = None,
    device: DeviceOpt = Device.cpu,
    dtype: DTypeOpt = None,
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
    fmt: FormatOpt = None,
    max_memory: MaxMemoryOpt = None,
    time_limit: TimeLimitOpt = None,
    base: BaseOpt = None,
) -> None:
    """Parameter table: names, shapes, counts, trainable, dtype, device, shared tensors; buffers apart; totals.

    Example: cgtool params configs/fancy_mlp.yaml --json
    """
    from ..api import params
    from ..render.console import print_json
    from ..render.params import params_csv, params_json, print_params

    fmt = _format(json_out, fmt)
    table = params(spec, base=base, args=arg, device=device, dtype=dtype, seed=seed, max_memory=max_memory)
    if fmt is Format.json:
        print_json(params_json(table))
    elif fmt is Format.csv:
        typer.echo(params_csv(table), nl=False)
    else:
        print_params(table, table.model)


@app.command("summary")
@handle_errors
def summary_cmd(
    spec: SpecArg,
    input: InputOpt = None,
    arg: ArgOpt = None,
    device: DeviceOpt = Device.cpu,
    dtype: DTypeOpt = None,
    seed: SeedOpt = 0,
    depth: DepthOpt = None,
    json_out: JsonOpt = False,
    max_memory: MaxMemoryOpt = None,
    time_limit: TimeLimitOpt = None,
    base: BaseOpt = None,
    max_iterations: MaxIterationsOpt = None,
) -> None:
    """Per-layer table of one forward pass: input/output shapes, parameters, calls, FLOPs (torch's counter).

    Example: cgtool summary configs/resnet_block.yaml --depth 2
    """
    from ..api import summary
    from ..render.console import print_json
    from ..render.summary import print_summary, summary_json

    result = summary(spec, base=base, args=arg, inputs=input, device=device, dtype=dtype, seed=seed, depth=depth,
                     max_memory=max_memory, max_iterations=max_iterations)
    if json_out:
        print_json(summary_json(result))
    else:
        print_summary(result, result.model)


@app.command("run")
@handle_errors
def run_cmd(
    spec: SpecArg,
    input: InputOpt = None,
    arg: ArgOpt = None,
    device: DeviceOpt = Device.cpu,
    dtype: DTypeOpt = None,
    seed: SeedOpt = 0,
    weights: WeightsOpt = None,
    output: OutputOpt = None,
    train: TrainOpt = False,
    json_out: JsonOpt = False,
    max_memory: MaxMemoryOpt = None,
    time_limit: TimeLimitOpt = None,
    base: BaseOpt = None,
    max_iterations: MaxIterationsOpt = None,
) -> None:
    """Forward pass on the spec's inputs (seeded random, --input shapes or tensor files); prints or saves the output.

    Example: cgtool run configs/mlp.yaml -i x=8,784 --output out.pt
    """
    from ..api import run
    from ..render.console import print_json, print_warning
    from ..render.run import print_run, run_json

    result = run(spec, base=base, args=arg, inputs=input, device=device, dtype=dtype, seed=seed, weights=weights, train=train,
                 output=output, max_memory=max_memory, max_iterations=max_iterations)
    for warning in result.warnings:
        print_warning(warning)
    if json_out:
        print_json(run_json(result, result.saved))
    else:
        print_run(result, result.saved)


def _format(json_out: bool, fmt: Format | None) -> Format:
    if json_out and fmt not in (None, Format.json):
        from ..render.console import print_error

        print_error(f"--json and --format {fmt.value} disagree", "--format", hint="give one of them")
        raise typer.Exit(2)
    return Format.json if json_out else (fmt or Format.table)

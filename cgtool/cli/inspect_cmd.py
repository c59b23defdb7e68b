"""`cgtool params`, `cgtool summary`, `cgtool run`: build a spec, inspect or run it, render."""
from __future__ import annotations

import enum
from typing import Annotated, Optional

import torch
import typer

from . import app
from .common import (
    ArgOpt,
    MaxIterationsOpt,
    MaxMemoryOpt,
    Device,
    DeviceOpt,
    DTypeOpt,
    InputOpt,
    JsonOpt,
    SeedOpt,
    SpecArg,
    build_from_cli,
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
                 "are folded into their ancestor. Default: all.", show_default=False),
]
OutputOpt = Annotated[
    Optional[str],
    typer.Option("--output", "-o", help="Save the output to FILE.pt or FILE.npy (a dict of tensors for several "
                 "outputs: .pt), written atomically.", show_default=False),
]
WeightsOpt = Annotated[
    Optional[str],
    typer.Option("--weights", help="Load a state_dict saved by `cgtool build SPEC --save FILE` before running.",
                 show_default=False),
]
TrainOpt = Annotated[
    bool,
    typer.Option("--train", help="Run in training mode (dropout active, batch norm on batch statistics) "
                 "instead of evaluation mode."),
]


def _title(built) -> str:
    name = getattr(built.spec, "name", None)
    return name or type(built.module).__name__


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
) -> None:
    """Parameter table: names, shapes, counts, trainable, dtype, device, shared tensors; buffers apart; totals."""
    from ..inspect.params import param_table
    from ..render.console import print_json
    from ..render.params import params_csv, params_json, print_params

    fmt = _format(json_out, fmt)
    # No dry run: the table needs shapes and dtypes only, never a forward.
    built, _ = build_from_cli(spec, args=arg, inputs=None, device=device, dtype=dtype, seed=seed, check=False,
                              max_memory=max_memory)
    table = param_table(built.module)
    if fmt is Format.json:
        print_json(params_json(table))
    elif fmt is Format.csv:
        typer.echo(params_csv(table), nl=False)
    else:
        print_params(table, _title(built))


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
    max_iterations: MaxIterationsOpt = None,
) -> None:
    """Per-layer table of one forward pass: input/output shapes, parameters, calls, FLOPs (torch's counter)."""
    from ..render.console import print_json
    from ..render.summary import print_summary, summary_json
    from ..inspect.summary import summarize

    built, tensors = build_from_cli(spec, args=arg, inputs=input, device=device, dtype=dtype, seed=seed,
                                    max_memory=max_memory, max_iterations=max_iterations)
    result = summarize(built.module, tensors, depth=depth, call=built.forward)
    if json_out:
        print_json(summary_json(result))
    else:
        print_summary(result, _title(built))


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
    max_iterations: MaxIterationsOpt = None,
) -> None:
    """Forward pass on the spec's inputs (seeded random, --input shapes or tensor files); prints or saves the output."""
    from ..render.console import print_json
    from ..render.run import print_run, run_json
    from ..inspect.run import describe_outputs
    from ..inspect.tensorfiles import apply_weights, load_state_dict, save_output

    built, tensors = build_from_cli(spec, args=arg, inputs=input, device=device, dtype=dtype, seed=seed,
                                    max_memory=max_memory, max_iterations=max_iterations)
    if weights is not None:
        if not apply_weights(built.module, load_state_dict(weights), place=weights):
            from ..render.console import print_warning

            print_warning(f"{weights}: names and shapes match the model; on the meta device there are no values to load")
    built.module.train(train)  # our own freshly built module: evaluation mode unless asked
    with torch.no_grad():
        result = describe_outputs(built.forward(tensors))
    saved = save_output(result.saved_object(), output) if output else None
    if json_out:
        print_json(run_json(result, saved))
    else:
        print_run(result, saved)


def _format(json_out: bool, fmt: Format | None) -> Format:
    if json_out and fmt not in (None, Format.json):
        from ..render.console import print_error

        print_error(f"--json and --format {fmt.value} disagree", "--format", hint="give one of them")
        raise typer.Exit(2)
    return Format.json if json_out else (fmt or Format.table)

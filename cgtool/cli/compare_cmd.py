"""`cgtool compare SPEC`: the dynamic graph against the static one, and eager against compiled speed."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import app
from .common import ArgOpt, DeviceOpt, Device, DTypeOpt, JsonOpt, MaxIterationsOpt, BaseOpt, TimeLimitOpt, MaxMemoryOpt, SeedOpt, \
    SpecArg, handle_errors


@app.command("compare")
@handle_errors
def compare_command(
    spec: SpecArg,
    input: Annotated[Optional[list[str]], typer.Option(
        "--input", "-i", metavar="NAME=SHAPE|FILE", help="An input to capture the dynamic graph on: NAME=SHAPE or NAME=FILE.pt|FILE.npy; "
        "repeat it, one case each.", show_default=False)] = None,
    scales: Annotated[Optional[str], typer.Option(
        "--scales", metavar="1,10,100", help="Else: the default input scaled by each factor [default: 1,10,100].",
        show_default=False)] = None,
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="Also time torch.compile "
                                          "(compilation reported apart).")] = True,
    min_time: Annotated[float, typer.Option("--min-time", metavar="SECONDS", help="Seconds per latency measurement.")] = 0.2,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, metavar="N", help="Threads for the timings "
                                                   "[default: 1].", show_default=False)] = None,
    arg: ArgOpt = None,
    device: DeviceOpt = Device.cpu,
    dtype: DTypeOpt = None,
    seed: SeedOpt = 0,
    json: JsonOpt = False,
    max_memory: MaxMemoryOpt = None,
    time_limit: TimeLimitOpt = None,
    base: BaseOpt = None,
    max_iterations: MaxIterationsOpt = None,
):
    """Dynamic vs static: the dynamic graph for several inputs, the static capture (or the spec line that
    prevents it, and why), and forward latency eager vs torch.compile.

    Example: cgtool compare configs/fancy_mlp.yaml --no-compile
    """
    from ..api import compare
    from ..render.compare import render_compare

    from ..render.progress import StageProgress

    with StageProgress(enabled=not json) as progress:
        result = compare(spec, base=base, args=arg, inputs=input, scales=scales, device=device, dtype=dtype, seed=seed,
                         compile=compile, min_time=min_time, threads=threads, max_memory=max_memory,
                         max_iterations=max_iterations, progress=progress)
    render_compare(result, json=json)

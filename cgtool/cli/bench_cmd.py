"""`cgtool bench SPEC`: latency, throughput and peak memory across batch sizes and devices."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import app
from .common import ArgOpt, DeviceOpt, Device, DTypeOpt, InputOpt, JsonOpt, MaxIterationsOpt, BaseOpt, TimeLimitOpt, MaxMemoryOpt, SeedOpt, \
    SpecArg, handle_errors


@app.command("bench")
@handle_errors
def bench_command(
    spec: SpecArg,
    batch: Annotated[str, typer.Option("--batch", "-b", metavar="SIZES", help="Batch sizes, comma-separated: each sets the inputs' "
                                       "B dimension (dim 0 where no input names one).")] = "1,8,64",
    backward: Annotated[bool, typer.Option("--backward", help="Time forward and backward (training mode) instead "
                                           "of the forward alone (evaluation mode, no autograd).")] = False,
    compile_: Annotated[bool, typer.Option("--compile", help="Also time torch.compile'd code (one compilation per "
                                           "batch size; compile time reported apart).")] = False,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, metavar="N", help="Torch CPU threads [default: torch's "
                                                   "current number].", show_default=False)] = None,
    min_time: Annotated[float, typer.Option("--min-time", metavar="SECONDS", help="Seconds of timed calls per case, after the warm-up "
                                            "(more: a steadier median).")] = 0.2,
    device: DeviceOpt = Device.cpu,
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
    """Latency (median and spread), throughput and peak memory across batch sizes; eager and compiled.

    Example: cgtool bench configs/mlp.yaml --batch 1,8,64 --threads 1
    """
    from ..api import bench
    from ..render.bench import render_bench
    from ..render.progress import StageProgress

    with StageProgress(enabled=not json) as progress:
        result = bench(spec, base=base, batch=batch, backward=backward, compile=compile_, threads=threads, device=device,
                       args=arg, inputs=input, dtype=dtype, seed=seed, min_time=min_time, max_memory=max_memory,
                       max_iterations=max_iterations, progress=progress)
    render_bench(result, json=json)

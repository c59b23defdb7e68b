"""``cgtool bench``: latency, throughput and peak memory of a built spec across batch sizes. Plain data.

Each case (a batch size; the forward, or forward and backward; eager, or ``torch.compile``) is timed with
:func:`cgtool.inspect.timing.measure` (``torch.utils.benchmark``: warm-up calls, then blocks of calls for at
least *min_time* seconds; the median per-call time and the spread between quartiles of the blocks).

Peak memory is what one call allocates on top of what exists before it (the parameters, the inputs),
at its highest point: activations, temporaries, the output, and with --backward the gradients (the previous
step's are dropped before the measured call, so that they are counted once, as made). On CUDA,
``torch.cuda.max_memory_allocated`` minus the allocation before the call. On the CPU there is no such
counter, so one extra call runs under ``torch.profiler`` with ``profile_memory=True``, and the peak is the
highest running sum of the bytes torch's CPU allocator handed out and took back, in the order of the
allocator's own records (compiled code's buffers included). It is tensor memory, not the process's RSS: Python objects, the allocator's cache and
compiled code are not in it.
"""
from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass, field

import torch

from ..errors import CgError, first_line
from .timing import measure

BATCH_DIM = "B"  # the named dim of the inputs that --batch sets (`inputs: {x: [B: 2, 784]}`)


@dataclass
class BenchCase:
    batch: int
    pass_: str  # forward | forward+backward
    mode: str  # eager | compiled
    median_s: float
    iqr_s: float
    runs: int
    blocks: int
    samples_per_s: float
    peak_bytes: int | None
    compile_s: float | None = None  # compiled: the first call, tracing and code generation included


@dataclass
class BenchReport:
    model: str
    device: str
    dtype: str
    threads: int
    batch_dim: str  # what --batch set, in words
    inputs: dict[int, dict[str, list[int]]]  # batch -> input name -> shape
    cases: list[BenchCase] = field(default_factory=list)
    min_time_s: float = 0.2
    memory: str = ""  # how peak memory was measured
    machine: str = ""
    torch_version: str = ""
    train_mode_backward: bool = True
    dynamic: list[dict] = field(default_factory=list)  # control flow reading tensor values: {"kind", "line", "text"}


def batch_inputs(built, batch: int) -> tuple[dict, str]:
    """Example inputs with the batch dimension set to *batch*; and which dimension that was, in words."""
    from ..build.inputs import example_inputs

    if built.given:
        name = next(iter(built.given))
        raise CgError(f"input {name!r} is given as a file, whose batch is fixed; bench sets the batch itself",
                      f"--input {name}", hint=f"give a shape instead (--input {name}=SHAPE), or drop --input")
    named = {n: s for n, s in built.inputs.items() if BATCH_DIM in s.dims}
    resized = {}
    for name, spec in built.inputs.items():
        if not spec.shape:
            raise CgError(f"input {name!r} is a scalar: it has no batch dimension", f"--input {name}")
        at = spec.dims[BATCH_DIM] if name in named else (None if named else 0)
        shape = list(spec.shape)
        if at is not None:
            shape[at] = batch
        resized[name] = dataclasses.replace(spec, shape=tuple(shape))
    if named:
        where = "the inputs' B dimension (" + ", ".join(f"{n} dim {s.dims[BATCH_DIM]}" for n, s in named.items()) + ")"
    else:
        where = "dim 0 of every input (no input names a B dimension)"
    return example_inputs(dataclasses.replace(built, inputs=resized)), where


def _loss(out) -> torch.Tensor:
    """A scalar to differentiate: the sum of the floating outputs."""
    if isinstance(out, torch.Tensor):
        outs = [out]
    elif isinstance(out, (list, tuple)):
        outs = [t for t in out if isinstance(t, torch.Tensor)]
    elif isinstance(out, dict):
        outs = [t for t in out.values() if isinstance(t, torch.Tensor)]
    else:
        outs = []
    outs = [t for t in outs if t.is_floating_point()]
    if not outs:
        raise CgError("--backward needs a floating-point tensor output to differentiate", "--backward")
    return sum(t.float().sum() for t in outs)


def _call(fn, args, backward: bool, module):
    if not backward:
        def forward():
            with torch.no_grad():
                return fn(*args)
        return forward

    def step():
        module.zero_grad(set_to_none=True)
        loss = _loss(fn(*args))
        if not loss.requires_grad:
            raise CgError("--backward: the output does not depend on any parameter", "--backward",
                          hint="the model has no trainable parameters on the path to its output")
        loss.backward()
    return step


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(call, device: torch.device) -> int:
    """Bytes allocated at the highest point of one call of *call*, above what was allocated before it."""
    if device.type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        call()
        _sync(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with _stderr_silenced():  # the profiler's C++ side prints `profiler_start` lines on stderr
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            call()
    try:  # each allocation (+bytes) and free (-bytes) as the allocator reported it, with its own time
        records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                         if e.name() == "[memory]")
    except AttributeError:  # an older profiler: each op's net allocation, at the op's start (coarser)
        records = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
                         if e.self_cpu_memory_usage)
    current = top = 0
    for _, nbytes in records:
        current += nbytes
        top = max(top, current)
    return top


class _stderr_silenced:
    """File descriptor 2 pointed at /dev/null for a moment (C++ code writes there, not to sys.stderr)."""

    def __enter__(self):
        import os
        import sys

        try:
            sys.stderr.flush()
            self.saved = os.dup(2)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)
        except OSError:
            self.saved = None

    def __exit__(self, *exc):
        import os

        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        return False


def bench(built, *, batches: list[int], backward: bool = False, compile: bool = False, threads: int | None = None,
          min_time: float = 0.2, memory: bool = True, progress=None) -> BenchReport:
    """Time the built spec at each batch size: forward (or forward and backward), eager and, with *compile*,
    ``torch.compile``'d (one static-shape compilation per batch size, its time reported apart)."""
    report = progress or (lambda stage, fraction=None: None)
    device = built.device
    if device.type == "meta":
        raise CgError("bench runs the model: meta tensors have no values and take no time", "--device",
                      hint="use --device cpu or cuda")
    if not built.inputs and not built.given:
        raise CgError("the spec declares no inputs", built.spec.file, hint="pass --input x=SHAPE")
    before_threads = torch.get_num_threads()
    threads = threads or before_threads
    module = built.module
    was_training = module.training
    dtype = next((p.dtype for p in module.parameters()), built.dtype or torch.float32)
    result = BenchReport(getattr(built.spec, "name", None) or type(module).__name__, str(device),
                         str(dtype).replace("torch.", ""), threads, "", {}, min_time_s=min_time,
                         memory=("torch.cuda.max_memory_allocated above the allocation before the call"
                                 if device.type == "cuda" else
                                 "torch.profiler (profile_memory): peak running sum of torch's CPU allocations "
                                 "during one call; tensors only, not the process's RSS"),
                         machine=_machine(device), torch_version=torch.__version__, train_mode_backward=backward)
    if compile:  # where the forward reads tensor values, torch.compile splits the graph there (graph breaks)
        from ..spec.load import data_dependence

        result.dynamic = [{"kind": d.kind, "line": d.line, "text": d.text} for d in data_dependence(built.spec)]
    modes = ["eager", "compiled"] if compile else ["eager"]
    total = len(batches) * len(modes)
    done = 0
    torch.set_num_threads(threads)
    try:
        # forward+backward in training mode (dropout on, batch norm on batch statistics), as a training step
        # runs; the forward alone in evaluation mode, as inference runs
        module.train(backward)
        for batch in batches:
            inputs, result.batch_dim = batch_inputs(built, batch)
            result.inputs[batch] = {n: list(t.shape) for n, t in inputs.items()}
            args = [inputs[n] for n in built.input_names]
            for mode in modes:
                report(f"batch {batch}, {mode}", done / total)
                fn, compile_s = module, None
                if mode == "compiled":
                    fn, compile_s = _compiled(module, args, backward, device)
                call = _call(fn, args, backward, module)
                try:
                    timing = _measure(lambda: (call(), _sync(device)), min_time, threads)
                    if memory:
                        # last step's gradients freed outside the measurement: a step's peak counts its own
                        module.zero_grad(set_to_none=True)
                        peak = peak_memory(call, device)
                    else:
                        peak = None
                except CgError:
                    raise
                except RuntimeError as e:
                    if "out of memory" in str(e).lower():
                        raise CgError(f"batch {batch}: out of memory ({first_line(e)})", "--batch",
                                      hint="try smaller batch sizes") from None
                    raise
                result.cases.append(BenchCase(batch, "forward+backward" if backward else "forward", mode,
                                              timing.median_s, timing.iqr_s, timing.runs, timing.blocks,
                                              batch / timing.median_s, peak, compile_s))
                done += 1
                report(f"batch {batch}, {mode}", done / total)
    finally:
        module.train(was_training)
        module.zero_grad(set_to_none=True)
        torch.set_num_threads(before_threads)
    return result


MIN_BLOCKS = 5  # a median and quartiles of fewer timings say little


def _measure(fn, min_time: float, threads: int):
    """:func:`measure`; where a call is so slow that fewer than MIN_BLOCKS blocks fit in *min_time*, MIN_BLOCKS
    single calls instead (after the warm-up measure did), so the spread is a spread."""
    import statistics

    from torch.utils.benchmark import Timer

    from .timing import Timing

    timing = measure(fn, min_run_time=min_time, threads=threads)
    if timing.blocks >= MIN_BLOCKS:
        return timing
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    times = sorted(timer.timeit(1).raw_times[0] for _ in range(MIN_BLOCKS))
    q1, _, q3 = statistics.quantiles(times, n=4)
    return Timing(statistics.median(times), q3 - q1, MIN_BLOCKS, MIN_BLOCKS)


def _compiled(module, args, backward: bool, device):
    """``torch.compile(module)`` for these input shapes (static shapes: one compilation per batch size), and the
    seconds its first call took (tracing, code generation, the call)."""
    import torch._dynamo

    # Each batch size compiles afresh (its own compile time, no recompilation guards). This drops every
    # compiled function of the process, a caller's too: bench is a measurement, not a library step.
    torch._dynamo.reset()
    compiled = torch.compile(module, dynamic=False)
    first = _call(compiled, args, backward, module)
    import logging
    import warnings

    # torch logs each graph break at length (FancyMLP's `.item()`); the verdict says it in a line
    loggers = [logging.getLogger(n) for n in ("torch._dynamo", "torch._inductor")]
    levels = [lg.level for lg in loggers]
    start = time.perf_counter()
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            first()
        _sync(device)
    except CgError:
        raise
    except Exception as e:  # noqa: BLE001 - a compiler failure on this model, in its words
        raise CgError(f"torch.compile failed: {first_line(e)}", "--compile",
                      hint="bench without --compile; on a CPU inductor needs a C++ compiler (gcc)") from None
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    return compiled, time.perf_counter() - start


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os

    return f"{name}, {os.cpu_count()} logical CPUs"

"""``cgtool compare``: the dynamic graph against the static one, for one spec. Plain data; never prints.

- **dynamic**: the graph captured on several inputs (the default input scaled, or inputs
  given one by one): its node count and how often each data-dependent condition ran and
  held. FancyMLP's count changes with the data; a static forward's does not.
- **static**: :func:`cgtool.graph.static.static_capture` — capturable or not, and why, at
  which spec line; for a spec that is not, a trace's answer on a scaled input beside eager's.
- **speed**: forward latency in eager mode and under ``torch.compile`` (and its
  ``mode="reduce-overhead"``, CUDA graphs, on CUDA), medians from ``torch.utils.benchmark``;
  the time of the first compiled call (compilation) is reported apart. The verdict says in
  words which case this is: compiled faster, or slower (small models on a CPU often are).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import torch

from ..graph.capture import capture_model
from ..graph.static import BakedBranch, baked_branch, output_number, static_capture
from ..spec.load import data_dependence
from .timing import Timing, measure


@dataclass
class DynamicRun:
    input: str  # how this input was made: "x × 10", or "x=file.pt"
    nodes: int  # values in the captured graph
    operations: int  # of which operations and module calls
    branches: list[dict]  # data-dependent conditions: {"kind", "line", "text", "runs", "held"}
    output: float | None  # the output (its norm when not a scalar)


@dataclass
class Speed:
    mode: str  # eager | compiled | reduce-overhead
    median_us: float
    iqr_us: float
    runs: int
    compile_s: float | None = None  # the first call, compilation included (compiled modes)
    graphs: int | None = None  # graphs dynamo made (compiled modes)
    graph_breaks: int | None = None
    error: str | None = None  # the mode could not run here: why, in one line


@dataclass
class Comparison:
    name: str
    file: str
    device: str
    dynamic_spec: list[dict]  # control flow that reads tensor values, found in the spec: {"kind", "line", "text"}
    runs: list[DynamicRun]
    graph_changes: bool  # the node count differs between the inputs
    capturable: bool
    reason: str | None
    line: str | None
    statement: str | None
    error: str | None
    static_nodes: int | None
    capture_s: float
    baked: BakedBranch | None
    speed: list[Speed] = field(default_factory=list)
    verdict: str | None = None  # eager vs compiled, in words
    threads: int | None = None  # torch threads the timings ran on


def _output_number(out) -> float | None:
    return output_number(out) if isinstance(out, torch.Tensor) and out.is_floating_point() else None


def dynamic_runs(built, cases: list[tuple[str, dict[str, torch.Tensor]]], *, limits=None,
                 progress=None) -> list[DynamicRun]:
    """Capture the dynamic graph once per input case."""
    out = []
    for i, (label, inputs) in enumerate(cases):
        if progress is not None:
            progress("capturing the dynamic graph per input", i / max(1, len(cases)))
        cap = capture_model(built, inputs, limits=limits)
        branches = [{"kind": b.kind, "line": b.loc, "text": b.text, "runs": b.runs, "held": b.held}
                    for b in getattr(cap, "branches", []) if getattr(b, "data_dependent", False)]
        ops = sum(1 for n in cap.graph.nodes if n.kind in ("op", "module", "internal"))
        out.append(DynamicRun(label, len(cap.graph.nodes), ops, branches, _output_number(cap.returned)))
    return out


def scaled_cases(inputs: dict[str, torch.Tensor], scales: list[float]) -> list[tuple[str, dict]]:
    """The default input with its floating tensors scaled by each factor."""
    names = [n for n, t in inputs.items() if t.is_floating_point()]
    cases = []
    for s in scales:
        label = "default input" if s == 1 else f"{', '.join(names) or 'input'} × {s:g}"
        cases.append((label, {n: t * s if t.is_floating_point() else t for n, t in inputs.items()}))
    return cases


def speeds(built, inputs: dict[str, torch.Tensor], *, compile: bool = True, min_run_time: float = 0.2,
           threads: int | None = None, progress=None) -> list[Speed]:
    """Forward latency, eager and compiled (and reduce-overhead on CUDA), without gradients."""
    module = built.module
    args = tuple(inputs[n] for n in built.input_names)
    was_training = module.training
    module.eval()
    results = []
    try:
        with torch.no_grad():
            if progress is not None:
                progress("timing the eager forward")
            t = measure(lambda: module(*args), min_run_time=min_run_time, threads=threads)
            results.append(_speed("eager", t))
            if compile:
                modes = [None] + (["reduce-overhead"] if built.device.type == "cuda" else [])
                for mode in modes:
                    if progress is not None:
                        progress(f"compiling with torch.compile{'' if mode is None else f' ({mode})'} and timing it")
                    results.append(_compiled(module, args, mode, min_run_time, threads))
    finally:
        module.train(was_training)
    return results


def _speed(mode: str, t: Timing, **extra) -> Speed:
    return Speed(mode, t.median_s * 1e6, t.iqr_s * 1e6, t.runs, **extra)


def _compiled(module, args, mode: str | None, min_run_time: float, threads: int | None) -> Speed:
    import logging

    import torch._dynamo as dynamo

    from ..errors import first_line

    name = "compiled" if mode is None else mode
    level = logging.getLogger("torch._dynamo").level
    try:
        torch._logging.set_logs(dynamo=logging.ERROR, inductor=logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dynamo.reset()
            explained = dynamo.explain(module)(*args)
            dynamo.reset()
            compiled = torch.compile(module, mode=mode)
            start = time.perf_counter()
            compiled(*args)
            if args and args[0].device.type == "cuda":
                torch.cuda.synchronize()
            first = time.perf_counter() - start
            t = measure(lambda: compiled(*args), min_run_time=min_run_time, threads=threads)
        return _speed(name, t, compile_s=first, graphs=explained.graph_count,
                      graph_breaks=explained.graph_break_count)
    except Exception as e:  # noqa: BLE001 - a compiler that cannot run here is a finding, said in one line
        return Speed(name, float("nan"), float("nan"), 0, error=f"{type(e).__name__}: {first_line(e)}")
    finally:
        dynamo.reset()
        torch._logging.set_logs(dynamo=level or logging.WARNING)


def verdict(speeds: list[Speed], device: str) -> str | None:
    eager = next((s for s in speeds if s.mode == "eager"), None)
    done = [s for s in speeds if s.mode != "eager" and s.error is None]
    if eager is None or not done:
        return None
    best = min(done, key=lambda s: s.median_us)
    ratio = eager.median_us / best.median_us
    if ratio >= 1.05:
        return (f"{best.mode} is {ratio:.2f}× faster than eager here ({eager.median_us:.1f} → {best.median_us:.1f} µs "
                f"per forward); its compilation took {best.compile_s:.1f} s, paid back after "
                f"{_payback(eager, best)} forwards")
    if ratio <= 0.95:
        why = ("on a CPU, a small model's forward is mostly Python and dispatch overhead, which compiled code "
               "does not remove and its guards add to") if device == "cpu" else \
            "the model is too small for fused kernels to pay for the compiled code's overhead"
        if best.graph_breaks:
            why += (f"; and the forward's data-dependent control flow breaks the compiled graph {best.graph_breaks} "
                    f"time{'s' if best.graph_breaks != 1 else ''} ({best.graphs} graphs, Python between them)")
        return f"{best.mode} is {1 / ratio:.2f}× slower than eager here ({eager.median_us:.1f} → " \
               f"{best.median_us:.1f} µs per forward): {why}"
    return f"{best.mode} and eager are within 5% of each other here ({eager.median_us:.1f} vs {best.median_us:.1f} µs)"


def _payback(eager: Speed, best: Speed) -> str:
    saved = (eager.median_us - best.median_us) * 1e-6
    return f"{best.compile_s / saved:,.0f}" if saved > 0 and best.compile_s else "-"


def compare(built, inputs: dict[str, torch.Tensor], *, cases: list[tuple[str, dict]] | None = None,
            scales: list[float] = (1.0, 10.0, 100.0), compile: bool = True, min_run_time: float = 0.2,
            threads: int | None = None, limits=None, progress=None) -> Comparison:
    """Everything ``cgtool compare`` shows, for a built spec and its default *inputs*."""
    runs = dynamic_runs(built, cases or scaled_cases(inputs, list(scales)), limits=limits, progress=progress)
    if progress is not None:
        progress("capturing the static graph (torch.export)")
    sc = static_capture(built, inputs)
    baked = None if sc.capturable else baked_branch(built, inputs, scale=max(list(scales) or [100.0]))
    spec_dyn = [{"kind": d.kind, "line": d.line, "text": d.text} for d in data_dependence(built.spec)]
    result = Comparison(
        name=built.spec.name, file=built.spec.file, device=str(built.device), dynamic_spec=spec_dyn, runs=runs,
        graph_changes=len({r.nodes for r in runs}) > 1, capturable=sc.capturable, reason=sc.reason, line=sc.line,
        statement=sc.statement, error=sc.error, static_nodes=sc.nodes, capture_s=sc.seconds, baked=baked)
    if built.device.type != "meta":
        result.speed = speeds(built, inputs, compile=compile, min_run_time=min_run_time, threads=threads,
                              progress=progress)
        result.threads = threads or torch.get_num_threads()
        result.verdict = verdict(result.speed, built.device.type)
    return result

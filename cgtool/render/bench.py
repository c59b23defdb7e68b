"""Rendering `cgtool bench`: one row per batch size and mode; JSON."""
from __future__ import annotations

from dataclasses import asdict

from rich.markup import escape
from rich.table import Table

from ..inspect.bench import BenchReport
from .console import out, print_json
from .units import human_bytes, human_count


def _time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def bench_json(r: BenchReport) -> dict:
    """``cases``: one per batch size and mode, with ``batch``, ``pass``, ``mode``, ``median_s``, ``iqr_s``,
    ``runs``, ``blocks``, ``samples_per_s``, ``peak_bytes`` and ``compile_s`` (null when eager)."""
    cases = []
    for c in r.cases:
        d = asdict(c)
        d["pass"] = d.pop("pass_")
        cases.append(d)
    return {"model": r.model, "device": r.device, "machine": r.machine, "torch": r.torch_version, "dtype": r.dtype,
            "threads": r.threads, "batch_dim": r.batch_dim, "inputs": {str(b): s for b, s in r.inputs.items()},
            "min_time_s": r.min_time_s, "memory": r.memory, "dynamic": r.dynamic, "cases": cases}


def render_bench(r: BenchReport, *, json: bool = False) -> None:
    if json:
        print_json(bench_json(r))
        return
    console = out()
    passes = r.cases[0].pass_ if r.cases else "forward"
    mode = "training mode" if passes == "forward+backward" else "evaluation mode, no autograd"
    console.print(f"[bold]{escape(r.model)}[/]: {passes} ({mode}) on {escape(r.device)} — {escape(r.machine)}, "
                  f"{r.threads} thread{'s' if r.threads != 1 else ''}, {r.dtype}, torch {escape(r.torch_version)}")
    console.print(f"[dim]batch sets {escape(r.batch_dim)}[/]")
    compiled = any(c.mode == "compiled" for c in r.cases)
    table = Table("batch", "inputs", *(["mode"] if compiled else []), "median", "IQR", "runs", "samples/s",
                  "peak memory", *(["compile"] if compiled else []),
                  box=None, header_style="dim", pad_edge=False, padding=(0, 2, 0, 0))
    for c in r.cases:
        shapes = ", ".join(f"{n} [{', '.join(map(str, s))}]" for n, s in r.inputs[c.batch].items())
        row = [str(c.batch), escape(shapes)]
        if compiled:
            row.append(c.mode)
        row += [_time(c.median_s), f"± {_time(c.iqr_s / 2)}", str(c.runs), human_count(round(c.samples_per_s)),
                "-" if c.peak_bytes is None else human_bytes(c.peak_bytes)]
        if compiled:
            row.append("-" if c.compile_s is None else _time(c.compile_s))
        table.add_row(*row)
    console.print(table)
    if compiled:
        for line in _verdicts(r):
            console.print(line)
    console.print(f"[dim]median per call over {r.min_time_s:g} s of timed calls after warm-up "
                  "(torch.utils.benchmark); IQR: the spread between quartiles of the blocks, shown as ±half; "
                  f"peak memory: {escape(r.memory)}[/]")


def _verdicts(r: BenchReport) -> list[str]:
    """Per batch size, whether compiling paid off here, in words."""
    lines = []
    for batch in dict.fromkeys(c.batch for c in r.cases):
        eager = next((c for c in r.cases if c.batch == batch and c.mode == "eager"), None)
        comp = next((c for c in r.cases if c.batch == batch and c.mode == "compiled"), None)
        if eager is None or comp is None:
            continue
        ratio = eager.median_s / comp.median_s
        if abs(eager.median_s - comp.median_s) < (eager.iqr_s + comp.iqr_s) / 2:
            lines.append(f"batch {batch}: the difference ({ratio:.2f}×) is within the spread of the timings; "
                         "rerun with a larger --min-time, or on a quieter machine")
        elif ratio >= 1.05:
            saved = eager.median_s - comp.median_s
            calls = comp.compile_s / saved if saved > 0 and comp.compile_s else None
            pays = f"; the compile time is paid back after {human_count(round(calls))} calls" if calls else ""
            lines.append(f"batch {batch}: compiled is {ratio:.2f}× faster{pays}")
        elif ratio <= 1 / 1.05:
            why = ("its forward's control flow reads tensor values (" + ", ".join(d["line"] for d in r.dynamic)
                   + "), where the compiled graph breaks and Python runs" if r.dynamic else
                   "the per-call overhead outweighs what fusing saves at this size")
            lines.append(f"batch {batch}: compiled is {1 / ratio:.2f}× slower — {why}")
        else:
            lines.append(f"batch {batch}: compiled and eager are within 5% of each other")
    return lines

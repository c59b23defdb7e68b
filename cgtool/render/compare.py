"""Rendering of `cgtool compare`: dynamic graphs per input, the static capture, eager vs compiled speed."""
from __future__ import annotations

import math
from dataclasses import asdict

from rich.markup import escape
from rich.table import Table

from ..inspect.compare import Comparison
from .console import out, print_json


def _finite(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x


def compare_json(c: Comparison) -> dict:
    return {
        "name": c.name, "file": c.file, "device": c.device,
        "dynamic": {"data_dependent": c.dynamic_spec, "graph_changes": c.graph_changes,
                    "runs": [asdict(r) for r in c.runs]},
        "static": {"capturable": c.capturable, "reason": c.reason, "line": c.line, "statement": c.statement,
                   "error": c.error, "nodes": c.static_nodes, "capture_s": c.capture_s,
                   "baked_branch": asdict(c.baked) if c.baked else None},
        "speed": [{k: _finite(v) for k, v in asdict(s).items()} for s in c.speed],
        "verdict": c.verdict, "threads": c.threads,
    }


def render_compare(c: Comparison, *, json: bool) -> None:
    if json:
        print_json(compare_json(c))
        return
    console = out()
    console.print(f"[bold]{escape(c.name)}[/] ({escape(c.file)}): dynamic vs static")
    console.print("\n[bold]dynamic graph[/] — built while the forward runs, so it can differ from one input to the next")
    table = Table("input", "values", "operations", "data-dependent conditions (ran / held)", "output",
                  box=None, header_style="dim", pad_edge=False, padding=(0, 2, 0, 0))
    for r in c.runs:
        flow = "; ".join(f"{b['kind']} {escape(b['text'])}: {b['runs']} / {b['held']}" for b in r.branches) or "-"
        table.add_row(escape(r.input), str(r.nodes), str(r.operations), flow,
                      "-" if r.output is None else f"{r.output:.6g}")
    console.print(table)
    if c.graph_changes:
        console.print("[yellow]the graph changes with the data[/]: "
                      + ", ".join(f"{r.nodes} values for {escape(r.input)}" for r in c.runs))
    else:
        console.print("the graph is the same for every input here"
                      + (" (its control flow reads tensor values, so other inputs may differ)" if c.dynamic_spec else ""))
    console.print("\n[bold]static graph[/] — torch.export: defined once from symbolic inputs, then run on data")
    if c.capturable:
        console.print(f"[green]captured[/]: {c.static_nodes} operations in {c.capture_s:.2f} s; one program for "
                      "every input of these shapes")
    else:
        where = f"{escape(c.line)}: " if c.line else ""
        statement = f"`{escape(c.statement)}` " if c.statement else ""
        console.print(f"[yellow]not capturable[/]: {where}{statement}— {escape(c.reason or '')}")
        console.print(f"[dim]torch says: {escape(c.error or '')}[/]")
        if c.baked is not None:
            b = c.baked
            same = "the same answer" if not b.differs else "a different answer"
            console.print(f"a trace taken on {b.traced_on} gives {same} on the input × {b.scale:g}: "
                          f"{b.traced:.6g} where eager gives {b.eager:.6g} (torch.jit.trace baked in the branches "
                          "that input took)")
    if c.speed:
        console.print(f"\n[bold]speed[/] — forward latency on {c.device}, {c.threads} thread"
                      f"{'s' if c.threads != 1 else ''}, no gradients (torch.utils.benchmark: median and "
                      "interquartile range)")
        table = Table("mode", "median", "spread (IQR)", "runs", "first call (compile)", "graphs / breaks",
                      box=None, header_style="dim", pad_edge=False, padding=(0, 2, 0, 0))
        for s in c.speed:
            if s.error:
                table.add_row(s.mode, f"[yellow]could not run[/]: {escape(s.error)}", "", "", "", "")
                continue
            table.add_row(s.mode, f"{s.median_us:.1f} µs", f"{s.iqr_us:.1f} µs", f"{s.runs:,}",
                          "-" if s.compile_s is None else f"{s.compile_s:.1f} s",
                          "-" if s.graphs is None else f"{s.graphs} / {s.graph_breaks}")
        console.print(table)
        if c.verdict:
            console.print(escape(c.verdict))

"""Rendering `cgtool summary`: the per-layer table and its JSON.
"""
from __future__ import annotations
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from ..inspect.summary import Summary
from .console import out
from .units import human_count, human_flops, num, shapes_str
from .params import _table


# --------------------------------------------------------------------------- summary


def summary_json(s: Summary) -> dict:
    return {
        "layers": [
            {
                "name": r.name,
                "type": r.type,
                "input_shapes": r.input_shapes,
                "output_shapes": r.output_shapes,
                "params": r.params,
                "calls": r.calls,
                "flops": r.flops,
                "depth": r.depth,
                "parent": r.parent,
                "trainable_params": r.trainable_params,
                "shared_params": r.shared_params,
                "flops_total": r.flops_total,
                "aliases": list(r.aliases),
                "shapes_vary": r.shapes_vary,
                "folded": r.folded,
            }
            for r in s.layers
        ],
        "total_params": s.total_params,
        "total_flops": s.total_flops,
        "trainable_params": s.trainable_params,
        "non_trainable_params": s.non_trainable_params,
        "flops_by_op": s.flops_by_op,
        "output_shapes": s.output_shapes,
        "model_type": s.model_type,
        "depth": s.depth,
        "device": s.device,
        "outside_flops": s.outside_flops,
        "not_called": list(s.not_called),
        # ops that did work the counter has no formula for: total_flops is then a lower bound
        "uncounted": [{"op": u.op, "calls": u.calls, "modules": list(u.modules)} for u in s.uncounted],
    }


def print_summary(s: Summary, title: str | None = None, console: Console | None = None) -> None:
    console = console or out()
    t = _table(escape(f"Summary of {title or s.model_type}"))
    t.add_column("Layer", overflow="fold")
    t.add_column("Type")
    t.add_column("Input shape", overflow="fold")
    t.add_column("Output shape", overflow="fold")
    t.add_column("Params", justify="right")
    t.add_column("Calls", justify="right")
    t.add_column("FLOPs", justify="right")
    vary = False
    for r in s.layers:
        label = ("  " * r.depth) + (r.name or "(model)")
        if r.aliases:
            label += f" (= {', '.join(r.aliases)})"
        params = num(r.params) if r.params or not r.shared_params else "0"
        if r.shared_params:
            params += f" (+{num(r.shared_params)} shared)"
        mark = " *" if r.shapes_vary else ""
        vary |= r.shapes_vary
        t.add_row(Text(label), r.type, shapes_str(r.input_shapes) + mark, shapes_str(r.output_shapes) + mark,
                  params if (r.params or r.shared_params) else "-", str(r.calls), human_flops(r.flops, "") if r.flops else "-")
    console.print(t)
    console.print()
    console.print(f"Total parameters:  {num(s.total_params)} ({human_count(s.total_params)}); "
                  f"trainable {num(s.trainable_params)}, non-trainable {num(s.non_trainable_params)}")
    console.print(f"Total FLOPs:       {num(s.total_flops)} ({human_flops(s.total_flops)}), by torch.utils.flop_counter"
                  + (" - a lower bound" if s.uncounted else ""))
    if s.uncounted:
        missed = ", ".join(f"{u.op} in {', '.join(m or '(model)' for m in u.modules)} "
                           f"({u.calls} call{'s' if u.calls != 1 else ''})" for u in s.uncounted)
        console.print(Text(f"  not counted (no FLOP formula for these ops): {missed}"))
    if s.flops_by_op:
        ops = ", ".join(f"{op.removeprefix('aten.')} {human_flops(n, '')}" for op, n in sorted(s.flops_by_op.items()))
        console.print(Text(f"  by op: {ops}"))
    console.print(f"Output shape:      {shapes_str(s.output_shapes)}")
    console.print(Text("FLOPs per row: ops run in that module's own forward (the model row holds functional ops "
                       "of its forward body); a row with several calls sums them."
                       + (" Rows below --depth are folded into their ancestor." if s.depth is not None else ""),
                       style="dim"))
    if vary:
        console.print(Text("* shapes of the first call; later calls had other shapes", style="dim"))
    if s.outside_flops:
        console.print(Text(f"{num(s.outside_flops)} FLOPs ran outside the model's forward", style="dim"))
    if s.not_called:
        console.print(Text(f"Not called in this forward (parameters counted at their parent): {', '.join(s.not_called)}",
                           style="dim"))



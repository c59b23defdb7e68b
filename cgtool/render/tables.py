"""Tables for `params`, `summary` and `run`: rich text for people, JSON and CSV for scripts.

The builders (``*_json``, ``params_csv``) return plain data/text; the ``print_*`` functions
write to the stdout console. Counts in tables are exact (thousands separated); human units
(KiB, M, GFLOPs) appear beside the totals.
"""
from __future__ import annotations

import csv
import io
import math

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..params import ParamTable
from ..summary import Summary
from ..tensors import SMALL_NUMEL, OutputInfo, RunResult
from .console import out

# --------------------------------------------------------------------------- units


def human_bytes(n: int) -> str:
    """1.72 KiB, 12.55 GiB: binary units, as memory is counted."""
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if n < 1024 or unit == "PiB":
            return f"{n:.2f} {unit}"
    raise AssertionError  # pragma: no cover


def human_count(n: int | float, units=("", "K", "M", "B", "T")) -> str:
    """440, 269.72 K, 6.74 B: decimal units with three significant figures or more."""
    if abs(n) < 1000:
        return f"{n:g}" if isinstance(n, float) else str(n)
    i = min(int(math.log10(abs(n)) // 3), len(units) - 1)
    return f"{n / 1000 ** i:.2f} {units[i]}"


FLOP_UNITS = ("", "K", "M", "G", "T", "P")


def human_flops(n: int, unit: str = "FLOPs") -> str:
    """4.80 K, 78.92 G: SI prefixes, as FLOP counts are quoted (G, not B)."""
    text = human_count(n, FLOP_UNITS)
    return f"{text}{unit}" if n >= 1000 else f"{text} {unit}".rstrip()


def shape_str(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def shapes_str(shapes) -> str:
    return ", ".join(shape_str(s) for s in shapes) if shapes else "-"


def num(n: int) -> str:
    return f"{n:,}"


def _table(title: str | None = None) -> Table:
    return Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False, show_edge=False)


# --------------------------------------------------------------------------- params


def params_json(table: ParamTable) -> dict:
    return {
        "parameters": [
            {
                "name": r.name,
                "shape": list(r.shape),
                "numel": r.numel,
                "trainable": r.trainable,
                "dtype": r.dtype,
                "shared_with": list(r.shared_with),
                "device": r.device,
                "bytes": r.bytes,
                "module_type": r.module_type,
            }
            for r in table.parameters
        ],
        "buffers": [
            {
                "name": b.name,
                "shape": list(b.shape),
                "numel": b.numel,
                "dtype": b.dtype,
                "device": b.device,
                "persistent": b.persistent,
                "shared_with": list(b.shared_with),
                "bytes": b.bytes,
            }
            for b in table.buffers
        ],
        "total": table.total,
        "trainable": table.trainable,
        "non_trainable": table.non_trainable,
        "bytes": table.bytes,
        "buffer_total": table.buffer_total,
        "buffer_bytes": table.buffer_bytes,
    }


CSV_COLUMNS = ("kind", "name", "shape", "numel", "trainable", "dtype", "device", "shared_with", "bytes")


def params_csv(table: ParamTable) -> str:
    """One line per parameter, then one per buffer (kind column); shared names joined by ';'."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in table.parameters:
        w.writerow(["parameter", r.name, shape_str(r.shape), r.numel, str(r.trainable).lower(), r.dtype, r.device,
                    ";".join(r.shared_with), r.bytes])
    for b in table.buffers:
        w.writerow(["buffer", b.name, shape_str(b.shape), b.numel, "", b.dtype, b.device, ";".join(b.shared_with), b.bytes])
    return buf.getvalue()


def print_params(table: ParamTable, title: str | None = None, console: Console | None = None) -> None:
    console = console or out()
    t = _table(escape(f"Parameters of {title}") if title else "Parameters")
    t.add_column("Name", overflow="fold")
    t.add_column("Shape")
    t.add_column("Count", justify="right")
    t.add_column("Trainable")
    t.add_column("DType")
    t.add_column("Device")
    t.add_column("Shared with", overflow="fold")
    for r in table.parameters:
        t.add_row(Text(r.name), shape_str(r.shape), num(r.numel), "yes" if r.trainable else "no", r.dtype, r.device,
                  Text(", ".join(r.shared_with) or "-"))
    if not table.parameters:
        t.add_row("(none)", "", "", "", "", "", "")
    console.print(t)

    if table.buffers:
        console.print()
        b = _table("Buffers and constants (not parameters)")
        b.add_column("Name", overflow="fold")
        b.add_column("Shape")
        b.add_column("Count", justify="right")
        b.add_column("DType")
        b.add_column("Device")
        b.add_column("In state_dict")
        b.add_column("Shared with", overflow="fold")
        for r in table.buffers:
            b.add_row(Text(r.name), shape_str(r.shape), num(r.numel), r.dtype, r.device, "yes" if r.persistent else "no",
                      Text(", ".join(r.shared_with) or "-"))
        console.print(b)

    console.print()
    console.print(f"Total parameters:  {num(table.total)} ({human_count(table.total)})")
    console.print(f"  trainable:       {num(table.trainable)}")
    console.print(f"  non-trainable:   {num(table.non_trainable)}")
    console.print(f"Parameter memory:  {human_bytes(table.bytes)}")
    if table.buffers:
        console.print(f"Buffers:           {num(table.buffer_total)} values, {human_bytes(table.buffer_bytes)} (not counted above)")
    if table.naive_total != table.total:
        shared = sum(1 for r in table.parameters if r.shared_with)
        console.print(f"Note: {shared} tensor(s) have several names; each is counted once. "
                      f"Counting every name would give {num(table.naive_total)}.")


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
    console.print(f"Total FLOPs:       {num(s.total_flops)} ({human_flops(s.total_flops)}), by torch.utils.flop_counter")
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


# --------------------------------------------------------------------------- run


def _stats_json(o: OutputInfo):
    if o.stats is None:
        return None
    st = o.stats
    return {"min": st.min, "max": st.max, "mean": st.mean, "std": st.std, "nan": st.nan, "inf": st.inf}


def _output_json(o: OutputInfo) -> dict:
    return {
        "name": o.name,
        "shape": list(o.shape),
        "dtype": o.dtype,
        "device": o.device,
        "numel": o.numel,
        "values": o.values,
        "stats": _stats_json(o),
    }


def run_json(result: RunResult, saved: str | None = None) -> dict:
    """``outputs``: one entry per output tensor. With a single output its ``shape``, ``dtype``,
    ``values`` (null when over SMALL_NUMEL elements, or on meta) and ``stats`` are also at the top."""
    data: dict = {}
    if len(result.outputs) == 1:
        data.update(_output_json(result.outputs[0]))
        del data["name"]
    data["outputs"] = [_output_json(o) for o in result.outputs]
    data["values_limit"] = SMALL_NUMEL
    data["saved"] = saved
    return data


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}"
    if isinstance(v, complex):
        return f"{v:.4g}"
    return str(v)


def _nested(values, indent: int = 0) -> str:
    """[[1, 2],\n [3, 4]]: nested lists with one innermost row per line."""
    if not isinstance(values, list):
        return _fmt(values)
    if not values or not isinstance(values[0], list):
        return "[" + ", ".join(_fmt(v) for v in values) + "]"
    sep = ",\n" + " " * (indent + 1)
    return "[" + sep.join(_nested(v, indent + 1) for v in values) + "]"


def print_run(result: RunResult, saved: str | None = None, console: Console | None = None) -> None:
    console = console or out()
    t = _table("Output" if len(result.outputs) == 1 else f"Outputs ({len(result.outputs)})")
    t.add_column("Name")
    t.add_column("Shape")
    t.add_column("DType")
    t.add_column("Device")
    for col in ("Min", "Max", "Mean", "Std"):
        t.add_column(col, justify="right")
    for o in result.outputs:
        st = o.stats
        cells = ["-"] * 4 if st is None else [_fmt(st.min), _fmt(st.max), _fmt(st.mean), _fmt(st.std) if st.std is not None else "-"]
        t.add_row(Text(o.name), shape_str(o.shape), o.dtype, o.device, *cells)
    console.print(t)
    for o in result.outputs:
        head = Text(f"{o.name}: ", style="bold")
        if o.preview is None:
            console.print(head + Text("no values on the meta device (shape and dtype only)", style="dim"))
            continue
        if o.values is not None and o.numel == len(o.preview):  # small: whole, in its shape
            console.print(head + Text(_nested(o.values, indent=len(o.name) + 2)))
        else:
            shown = ", ".join(_fmt(v) for v in o.preview)
            console.print(head + Text(f"[{shown}, ... ({num(o.numel)} values)]"))
        if o.stats is not None and (o.stats.nan or o.stats.inf):
            console.print(Text(f"  {o.stats.nan} NaN, {o.stats.inf} Inf (stats are over the finite values)", style="yellow"))
    if saved:
        console.print(Text(f"saved to {saved}", style="dim"))

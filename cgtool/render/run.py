"""Rendering `cgtool run`: outputs with shapes, statistics and previews; JSON.
"""
from __future__ import annotations
import math
from rich.console import Console
from rich.text import Text
from ..inspect.run import OutputInfo, RunResult
from ..inspect.tensorfiles import SMALL_NUMEL
from .console import out
from .params import _table
from .units import num, shape_str


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

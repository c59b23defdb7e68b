"""Rendering `cgtool params`: a rich table for people, JSON and CSV for scripts.
"""
from __future__ import annotations
import csv
import io
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from ..inspect.params import ParamTable
from .console import out
from .units import human_bytes, human_count, num, shape_str


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



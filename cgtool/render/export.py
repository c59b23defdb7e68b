"""Rendering `cgtool export`: the python source on stdout, or what was written; JSON."""
from __future__ import annotations

import sys

from rich.markup import escape

from ..export import ExportResult
from .console import out, print_json
from .units import human_bytes


def export_json(result: ExportResult) -> dict:
    """``to``, ``model``, ``output`` (the file written, or null); python: ``classes`` and ``code``; pt2/onnx:
    ``bytes``, ``nodes``, ``capture_s``, and for onnx ``checked`` and ``max_abs_diff`` (null: not computed)."""
    data = {"to": result.to, "model": result.model, "output": result.output}
    if result.to == "python":
        data.update(classes=result.classes, code=result.code)
    else:
        p = result.program
        data.update(bytes=p.bytes, nodes=p.nodes, capture_s=p.capture_s)
        if result.to == "onnx":
            data.update(checked=p.checked, max_abs_diff=p.max_abs_diff)
    return data


def render_export(result: ExportResult, *, json: bool = False) -> None:
    if json:
        print_json(export_json(result))
        return
    if result.to == "python" and result.output is None:
        sys.stdout.write(result.code)  # the source itself: nothing around it, so `> model.py` works
        sys.stdout.flush()
        return
    console = out()
    if result.to == "python":
        console.print(f"wrote {escape(result.output)}: {len(result.classes)} class"
                      f"{'es' if len(result.classes) != 1 else ''} ({escape(', '.join(result.classes))}); "
                      f"the model is {escape(result.classes[-1])}(), which loads `cgtool build --save` weights")
        return
    p = result.program
    what = "ONNX graph nodes" if result.to == "onnx" else "operations"
    console.print(f"wrote {escape(result.output)} ({human_bytes(p.bytes)}): {escape(result.model)} captured by "
                  f"torch.export in {p.capture_s:.2f} s, {p.nodes} {what}")
    if result.to == "onnx":
        if p.max_abs_diff is not None:
            console.print(f"checked: {escape(p.checked)}; largest difference {p.max_abs_diff:.3g}")
        else:
            console.print(f"checked: {escape(p.checked)} (ONNX's reference evaluator cannot run this model: outputs "
                          "not compared)")

"""A spec's captured program as a file: ``torch.export``'s ``.pt2``, or ONNX.

Both start from the static capture (:func:`cgtool.graph.static.static_capture`), so a spec that cannot be
captured (FancyMLP's ``while norm(x) > 1``) is refused once, in the same words as ``cgtool graph --static``:
the statement, its spec line and why. ONNX needs the optional ``onnx`` package (and ``onnxscript``, which
torch's exporter uses); the written file is checked with ``onnx.checker``, and its outputs, computed by
ONNX's own reference evaluator, compared with the eager model's where that evaluator can run it.
"""
from __future__ import annotations

import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass

import torch

from ..errors import CgError
from ..render.output import write_atomically


@dataclass
class ProgramFile:
    """What ``cgtool export --to pt2|onnx`` wrote."""

    path: str
    bytes: int
    nodes: int  # operations in the captured program (pt2) or ONNX graph nodes (onnx)
    capture_s: float  # seconds torch.export took
    checked: str | None = None  # onnx: what was checked ("onnx.checker", "... and outputs equal eager")
    max_abs_diff: float | None = None  # onnx: the largest difference from eager over the outputs


def capture_or_refuse(built, inputs: dict, what: str):
    """The static capture of *built*, or a CgError at the spec line that prevents it."""
    from ..graph.static import static_capture

    sc = static_capture(built, inputs)
    if not sc.capturable:
        stmt = f" (`{sc.statement.split('#')[0].strip()}`)" if sc.statement else ""
        raise CgError(f"cannot export to {what}: {sc.reason}{stmt}", sc.line or built.spec.file,
                      hint=f"torch.export says: {sc.error}; export --to python keeps the control flow"
                      if sc.error else "export --to python keeps the control flow")
    return sc


def save_pt2(built, inputs: dict, path: str) -> ProgramFile:
    """``torch.export.save`` of the captured program, written atomically to *path*."""
    sc = capture_or_refuse(built, inputs, "pt2")
    buf = io.BytesIO()
    torch.export.save(sc.program, buf)
    data = buf.getvalue()
    write_atomically(path, data, "--output")
    return ProgramFile(path, len(data), sc.nodes or 0, sc.seconds)


def onnx_available() -> str | None:
    """None when ONNX export can run here; else what is missing, in words."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        return " and ".join(missing) + (" is" if len(missing) == 1 else " are") + " not installed"
    return None


def save_onnx(built, inputs: dict, path: str, *, verify: bool = True) -> ProgramFile:
    """The captured program through ``torch.onnx.export`` (the dynamo exporter), checked, written atomically."""
    missing = onnx_available()
    if missing:
        raise CgError(f"cannot export to onnx: {missing}", "--to onnx",
                      hint="pip install 'cgtool[onnx]' (onnx and onnxscript)")
    sc = capture_or_refuse(built, inputs, "onnx")
    import onnx

    with warnings.catch_warnings(), _quiet("torch.onnx", "onnxscript"):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(sc.program, dynamo=True, verbose=False)
        except Exception as e:  # noqa: BLE001 - an operator ONNX has no conversion for, in torch's words
            from ..errors import first_line

            raise CgError(f"torch cannot convert this model to ONNX: {first_line(e)}", built.spec.file,
                          hint="export --to pt2 or --to python instead") from None
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise CgError(f"no such folder: {directory}", "--output", hint="create the folder first")
        with tempfile.TemporaryDirectory(prefix="cgtool-onnx-") as tmp:  # torch saves by path; the file is
            # then written beside its name atomically, so a reader never sees half of it
            scratch = os.path.join(tmp, "model.onnx")
            program.save(scratch)
            with open(scratch, "rb") as f:
                data = f.read()
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    checked, diff = "onnx.checker", None
    if verify:
        diff = _reference_diff(model, built, inputs)
        if diff is not None:
            checked = "onnx.checker; outputs by ONNX's reference evaluator against eager"
    write_atomically(path, data, "--output")
    return ProgramFile(path, len(data), len(model.graph.node), sc.seconds, checked, diff)


def _reference_diff(model, built, inputs: dict) -> float | None:
    """Largest |ONNX - eager| over the outputs, by ``onnx.reference`` (None where it cannot run the model)."""
    try:
        from onnx.reference import ReferenceEvaluator

        feeds = {i.name: inputs[n].detach().cpu().numpy() for i, n in zip(model.graph.input, built.input_names)}
        got = ReferenceEvaluator(model).run(None, feeds)
    except Exception:  # noqa: BLE001 - the reference evaluator lacks some operators: no numeric check then
        return None
    was = built.module.training
    built.module.eval()
    try:
        with torch.no_grad():
            out = built.module(*[inputs[n] for n in built.input_names])
    finally:
        built.module.train(was)
    want = [t for t in (out if isinstance(out, (list, tuple)) else [out]) if isinstance(t, torch.Tensor)]
    if len(want) != len(got):
        return None
    return max((float((torch.as_tensor(g).double() - w.detach().cpu().double()).abs().max()) if w.numel() else 0.0)
               for g, w in zip(got, want))


class _quiet:
    """Torch's exporter logs warnings (``torchvision is not installed``) that say nothing about the model."""

    def __init__(self, *names: str):
        self.loggers = [logging.getLogger(n) for n in names]
        self.levels: list[int] = []

    def __enter__(self):
        self.levels = [lg.level for lg in self.loggers]
        for lg in self.loggers:
            lg.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        for lg, level in zip(self.loggers, self.levels):
            lg.setLevel(level)
        return False

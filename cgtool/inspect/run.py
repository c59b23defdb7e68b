"""Running a built model (weights, train/eval mode, a no-grad forward, saving the output) and
what the forward produced: output shapes, dtypes, statistics and previews.
"""
from __future__ import annotations
import dataclasses
import math
import os
from dataclasses import dataclass
import torch
from ..errors import CgError
from .tensorfiles import FULL_PREVIEW, SMALL_NUMEL, apply_weights, dtype_name, flatten_outputs, load_state_dict, save_output


# --------------------------------------------------------------------------- what a run produced


@dataclass(frozen=True)
class TensorStats:
    """Summary statistics over the finite values; NaN/Inf are counted apart."""

    min: float | int | bool
    max: float | int | bool
    mean: float
    std: float | None  # None for a single element
    nan: int
    inf: int


@dataclass(frozen=True)
class OutputInfo:
    """One output tensor of a run: its shape, dtype, device and (when it has values) numbers."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    device: str
    numel: int
    values: object | None  # nested lists (``tensor.tolist()``) when numel <= SMALL_NUMEL and not meta
    preview: list | None  # the first few values, flattened, when it has values
    stats: TensorStats | None  # None on meta and for empty tensors
    tensor: torch.Tensor  # the tensor itself, for saving and previews; not rendered


@dataclass(frozen=True)
class RunResult:
    outputs: list[OutputInfo]
    device: str
    saved: str | None = None  # the file the outputs were written to (``--output``)
    warnings: tuple[str, ...] = ()  # what the user should know, e.g. weights checked but not loaded on meta

    def tensors(self) -> dict[str, torch.Tensor]:
        return {o.name: o.tensor for o in self.outputs}

    def saved_object(self):
        """What ``--output`` writes: the tensor itself, or a dict for several outputs."""
        if len(self.outputs) == 1 and self.outputs[0].name == "output":
            return self.outputs[0].tensor
        return self.tensors()


def tensor_stats(t: torch.Tensor) -> TensorStats | None:
    if t.is_meta or t.numel() == 0:
        return None
    t = t.detach()
    if t.is_complex():
        t = t.abs()
    if t.dtype == torch.bool:
        n_true = int(t.sum())
        return TensorStats(min=bool(t.all()), max=bool(t.any()), mean=n_true / t.numel(), std=None, nan=0, inf=0)
    if t.dtype.is_floating_point:
        f = t.double()
        finite = torch.isfinite(f)
        nan = int(torch.isnan(f).sum())
        inf = int(torch.isinf(f).sum())
        vals = f[finite]
        if vals.numel() == 0:
            return TensorStats(min=math.nan, max=math.nan, mean=math.nan, std=None, nan=nan, inf=inf)
        std = float(vals.std()) if vals.numel() > 1 else None
        return TensorStats(min=float(vals.min()), max=float(vals.max()), mean=float(vals.mean()), std=std, nan=nan, inf=inf)
    f = t.double()
    return TensorStats(min=int(t.min()), max=int(t.max()), mean=float(f.mean()),
                       std=float(f.std()) if t.numel() > 1 else None, nan=0, inf=0)


def output_info(name: str, t: torch.Tensor, preview: int = 8) -> OutputInfo:
    has_values = not t.is_meta
    flat = t.detach().reshape(-1)
    return OutputInfo(
        name=name,
        shape=tuple(t.shape),
        dtype=dtype_name(t.dtype),
        device=str(t.device),
        numel=t.numel(),
        values=t.detach().cpu().tolist() if has_values and t.numel() <= SMALL_NUMEL else None,
        preview=flat[: t.numel() if t.numel() <= FULL_PREVIEW else preview].cpu().tolist() if has_values else None,
        stats=tensor_stats(t),
        tensor=t.detach(),
    )


def run_result(result) -> RunResult:
    """Describe whatever a forward returned (a tensor, or a tuple/list/dict of them)."""
    flat = flatten_outputs(result)
    if not flat:
        raise CgError("the forward returned no tensor", hint="end the forward with `return` of a tensor")
    outputs = [output_info(k, v) for k, v in flat.items()]
    devices = {o.device for o in outputs}
    return RunResult(outputs=outputs, device=devices.pop() if len(devices) == 1 else ",".join(sorted(devices)))


# --------------------------------------------------------------------------- running a built model


def run_model(built, inputs: dict, *, weights=None, train: bool = False, output=None) -> RunResult:
    """One forward pass of a built spec (:class:`cgtool.build.model.Built`) on named *inputs*.

    *weights*: a state_dict file (``build --save``) loaded first, names and shapes checked exactly;
    on the meta device they are checked only, and a warning says so. The module runs in evaluation
    mode unless *train*, under ``torch.no_grad()``. *output*: save the outputs there (``.pt``/``.npy``,
    atomically); the result's ``saved`` names the file.
    """
    warnings = []
    if weights is not None:
        weights = os.fspath(weights)
        if not apply_weights(built.module, load_state_dict(weights), place=weights):
            warnings.append(f"{weights}: names and shapes match the model; on the meta device there are no values "
                            "to load")
    built.module.train(train)  # our own freshly built module: evaluation mode unless asked
    with torch.no_grad():
        result = run_result(built.forward(inputs))
    saved = save_output(result.saved_object(), os.fspath(output)) if output else None
    return dataclasses.replace(result, saved=saved, warnings=tuple(warnings))

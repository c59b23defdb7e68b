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


CHUNK = 1 << 22  # elements: statistics of larger outputs are taken a block at a time


def _blocks(t: torch.Tensor):
    """*t* as views of at most about CHUNK elements each (an expanded output is never made real whole)."""
    if t.numel() <= CHUNK or t.dim() == 0:
        yield t
        return
    rows = CHUNK // max(1, t.numel() // t.shape[0])
    if rows <= 1:  # one row is a block or more: each row on its own, one dimension down
        for i in range(t.shape[0]):
            yield from _blocks(t[i])
        return
    for i in range(0, t.shape[0], rows):
        yield from _blocks(t[i:i + rows])


def _collapse(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """An expanded view's stored values and how often each repeats: (x.expand(k, n), k) -> (x[:1], k)."""
    k = 1
    for d in range(t.dim()):
        if t.stride(d) == 0 and t.shape[d] > 1:
            k *= t.shape[d]
            t = t.narrow(d, 0, 1)
    return t, k


def _large_stats(t: torch.Tensor, repeats: int = 1) -> TensorStats:
    """Statistics of a large output in one pass over blocks: memory bounded by the block, not the output.
    Each value counts *repeats* times (the stored values of an expanded view)."""
    n = nan = inf = 0
    total = squares = 0.0
    lo, hi = math.inf, -math.inf
    for block in _blocks(t):
        f = block.double()
        finite = torch.isfinite(f)
        if f.is_floating_point():
            nan += int(torch.isnan(f).sum())
            inf += int(torch.isinf(f).sum())
        vals = f[finite]
        if vals.numel():
            n += vals.numel()
            total += float(vals.sum())
            squares += float((vals * vals).sum())
            lo, hi = min(lo, float(vals.min())), max(hi, float(vals.max()))
    n, nan, inf, total, squares = n * repeats, nan * repeats, inf * repeats, total * repeats, squares * repeats
    if n == 0:
        return TensorStats(min=math.nan, max=math.nan, mean=math.nan, std=None, nan=nan, inf=inf)
    mean = total / n
    std = math.sqrt(max(0.0, (squares - n * mean * mean) / (n - 1))) if n > 1 else None
    if not t.dtype.is_floating_point:
        lo, hi = int(lo), int(hi)
    return TensorStats(min=lo, max=hi, mean=mean, std=std, nan=nan, inf=inf)


def tensor_stats(t: torch.Tensor) -> TensorStats | None:
    if t.is_meta or t.numel() == 0:
        return None
    t = t.detach()
    if t.numel() > CHUNK and not t.is_complex() and t.dtype != torch.bool:
        return _large_stats(*_collapse(t))
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
    # the first values without flattening the whole output (reshape copies an expanded view whole)
    flat = t.detach().reshape(-1) if t.numel() <= FULL_PREVIEW or t.is_contiguous() else _first_values(t, preview)
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


def _first_values(t: torch.Tensor, n: int) -> torch.Tensor:
    """The first *n* values of *t* in row-major order, without making the whole of it."""
    out, index = [], [0] * t.dim()
    for _ in range(min(n, t.numel())):
        out.append(t[tuple(index)])
        for d in range(t.dim() - 1, -1, -1):
            index[d] += 1
            if index[d] < t.shape[d]:
                break
            index[d] = 0
    return torch.stack(out) if out else t.new_zeros(0)


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

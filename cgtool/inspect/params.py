"""The parameter table of any ``nn.Module``: one row per distinct tensor, buffers apart, exact totals.

A tensor is identified by the object itself, as ``set(model.parameters())`` does: a module
registered under two names, or two layers tied to one weight (``b.weight = a.weight``), give
one tensor with several qualified names. The table has one row per distinct tensor, named by
its first qualified name in registration order, with the other names in ``shared_with``, so
that the rows add up to the total. (torchinfo 1.8.0 adds a tied weight once per module that
holds it: 840 for two ``Linear(20, 20)`` sharing one weight, where the truth is 440.)

Nothing here reads a tensor's values, so a model on the meta device is tabulated without
allocating memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import CgError
from .tensorfiles import dtype_name


@dataclass(frozen=True)
class ParamRow:
    name: str  # the first qualified name (registration order), as in ``state_dict``
    shape: tuple[int, ...]
    numel: int
    trainable: bool  # requires_grad
    dtype: str
    device: str
    shared_with: tuple[str, ...]  # the other qualified names of the same tensor
    bytes: int
    module_type: str  # type of the module that holds it under `name`


@dataclass(frozen=True)
class BufferRow:
    name: str
    shape: tuple[int, ...]
    numel: int
    dtype: str
    device: str
    persistent: bool  # saved in state_dict
    shared_with: tuple[str, ...]
    bytes: int


@dataclass(frozen=True)
class ParamTable:
    parameters: list[ParamRow]
    buffers: list[BufferRow]
    total: int  # each distinct parameter tensor once
    trainable: int
    non_trainable: int
    bytes: int  # parameters only
    buffer_total: int
    buffer_bytes: int
    naive_total: int  # numel summed over every qualified name, aliases included: what a naive count says


def _owner(module: nn.Module, qualname: str) -> nn.Module:
    path, _, _ = qualname.rpartition(".")
    return module.get_submodule(path) if path else module


def _group(named) -> list[tuple[str, torch.Tensor, tuple[str, ...]]]:
    """(first name, tensor, other names) for each distinct tensor, in first-seen order."""
    order: dict[int, list] = {}
    for name, t in named:
        entry = order.get(id(t))
        if entry is None:
            order[id(t)] = [name, t, []]
        else:
            entry[2].append(name)
    return [(name, t, tuple(others)) for name, t, others in order.values()]


def _size(name: str, t: torch.Tensor) -> tuple[tuple[int, ...], int, int]:
    if isinstance(t, nn.parameter.UninitializedTensorMixin):
        raise CgError(
            f"{name} is not initialized yet (a lazy module): its shape is unknown until a forward runs",
            name,
            hint="give the layer's input size explicitly (Linear(784, 256) rather than LazyLinear(256))",
        )
    numel = t.numel()
    return tuple(t.shape), numel, numel * t.element_size()


def param_table(module: nn.Module, device: str | None = None) -> ParamTable:
    """Tabulate *module*'s parameters and buffers. Reads shapes and dtypes only, never values.

    *device*: the device to report (the model was built on meta only to be counted, for that device)."""
    params: list[ParamRow] = []
    named = list(module.named_parameters(remove_duplicate=False))
    for name, p, others in _group(named):
        shape, numel, nbytes = _size(name, p)
        params.append(ParamRow(
            name=name, shape=shape, numel=numel, trainable=bool(p.requires_grad), dtype=dtype_name(p.dtype),
            device=device or str(p.device), shared_with=others, bytes=nbytes, module_type=type(_owner(module, name)).__name__,
        ))

    buffers: list[BufferRow] = []
    for name, b, others in _group(module.named_buffers(remove_duplicate=False)):
        shape, numel, nbytes = _size(name, b)
        owner = _owner(module, name)
        persistent = name.rpartition(".")[2] not in getattr(owner, "_non_persistent_buffers_set", ())
        buffers.append(BufferRow(
            name=name, shape=shape, numel=numel, dtype=dtype_name(b.dtype), device=device or str(b.device),
            persistent=persistent, shared_with=others, bytes=nbytes,
        ))

    total = sum(r.numel for r in params)
    trainable = sum(r.numel for r in params if r.trainable)
    return ParamTable(
        parameters=params,
        buffers=buffers,
        total=total,
        trainable=trainable,
        non_trainable=total - trainable,
        bytes=sum(r.bytes for r in params),
        buffer_total=sum(r.numel for r in buffers),
        buffer_bytes=sum(r.bytes for r in buffers),
        naive_total=sum(r.numel * (1 + len(r.shared_with)) for r in params),
    )

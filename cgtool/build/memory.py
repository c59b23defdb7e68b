"""The memory budget: parameters counted on meta before anything is allocated; caps and sizes.
"""
from __future__ import annotations
import os
import torch
from torch import nn
from ..errors import CgError


def _available_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def default_max_bytes() -> int:
    env = os.environ.get("CGTOOL_MAX_MEMORY")
    if env:
        return parse_bytes(env)
    return _available_memory() // 2


def parse_bytes(text: str) -> int:
    units = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "G": 1 << 30, "GB": 1 << 30,
             "T": 1 << 40, "TB": 1 << 40, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}
    s = str(text).strip().upper()
    num = s.rstrip("KMGTIB")
    unit = s[len(num):]
    try:
        value = float(num) * units[unit]
    except (ValueError, KeyError):
        raise CgError(f"cannot read memory size {text!r}", "--max-memory", hint="for example 8GB or 512MB") from None
    if not 0 < value < 1 << 60:  # inf, nan, zero or negative, or past any machine (an exabyte)
        raise CgError(f"memory size {text!r} is not a positive size a machine can have", "--max-memory",
                      hint="for example 8GB or 512MB")
    return int(value)


def count_tensors(module: nn.Module, dtype: torch.dtype | None = None) -> tuple[int, int]:
    """(parameters, bytes of parameters and buffers), each distinct tensor once (tied weights count once)."""
    seen, params, nbytes = set(), 0, 0
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        params += p.numel()
        size = (torch.empty((), dtype=dtype).element_size() if dtype is not None and p.is_floating_point()
                else p.element_size())
        nbytes += p.numel() * size
    for b in module.buffers():
        if id(b) in seen:
            continue
        seen.add(id(b))
        nbytes += b.numel() * b.element_size()
    return params, nbytes




def input_bytes(declared: dict, given: dict, dtype: torch.dtype | None = None) -> dict[str, int]:
    """Bytes of each input tensor a run allocates: given files as they are, declared shapes in the
    dtype they will have (a floating input takes the model's --dtype)."""
    sizes = {}
    for name, spec in declared.items():
        if name in given:
            t = given[name]
            size = torch.empty((), dtype=dtype).element_size() if dtype is not None and t.is_floating_point() \
                else t.element_size()
            sizes[name] = t.numel() * size
            continue
        numel = 1
        for d in spec.shape:
            numel *= int(d)
        kind = dtype if dtype is not None and spec.dtype.is_floating_point else spec.dtype
        sizes[name] = numel * torch.empty((), dtype=kind).element_size()
    return sizes

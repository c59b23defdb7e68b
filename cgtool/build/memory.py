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


_INITS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_", "xavier_uniform_",
          "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_")


class no_init_on_meta:
    """While modules are made on the meta device, ``torch.nn.init`` does nothing: meta tensors have no values to
    initialise, and on meta ``normal_`` and friends run through torch's reference implementations, which import
    ``torch._dynamo`` (1.4 s of ``cgtool build`` on GPT-2 small, for nothing). Real tensors are untouched."""

    def __enter__(self):
        import torch.nn.init as init

        self.saved = {}
        for name in _INITS:
            fn = getattr(init, name, None)
            if fn is None:
                continue
            self.saved[name] = fn

            def skip(tensor, *args, _fn=fn, **kwargs):
                if isinstance(tensor, torch.Tensor) and tensor.device.type == "meta":
                    return tensor
                return _fn(tensor, *args, **kwargs)

            setattr(init, name, skip)
        return self

    def __exit__(self, *exc):
        import torch.nn.init as init

        for name, fn in self.saved.items():
            setattr(init, name, fn)
        return False


_DROPOUTS = ("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout")


class no_dropout_on_meta:
    """While the shape check runs on meta tensors, dropout passes its input through: its shape is its input's, and
    dropout in training mode on meta runs torch's reference implementation, which imports ``torch._dynamo``
    (1.4 s of every ``cgtool build`` of a model with dropout). Real tensors are untouched."""

    def __enter__(self):
        import torch.nn.functional as F

        self.saved = {}
        for name in _DROPOUTS:
            fn = getattr(F, name, None)
            if fn is None:
                continue
            self.saved[name] = fn

            def skip(input, *args, _fn=fn, **kwargs):
                if isinstance(input, torch.Tensor) and input.device.type == "meta":
                    return input.clone() if not kwargs.get("inplace") else input
                return _fn(input, *args, **kwargs)

            setattr(F, name, skip)
        return self

    def __exit__(self, *exc):
        import torch.nn.functional as F

        for name, fn in self.saved.items():
            setattr(F, name, fn)
        return False

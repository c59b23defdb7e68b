"""Model inputs: the spec's declared shapes, CLI overrides (`x=2,784`, `x=file.npy`), example tensors."""
from __future__ import annotations

import dataclasses
import re

import torch

from ..errors import CgError, did_you_mean
from ..spec import InputSpec, Spec

_SHAPE = re.compile(r"^\[?\s*\d+(\s*[,x×]\s*\d+)*\s*\]?$|^\[\s*\]$|^$")


def parse_shape(text: str, place: str) -> tuple[int, ...]:
    t = text.strip()
    if not _SHAPE.match(t):
        raise CgError(f"cannot read shape {text!r}", place, hint="write sizes separated by commas, e.g. 2,784")
    nums = re.findall(r"\d+", t)
    shape = tuple(int(n) for n in nums)
    if any(s > 2**40 for s in shape):
        raise CgError(f"shape {text!r} is too large", place)
    return shape


def _is_file(value: str) -> bool:
    return value.lower().endswith((".pt", ".pth", ".npy")) or "/" in value


def apply_overrides(spec: Spec, overrides: list[str]) -> tuple[dict[str, InputSpec], dict[str, torch.Tensor]]:
    """Declared inputs with CLI overrides applied, and the tensors given as files."""
    declared = {n: dataclasses.replace(i) for n, i in spec.inputs.items()}
    names = spec.input_names
    given: dict[str, torch.Tensor] = {}
    for entry in overrides:
        if "=" in entry:
            name, value = entry.split("=", 1)
            name = name.strip()
        elif len(names) == 1:
            name, value = names[0], entry
        else:
            raise CgError(f"--input {entry!r} needs a name", "--input", hint=f"write NAME=SHAPE; inputs: {', '.join(names)}")
        if name not in names:
            hint = did_you_mean(name, names)
            raise CgError(f"the spec has no input {name!r}", "--input",
                          hint=hint or f"inputs: {', '.join(names)}")
        place = f"--input {name}"
        base = declared.get(name) or InputSpec(name, ())
        if _is_file(value.strip()):
            from ..inspect.tensorfiles import load_tensor

            tensor = load_tensor(value.strip(), name)
            _check_given(tensor, declared.get(name), place)
            given[name] = tensor
            declared[name] = dataclasses.replace(base, shape=tuple(tensor.shape), dtype=tensor.dtype)
        else:
            declared[name] = dataclasses.replace(base, shape=parse_shape(value, place))
    for name, inp in declared.items():
        n = 1
        for d in inp.shape:
            n *= int(d)
        if n > MAX_INPUT_ELEMENTS:  # even on meta: torch cannot size a tensor of 2^62 x 2^62 elements
            overridden = any(e.split("=", 1)[0].strip() == name for e in overrides if "=" in e)
            raise CgError(f"input {name} of shape {list(inp.shape)} has {n:,} elements, over the cap of "
                          f"{MAX_INPUT_ELEMENTS:,} (2^50)", f"--input {name}" if overridden else (inp.loc or spec.file),
                          hint="declare a smaller shape (the batch is usually the dimension to shrink)")
    return declared, given


MAX_INPUT_ELEMENTS = 2**50  # of one input, on any device (meta included: shapes only)


def _check_given(tensor: torch.Tensor, spec: InputSpec | None, place: str):
    if spec is None:
        return
    expected = list(spec.shape)
    got = list(tensor.shape)
    named = set(spec.dims.values())
    if len(got) != len(expected) or any(g != e for i, (g, e) in enumerate(zip(got, expected)) if i not in named):
        shown = [f"{n}" for n in expected]
        for dim_name, i in spec.dims.items():
            shown[i] = dim_name
        raise CgError(f"input {spec.name!r} has shape {got}, expected [{', '.join(shown)}]", place,
                      hint="save a tensor of the declared shape, or change the spec's inputs")
    if spec.dtype.is_floating_point != tensor.dtype.is_floating_point:
        raise CgError(f"input {spec.name!r} has dtype {str(tensor.dtype).replace('torch.', '')}, expected "
                      f"{str(spec.dtype).replace('torch.', '')}", place,
                      hint="convert the array (e.g. numpy .astype) before saving")


def example_inputs(built, *, device=None, seed: int | None = None) -> dict[str, torch.Tensor]:
    """Tensors for every input: given files, else seeded random values of the declared shapes."""
    device = torch.device(device) if device is not None else built.device
    seed = built.seed if seed is None else seed
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in built.input_names:
        spec = built.inputs.get(name)
        if name in built.given:
            t = built.given[name]
            if t.is_floating_point() and built.dtype is not None:
                t = t.to(built.dtype)
            out[name] = t.to(device)
            continue
        if spec is None:
            raise CgError(f"no shape for input {name!r}", "--input", hint=f"pass --input {name}=SHAPE, e.g. 2,784")
        dtype = spec.dtype
        if dtype.is_floating_point and built.dtype is not None:
            dtype = built.dtype
        try:
            out[name] = _example(spec, dtype, device, gen)
        except RuntimeError as e:  # out of memory: the budget (build_model) counts inputs, but memory moves
            if "alloc" not in str(e) and not isinstance(e, torch.OutOfMemoryError):
                raise
            raise CgError(f"cannot allocate input {name} of shape {list(spec.shape)}: out of memory", f"--input {name}",
                          hint="use a smaller input, or --device meta to check shapes without allocating") from None
    return out


def _example(spec, dtype, device, gen) -> torch.Tensor:
    """Seeded random values of the declared shape (empty on meta)."""
    if device.type == "meta":
        return torch.empty(spec.shape, dtype=dtype, device="meta")
    if dtype.is_floating_point:
        return torch.randn(spec.shape, generator=gen, dtype=torch.float32).to(dtype).to(device)
    if dtype == torch.bool:
        return (torch.rand(spec.shape, generator=gen) > 0.5).to(device)
    low = int(spec.low or 0)
    return torch.randint(low, int(spec.high), spec.shape, generator=gen, dtype=dtype).to(device)


def make_inputs(built, overrides: list[str] | None = None, *, seed: int | None = None) -> dict[str, torch.Tensor]:
    """Input tensors on the model's device; *overrides* as on the command line."""
    if overrides:
        built.inputs, given = apply_overrides(built.spec, overrides)
        built.given.update(given)
    return example_inputs(built, seed=seed)

"""The structure of a built model: its module tree, constants, free parameters and totals.

Plain data for ``cgtool build``; rendering lives in :mod:`cgtool.render.build`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..build.model import Built


@dataclass
class TreeNode:
    path: str  # qualified name ('' for the root)
    name: str  # last component
    type: str  # class name
    text: str  # how the spec wrote it: Linear(784, 256)
    params: int  # distinct parameters in this subtree
    own_params: int  # parameters registered directly on this module
    output_shapes: list = field(default_factory=list)
    calls: int = 0
    shared_with: list[str] = field(default_factory=list)  # other paths of the same module instance
    tied: dict[str, list[str]] = field(default_factory=dict)  # own parameter -> other names of that tensor
    repeat: int | None = None  # a Sequential made by `repeat: N`
    children: list["TreeNode"] = field(default_factory=list)


@dataclass
class TensorRow:
    name: str
    shape: list[int]
    numel: int
    dtype: str
    trainable: bool | None = None
    shared_with: list[str] = field(default_factory=list)


@dataclass
class Structure:
    name: str
    kind: str
    file: str
    device: str
    dtype: str
    inputs: dict  # name -> {"shape", "dtype"}
    root: TreeNode
    constants: list[TensorRow]
    parameters: list[TensorRow]  # free parameters declared under `parameters:` (any spec level)
    total_params: int
    trainable_params: int
    buffer_numel: int
    bytes: int
    check: dict
    outputs: list
    code: list[tuple[str, str]]


def _dtype(d: torch.dtype | None) -> str:
    return str(d).replace("torch.", "") if d is not None else "float32"


def _distinct(params) -> tuple[int, int]:
    seen, total, trainable = set(), 0, 0
    for p in params:
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable


def module_tree(built: Built) -> Structure:
    module = built.module
    records = built.check.records if built.check else {}
    paths_of: dict[int, list[str]] = {}
    for path, mod in module.named_modules(remove_duplicate=False):
        paths_of.setdefault(id(mod), []).append(path)
    param_names: dict[int, list[str]] = {}
    for pname, p in module.named_parameters(remove_duplicate=False):
        param_names.setdefault(id(p), []).append(pname)
    repeats = {id(m): o.text for m, o in ((m, built.origins.get(id(m))) for m in module.modules()) if o}

    def node(mod: nn.Module, path: str, seen: set[int]) -> TreeNode:
        origin = built.origins.get(id(mod))
        paths = paths_of.get(id(mod), [path])
        canonical = paths[0]
        rec = records.get(canonical)
        text = origin.text if origin else type(mod).__name__
        n = TreeNode(path=path, name=path.rsplit(".", 1)[-1] if path else built.spec.name, type=type(mod).__name__,
                 text=text, params=_distinct(mod.parameters())[0],
                 own_params=_distinct(mod.parameters(recurse=False))[0],
                 output_shapes=rec.output_shapes if rec else [], calls=rec.calls if rec else 0,
                 shared_with=[p for p in paths if p != path])
        prefix = f"{path}." if path else ""
        for pname, p in mod.named_parameters(recurse=False):
            others = [q for q in param_names.get(id(p), []) if not q.startswith(prefix) or "." in q[len(prefix):]]
            others = [q for q in others if q != prefix + pname]
            if others and not n.shared_with:
                n.tied[pname] = others
        if " × " in repeats.get(id(mod), "") and isinstance(mod, nn.Sequential):
            n.repeat = len(mod)
        if id(mod) in seen:
            return n  # a shared module: its subtree is shown where it first appears
        seen.add(id(mod))
        for child_name, child in mod._modules.items():  # named_children() would hide shared modules
            if child is None:
                continue
            n.children.append(node(child, f"{path}.{child_name}" if path else child_name, seen))
        return n

    root = node(module, "", set())
    buffers = []
    buffer_paths: dict[int, list[str]] = {}
    for name, b in module.named_buffers(remove_duplicate=False):
        buffer_paths.setdefault(id(b), []).append(name)
    for name, b in module.named_buffers():
        buffers.append(TensorRow(name, list(b.shape), b.numel(), _dtype(b.dtype),
                                 shared_with=[p for p in buffer_paths[id(b)] if p != name]))
    free = []
    declared = _free_parameter_names(built)
    param_paths: dict[int, list[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        param_paths.setdefault(id(p), []).append(name)
    for name, p in module.named_parameters():
        if name.rsplit(".", 1)[-1] in declared and _owner_is_spec(module, name):
            free.append(TensorRow(name, list(p.shape), p.numel(), _dtype(p.dtype), p.requires_grad,
                                  [q for q in param_paths[id(p)] if q != name]))
    total, trainable = _distinct(module.parameters())
    check = built.check
    return Structure(
        name=built.spec.name, kind=built.spec.kind, file=built.spec.file, device=str(built.device),
        dtype=_dtype(built.dtype),
        inputs={n: {"shape": list(i.shape),
                    "dtype": _dtype(built.dtype if built.dtype is not None and i.dtype.is_floating_point else i.dtype)}
                for n, i in built.inputs.items()},
        root=root, constants=buffers, parameters=free, total_params=total, trainable_params=trainable,
        buffer_numel=sum(b.numel for b in buffers), bytes=built.param_bytes,
        check={"status": check.status, "how": check.how, "reason": check.reason} if check else {"status": "not run"},
        outputs=check.outputs if check else [], code=built.code)


def _free_parameter_names(built: Built) -> set[str]:
    names: set[str] = set()

    def walk(spec):
        names.update(spec.parameters)
        for _, layer in spec.layers:
            if layer.spec is not None:
                walk(layer.spec)

    walk(built.spec)
    return names


def _owner_is_spec(module: nn.Module, name: str) -> bool:
    prefix = name.rpartition(".")[0]
    owner = module.get_submodule(prefix) if prefix else module
    return type(owner).__module__ == "cgtool.generated"

"""The structure of a built model: its module tree, constants, free parameters and totals.

Plain data for ``cgtool build``; rendering lives in :mod:`cgtool.render.build`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..build.model import Built
from ..spec.load import data_dependence


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
    dynamic: list = field(default_factory=list)  # [{"kind", "line", "text"}]: control flow that reads tensor values
    layer_buffers: list = field(default_factory=list)  # buffers of torch layers (BatchNorm's running statistics)


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
    param_paths = _paths_by_id(module.named_parameters(remove_duplicate=False))
    tree = _TreeBuilder(built, _paths_by_id(module.named_modules(remove_duplicate=False)), param_paths)
    buffers = _constants(module)
    declared = _declared_constants(built)
    constants = [b for b in buffers if b.name.rsplit(".", 1)[-1] in declared and _owner_is_spec(module, b.name)]
    free = _free_parameters(built, param_paths)
    total, trainable = _distinct(module.parameters())
    check = built.check
    return Structure(
        name=built.spec.name, kind=built.spec.kind, file=built.spec.file, device=str(built.device),
        dtype=_dtype(built.dtype), inputs=_inputs(built),
        root=tree.node(module, ""), constants=constants, parameters=free, total_params=total, trainable_params=trainable,
        buffer_numel=sum(b.numel for b in buffers), bytes=built.param_bytes,
        check={"status": check.status, "how": check.how, "reason": check.reason} if check else {"status": "not run"},
        outputs=check.outputs if check else [], code=built.code,
        dynamic=[{"kind": d.kind, "line": d.line, "text": d.text} for d in data_dependence(built.spec)],
        layer_buffers=[b for b in buffers if b not in constants])


def _paths_by_id(named) -> dict[int, list[str]]:
    """Every name of each object in *named* (``(name, object)`` pairs, duplicates included), by id."""
    paths: dict[int, list[str]] = {}
    for name, obj in named:
        paths.setdefault(id(obj), []).append(name)
    return paths


class _TreeBuilder:
    """TreeNodes for one built model; a shared module's subtree is shown where it first appears."""

    def __init__(self, built: Built, paths_of: dict[int, list[str]], param_names: dict[int, list[str]]):
        self.built = built
        self.records = built.check.records if built.check else {}
        self.paths_of = paths_of
        self.param_names = param_names
        self.seen: set[int] = set()

    def node(self, mod: nn.Module, path: str) -> TreeNode:
        n = self._own_node(mod, path)
        if id(mod) in self.seen:
            return n
        self.seen.add(id(mod))
        for child_name, child in mod._modules.items():  # named_children() would hide shared modules
            if child is None:
                continue
            n.children.append(self.node(child, f"{path}.{child_name}" if path else child_name))
        return n

    def _own_node(self, mod: nn.Module, path: str) -> TreeNode:
        """*mod*'s node at *path*, without its children."""
        origin = self.built.origins.get(id(mod))
        paths = self.paths_of.get(id(mod), [path])
        rec = self.records.get(paths[0])
        n = TreeNode(path=path, name=path.rsplit(".", 1)[-1] if path else self.built.spec.name,
                     type=type(mod).__name__, text=origin.text if origin else type(mod).__name__,
                     params=_distinct(mod.parameters())[0],
                     own_params=_distinct(mod.parameters(recurse=False))[0],
                     output_shapes=rec.output_shapes if rec else [], calls=rec.calls if rec else 0,
                     shared_with=[p for p in paths if p != path])
        # a shared module is shown with its other paths (shared_with): its tensors' other names would repeat them
        if not n.shared_with:
            n.tied = self._tied(mod, path)
        if origin and " × " in origin.text and isinstance(mod, nn.Sequential):
            n.repeat = len(mod)
        return n

    def _tied(self, mod: nn.Module, path: str) -> dict[str, list[str]]:
        """Each of *mod*'s own parameters that is also reachable under other names, with those names."""
        prefix = f"{path}." if path else ""
        tied = {}
        for pname, p in mod.named_parameters(recurse=False):
            others = [q for q in self.param_names.get(id(p), []) if not q.startswith(prefix) or "." in q[len(prefix):]]
            others = [q for q in others if q != prefix + pname]
            if others:
                tied[pname] = others
        return tied


def _constants(module: nn.Module) -> list[TensorRow]:
    buffer_paths = _paths_by_id(module.named_buffers(remove_duplicate=False))
    return [TensorRow(name, list(b.shape), b.numel(), _dtype(b.dtype),
                      shared_with=[p for p in buffer_paths[id(b)] if p != name])
            for name, b in module.named_buffers()]


def _free_parameters(built: Built, param_paths: dict[int, list[str]]) -> list[TensorRow]:
    """The parameters declared under a spec's ``parameters:`` (not those of its layers)."""
    declared = _free_parameter_names(built)
    return [TensorRow(name, list(p.shape), p.numel(), _dtype(p.dtype), p.requires_grad,
                      [q for q in param_paths[id(p)] if q != name])
            for name, p in built.module.named_parameters()
            if name.rsplit(".", 1)[-1] in declared and _owner_is_spec(built.module, name)]


def _inputs(built: Built) -> dict:
    # a floating input is cast to the model's dtype; integer ones (indices) keep theirs
    return {n: {"shape": list(i.shape),
                "dtype": _dtype(built.dtype if built.dtype is not None and i.dtype.is_floating_point else i.dtype)}
            for n, i in built.inputs.items()}


def _declared_constants(built: Built) -> set[str]:
    """The names under a spec's ``constants:`` (any spec level): what the tree calls constants, unlike the
    buffers torch layers keep for themselves (BatchNorm's running mean)."""
    return _names_in_specs(built, "constants")


def _free_parameter_names(built: Built) -> set[str]:
    return _names_in_specs(built, "parameters")


def _names_in_specs(built: Built, section: str) -> set[str]:
    """The names under *section* (``constants`` or ``parameters``) of the spec and every nested spec."""
    names: set[str] = set()

    def walk(spec):
        names.update(getattr(spec, section))
        for _, layer in spec.layers:
            if layer.spec is not None:
                walk(layer.spec)

    walk(built.spec)
    return names


def _owner_is_spec(module: nn.Module, name: str) -> bool:
    prefix = name.rpartition(".")[0]
    owner = module.get_submodule(prefix) if prefix else module
    return type(owner).__module__ == "cgtool.generated"

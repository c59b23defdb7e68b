"""A forward reads the model and calls its modules; it never changes them.

Compiled code writes only through ``_cg_writable`` (subscript assignment) and converts only
through ``_cg_not_module`` (``.half()``/``.float()``/``.double()``), which refuse the model's
parameters, buffers, views of them and module containers, before the write. :func:`protect`,
around every forward cgtool runs, names what is the model (so a parameter passed down to a
nested spec is still recognised) and afterwards checks that nothing changed anyway: the
parameters' and buffers' identities, dtypes, devices, shapes and version counters (every
in-place write bumps one) and the module tree. What a check after the fact finds is an error
too, so ``build --save`` and ``run -o`` never write a model its own forward changed.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..errors import CgError

_protected: list[set[int]] = []  # storage keys of the models whose forwards are running


def storage_key(t: torch.Tensor) -> int | None:
    """What tensors sharing memory have in common (a view, .detach(), .data, .T all share it)."""
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError, AttributeError):
        return None


def model_keys(module: nn.Module) -> set[int]:
    keys = set()
    for t in (*module.parameters(), *module.buffers()):
        k = storage_key(t)
        if k is not None:
            keys.add(k)
    return keys


def is_model_tensor(t: torch.Tensor, module: nn.Module | None) -> bool:
    if isinstance(t, nn.Parameter):
        return True
    key = storage_key(t)
    if key is None:
        return False
    if _protected:
        return key in _protected[-1]
    return module is not None and key in model_keys(module)


def writable(obj, module: nn.Module | None = None):
    """*obj* unchanged when a forward may write into it (``obj[i] = v``); else a CgError."""
    if torch.compiler.is_compiling():  # dynamo traces the model (compare, bench --compile): the eager runs check
        return obj
    if isinstance(obj, nn.Module):
        raise CgError(f"a forward cannot change the model: assigning into the {type(obj).__name__} container "
                      "replaces one of its modules",
                      hint="a forward reads its modules and calls them; declare every module in the spec")
    if isinstance(obj, torch.Tensor) and is_model_tensor(obj, module):
        raise CgError("a forward cannot write into the model's parameters or constants (or a view of them)",
                      hint="compute a new tensor instead: y = w.clone(); y[0] = v (the model stays as built), "
                      "or set initial values in the spec's constants/parameters")
    return obj


def not_module(obj, method: str):
    """*obj* unchanged unless it is a module, whose .half()/.float()/.double() would convert the model."""
    if torch.compiler.is_compiling():
        return obj
    if isinstance(obj, nn.Module):
        raise CgError(f".{method}() on a module converts the model's parameters in place; a forward reads its "
                      "modules and calls them", hint=f"convert tensors instead (x.{method}()), or choose the "
                      "model's dtype with --dtype")
    return obj


def _snapshot(module: nn.Module):
    # torch's own layers may update their buffers (batch norm's running statistics) and an Embedding with max_norm
    # its weight: in-place writes are checked on every other parameter and on what spec modules own; the rest of
    # the snapshot on every tensor. Keys are ids (names are found only to say what changed): it runs twice a forward.
    tensors, modules, stack = {}, [], [module]
    while stack:
        m = stack.pop()
        modules.append((id(m), tuple((k, id(c)) for k, c in m._modules.items())))
        stack.extend(c for c in m._modules.values() if c is not None)
        spec_owned = getattr(type(m), "cg_spec", None) is not None
        renorms = getattr(m, "max_norm", None) is not None
        for kind, table in (("parameter", m._parameters), ("buffer", m._buffers)):
            for name, t in table.items():
                if t is not None:
                    version = t._version if spec_owned or (kind == "parameter" and not renorms) else None
                    tensors[(id(m), name)] = (kind, id(t), t.dtype, t.device, tuple(t.shape), version)
    return tensors, modules


@contextmanager
def protect(module: nn.Module):
    """Run a forward of *module*: its tensors are read-only to spec code, and any change is an error after."""
    before = _snapshot(module)
    _protected.append(model_keys(module))
    try:
        yield
    finally:
        _protected.pop()
    after = _snapshot(module)
    if after != before:
        raise CgError(_what_changed(before, after, {id(m): n for n, m in module.named_modules(remove_duplicate=False)}),
                      hint="a forward reads parameters and calls modules; it must not change them "
                      "(no in-place writes, conversions or swapped modules)")


def _what_changed(before, after, names: dict[int, str]) -> str:
    (t0, m0), (t1, m1) = before, after

    def named(key):
        owner, attr = key
        prefix = names.get(owner, "")
        return f"{prefix}.{attr}" if prefix else attr

    for key, old in t0.items():
        new = t1.get(key)
        if new is None:
            return f"the forward changed the model: {old[0]} {named(key)} is gone"
        if new[1] != old[1]:
            return f"the forward changed the model: {old[0]} {named(key)} was replaced"
        if new[2:4] != old[2:4]:
            return f"the forward changed the model: {old[0]} {named(key)} was converted to {new[2]} on {new[3]}"
        if new[4] != old[4]:
            return f"the forward changed the model: {old[0]} {named(key)} was resized"
        if new[5] != old[5]:
            return f"the forward changed the model: {old[0]} {named(key)} was written in place"
    if set(t1) - set(t0):
        return f"the forward changed the model: {named(sorted(set(t1) - set(t0))[0])} was added"
    return "the forward changed the model: its modules were replaced, added or removed"

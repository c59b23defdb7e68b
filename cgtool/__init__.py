"""cgtool: inspect PyTorch computational graphs and models.

    >>> import cgtool
    >>> net = cgtool.build("configs/mlp.yaml")          # a real torch.nn.Module
    >>> net = cgtool.build(yaml_text, d_model=1024)      # args override the spec's `args`
    >>> cgtool.params("configs/mlp.yaml").total          # every command as a function: plain data
    >>> cgtool.grad("y = (x + w) * (w + 1)", at={"x": 2, "w": 1}, wrt="w")

The names below are loaded on first use (PEP 562), so ``import cgtool`` and the command line's
``--help`` do not import torch; see :mod:`cgtool.api` for the functions.
"""
from __future__ import annotations

import importlib
import sys
import types

from .errors import CgError

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "build": "cgtool.build.model", "build_model": "cgtool.build.model", "Built": "cgtool.build.model",
    "load_spec": "cgtool.spec",
    "describe": "cgtool.api", "run": "cgtool.api", "params": "cgtool.api", "summary": "cgtool.api",
    "grad": "cgtool.api", "capture": "cgtool.api", "paths": "cgtool.api", "compare": "cgtool.api", "layers": "cgtool.api",
    "validate": "cgtool.api", "graph": "cgtool.api",
    "export": "cgtool.api", "bench": "cgtool.api",
}

__all__ = ["build", "build_model", "Built", "load_spec", "CgError", "describe", "run", "params", "summary", "grad",
           "capture", "paths", "compare", "graph", "layers", "validate"]


__all__ += ["export", "bench"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, an ordinary attribute
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """``cgtool.build`` and ``cgtool.graph`` are the functions, though subpackages have the same names:
    the import system's binding of a subpackage (when ``cgtool.build.*`` is first imported) is
    dropped; the subpackage stays in ``sys.modules`` for ``from cgtool.build... import``."""

    def __setattr__(self, name, value):
        if name in ("build", "graph") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

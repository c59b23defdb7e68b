"""Subclasses of ``nn.Sequential`` named by their spec (``name: MLPBlock``); see :mod:`cgtool.named`."""
from __future__ import annotations

from torch import nn

from ..lang.fast import SEQUENTIAL_TYPES

_MADE: dict[str, type] = {}


def wants_class(name: str) -> bool:
    """Whether a sequential spec given ``name:`` gets a class of its own (not ``Sequential`` itself or a dunder)."""
    return name.isidentifier() and name != "Sequential" and not (name.startswith("__") and name.endswith("__"))


def sequential_class(name: str) -> type:
    """``class NAME(nn.Sequential)``, one per name and process: every ``MLPBlock`` of a model is one class."""
    cls = _MADE.get(name)
    if cls is None:
        if not wants_class(name):
            raise AttributeError(name)
        cls = type(name, (nn.Sequential,), {
            "__module__": "cgtool.named", "__qualname__": name,
            "__doc__": f"The sequential spec named {name}: an nn.Sequential under that name."})
        _MADE[name] = cls
        SEQUENTIAL_TYPES.add(cls)
    return cls

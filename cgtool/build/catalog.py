"""The layer catalogue: every public torch.nn module class a spec may name, with signatures.
"""
from __future__ import annotations
import inspect
from dataclasses import dataclass
from torch import nn


# --------------------------------------------------------------------------- layer catalogue


def layer_classes() -> dict[str, type]:
    """Every public ``torch.nn`` module class by name: the layer types a spec may use."""
    out = {}
    for name in dir(nn):
        if name.startswith("_"):
            continue
        obj = getattr(nn, name)
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            out[name] = obj
    return out


_CLASSES = layer_classes()


@dataclass(frozen=True)
class LayerType:
    """One entry of the catalogue: a layer type and its constructor as a spec writes it."""

    type: str  # Linear
    signature: str  # Linear(in_features, out_features, bias=True)


def catalogue(pattern: str | None = None) -> list[LayerType]:
    """The layer types a spec may use, by name; *pattern* keeps those whose name contains it (any case)."""
    rows = []
    for name, cls in sorted(_CLASSES.items()):
        if pattern and pattern.lower() not in name.lower():
            continue
        try:
            params = _signature_params(layer_signature(cls))
        except (TypeError, ValueError):
            params = []
        rows.append(LayerType(name, f"{name}({', '.join(params)})"))
    return rows


def layer_signature(cls: type) -> inspect.Signature:
    """The constructor a spec calls. LSTM, GRU and RNN take ``*args, **kwargs`` and hand them to
    RNNBase (RNN reads ``nonlinearity`` fourth), so their real parameters are rebuilt from it;
    a class with no ``__init__`` of its own (Sigmoid, Tanh) takes nothing."""
    if cls.__init__ is nn.Module.__init__:
        return inspect.Signature([])
    if issubclass(cls, nn.RNNBase) and cls is not nn.RNNBase:
        params = [p for n, p in inspect.signature(nn.RNNBase.__init__).parameters.items() if n not in ("self", "mode")]
        if cls is not nn.LSTM:
            params = [p for p in params if p.name != "proj_size"]
        if issubclass(cls, nn.RNN):
            nonlinearity = inspect.Parameter("nonlinearity", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="tanh",
                                             annotation=str)
            params.insert(3, nonlinearity)
        return inspect.Signature(params)
    return inspect.signature(cls)


def _signature_params(sig: inspect.Signature) -> list[str]:
    out = []
    for p in sig.parameters.values():
        if p.name in ("device", "dtype") or p.kind in (p.VAR_KEYWORD,):
            continue
        if p.kind is p.VAR_POSITIONAL:
            out.append(f"*{p.name}")
        elif p.default is p.empty:
            out.append(p.name)
        else:
            out.append(f"{p.name}={p.default!r}")
    return out




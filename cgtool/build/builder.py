"""The builder: a validated Spec becomes real torch.nn modules with the spec's names.
"""
from __future__ import annotations
import ast
import inspect
import weakref
from collections import OrderedDict
from dataclasses import dataclass
import torch
from torch import nn
from .. import lang
from ..errors import CgError, Loc, did_you_mean, first_line
from ..lang.codegen import forget_module
from ..spec import Call, Layer, Spec, TensorSpec
from .catalog import _CLASSES, _signature_params, layer_signature
from .containers import sequential_class, wants_class



@dataclass
class Origin:
    """Where a built module came from in the spec, for trees and error messages."""

    where: str  # layers[2], modules.linear
    loc: Loc
    text: str  # Linear(784, 256)
    ref_of: str | None = None


# --------------------------------------------------------------------------- builder


class Builder:
    """Builds modules from specs and remembers where each came from."""

    def __init__(self, limits: lang.Limits = lang.DEFAULT_LIMITS, classes: dict | None = None):
        self.limits = limits
        # one class per spec (by identity): repeated blocks and a second build of the same spec reuse it,
        # instead of compiling the same forward again (12 GPT-2 blocks: one compile, not 12)
        self.classes: dict[tuple[int, type], type] = {} if classes is None else classes
        self.origins: dict[int, Origin] = {}
        self.files: set[str] = set()
        self.code: list[tuple[str, str]] = []  # (spec name, generated forward source)

    # -- entry points
    def module(self, spec: Spec) -> nn.Module:
        if spec.kind == "sequential":
            mods = self._entries(spec)
            cls = sequential_class(spec.name) if spec.named and wants_class(spec.name) else nn.Sequential
            return cls(OrderedDict(mods))
        if spec.kind == "modulelist":
            cls = self._class(spec, nn.ModuleList)
            return cls([m for _, m in self._entries(spec)])
        if spec.kind == "moduledict":
            cls = self._class(spec, nn.ModuleDict)
            return cls(OrderedDict(self._entries(spec)))
        cls = self._class(spec, nn.Module)
        module = cls()
        for name, sub in self._entries(spec):
            self._register(module, name, sub, spec, "module")
        for t in spec.constants.values():
            self._register(module, t.name, make_tensor(t), spec, "buffer" if t.persistent else "transient buffer")
        for t in spec.parameters.values():
            self._register(module, t.name, nn.Parameter(make_tensor(t)), spec, "parameter")
        self._tie(module, spec)
        return module

    def _register(self, module, name, value, spec, what):
        try:
            if what == "module":
                module.add_module(name, value)
            elif what in ("buffer", "transient buffer"):
                module.register_buffer(name, value, persistent=what == "buffer")
            else:
                module.register_parameter(name, value)
        except KeyError as e:
            raise CgError(f"{what} name {name!r} clashes with an nn.Module attribute: {e.args[0]}",
                          spec.loc, hint="rename it") from None

    def _entries(self, spec: Spec) -> list[tuple[str, nn.Module]]:
        out: list[tuple[str, nn.Module]] = []
        scope: dict[str, nn.Module] = {}
        for i, (name, layer) in enumerate(spec.layers):
            key = name if name is not None else str(i)
            mod = self.layer(layer, scope)
            scope[key] = mod
            out.append((key, mod))
        return out

    def layer(self, layer: Layer, scope: dict[str, nn.Module]) -> nn.Module | None:
        if layer.absent:
            return None  # `X if cond else None`: the attribute is None, as `self.downsample = None`
        if layer.ref is not None:
            return _resolve_ref(layer, scope)
        if layer.repeat is not None:
            copies = [self._fresh(layer) for _ in range(layer.repeat)]
            if layer.repeat_kind == "modulelist":
                seq = nn.ModuleList(copies)
            elif layer.repeat_keys is not None:
                seq = nn.Sequential(OrderedDict(zip(layer.repeat_keys, copies)))
            else:
                seq = nn.Sequential(*copies)
            self.origins[id(seq)] = Origin(layer.where, layer.loc, f"{layer.text} × {layer.repeat}")
            return seq
        return self._fresh(layer)

    def _fresh(self, layer: Layer) -> nn.Module:
        if layer.call is not None:
            mod = self.call(layer.call, layer.where)
        else:
            mod = self.module(layer.spec)
        self.origins[id(mod)] = Origin(layer.where, layer.loc, layer.text)
        return mod

    def call(self, call: Call, where: str) -> nn.Module:
        cls = _CLASSES.get(call.type)
        if cls is None:
            hint = did_you_mean(call.type, _CLASSES)
            raise CgError(f"{where}: unknown layer type {call.type!r}", call.loc,
                          hint=hint or "any torch.nn module class works; `cgtool layers` lists them")
        if call.type.startswith("Lazy"):
            raise CgError(f"{where}: {call.type} infers its sizes at the first call, which a spec cannot inspect "
                          "before it runs", call.loc,
                          hint=f"write the sizes: {call.type.removeprefix('Lazy')}(in, out, ...)")
        args = [self._arg(a, where) for a in call.args]
        kwargs = {k: self._arg(v, where) for k, v in call.kwargs.items()}
        for bad in ("device", "dtype"):
            if bad in kwargs:
                raise CgError(f"{where}: {call.type} {bad}= is set by cgtool, not the spec", call.loc,
                              hint=f"use --{bad} on the command line")
        try:
            sig = layer_signature(cls)
            bound = sig.bind(*args, **kwargs)
        except TypeError as e:
            hint = None
            params = [p for p in sig.parameters if p not in ("device", "dtype")]
            for k in kwargs:
                if k not in sig.parameters:
                    hint = did_you_mean(k, params)
            raise CgError(f"{where}: {call.text}: {e}", call.loc,
                          hint=hint or f"{call.type}({', '.join(_signature_params(sig))})") from None
        except ValueError:
            pass  # no signature available: let the constructor judge
        else:
            _check_positional(call, where, sig, len(args))
            _check_stacked(call, where, bound.arguments)
        try:
            return cls(*args, **kwargs)
        except CgError:
            raise
        except Exception as e:  # noqa: BLE001 - a constructor's complaint about user values
            text = _text_for_number(cls, args, kwargs)
            if text is not None:  # torch's words would be "empty(): argument 'size' failed to unpack ..."
                name, value = text
                raise CgError(f"{where}: {call.text}: {name} is the text {value!r}, where {call.type} expects a "
                              "number", call.loc, hint=f"write a number or an arg name there: {call.type}("
                              f"{', '.join(_signature_params(layer_signature(cls)))})") from None
            raise CgError(f"{where}: {call.text} cannot be constructed: {first_line(e)}", call.loc,
                          hint=f"{call.type}({', '.join(_signature_params(layer_signature(cls)))})") from None

    def _arg(self, value, where):
        if isinstance(value, Layer):  # spec('block.yaml', ...) inside a call: the nested spec's module
            return self._fresh(value)
        if isinstance(value, Call):
            mod = self.call(value, where)
            self.origins.setdefault(id(mod), Origin(where, value.loc, value.text))
            return mod
        if isinstance(value, list):
            return [self._arg(v, where) for v in value]
        if isinstance(value, tuple):
            return tuple(self._arg(v, where) for v in value)
        return value

    def _class(self, spec: Spec, base: type) -> type:
        key = (id(spec), base)
        cls = self.classes.get(key)
        if cls is not None and cls.cg_spec is spec:
            if spec.forward.source.file not in self.files or (spec.name, cls.cg_code) not in self.code:
                self.files.add(spec.forward.source.file)  # a class compiled by the meta build, used by the real one
                self.code.append((spec.name, cls.cg_code))
            return cls
        compiled = compile_spec_forward(spec, limits=self.limits)
        self.files.add(spec.forward.source.file)
        self.code.append((spec.name, compiled.code))
        attrs = {"forward": compiled.fn, "__module__": "cgtool.generated", "cg_code": compiled.code, "cg_spec": spec,
                 "cg_limits": self.limits, "__reduce_ex__": _reduce_ex, "__deepcopy__": _deepcopy}
        if compiled.call is not None:
            attrs["__call__"] = compiled.call  # the forward without nn.Module.__call__'s frames when nothing watches
        cls = type(spec.name, (base,), attrs)
        weakref.finalize(cls, forget_module, compiled.namespace["__name__"])
        self.classes[key] = cls
        _CLASSES_BUILT[_class_key(spec, base, self.limits)] = cls
        return cls

    def _tie(self, module: nn.Module, spec: Spec):
        for target, source, loc in spec.ties:
            try:
                param = module.get_parameter(source)
            except AttributeError:
                names = [n for n, _ in module.named_parameters()]
                raise CgError(f"tie: no parameter {source!r}", loc,
                              hint=did_you_mean(source, names) or f"parameters: {', '.join(names[:12])}") from None
            prefix, _, attr = target.rpartition(".")
            try:
                owner = module.get_submodule(prefix) if prefix else module
                old = owner.get_parameter(attr)
            except AttributeError:
                raise CgError(f"tie: no parameter {target!r} to replace", loc) from None
            if tuple(old.shape) != tuple(param.shape):
                raise CgError(f"tie: {target} has shape {list(old.shape)} but {source} has {list(param.shape)}", loc)
            setattr(owner, attr, param)


def _text_for_number(cls, args, kwargs) -> tuple[str, str] | None:
    """(parameter, text) of a string given where the parameter's default is a number (in_features='(...)')."""
    try:
        bound = layer_signature(cls).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    for name, value in bound.arguments.items():
        default = bound.signature.parameters[name].default
        if isinstance(value, str) and (default is inspect.Parameter.empty or isinstance(default, (int, float))) \
                and not isinstance(default, bool):
            return name, value
    return None


MAX_STACKED = 1_000  # num_layers of one TransformerEncoder, LSTM, ...: each is a copy, even on meta


def _check_stacked(call: Call, where: str, arguments: dict) -> None:
    """A layer that stacks copies of itself (num_layers=10**6 takes hours to build, even on meta)."""
    for name in ("num_layers", "num_encoder_layers", "num_decoder_layers"):
        n = arguments.get(name)
        if isinstance(n, int) and not isinstance(n, bool) and n > MAX_STACKED:
            raise CgError(f"{where}: {call.type} {name}={n:,} is over the cap of {MAX_STACKED:,} stacked layers",
                          call.loc, hint=f"use a smaller {name} (the largest published models stack about 100)")


# A generated class is no module's attribute, so pickle cannot name it: a pickled module (torch.save(model))
# holds its spec instead, and loading compiles the class again (once per process: the cache below).
_CLASSES_BUILT: dict = {}


def _class_key(spec: Spec, base: type, limits) -> tuple:
    return (base, spec.name, spec.kind, spec.forward.source.text, spec.forward.source.file, repr(spec.args),
            tuple(spec.input_names), tuple(n for n, _ in spec.layers), tuple(spec.constants), tuple(spec.parameters),
            repr(limits))


def restore_module(spec: Spec, base: type, limits) -> nn.Module:
    """An empty instance of *spec*'s generated class (compiled again if this process has not built it): what
    unpickling a built module starts from, before its state is set."""
    cls = _CLASSES_BUILT.get(_class_key(spec, base, limits))
    if cls is None:
        cls = Builder(limits)._class(spec, base)
    return cls.__new__(cls)


def _reduce_ex(self, protocol):
    cls = type(self)
    return restore_module, (cls.cg_spec, cls.__bases__[0], cls.cg_limits), self.__dict__


def _deepcopy(self, memo):
    """A copy of the same class (pickling's way would compile it again)."""
    import copy

    cls = type(self)
    new = cls.__new__(cls)
    memo[id(self)] = new
    new.__dict__.update(copy.deepcopy(self.__dict__, memo))
    return new


def _check_positional(call: Call, where: str, sig: inspect.Signature, given: int) -> None:
    """torch.nn layers take ``device`` and ``dtype`` last, positionally too: Linear(784, 256, 10, 5)
    would set device=5 and fail far from the cause. Those two are cgtool's (--device, --dtype),
    so they end the positional arguments a spec may give."""
    names = list(sig.parameters)
    if "device" not in names:
        return
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    allowed = [n for n in names[:names.index("device")] if sig.parameters[n].kind in positional]
    if given > len(allowed):
        many = f"at most {len(allowed)} positional argument{'s' if len(allowed) != 1 else ''}"
        raise CgError(f"{where}: {call.text}: {call.type} takes {many} ({', '.join(allowed)}), not {given}",
                      call.loc, hint=f"{call.type}({', '.join(_signature_params(sig))}); device and dtype are "
                      "set with --device and --dtype")


def _resolve_ref(layer: Layer, scope: dict[str, nn.Module]) -> nn.Module:
    head, _, rest = layer.ref.partition(".")
    mod = scope[head]
    if rest:
        try:
            mod = mod.get_submodule(rest)
        except AttributeError:
            raise CgError(f"{layer.where}: ref {layer.ref!r}: no submodule {rest!r} in {head!r}", layer.loc) from None
    return mod


def make_tensor(t: TensorSpec) -> torch.Tensor:
    """A constant or parameter's initial value (drawn from torch's seeded RNG)."""
    dtype = t.dtype or torch.float32
    if t.init is None:
        value = torch.tensor(t.value, dtype=dtype)
    elif t.init == "eye":
        value = torch.eye(*t.shape, dtype=dtype)
    elif t.init == "full":
        value = torch.full(t.shape, float(t.value), dtype=dtype)
    elif t.init == "arange":
        value = torch.arange(t.numel, dtype=dtype).reshape(t.shape)
    else:
        value = {"rand": torch.rand, "randn": torch.randn, "zeros": torch.zeros, "ones": torch.ones}[t.init](
            t.shape, dtype=dtype)
    if t.scale is not None:
        value = value * float(t.scale)
    return value


def compile_spec_forward(spec: Spec, *, limits: lang.Limits = lang.DEFAULT_LIMITS,
                         recorder: dict | None = None, fast: bool = True) -> lang.Compiled:
    """The spec's forward as a real function; spec names bound once per call.

    With ``recorder`` (the ``_cg_*`` functions of a capture), the capture-mode variant."""
    prelude = []
    if spec.kind == "modulelist":
        prelude.append("layers = self")
    elif spec.kind == "moduledict":
        prelude.append("modules = self")
    for name, _ in spec.layers:
        if name is not None and name.isidentifier():
            local = lang.SELF_MODULE if name == "self" else name
            prelude.append(f"{local} = self._modules[{name!r}]")
    for name in spec.constants:
        prelude.append(f"{name} = self._buffers[{name!r}]")
    for name in spec.parameters:
        prelude.append(f"{name} = self._parameters[{name!r}]")
    used = {n.id for n in ast.walk(spec.forward.tree) if isinstance(n, ast.Name)}
    prelude = [line for line in prelude if line.split(" = ")[0] in used]
    plans = None
    if fast and recorder is None:
        from ..lang.fast import plan_layer

        plans = {name: plan_layer(layer) for name, layer in spec.layers
                 if name is not None and name.isidentifier() and name in used}
    return lang.compile_forward(spec.forward, name=spec.name, params=spec.input_names, prelude=prelude,
                                namespace={**spec.args, **(recorder or {})}, limits=limits,
                                capture=recorder is not None, fast=plans)



"""Compilation: a validated :class:`~cgtool.spec.Spec` becomes a real ``torch.nn`` module.

``sequential`` → ``nn.Sequential``; ``modulelist`` → a ``nn.ModuleList`` subclass
with the spec's forward; ``moduledict`` → a ``nn.ModuleDict`` subclass;
``module`` → an ``nn.Module`` subclass. Names mirror the spec, so state_dict keys
are those of the same model written by hand. Forwards are compiled to real
Python code (:func:`cgtool.lang.compile_forward`), never interpreted per call.

:func:`build_model` first builds on the meta device to count parameters without
allocating, refuses models that would not fit, then builds for real (seeded, on
the CPU so weights do not depend on the device) and dry-runs the forward to
check shapes.
"""
from __future__ import annotations

import ast
import inspect
import os
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn

from . import lang
from .errors import CgError, Loc, did_you_mean
from .spec import Call, Layer, Spec, TensorSpec, load_spec


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

    def __init__(self, limits: lang.Limits = lang.DEFAULT_LIMITS):
        self.limits = limits
        self.origins: dict[int, Origin] = {}
        self.files: set[str] = set()
        self.code: list[tuple[str, str]] = []  # (spec name, generated forward source)

    # -- entry points
    def module(self, spec: Spec) -> nn.Module:
        if spec.kind == "sequential":
            mods = self._entries(spec)
            return nn.Sequential(OrderedDict(mods))
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
            self._register(module, t.name, make_tensor(t), spec, "buffer")
        for t in spec.parameters.values():
            self._register(module, t.name, nn.Parameter(make_tensor(t)), spec, "parameter")
        self._tie(module, spec)
        return module

    def _register(self, module, name, value, spec, what):
        try:
            if what == "module":
                module.add_module(name, value)
            elif what == "buffer":
                module.register_buffer(name, value)
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

    def layer(self, layer: Layer, scope: dict[str, nn.Module]) -> nn.Module:
        if layer.ref is not None:
            return _resolve_ref(layer, scope)
        if layer.repeat is not None:
            copies = [self._fresh(layer) for _ in range(layer.repeat)]
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
        args = [self._arg(a, where) for a in call.args]
        kwargs = {k: self._arg(v, where) for k, v in call.kwargs.items()}
        for bad in ("device", "dtype"):
            if bad in kwargs:
                raise CgError(f"{where}: {call.type} {bad}= is set by cgtool, not the spec", call.loc,
                              hint=f"use --{bad} on the command line")
        try:
            sig = inspect.signature(cls)
            sig.bind(*args, **kwargs)
        except TypeError as e:
            hint = None
            params = [p for p in sig.parameters if p not in ("device", "dtype")]
            for k in kwargs:
                if k not in sig.parameters:
                    hint = did_you_mean(k, params)
            raise CgError(f"{where}: {call.text}: {e}", call.loc,
                          hint=hint or f"{call.type}({', '.join(_describe_params(sig))})") from None
        except ValueError:
            pass  # no signature available: let the constructor judge
        try:
            return cls(*args, **kwargs)
        except CgError:
            raise
        except Exception as e:  # noqa: BLE001 - a constructor's complaint about user values
            raise CgError(f"{where}: {call.text} cannot be constructed: {_first_line(e)}", call.loc,
                          hint=f"{call.type}({', '.join(_describe_params(inspect.signature(cls)))})") from None

    def _arg(self, value, where):
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
        compiled = compile_spec_forward(spec, limits=self.limits)
        self.files.add(spec.forward.source.file)
        self.code.append((spec.name, compiled.code))
        cls = type(spec.name, (base,), {"forward": compiled.fn, "__module__": "cgtool.generated",
                                        "cg_code": compiled.code})
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


def _resolve_ref(layer: Layer, scope: dict[str, nn.Module]) -> nn.Module:
    head, _, rest = layer.ref.partition(".")
    mod = scope[head]
    if rest:
        try:
            mod = mod.get_submodule(rest)
        except AttributeError:
            raise CgError(f"{layer.where}: ref {layer.ref!r}: no submodule {rest!r} in {head!r}", layer.loc) from None
    return mod


def _describe_params(sig: inspect.Signature) -> list[str]:
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


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


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


def compile_spec_forward(spec: Spec, *, limits: lang.Limits = lang.DEFAULT_LIMITS) -> lang.Compiled:
    """The spec's forward as a real function; spec names bound once per call."""
    prelude = []
    if spec.kind == "modulelist":
        prelude.append("layers = self")
    elif spec.kind == "moduledict":
        prelude.append("modules = self")
    for name, _ in spec.layers:
        if name is not None and name.isidentifier():
            prelude.append(f"{name} = self._modules[{name!r}]")
    for name in spec.constants:
        prelude.append(f"{name} = self._buffers[{name!r}]")
    for name in spec.parameters:
        prelude.append(f"{name} = self._parameters[{name!r}]")
    used = {n.id for n in ast.walk(spec.forward.tree) if isinstance(n, ast.Name)}
    prelude = [line for line in prelude if line.split(" = ")[0] in used]
    return lang.compile_forward(spec.forward, name=spec.name, params=spec.input_names, prelude=prelude,
                                namespace=dict(spec.args), limits=limits)


# --------------------------------------------------------------------------- running with spec-level errors


class DataDependent(CgError):
    """The forward needs tensor values (control flow on data), which meta tensors lack.

    A user error when it escapes (a meta run of such a spec); the build's dry run
    catches it and checks on small real tensors instead."""

    def __init__(self, loc: Loc | None):
        super().__init__("the forward's control flow depends on tensor values, which meta tensors do not have",
                         loc, hint="use --device cpu (shapes, parameters and FLOPs are the same)")
        self.loc = loc


@dataclass
class CallRecord:
    calls: int = 0
    input_shapes: list = field(default_factory=list)
    output_shapes: list = field(default_factory=list)


def shapes_of(value) -> list[list[int]]:
    """Shapes of the tensors in a (nested) value, in order."""
    if isinstance(value, torch.Tensor):
        return [list(value.shape)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in shapes_of(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in shapes_of(v)]
    return []


class _Tracker:
    """Global module hooks for one run: which module is running, and what each saw."""

    def __init__(self, root: nn.Module):
        self.names = {id(m): n for n, m in root.named_modules()}
        self.stack: list[tuple[nn.Module, list]] = []
        self.records: dict[str, CallRecord] = {}
        self.handles = []

    def __enter__(self):
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        def pre(mod, args):
            if id(mod) in self.names:
                self.stack.append((mod, shapes_of(args)))

        def post(mod, args, out):
            if id(mod) in self.names:
                if self.stack and self.stack[-1][0] is mod:
                    self.stack.pop()
                rec = self.records.setdefault(self.names[id(mod)], CallRecord())
                rec.calls += 1
                rec.input_shapes = shapes_of(args)
                rec.output_shapes = shapes_of(out)

        self.handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


_DATA_DEPENDENT = ("cannot be called on meta tensors", "Cannot copy out of meta tensor", "meta tensors do not",
                   "data-dependent", "on a meta tensor")


def run_forward(module: nn.Module, args: list, *, files: set[str], origins: dict[int, Origin] | None = None,
                track: bool = True):
    """Call *module* and turn any failure into a CgError at the spec's place.

    Returns (output, records) where records maps module paths to what they saw.
    """
    origins = origins or {}
    tracker = _Tracker(module) if track else None
    try:
        if tracker is not None:
            with tracker:
                out = module(*args)
        else:
            out = module(*args)
        return out, (tracker.records if tracker else {})
    except CgError as e:
        raise e.with_place(lang.locate_runtime_error(e, files)) from None
    except Exception as e:  # noqa: BLE001 - torch's errors on user shapes and values
        loc = lang.locate_runtime_error(e, files)
        text = str(e)
        if any(s in text for s in _DATA_DEPENDENT):
            raise DataDependent(loc) from None
        raise _explain(e, module, tracker, origins, loc) from None


def _explain(e, root, tracker, origins, loc) -> CgError:
    message = _first_line(e)
    if tracker is None or not tracker.stack:
        return CgError(f"forward failed: {message}", loc,
                       hint="check the shapes and dtypes of the inputs and what the forward does with them")
    failing, in_shapes = tracker.stack[-1]
    name = tracker.names.get(id(failing), "?")
    origin = origins.get(id(failing))
    label = f"{origin.where} {origin.text}" if origin else f"{name or 'model'} {type(failing).__name__}"
    place = loc
    parent, index = _sequential_parent(root, failing)
    if origin is not None and (place is None or parent is not None):
        place = origin.loc
    got = in_shapes[0] if in_shapes else None
    expect = _expectation(failing)
    if expect is not None and got is not None and len(got) >= 1:
        dim, expected, noun = expect
        d = dim if dim < 0 else (dim if len(got) > dim + 1 else 0)
        if len(got) > abs(d) - (1 if d < 0 else 0) and got[d] != expected:
            producer = _producer(parent, index, tracker, origins, d) if parent is not None else None
            if producer == "the input":
                return CgError(f"{label} expects {expected} {noun}, but the input has {got[d]} (shape {got})", place,
                               hint=f"pass an input with {expected} {noun} (--input), or change the layer")
            if producer is not None:
                return CgError(f"{label} expects {expected} {noun}, but {producer} produces {got[d]}", place,
                               hint=f"make the two agree: change {expected} to {got[d]}, or the producer's size")
            return CgError(f"{label} expects {expected} {noun}, but gets input of shape {got}", place,
                           hint=f"make the input's size {got[d]} and {expected} agree")
    shape = f" on input of shape {got}" if got is not None else ""
    return CgError(f"{label} failed{shape}: {message}", place,
                   hint="check the layer's arguments against the shape it receives")


def _sequential_parent(root, child):
    for mod in root.modules():
        if isinstance(mod, nn.Sequential):
            for i, c in enumerate(mod):
                if c is child:
                    return mod, i
    return None, None


def _expectation(mod):
    if isinstance(mod, nn.Linear):
        return (-1, mod.in_features, "input features")
    if isinstance(mod, nn.modules.conv._ConvNd):
        return (1, mod.in_channels, "input channels")
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        return (1, mod.num_features, "features")
    if isinstance(mod, nn.LayerNorm):
        return (-1, mod.normalized_shape[-1], "features")
    return None


def _producer(parent, index, tracker, origins, dim) -> str | None:
    """The layer before *index* in a Sequential that last changed dimension *dim*."""
    for j in range(index - 1, -1, -1):
        child = parent[j]
        rec = tracker.records.get(tracker.names.get(id(child), ""))
        if rec is None or not rec.output_shapes or not rec.input_shapes:
            continue
        out, inp = rec.output_shapes[0], rec.input_shapes[0]
        try:
            changed = len(out) != len(inp) or out[dim] != inp[dim]
        except IndexError:
            changed = True
        if changed:
            o = origins.get(id(child))
            return f"{o.where} {o.text}" if o else f"layer {j} {type(child).__name__}"
    return "the input"


# --------------------------------------------------------------------------- build


@dataclass
class Check:
    """The build-time dry run."""

    status: str  # passed | skipped
    how: str | None = None  # meta | real
    reason: str | None = None
    outputs: list = field(default_factory=list)  # [{"shape": [...], "dtype": "float32"}]
    records: dict = field(default_factory=dict)  # module path -> CallRecord


@dataclass
class Built:
    module: nn.Module
    spec: Spec
    inputs: dict  # name -> InputSpec
    device: torch.device
    dtype: torch.dtype | None
    files: set[str]
    origins: dict[int, Origin]
    code: list[tuple[str, str]]
    seed: int = 0
    given: dict = field(default_factory=dict)  # inputs given as tensors (files)
    check: Check | None = None
    param_count: int = 0
    param_bytes: int = 0

    def forward(self, inputs: dict):
        """Run the model on named inputs; errors come back at the spec's places."""
        args = [inputs[n] for n in self.input_names]
        out, _ = run_forward(self.module, args, files=self.files, origins=self.origins)
        return out

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs) if self.inputs else self.spec.input_names


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
        return int(float(num) * units[unit])
    except (ValueError, KeyError):
        raise CgError(f"cannot read memory size {text!r}", "--max-memory", hint="for example 8GB or 512MB") from None


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


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


def resolve_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise CgError(f"unknown device {device!r}", "--device", hint="use cpu, cuda or meta") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CgError("CUDA is not available on this machine", "--device",
                      hint="use --device cpu, or --device meta to check shapes without allocating")
    if dev.type not in ("cpu", "cuda", "meta"):
        raise CgError(f"unsupported device {device!r}", "--device", hint="use cpu, cuda or meta")
    return dev


def build_model(source, *, file: str | None = None, args: dict | None = None, device="cpu", dtype=None,
                seed: int = 0, inputs: list[str] | None = None, check: bool = True, max_bytes: int | None = None,
                limits: lang.Limits | None = None) -> Built:
    """Load, compile and check a spec. ``inputs`` are CLI-style overrides (``x=2,784``, ``x=file.npy``)."""
    from .inputs import apply_overrides

    limits = limits or lang.DEFAULT_LIMITS
    spec = source if isinstance(source, Spec) else load_spec(source, file=file, args=args, limits=limits)
    dev = resolve_device(device)
    dtype = _dtype(dtype)
    declared, given = apply_overrides(spec, inputs or [])

    meta_builder = Builder(limits)
    with torch.device("meta"):
        meta_module = meta_builder.module(spec)
    params, nbytes = count_tensors(meta_module, dtype)
    if dev.type != "meta":
        cap = max_bytes if max_bytes is not None else default_max_bytes()
        if nbytes > cap:
            raise CgError(f"the model needs {human_bytes(nbytes)} for {params:,} parameters, over the memory cap "
                          f"of {human_bytes(cap)}", spec.file,
                          hint="inspect it with --device meta (nothing is allocated), or raise the cap "
                          "with --max-memory / CGTOOL_MAX_MEMORY")
    if dev.type == "meta":
        builder, module = meta_builder, meta_module
    else:
        builder = Builder(limits)
        with torch.random.fork_rng(devices=[]):  # seeded, leaving the caller's RNG as it was
            torch.manual_seed(seed)
            module = builder.module(spec)  # built on the CPU: the same weights whatever the device
        if dev.type != "cpu":
            module = module.to(dev)
    if dtype is not None:
        module = module.to(dtype)
        meta_module = meta_module.to(dtype)
    built = Built(module, spec, declared, dev, dtype, builder.files, builder.origins, builder.code, seed, given,
                  param_count=params, param_bytes=nbytes)
    if check:
        built.check = dry_run(built, meta_module, meta_builder)
    return built


def _dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    from .spec import DTYPES

    name = getattr(dtype, "value", dtype)
    if name not in DTYPES or not DTYPES[name].is_floating_point:
        raise CgError(f"unknown dtype {name!r}", "--dtype", hint="use float32, float64, float16 or bfloat16")
    return DTYPES[name]


def dry_run(built: Built, meta_module: nn.Module, meta_builder: Builder) -> Check:
    """Check shapes: on meta tensors when possible, else on small real tensors of the declared shapes."""
    from .inputs import example_inputs

    if not built.inputs and not built.given:
        return Check("skipped", reason="the spec declares no inputs; pass --input x=SHAPE to check shapes")
    meta_inputs = example_inputs(built, device="meta")
    try:
        with torch.no_grad():
            out, records = run_forward(meta_module, [meta_inputs[n] for n in built.input_names],
                                       files=meta_builder.files, origins=meta_builder.origins)
        return Check("passed", "meta", outputs=describe_outputs(out), records=records)
    except DataDependent as dd:
        where = f" ({dd.loc})" if dd.loc else ""
        if built.device.type == "meta":
            return Check("skipped", reason=f"the forward's control flow depends on tensor values{where}, which "
                         "meta tensors do not have; build with --device cpu to check shapes on real tensors")
    real = example_inputs(built, device=built.device)
    with torch.no_grad():
        out, records = run_forward(built.module, [real[n] for n in built.input_names], files=built.files,
                                   origins=built.origins)
    return Check("passed", "real", outputs=describe_outputs(out), records=records)


def describe_outputs(out) -> list[dict]:
    if isinstance(out, torch.Tensor):
        return [{"shape": list(out.shape), "dtype": str(out.dtype).replace("torch.", "")}]
    if isinstance(out, (list, tuple)):
        return [d for v in out for d in describe_outputs(v)]
    if isinstance(out, dict):
        return [dict(d, name=str(k)) for k, v in out.items() for d in describe_outputs(v)]
    if isinstance(out, (int, float, bool)):
        return [{"shape": [], "dtype": type(out).__name__}]
    return []


def build(spec, **args) -> nn.Module:
    """The Python API: a spec (path or YAML text) to a real ``torch.nn.Module``; ``args`` override the spec's."""
    return build_model(spec, args=args, check=False).module

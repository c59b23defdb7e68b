"""Running a built module with spec-level errors: shape mismatches and runtime errors at the spec's lines.
"""
from __future__ import annotations
import contextlib
from dataclasses import dataclass, field
import re
import torch
from torch import nn
from .. import lang
from ..errors import CgError, Loc, first_line
from ..lang.tensorcap import guarded
from .builder import Origin


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


class _Repeats:
    """On meta tensors, a block that repeats one already run is not run again: its output's shape, dtype and
    strides are the first one's. Two modules are the same block when their whole subtree is (every module's
    class and settings, every parameter's and buffer's shape and dtype) and they get tensors of the same
    shapes, dtypes and strides, and nothing else: meta tensors have no values, so the same code on the same
    shapes gives the same shapes, and any error the block raises, the first one raised. ResNet-110's 54
    blocks run as 3, GPT-2's 12 as 1, and every BatchNorm of one size on one input shape once. What the
    skipped block's submodules saw is copied from the first."""

    def __init__(self, root: nn.Module, tracker: "_Tracker | None"):
        self.root, self.tracker = root, tracker
        self.names = {id(m): n for n, m in root.named_modules()}
        self.seen: dict[tuple, tuple[str, object]] = {}
        self.inside: dict[str, list] = {}
        self.patched: list[nn.Module] = []

    def __enter__(self):
        counts: dict[tuple, int] = {}
        signature = {}
        for m in self.root.modules():
            if m is not self.root:  # blocks, and leaf layers (a BatchNorm's meta kernel takes ~10 ms)
                signature[id(m)] = _subtree(m)
                counts[signature[id(m)]] = counts.get(signature[id(m)], 0) + 1
        for m in self.root.modules():
            sig = signature.get(id(m))
            if sig is not None and counts[sig] > 1 and "forward" not in m.__dict__:
                m.forward = self._wrap(m, sig)  # an instance attribute: nn.Module.__call__ calls it
                self.patched.append(m)
        return self

    def __exit__(self, *exc):
        for m in self.patched:
            m.__dict__.pop("forward", None)

    def _wrap(self, module, sig):
        forward = type(module).forward.__get__(module)

        def once(*args, **kwargs):
            if kwargs or not all(isinstance(a, torch.Tensor) and a.is_meta for a in args):
                return forward(*args, **kwargs)
            key = (sig, tuple((tuple(a.shape), a.dtype, a.stride()) for a in args))
            hit = self.seen.get(key)
            if hit is None:
                out = forward(*args)
                if isinstance(out, torch.Tensor) and out.is_meta:
                    self.seen[key] = (self.names.get(id(module), ""), (tuple(out.shape), out.stride(), out.dtype))
                return out
            first, (shape, stride, dtype) = hit
            self._copy_records(first, self.names.get(id(module), ""))
            return torch.empty_strided(shape, stride, dtype=dtype, device="meta")

        return once

    def _copy_records(self, first: str, here: str):
        if self.tracker is None or not first:
            return
        records = self.tracker.records
        inside = self.inside.get(first)
        if inside is None:  # what the first block's submodules saw: found once, copied at every repeat
            inside = self.inside[first] = [(p[len(first):], r) for p, r in records.items() if p.startswith(first + ".")]
        for rest, rec in inside:
            mine = records.setdefault(here + rest, CallRecord())
            mine.calls += rec.calls
            mine.input_shapes, mine.output_shapes = rec.input_shapes, rec.output_shapes


def _subtree(module: nn.Module) -> tuple:
    """Everything about a module's subtree that can change the shapes it computes: each module's class,
    settings (its plain attributes, such as MultiheadAttention's batch_first, which extra_repr omits) and
    the shapes and dtypes of its tensors."""
    return tuple((name, type(m), m.extra_repr(), m.training, _settings(m),
                  tuple((k, tuple(t.shape), t.dtype) for k, t in [*m._parameters.items(), *m._buffers.items()]
                        if t is not None))
                 for name, m in module.named_modules())


def _settings(m: nn.Module) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in vars(m).items()
                        if not k.startswith("_") and isinstance(v, (int, float, bool, str, tuple, type(None)))))


_DATA_DEPENDENT = ("cannot be called on meta tensors", "Cannot copy out of meta tensor", "meta tensors do not",
                   "data-dependent", "on a meta tensor")


def run_forward(module: nn.Module, args: list, *, files: set[str], origins: dict[int, Origin] | None = None,
                track: bool = True, names: list[str] | None = None, max_elements: int | None = None,
                repeats: bool = False):
    """Call *module* and turn any failure into a CgError at the spec's place.

    *names* are the inputs' names, in the order of *args* (for errors about an input).
    *max_elements*: the element cap on every tensor the forward makes (default: the language's).
    *repeats*: on meta tensors, run each distinct block once (:class:`_Repeats`).

    Returns (output, records) where records maps module paths to what they saw.
    """
    origins = origins or {}
    tracker = _Tracker(module) if track else None
    cap = max_elements or lang.DEFAULT_LIMITS.max_elements
    try:
        # the model stays as built, every tensor stays under the element cap, the run ends in time
        with guarded(module, max_elements=cap, max_pieces=lang.DEFAULT_LIMITS.max_sequence), \
                contextlib.ExitStack() as stack:
            if tracker is not None:
                stack.enter_context(tracker)
            if repeats:
                stack.enter_context(_Repeats(module, tracker))
            out = module(*args)
        return out, (tracker.records if tracker else {})
    except CgError as e:
        loc = lang.locate_runtime_error(e, files)
        if loc is None and tracker is not None and tracker.stack and e.place is None:
            # a cap hit inside a layer (an Upsample's output): the layer's place, and its name in the message
            origin = origins.get(id(tracker.stack[-1][0]))
            if origin is not None:
                raise CgError(f"{origin.where} {origin.text}: {e.message}", origin.loc, e.hint) from None
        raise e.with_place(loc) from None
    except Exception as e:  # noqa: BLE001 - torch's errors on user shapes and values
        loc = lang.locate_runtime_error(e, files)
        text = str(e)
        if any(s in text for s in _DATA_DEPENDENT):
            raise DataDependent(loc) from None
        raise (lang.explain_runtime_error(e, files, loc)
               or _dtype_mismatch(e, module, args, names, tracker, origins, loc)
               or _explain(e, module, tracker, origins, loc)) from None


#: torch's words for two tensors of different dtypes meeting in one op
_DTYPE_WORDS = re.compile(r"same dtype|scalar type|type \(\w+\) and .* should be the same|dtype.* but got|"
                          r"expected .* to have the same dtype")


def _dtype_mismatch(e, root, args, names, tracker, origins, loc) -> CgError | None:
    """An input whose floating dtype is not the model's (a float64 .npy file): say so, and how to fix it."""
    message = first_line(e)
    if not _DTYPE_WORDS.search(message):
        return None
    model = next((t.dtype for t in [*root.parameters(), *root.buffers()] if t.is_floating_point()), None)
    names = names or [f"input {i}" for i in range(len(args))]
    odd = [(n, a.dtype) for n, a in zip(names, args)
           if isinstance(a, torch.Tensor) and a.is_floating_point() and model is not None and a.dtype != model]
    if not odd:
        return None
    name, dtype = odd[0]
    short = lambda d: str(d).removeprefix("torch.")  # noqa: E731
    where, place = "the forward", loc
    if tracker is not None and tracker.stack:
        failing = tracker.stack[-1][0]
        origin = origins.get(id(failing))
        if origin is not None:
            where, place = f"{origin.where} {origin.text}", place or origin.loc
    return CgError(f"input {name} is {short(dtype)} but the model's parameters are {short(model)}: {where} failed "
                   f"({message})", place,
                   hint=f"run with --dtype {short(dtype)} (the model in {short(dtype)} too), or give the input as "
                   f"{short(model)} (numpy: x.astype(numpy.{short(model)}); torch: x.to(torch.{short(model)}))")


def _explain(e, root, tracker, origins, loc) -> CgError:
    message = first_line(e)
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
        dims = _dimensions(failing)
        if dims is not None and len(got) not in dims[0]:
            counts = " or ".join(f"{n}-D" for n in dims[0])
            return CgError(f"{label} expects {dims[1]} ({counts}), but gets a {len(got)}-D input of shape {got}",
                           place, hint=f"the number of dimensions is wrong, not a size: give it {dims[1]} (change "
                           "the input's shape with --input, or reshape before this layer: x.view(...), x.unsqueeze(1))")
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


_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}


def _dimensions(mod) -> tuple[tuple[int, ...], str] | None:
    """The numbers of dimensions a layer takes, and their names: Conv2d takes [N, C, H, W] or [C, H, W]."""
    n = {"1d": 1, "2d": 2, "3d": 3}.get(type(mod).__name__[-2:])
    if n is None:
        return None
    if isinstance(mod, (nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)):
        return (n + 2, n + 1), f"[N, C, {_SPATIAL[n]}] or [C, {_SPATIAL[n]}]"
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        return ((2, 3), "[N, C] or [N, C, L]") if n == 1 else ((n + 2,), f"[N, C, {_SPATIAL[n]}]")
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



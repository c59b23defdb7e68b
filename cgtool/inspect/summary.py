"""Per-layer summary of one forward pass: shapes, parameters, calls and FLOPs, in execution order.

How it works: forward pre/post hooks on every submodule keep a stack of the calls in progress
while torch's own :class:`torch.utils.flop_counter.FlopCounterMode` counts FLOPs. At each hook
the counter's running total is read, so a call's *inclusive* FLOPs are total-at-exit minus
total-at-entry, and its *own* FLOPs are the inclusive ones minus those of the calls it made.
That puts every op where it ran: FancyMLP's ``mm`` in the root's forward body goes to the root
row, not to a child, and a layer called three times is one row with ``calls = 3`` whose FLOPs
are the sum of its three calls. Rows deeper than ``depth`` are folded into their ancestor at
``depth``, so the rows' FLOPs always add up to the counter's total.

Parameters are counted per distinct tensor (tied weights once), each at the first row in
execution order whose module holds it; other rows holding it report it as ``shared_params``.

The model is not changed: no ``.to()``, no ``.eval()``; hooks are removed even when the forward
fails; buffers a forward updates in place (BatchNorm's running statistics in training mode) are
restored afterwards. The forward runs under ``torch.no_grad()``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import torch
from torch import nn
import re
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from ..errors import CgError

Shape = list[int]


@dataclass(frozen=True)
class LayerRow:
    name: str  # qualified module path; "" for the model itself
    type: str  # class name
    depth: int  # call depth of its first call: the model is 0, what it calls 1, ...
    parent: str | None  # name of the row whose forward first called it
    input_shapes: list[Shape]  # tensors among the first call's arguments, in order
    output_shapes: list[Shape]  # tensors in the first call's result (a scalar is [])
    params: int  # distinct parameters counted at this row
    trainable_params: int
    shared_params: int  # parameters this row's module holds that an earlier row already counted
    calls: int
    flops: int  # FLOPs run in this row's own forward bodies (and rows folded into it), all calls
    flops_total: int  # FLOPs of its calls including everything they called
    aliases: tuple[str, ...] = ()  # other names of the same module object
    shapes_vary: bool = False  # later calls had other shapes than the first
    folded: int = 0  # modules below --depth whose FLOPs and parameters this row absorbs


@dataclass(frozen=True)
class Uncounted:
    """An op that multiplies and adds but that torch's counter has no formula for: total_flops
    is then a lower bound."""

    op: str  # "aten.mv"
    calls: int
    modules: tuple[str, ...]  # rows whose own forward ran it ("" is the model)


@dataclass(frozen=True)
class Summary:
    model_type: str
    layers: list[LayerRow]
    total_params: int  # distinct parameter tensors of the whole model
    trainable_params: int
    non_trainable_params: int
    total_flops: int  # torch.utils.flop_counter's total for the forward
    flops_by_op: dict[str, int]
    output_shapes: list[Shape]
    depth: int | None
    device: str
    outside_flops: int = 0  # FLOPs the call ran outside the model's forward (0 for a plain module call)
    not_called: tuple[str, ...] = ()  # submodules holding parameters that the forward never called
    unattributed_params: int = 0  # parameters of modules with no row above them (model never called)
    uncounted: tuple[Uncounted, ...] = ()  # ops that did work the counter has no formula for


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Q @ K^T and attention @ V: 2 * batch * L * S * (E + Ev), batch being every leading dim of Q
    (query heads, so grouped-query attention counts right)."""
    *lead, s_q, d_q = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    batch = 1
    for d in lead:
        batch *= d
    return 2 * batch * s_q * s_k * (d_q + d_v)


#: Ops that torch's flop counter (2.13) does not know, with their formulas. Scaled dot-product
#: attention on the CPU dispatches to ``_scaled_dot_product_flash_attention_for_cpu``, which is
#: missing from ``flop_registry`` (its CUDA twins are there): without this an attention layer on
#: the CPU would count 0 FLOPs for the attention itself.
EXTRA_FLOP_FORMULAS = {
    op: _sdpa_flops
    for op in [getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)]
    if op is not None and op not in flop_registry
}


def _rnn_layer_flops(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kwargs) -> int:
    """One layer, one direction of a recurrent net, as its unrolled matmuls: at each of the T
    steps, each of the B rows is multiplied by W_ih and W_hh (2 FLOPs per multiply-add), the
    same count as the Linear calls it stands for. Gate nonlinearities and sums count 0, as
    they do everywhere in torch's counter."""
    rows = input_shape[0] * input_shape[1] if len(input_shape) == 3 else input_shape[0]  # T*B either layout
    return 2 * rows * (w_ih_shape[0] * w_ih_shape[1] + w_hh_shape[0] * w_hh_shape[1])


#: LSTM on the CPU runs each layer as one fused oneDNN op that the counter (2.13) has no formula
#: for: an LSTM summed to 0 FLOPs while the same GRU (decomposed to addmm) counted in full.
#: GRU and RNN decompose to addmm/mm on the CPU and are counted by torch's own formulas.
EXTRA_FLOP_FORMULAS.update({
    op: _rnn_layer_flops
    for op in [getattr(torch.ops.aten, "mkldnn_rnn_layer", None)]
    if op is not None and op not in flop_registry
})

#: aten ops that multiply and add (matrix products, convolutions, recurrent cells, attention,
#: transforms). One of these that the counter has no formula for is reported as not counted.
#: Elementwise ops, reductions and norms (linalg_vector_norm too) are not listed: torch's counter
#: counts them as 0 by convention, and so does every total it gives.
_WORK_OP = re.compile("^_*(" + "|".join([
    "mm", "bmm", "addmm", "addbmm", "baddbmm", "mv", "addmv", "dot", "vdot", "matmul", "linear", "tensordot",
    "einsum", "addr", "bilinear", "trilinear", "cdist", r".*conv(?!ert).*", ".*rnn.*", ".*lstm.*", ".*gru.*",
    ".*attention.*", "fft_.*", r"linalg_(?!.*norm).*",
]) + ")$")


class _UncountedOps(TorchDispatchMode):
    """Sees every aten op the counter sees, and keeps the working ones it has no formula for,
    with the module call in progress (the top of the recorder's stack)."""

    def __init__(self, known, recorder: _Recorder):
        super().__init__()
        self.known = known
        self.recorder = recorder
        self.seen: dict[str, dict[int | None, int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        if packet not in self.known and _WORK_OP.match(packet.__name__):
            where = self.recorder.stack[-1].module_id if self.recorder.stack else None
            calls = self.seen.setdefault(f"aten.{packet.__name__}", {})
            calls[where] = calls.get(where, 0) + 1
        return func(*args, **(kwargs or {}))


@dataclass
class _Record:
    module: nn.Module
    order: int
    depth: int
    parent: int | None
    input_shapes: list[Shape]
    output_shapes: list[Shape] = field(default_factory=list)
    calls: int = 0
    shapes_vary: bool = False
    first_target: int | None = None  # the row its first call is folded into


@dataclass
class _Frame:
    module_id: int
    entry: int
    ancestors: tuple[int, ...]
    first: bool
    children: int = 0


@dataclass(frozen=True)
class _Call:
    module_id: int
    ancestors: tuple[int, ...]
    own: int
    inclusive: int


def shapes_of(obj) -> list[Shape]:
    """Shapes of the tensors in *obj* (nested tuples, lists, dicts), in order."""
    found: list[Shape] = []

    def walk(o):
        if isinstance(o, torch.Tensor):
            found.append(list(o.shape))
        elif isinstance(o, Mapping):
            for v in o.values():
                walk(v)
        elif isinstance(o, list | tuple):
            for v in o:
                walk(v)

    walk(obj)
    return found


class _BufferGuard:
    """Restore every buffer (object and values) after a forward that may update them in place."""

    def __init__(self, module: nn.Module):
        self.saved = []
        for m in module.modules():
            for key, b in m._buffers.items():
                copy = b.detach().clone() if b is not None and not b.is_meta else None
                self.saved.append((m, key, b, copy))

    def restore(self) -> None:
        with torch.no_grad():
            for m, key, original, copy in self.saved:
                if m._buffers.get(key) is not original:
                    m._buffers[key] = original
                if copy is not None:
                    original.copy_(copy)


def _default_call(module: nn.Module, inputs):
    if isinstance(inputs, Mapping):
        return module(**inputs)
    if isinstance(inputs, list | tuple):
        return module(*inputs)
    return module(inputs)


def summarize(
    module: nn.Module,
    inputs=(),
    *,
    depth: int | None = None,
    call: Callable | None = None,
) -> Summary:
    """Run *module* once on *inputs* and tabulate what each submodule did.

    *inputs*: a tensor, a tuple of positional arguments or a dict of keyword arguments.
    *call*: run this with *inputs* instead of calling the module (the CLI passes the compiled
    spec's forward, which maps runtime errors to the spec's lines).
    *depth*: show rows down to this call depth (0: the model alone); deeper ones are folded.
    """
    if depth is not None and depth < 0:
        raise CgError(f"depth must be 0 or more, not {depth}", "--depth")
    names = _names_by_module(module)
    recorder = _Recorder()
    result = _run_hooked(module, inputs, call, recorder)
    summary = _tabulate(module, names, recorder.records, recorder.calls, recorder.counter, result, depth)
    return replace(summary, uncounted=_uncounted(recorder.uncounted.seen, names))


def _uncounted(seen: dict[str, dict[int | None, int]], names) -> tuple[Uncounted, ...]:
    return tuple(
        Uncounted(op, sum(where.values()),
                  tuple(dict.fromkeys(names[k][0] if k in names else "" for k in where)))
        for op, where in sorted(seen.items())
    )


def _names_by_module(module: nn.Module) -> dict[int, list[str]]:
    names: dict[int, list[str]] = {}
    for name, m in module.named_modules(remove_duplicate=False):
        names.setdefault(id(m), []).append(name)
    return names


class _Recorder:
    """The forward hooks: a record per module, a :class:`_Call` per finished call."""

    def __init__(self):
        self.records: dict[int, _Record] = {}
        self.calls: list[_Call] = []
        self.stack: list[_Frame] = []  # the calls in progress, outermost first
        self.counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)
        self.uncounted = _UncountedOps(self.counter.flop_registry, self)

    def pre_hook(self, mod, args, kwargs):
        key = id(mod)
        in_shapes = shapes_of((args, kwargs))
        rec = self.records.get(key)
        if rec is None:
            rec = self.records[key] = _Record(
                module=mod, order=len(self.records), depth=len(self.stack),
                parent=self.stack[-1].module_id if self.stack else None, input_shapes=in_shapes,
            )
        elif in_shapes != rec.input_shapes:
            rec.shapes_vary = True
        rec.calls += 1
        ancestors = tuple(f.module_id for f in self.stack)
        self.stack.append(_Frame(key, self.counter.get_total_flops(), ancestors, rec.calls == 1))

    def post_hook(self, mod, args, kwargs, output):
        frame = self.stack.pop()
        inclusive = self.counter.get_total_flops() - frame.entry
        if self.stack:
            self.stack[-1].children += inclusive
        self.calls.append(_Call(frame.module_id, frame.ancestors, inclusive - frame.children, inclusive))
        rec = self.records[frame.module_id]
        out_shapes = shapes_of(output)
        if frame.first:
            rec.output_shapes = out_shapes
        elif out_shapes != rec.output_shapes:
            rec.shapes_vary = True


def _run_hooked(module: nn.Module, inputs, call: Callable | None, recorder: _Recorder):
    """The forward's result, run under no_grad with *recorder* on every module; the model is left as it was."""
    handles = []
    guard = _BufferGuard(module)
    # Under no_grad in eval mode, nn.MultiheadAttention / TransformerEncoderLayer take a fused
    # "fast path" whose attention matmuls the flop counter cannot see (measured: a 2-layer
    # encoder loses its bmm FLOPs). The math path computes the same thing and is counted.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        for m in {id(m): m for m in module.modules()}.values():
            handles.append(m.register_forward_pre_hook(recorder.pre_hook, with_kwargs=True))
            handles.append(m.register_forward_hook(recorder.post_hook, with_kwargs=True))
        torch.backends.mha.set_fastpath_enabled(False)
        # the counter on top: what reaches the op watcher is what the counter ran, after decomposing
        with torch.no_grad(), recorder.uncounted, recorder.counter:
            return (call or (lambda x: _default_call(module, x)))(inputs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for h in handles:
            h.remove()
        guard.restore()


@dataclass
class _FlopRows:
    """Each shown row's FLOPs, keyed by module id."""

    own: dict[int, int]  # run in its own forward bodies and those folded into it
    inclusive: dict[int, int]  # its calls including everything they called
    folded: dict[int, int]  # how many modules below the depth limit it absorbs


@dataclass
class _ParamRows:
    """Each shown row's parameters, keyed by module id, and the model's totals."""

    params: dict[int, int]
    trainable: dict[int, int]
    shared: dict[int, int]
    total: int = 0
    trainable_total: int = 0
    unattributed: int = 0


def _tabulate(module, names, records, calls, counter, result, depth) -> Summary:
    limit = depth if depth is not None else 1 << 30
    shown = {c.module_id for c in calls if len(c.ancestors) <= limit}
    flops = _attribute_flops(records, calls, shown, limit)
    order = {key: records[key].order for key in shown}
    params = _attribute_params(module, records, shown, order)
    layers = [_layer_row(key, records[key], names, flops, params) for key in sorted(shown, key=order.__getitem__)]
    total_flops = counter.get_total_flops()
    by_op = {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}
    devices = {str(t.device) for t in [*module.parameters(), *module.buffers()]}
    return Summary(
        model_type=type(module).__name__,
        layers=layers,
        total_params=params.total,
        trainable_params=params.trainable_total,
        non_trainable_params=params.total - params.trainable_total,
        total_flops=total_flops,
        flops_by_op=by_op,
        output_shapes=shapes_of(result),
        depth=depth,
        device=",".join(sorted(devices)) or "cpu",
        outside_flops=total_flops - sum(c.own for c in calls),
        not_called=tuple(_not_called(module, records)),
        unattributed_params=params.unattributed,
    )


def _attribute_flops(records, calls, shown, limit) -> _FlopRows:
    """Put each call's FLOPs on its row, or on its ancestor at *limit* when it is not shown.

    Also sets each record's ``first_target``, which parameters follow (:func:`_row_of`).
    """
    own: dict[int, int] = dict.fromkeys(shown, 0)
    inclusive: dict[int, int] = dict.fromkeys(shown, 0)
    for c in calls:
        target = c.module_id if c.module_id in shown else c.ancestors[limit]
        own[target] += c.own
        if c.module_id in shown:
            inclusive[c.module_id] += c.inclusive
        rec = records[c.module_id]
        if rec.first_target is None:
            rec.first_target = target
    folded: dict[int, int] = dict.fromkeys(shown, 0)
    for key, rec in records.items():
        if key not in shown:
            folded[rec.first_target] += 1
    return _FlopRows(own, inclusive, folded)


def _attribute_params(module, records, shown, order) -> _ParamRows:
    """Count each distinct parameter tensor once, at the first row in *order* that holds it."""
    by_name = dict(module.named_modules(remove_duplicate=False))
    groups: dict[int, tuple[torch.Tensor, list[str]]] = {}
    for qual, p in module.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), (p, []))[1].append(qual)

    rows = _ParamRows(dict.fromkeys(shown, 0), dict.fromkeys(shown, 0), dict.fromkeys(shown, 0))
    for p, quals in groups.values():
        n = p.numel()
        rows.total += n
        rows.trainable_total += n if p.requires_grad else 0
        holders = {_row_of(q.rpartition(".")[0], records, by_name) for q in quals}
        holders.discard(None)
        if not holders:
            rows.unattributed += n
            continue
        first, *others = sorted(holders, key=order.__getitem__)
        rows.params[first] += n
        rows.trainable[first] += n if p.requires_grad else 0
        for r in others:
            rows.shared[r] += n
    return rows


def _row_of(name: str, records, by_name) -> int | None:
    """The row a module's parameters go to: its own, the one it was folded into, or (never
    called, e.g. a ParameterList read in its parent's forward) its nearest called ancestor."""
    while True:
        rec = records.get(id(by_name[name]))
        if rec is not None:
            return rec.first_target
        if name == "":
            return None
        name = name.rpartition(".")[0]


def _not_called(module, records) -> list[str]:
    """Submodules with parameters of their own that the forward never called."""
    return [
        name for name, m in module.named_modules()
        if id(m) not in records and m._parameters and not isinstance(m, nn.ParameterList | nn.ParameterDict)
    ]


def _layer_row(key: int, rec: _Record, names, flops: _FlopRows, params: _ParamRows) -> LayerRow:
    all_names = names.get(key, ["?"])
    return LayerRow(
        name=all_names[0],
        type=type(rec.module).__name__,
        depth=rec.depth,
        parent=names[rec.parent][0] if rec.parent is not None else None,
        input_shapes=rec.input_shapes,
        output_shapes=rec.output_shapes,
        params=params.params[key],
        trainable_params=params.trainable[key],
        shared_params=params.shared[key],
        calls=rec.calls,
        flops=flops.own[key],
        flops_total=flops.inclusive[key],
        aliases=tuple(all_names[1:]),
        shapes_vary=rec.shapes_vary,
        folded=flops.folded[key],
    )

"""The forward at the Python floor: known layers run as functional ops when nothing is watching.

Calling a module (``hidden(x)``) goes through ``nn.Module.__call__``: three Python frames that
look for hooks before ``forward`` runs, and a fourth for ``forward`` itself — about as long as a
small ``F.linear``. A compiled forward checks once per call that nothing could see the
difference (no global or per-module hooks, no ``torch.compile``/``torch.export``, FX or JIT
tracing, no in-place ``module.compile()``), and the layer is exactly the class the spec built
(a swapped submodule or a parametrization changes the class). Then it calls:

- known layers as the functional op their ``forward`` calls, on their own parameters, read at
  each call (``F.linear(x, hidden._parameters['weight'], hidden._parameters['bias'])``) — so
  ``torch.func.functional_call``, ``load_state_dict`` and ``.to()`` are seen;
- ``nn.Sequential`` chains of them inline;
- any other module's ``forward`` directly.

Otherwise (a hook attached, a tracer running, a BatchNorm in training mode, an input of the
wrong rank) that call site takes the ordinary module call, so ``summary``, the dry run's error
messages, user hooks and ``torch.compile`` see exactly the module calls they always saw. The
two paths run the same kernels with the same arguments: results are bitwise equal
(``tests/test_fast_forward.py`` checks every config, in train and eval mode, with gradients).
"""
from __future__ import annotations
import ast
from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module

# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Leaf:
    """A known layer: its class name (``Linear``), called with one tensor."""

    type: str


@dataclass(frozen=True)
class Chain:
    """An ``nn.Sequential`` whose children are known: inlined child by child."""

    keys: tuple[str, ...]
    children: tuple  # Leaf | Opaque


@dataclass(frozen=True)
class Opaque:
    """Any other module: its ``forward`` is called directly."""


#: class name -> (extra condition on the module, the functional call, rank condition on the input).
#: ``{m}`` is the module, ``{t}`` the input. Each call is what the class's own ``forward`` runs.
_LEAVES: dict[str, tuple[str | None, str, str | None]] = {
    "Linear": (None, "_cg_F_linear({t}, {m}._parameters['weight'], {m}._parameters['bias'])", None),
    **{f"Conv{n}d": ("{m}.padding_mode == 'zeros'",
                     f"_cg_F_conv{n}d({{t}}, {{m}}._parameters['weight'], {{m}}._parameters['bias'], {{m}}.stride, "
                     "{m}.padding, {m}.dilation, {m}.groups)", None) for n in (1, 2, 3)},
    "LayerNorm": (None, "_cg_F_layer_norm({t}, {m}.normalized_shape, {m}._parameters['weight'], "
                  "{m}._parameters['bias'], {m}.eps)", None),
    "Embedding": (None, "_cg_F_embedding({t}, {m}._parameters['weight'], {m}.padding_idx, {m}.max_norm, "
                  "{m}.norm_type, {m}.scale_grad_by_freq, {m}.sparse)", None),
    # eval mode with running statistics only: training updates them, which stays the module's business
    **{f"BatchNorm{n}d": ("not {m}.training and {m}._buffers.get('running_mean') is not None "
                          "and {m}._buffers.get('running_var') is not None",
                          "_cg_F_batch_norm({t}, {m}._buffers['running_mean'], {m}._buffers['running_var'], "
                          "{m}._parameters['weight'], {m}._parameters['bias'], False, 0.0, {m}.eps)",
                          rank) for n, rank in ((1, "{t}.dim() in (2, 3)"), (2, "{t}.dim() == 4"),
                                                (3, "{t}.dim() == 5"))},
    "RMSNorm": (None, "_cg_F_rms_norm({t}, {m}.normalized_shape, {m}._parameters['weight'], {m}.eps)", None),
    "MaxPool2d": (None, "_cg_F_max_pool2d({t}, {m}.kernel_size, {m}.stride, {m}.padding, {m}.dilation, "
                  "ceil_mode={m}.ceil_mode, return_indices={m}.return_indices)", None),
    "AvgPool2d": (None, "_cg_F_avg_pool2d({t}, {m}.kernel_size, {m}.stride, {m}.padding, {m}.ceil_mode, "
                  "{m}.count_include_pad, {m}.divisor_override)", None),
    "AdaptiveAvgPool2d": (None, "_cg_F_adaptive_avg_pool2d({t}, {m}.output_size)", None),
    "ReLU": ("not {m}.inplace", "_cg_relu({t})", None),
    "GELU": (None, "_cg_F_gelu({t}, approximate={m}.approximate)", None),
    "SiLU": ("not {m}.inplace", "_cg_F_silu({t})", None),
    "LeakyReLU": ("not {m}.inplace", "_cg_F_leaky_relu({t}, {m}.negative_slope)", None),
    "Tanh": (None, "_cg_tanh({t})", None),
    "Sigmoid": (None, "_cg_sigmoid({t})", None),
    "Softmax": ("{m}.dim is not None", "{t}.softmax({m}.dim)", None),
    "Identity": (None, "{t}", None),
    "Flatten": (None, "{t}.flatten({m}.start_dim, {m}.end_dim)", None),
    "Dropout": ("not {m}.inplace", "_cg_dropout({t}, {m}.p, {m}.training)", None),
}

#: chains longer than this are called through ``nn.Sequential.forward`` (their prelude would cost more)
MAX_CHAIN = 32


def plan_layer(layer) -> Leaf | Chain | Opaque:
    """How a spec layer (:class:`cgtool.spec.Layer`) can be called fast."""
    if layer.ref is not None or (layer.call is None and layer.spec is None):  # a ref; an absent (None) module
        return Opaque()
    if layer.repeat is not None:
        if layer.repeat > MAX_CHAIN or getattr(layer, "repeat_kind", "sequential") != "sequential" \
                or getattr(layer, "repeat_names", None) is not None:
            return Opaque()
        child = _leaf_or_opaque(layer)
        return Chain(tuple(str(i) for i in range(layer.repeat)), (child,) * layer.repeat)
    if layer.call is not None:
        return _leaf_or_opaque(layer)
    spec = layer.spec
    if spec.kind == "sequential" and len(spec.layers) <= MAX_CHAIN:
        keys, children = [], []
        for i, (name, sub) in enumerate(spec.layers):
            keys.append(name if name is not None else str(i))
            children.append(_leaf_or_opaque(sub) if sub.repeat is None and sub.ref is None else Opaque())
        return Chain(tuple(keys), tuple(children))
    return Opaque()


def _leaf_or_opaque(layer) -> Leaf | Opaque:
    if layer.call is not None and layer.call.type in _LEAVES and hasattr(nn, layer.call.type):
        return Leaf(layer.call.type)
    return Opaque()


# --------------------------------------------------------------------------- run-time names


#: no global module hooks and no tracer, inline in compiled code (no call of its own): torch's global hook dicts
#: are changed in place, FX's flag is read from its module, and torch.compile answers is_compiling() with True
#: while tracing
SOMETHING_WATCHES = ("(_cg_global_fh or _cg_global_fph or _cg_global_bh or _cg_global_bph or "
                     "_cg_fx._is_fx_tracing_flag or _cg_is_compiling() or _cg_jit_state() is not None)")


import torch.fx._symbolic_trace as _fx  # noqa: E402 - torch.fx is imported by torch itself

#: nn.Sequential and the subclasses named by specs (cgtool.named: they override nothing), inlined alike
SEQUENTIAL_TYPES: set[type] = {nn.Sequential}

_jit_state = torch._C._get_tracing_state

GLOBALS: dict = {
    "_cg_global_fh": _module._global_forward_hooks, "_cg_global_fph": _module._global_forward_pre_hooks,
    "_cg_global_bh": _module._global_backward_hooks, "_cg_global_bph": _module._global_backward_pre_hooks,
    "_cg_fx": _fx, "_cg_is_compiling": torch.compiler.is_compiling, "_cg_jit_state": _jit_state,
    "_cg_T_sequentials": SEQUENTIAL_TYPES,
    **{f"_cg_T_{name}": getattr(nn, name) for name in _LEAVES if hasattr(nn, name)},
    "_cg_F_linear": F.linear,
    "_cg_F_conv1d": F.conv1d, "_cg_F_conv2d": F.conv2d, "_cg_F_conv3d": F.conv3d,
    "_cg_F_layer_norm": F.layer_norm,
    "_cg_F_rms_norm": getattr(F, "rms_norm", None),  # torch >= 2.4, as nn.RMSNorm
    "_cg_F_max_pool2d": F.max_pool2d,
    "_cg_F_avg_pool2d": F.avg_pool2d,
    "_cg_F_adaptive_avg_pool2d": F.adaptive_avg_pool2d,
    "_cg_F_embedding": F.embedding,
    "_cg_F_batch_norm": F.batch_norm,
    "_cg_relu": torch.relu,
    "_cg_F_gelu": F.gelu,
    "_cg_F_silu": torch._C._nn.silu,  # what F.silu calls when not in place
    "_cg_F_leaky_relu": torch._C._nn.leaky_relu,  # what F.leaky_relu calls when not in place
    "_cg_tanh": torch.tanh,
    "_cg_sigmoid": torch.sigmoid,
    "_cg_dropout": torch.dropout,  # what F.dropout calls when not in place (p was checked by the constructor)
}


_WATCHED = ("{m}._forward_hooks or {m}._forward_pre_hooks or {m}._backward_hooks or {m}._backward_pre_hooks "
            "or {m}._compiled_call_impl is not None")
_UNWATCHED = f"not ({_WATCHED})"


def _dynamic_table() -> dict:
    """Class -> ``f(module, x)``: the fast call of a known layer reached through a loop variable
    (``for layer in layers: x = layer(x)``), whose class is known only when it runs. Each ``f`` checks
    the layer's own conditions (BatchNorm in eval mode, the input's rank) and else calls the module."""
    table = {}
    for name, (extra, template, rank) in _LEAVES.items():
        cls = getattr(nn, name, None)
        if cls is None:
            continue
        test = " and ".join(c.format(m="m", t="t") for c in (extra, rank) if c) or "True"
        namespace = dict(GLOBALS)
        exec(f"def call(m, t):\n    return {template.format(m='m', t='t')} if {test} else m(t)\n",  # noqa: S102
             namespace)
        namespace["call"].__qualname__ = f"fast {name}"
        table[cls] = namespace["call"]
    return table


def _module_call(self, *args, **kwargs):
    """The ordinary module call, looked up when called (FX tracing patches ``nn.Module.__call__``)."""
    return nn.Module.__call__(self, *args, **kwargs)


GLOBALS["_cg_module_call"] = _module_call
GLOBALS["_cg_dyn"] = _dynamic_table()

#: in ``__call__``, after :func:`call_guard` passed
WATCHED_CHECKED = "_cg_ok = True"


def call_guard(params: list[str]) -> str:
    """The first line of a generated ``__call__``: the module call when anything watches this module."""
    args = ", ".join(["self", *params])
    return f"if {SOMETHING_WATCHES} or {_WATCHED.format(m='self')}: return _cg_module_call({args})"


# --------------------------------------------------------------------------- rewriting


def _condition(m: str, plan) -> str:
    """The per-call condition that *m* (a local) can take the fast call of *plan*."""
    parts = [f"{m} is not None", _UNWATCHED.format(m=m)]  # an optional submodule may be None
    if isinstance(plan, Leaf):
        extra = _LEAVES[plan.type][0]
        parts[0] = f"type({m}) is _cg_T_{plan.type}"
        if extra:
            parts.append(extra.format(m=m))
    return " and ".join(parts)


class FastCalls(ast.NodeTransformer):
    """Rewrites ``name(args)`` for planned module names into a fast call with the module call as fallback.

    ``prelude()`` then gives the lines that bind the per-call flags (placed after the module bindings)."""

    def __init__(self, plans: dict, assigned: set[str], tree: ast.AST | None = None):
        self.plans = {n: p for n, p in plans.items() if n not in assigned}
        self.loop_names = _loop_only_names(tree) if tree is not None else set()
        self.used: dict[str, object] = {}
        self.temps = 0
        self.scoped = 0  # inside a comprehension or lambda: no := there

    def _temp(self) -> str:
        self.temps += 1
        return f"_cg_t{self.temps}"

    def _scope(self, node):
        self.scoped += 1
        self.generic_visit(node)
        self.scoped -= 1
        return node

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = visit_Lambda = _scope

    def visit_Call(self, node):
        self.generic_visit(node)
        if (not self.scoped and isinstance(node.func, ast.Name) and node.func.id in self.loop_names
                and len(node.args) == 1 and not node.keywords and not isinstance(node.args[0], ast.Starred)):
            return self._dynamic(node)
        if self.scoped or not isinstance(node.func, ast.Name) or node.func.id not in self.plans:
            return node
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            return node
        name = node.func.id
        plan = self.plans[name]
        single = len(node.args) == 1 and not node.keywords
        if isinstance(plan, (Leaf, Chain)) and not single:
            plan = Opaque()  # a known layer called with extra arguments: its forward judges them
        key = (name, type(plan).__name__)
        self.used[key] = plan
        flag = _flag(name, plan)
        simple = all(isinstance(a, (ast.Name, ast.Constant)) for a in [*node.args, *(k.value for k in node.keywords)])
        if simple:
            args = [ast.unparse(a) for a in node.args]
            kwargs = [f"{k.arg}={ast.unparse(k.value)}" for k in node.keywords]
            test = flag
        else:
            temps = [self._temp() for _ in [*node.args, *node.keywords]]
            values = [ast.unparse(a) for a in node.args] + [ast.unparse(k.value) for k in node.keywords]
            args = temps[:len(node.args)]
            kwargs = [f"{k.arg}={t}" for k, t in zip(node.keywords, temps[len(node.args):])]
            if single:
                test = f"({temps[0]} := ({values[0]})) is not None and {flag}"
            else:
                test = f"({', '.join(f'({t} := ({v}))' for t, v in zip(temps, values))}, {flag})[-1]"
        call_args = ", ".join([*args, *kwargs])
        slow = f"{name}({call_args})"
        if isinstance(plan, Leaf):
            fast, rank = _leaf_call(name, plan, args[0])
            if rank:
                test = f"{test} and {rank}"
        elif isinstance(plan, Chain):
            fast = self._chain(name, plan, args[0])
        else:
            fast = f"{name}.forward({call_args})"
        new = ast.parse(f"({fast} if {test} else {slow})", mode="eval").body
        for part in ast.walk(new):  # every piece at the call's place in the spec: errors and traces point there
            if "lineno" in part._attributes:
                ast.copy_location(part, node)
        return new

    def _dynamic(self, node):
        """``layer(x)`` where ``layer`` is a loop variable: the fast call of its class, looked up as it runs."""
        name = node.func.id
        self.used[("", "dynamic")] = None  # only the watch check in the prelude
        arg, t = ast.unparse(node.args[0]), self._temp()
        kind = self._temp()
        source = (f"(_cg_dyn[{kind}]({name}, {t}) if ({t} := ({arg})) is not None and _cg_ok and "
                  f"({kind} := type({name})) in _cg_dyn and {_UNWATCHED.format(m=name)} else {name}({t}))")
        new = ast.parse(source, mode="eval").body
        for part in ast.walk(new):
            if "lineno" in part._attributes:
                ast.copy_location(part, node)
        return new

    def _chain(self, name: str, plan: Chain, value: str) -> str:
        for i, child in enumerate(plan.children):
            c = _child(name, i)
            if isinstance(child, Leaf):
                _, template, rank = _LEAVES[child.type]
                if rank:  # the wrong rank: the child's own call raises its own error
                    t = self._temp()
                    value = (f"({template.format(m=c, t=t)} if {rank.format(t=f'({t} := ({value}))')} "
                             f"else {c}({t}))")
                else:
                    value = template.format(m=c, t=value)
            else:
                value = f"{c}.forward({value})"
        return value

    def prelude(self) -> list[str]:
        """Lines binding the flags of the rewritten calls (after the module bindings)."""
        if not self.used:
            return []
        lines = [f"_cg_ok = not {SOMETHING_WATCHES}"]
        for (name, _), plan in self.used.items():
            if plan is None:  # loop variables: the watch check alone
                continue
            flag = _flag(name, plan)
            if isinstance(plan, Chain):
                keys = tuple(plan.keys)
                children = []
                for i, (key, child) in enumerate(zip(keys, plan.children)):
                    c = _child(name, i)
                    lines.append(f"{c} = {name}._modules.get({key!r})")
                    children.append(_condition(c, child))
                parts = [f"type({name}) in _cg_T_sequentials", _UNWATCHED.format(m=name),
                         f"tuple({name}._modules) == {keys!r}", *children]
                lines.append(f"{flag} = _cg_ok and {' and '.join(parts)}")
            else:
                lines.append(f"{flag} = _cg_ok and {_condition(name, plan)}")
        return lines


def _loop_only_names(tree: ast.AST) -> set[str]:
    """Names bound only as the target of ``for NAME in ...`` (module loops: ``for layer in layers``)."""
    targets = {id(node.target): node.target.id for node in ast.walk(tree)
               if isinstance(node, ast.For) and isinstance(node.target, ast.Name)}
    other = {node.id for node in ast.walk(tree)
             if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and id(node) not in targets}
    return set(targets.values()) - other


def _flag(name: str, plan) -> str:
    return f"_cg_f{type(plan).__name__[0]}_{name}"


def _child(name: str, i: int) -> str:
    return f"_cg_c{i}_{name}"


def _leaf_call(m: str, plan: Leaf, value: str) -> tuple[str, str | None]:
    _, template, rank = _LEAVES[plan.type]
    return template.format(m=m, t=value), (rank.format(t=value) if rank else None)

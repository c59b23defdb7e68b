"""One capture: run a compiled forward and read the labelled graph from torch's own autograd graph.

A forward (of a spec, or of a ``cgtool grad`` expression, compiled by the same compiler)
runs in capture mode (:mod:`cgtool.lang.instrument`): each operation and each name
binding is reported to a :class:`Recorder`, and module calls are reported by forward
hooks. Torch does the computing and records the autograd graph as always. The
:class:`Graph` is then read from that autograd graph (``grad_fn``/``next_functions``):

- a node per value: leaves (``AccumulateGrad``: inputs, parameters by qualified name),
  outputs of operations and module calls, and values only autograd saw (the inside of
  a module or of a composite operation, labelled ``owner/op``);
- an edge per operand slot, whose vector-Jacobian product calls the autograd node itself
  with the cotangent of that one output, and takes the gradient of that one slot;
- labels are the user's: the forward variable a value was bound to (``c#2`` for the
  second binding of ``c``), ``linear#2`` for the second call of a module, the source
  text otherwise (``(x1 + w)``), and the spec's file:line for every operation.

A non-differentiable operation (``//``, comparisons, integer results) is a node with
data edges and no gradient edge; no internal error escapes from one.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import CgError, Loc
from ..lang import Limits, Source, locate_runtime_error
from ..lang.instrument import Site
from .model import Graph, Node, OpInfo

MAX_LABEL = 60  # characters of source text shown for an unnamed value
# Operations whose derivative is zero wherever it exists: torch records a zero gradient, the graph
# records what they are, a step with no derivative (data edges, no gradient edge).
NO_DERIVATIVE = frozenset({"floordiv", "round", "floor", "ceil", "trunc", "sign"})


@dataclass
class Record:
    """One operation or module call that ran and made at least one tensor."""

    key: str  # "add", "sin", "linear" (module calls: the module's qualified name)
    symbol: str
    args: list  # operands as passed: tensors, numbers, lists
    simple: bool  # operands are all tensors or numbers, no keywords (symbolic rules apply)
    outputs: list[torch.Tensor]
    text: str  # the user's source text, or the module call label
    loc: str | None
    module_call: str | None = None  # "linear#2"
    differentiable: bool = True


@dataclass
class Binding:
    name: str
    version: int
    key: tuple | None  # the bound tensor's value key; None for a non-tensor
    tensor: torch.Tensor | None = None


@dataclass
class Capture:
    """What one run recorded, and the Graph read from it."""

    graph: Graph
    nodes: dict[tuple, Node]  # value key -> node
    names: dict[str, Node]  # every label a user may type: labels, versions, aliases, parameters
    aliases: dict[str, str]  # alias -> label of the node it names
    versions: Counter  # name -> how many times it was bound (leaves count once)
    last_assigned: str | None
    returned: object = None  # what the forward returned (tensors are the model's own outputs)
    returned_site: Site | None = None

    def node_of(self, value) -> Node | None:
        if not isinstance(value, torch.Tensor):
            return None
        return self.nodes.get(value_key(value))


def value_key(t: torch.Tensor) -> tuple:
    """How a value is known across the run: its autograd node and output slot, or the tensor itself."""
    fn = t.grad_fn
    if fn is None:
        return ("tensor", id(t))
    return ("fn", id(fn), t.output_nr)


def _fn_key(fn, nr: int) -> tuple:
    if type(fn).__name__ == "AccumulateGrad":
        return ("tensor", id(fn.variable))
    return ("fn", id(fn), nr)


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _not_implemented(t: torch.Tensor) -> bool:
    return t.grad_fn is not None and type(t.grad_fn).__name__ == "NotImplemented"


class Recorder:
    """Receives the reports of capture-mode code and of module hooks during one run."""

    def __init__(self, source: Source | None, sites: list[Site] | None = None, *, limits: Limits | None = None,
                 module_names: dict[int, str] | None = None, numeric: bool = True):
        self.source = source
        self.sites = sites or []
        self.limits = limits or Limits()
        self.module_names = module_names or {}
        self.numeric = numeric
        self.records: list[Record] = []
        self.bindings: list[Binding] = []
        self.versions: Counter = Counter()
        self.last_assigned: str | None = None
        self.keep: list = []  # every recorded tensor and its autograd node stay alive, so ids stay unique
        self.operations = 0
        self.calls: Counter = Counter()
        self.module_depth = 0
        self.direct_depth: list[tuple[int, Site]] = []  # module calls made by the program itself
        self.returned_site: Site | None = None
        self.text = source.text.replace("\t", "    ") if source else ""
        self.line_starts = [0]
        for line in self.text.splitlines(keepends=True):
            self.line_starts.append(self.line_starts[-1] + len(line))

    # -- what compiled code calls
    def namespace(self) -> dict:
        return {"_cg_op": self.op, "_cg_method": self.method, "_cg_attr": self.attr, "_cg_bind": self.bind,
                "_cg_return": self.ret}

    def op(self, site: int, fn, *args, **kwargs):
        s = self.sites[site]
        if isinstance(fn, nn.Module):  # the forward hook records the call; remember where it was made
            self.direct_depth.append((self.module_depth, s))
            try:
                return self._run(s, fn, args, kwargs, record=False)
            finally:
                self.direct_depth.pop()
        return self._run(s, fn, args, kwargs)

    def method(self, site: int, obj, attr: str, *args, **kwargs):
        # the object is the first operand: x.sum() reads x, x.add(w) reads x and w
        return self._run(self.sites[site], lambda o, *a, **k: getattr(o, attr)(*a, **k), (obj, *args), kwargs)

    def attr(self, site: int, obj, name: str):
        return self._run(self.sites[site], lambda o: getattr(o, name), (obj,), {})

    def bind(self, site: int, name: str, value) -> None:
        self.versions[name] += 1
        key = value_key(value) if isinstance(value, torch.Tensor) else None
        if key is not None:
            self.keep.extend((value, value.grad_fn))
        self.bindings.append(Binding(name, self.versions[name], key, value if key is not None else None))
        self.last_assigned = name

    def ret(self, site: int, value):
        self.returned_site = self.sites[site]
        return value

    # -- running one operation
    def _run(self, s: Site, fn, args, kwargs, *, record: bool = True):
        self.operations += 1
        if self.operations > self.limits.max_operations:
            raise CgError(f"the program ran more than {self.limits.max_operations:,} operations", self.loc(s),
                          hint="make the loops shorter")
        differentiable = True
        try:
            result = fn(*args, **kwargs)
        except CgError as err:
            raise err.with_place(self.loc(s)) from None
        except RuntimeError as err:
            if "derivative for" not in str(err) or "not implemented" not in str(err):
                raise self.failure(s, err) from None
            # torch refuses to record an operation it cannot differentiate: run it on plain values
            differentiable = False
            plain = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
            try:
                result = fn(*plain, **kwargs)
            except Exception as again:  # noqa: BLE001 - reported at the program's place
                raise self.failure(s, again) from None
        except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, OverflowError, AttributeError,
                NotImplementedError) as err:
            raise self.failure(s, err) from None
        except MemoryError:
            raise CgError(f"`{self.label(s)}` needs more memory than there is", self.loc(s)) from None
        outputs = _tensors(result)
        for t in outputs:
            if t.numel() > self.limits.max_elements:
                raise CgError(f"`{self.label(s)}` made a tensor of {t.numel():,} elements, over the cap of "
                              f"{self.limits.max_elements:,}", self.loc(s))
        if not record or not outputs or not any(isinstance(a, torch.Tensor) for a in _flat(args, kwargs)):
            return result
        if s.key in NO_DERIVATIVE or any(_not_implemented(t) for t in outputs):
            differentiable = False
            result = _detached(result)
            outputs = _tensors(result)
        if not differentiable or not any(t.requires_grad for t in outputs):
            # an integer or boolean result, or one torch has no derivative for: data edges only
            differentiable = differentiable and not any(
                a.requires_grad for a in _flat(args, kwargs) if isinstance(a, torch.Tensor))
        simple = not kwargs and all(isinstance(a, (int, float, torch.Tensor)) for a in args)
        self.keep.extend(outputs + [t.grad_fn for t in outputs])
        self.records.append(Record(s.key, s.symbol, list(args), simple, outputs, self.label(s), str(self.loc(s)),
                                   differentiable=differentiable))
        return result

    def failure(self, s: Site, err: BaseException) -> CgError:
        hint = None if self.numeric else \
            "without --at values every leaf is a number; give tensor leaves their values, e.g. --at x='[1, 2]'"
        return CgError(f"cannot compute `{self.label(s)}`: {_first_line(err)}", self.loc(s), hint)

    # -- module calls (forward hooks, installed by `hooks()`)
    def pre_hook(self, module, args):
        self.module_depth += 1

    def post_hook(self, module, args, output):
        self.module_depth -= 1
        name = self.module_names.get(id(module))
        if name is None or name == "":
            return None
        self.calls[name] += 1
        label = f"{name}#{self.calls[name]}"
        site = self.direct_depth[-1][1] if self.direct_depth and self.direct_depth[-1][0] == self.module_depth \
            else None
        outputs = _tensors(output)
        self.keep.extend(outputs + [t.grad_fn for t in outputs])
        self.records.append(Record(name, name, list(args), False, outputs, self.label(site) if site else label,
                                   str(self.loc(site)) if site else None, module_call=label))
        return None

    # -- positions and labels
    def loc(self, s: Site | None) -> Loc | None:
        if s is None or self.source is None or s.line is None:
            return None
        return self.source.loc(s.line, None if s.col is None else s.col + 1)

    def _offset(self, line: int, col_bytes: int) -> int:
        start = self.line_starts[line - 1]
        end = self.line_starts[line] if line < len(self.line_starts) else len(self.text)
        return start + len(self.text[start:end].encode("utf-8")[:col_bytes].decode("utf-8", errors="ignore"))

    def label(self, s: Site | None) -> str:
        """The user's text of a site, with the parentheses they put around it."""
        if s is None or s.line is None or s.end_line is None:
            return s.key if s else "?"
        try:
            a = self._offset(s.line, s.col)
            b = self._offset(s.end_line, s.end_col)
        except (TypeError, IndexError):
            return s.key
        t = self.text
        while True:
            i, j = a - 1, b
            while i >= 0 and t[i] in " \n":
                i -= 1
            while j < len(t) and t[j] in " \n":
                j += 1
            if i < 0 or j >= len(t) or t[i] != "(" or t[j] != ")":
                break
            k = i - 1
            while k >= 0 and t[k] in " \n":
                k -= 1
            if k >= 0 and (t[k].isalnum() or t[k] in "_)]."):
                break  # the parentheses of a call, not of grouping
            a, b = i, j + 1
        text = " ".join(t[a:b].split())
        return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"

    def hooks(self):
        """Global module hooks for the duration of a run (a context manager)."""
        return _Hooks(self)


class _Hooks:
    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        self.handles = []

    def __enter__(self):
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        self.handles = [register_module_forward_pre_hook(self.recorder.pre_hook),
                        register_module_forward_hook(self.recorder.post_hook)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        return False


def _flat(args, kwargs) -> list:
    out = []
    for v in list(args) + list(kwargs.values()):
        if isinstance(v, (list, tuple)):
            out.extend(v)
        else:
            out.append(v)
    return out


def _detached(value):
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_detached(v) for v in value)
    return value


def run_compiled(fn, args: list, recorder: Recorder, files: set[str]):
    """Run capture-mode code; errors without a place get the program's line."""
    try:
        with recorder.hooks():
            return fn(*args)
    except CgError as e:
        raise e.with_place(locate_runtime_error(e, files)) from None
    except (RuntimeError, TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, OverflowError,
            AttributeError, NameError, UnboundLocalError) as e:
        raise CgError(f"cannot run the program: {_first_line(e)}", locate_runtime_error(e, files)) from None


# --------------------------------------------------------------------------- reading the graph


@dataclass
class _Value:
    key: tuple
    fn: object = None  # the autograd node that made it (None: a leaf or a value without gradient)
    nr: int = 0
    tensor: torch.Tensor | None = None
    inputs: list = field(default_factory=list)  # [(slot, key, differentiable)]
    inside: list | None = None  # a composite operation: its autograd nodes, consumers first


def read_graph(recorder: Recorder, leaves: dict[str, tuple[torch.Tensor, str]]) -> Capture:
    """The Graph of everything the run recorded. ``leaves`` maps names to (tensor, kind)."""
    return _Reader(recorder, leaves).read()


def _start(t: torch.Tensor) -> tuple:
    """A search entry for tensor *t*: (key, autograd node, output slot, tensor, placed)."""
    return (value_key(t), t.grad_fn, t.output_nr if t.grad_fn is not None else 0, t, False)


class _Reader:
    """Reads the Graph: values from autograd and the records, then labels, edges and names."""

    def __init__(self, recorder: Recorder, leaves: dict[str, tuple[torch.Tensor, str]]):
        self.recorder = recorder
        self.leaf_names: dict[int, tuple[str, str]] = {}
        for name, (t, kind) in leaves.items():
            self.leaf_names.setdefault(id(t), (name, kind))  # a tied tensor keeps its first name
        self.leaves = leaves
        self.producers: dict[tuple, Record] = {}
        self.tensors: dict[tuple, torch.Tensor] = {}
        for r in recorder.records:
            for t in r.outputs:
                k = value_key(t)
                self.tensors.setdefault(k, t)
                if k[0] == "tensor" and id(t) in self.leaf_names:
                    continue  # an operation that returned its operand itself (x.contiguous()): an alias
                self.producers.setdefault(k, r)
        self.values: dict[tuple, _Value] = {}
        self.order: list[tuple] = []  # keys, operands before the values that read them
        self.graph = Graph()
        self.nodes: dict[tuple, Node] = {}
        self.used: set[str] = set()
        self.suffix: dict[str, int] = {}  # label -> the last suffix given to it

    def read(self) -> Capture:
        self.collect()
        first = self.first_bindings()
        self.add_nodes(first)
        self.label_internal(first)
        self.add_edges()
        names, aliases = self.names()
        rec = self.recorder
        return Capture(self.graph, self.nodes, names, aliases, rec.versions, rec.last_assigned,
                       returned_site=rec.returned_site)

    # -- values: a depth-first search from every leaf, record and binding
    def collect(self) -> None:
        for t, _ in self.leaves.values():
            if t.requires_grad or t.grad_fn is not None:
                self.visit(_start(t))
        for r in self.recorder.records:
            for t in r.outputs:
                if t.grad_fn is not None:
                    self.visit(_start(t))
                elif not r.differentiable and any(self.depends(a) for a in _tensors(r.args)):
                    self.visit(_start(t))
        for b in self.recorder.bindings:
            if b.tensor is not None and b.key[0] == "fn" and b.key not in self.values:
                self.visit(_start(b.tensor))

    def depends(self, t: torch.Tensor) -> bool:
        return t.requires_grad or value_key(t) in self.values or id(t) in self.leaf_names

    def visit(self, start: tuple) -> None:
        stack = [start]
        while stack:
            key, fn, nr, tensor, placed = stack.pop()
            if placed:
                self.order.append(key)
            elif key not in self.values:
                v = self.values[key] = _Value(key, fn, nr, tensor)
                stack.append((key, fn, nr, tensor, True))
                stack.extend(self.inputs(v))

    def inputs(self, v: _Value) -> list[tuple]:
        """Fill ``v.inputs``; return search entries for the operands not seen yet."""
        r = self.producers.get(v.key)
        todo = []
        inside = _composite(v.fn, r) if v.fn is not None and r is not None and r.module_call is None else None
        if inside is not None:
            # one operation that torch runs as several autograd nodes (2 / w is w.reciprocal() * 2):
            # one node, one edge per operand, the inside run as a whole
            v.inside, boundary = inside
            for ck, (slot, t) in boundary.items():
                v.inputs.append((slot, ck, True))
                todo.append(_start(t))
        elif v.fn is not None and type(v.fn).__name__ != "AccumulateGrad":
            for slot, (child, child_nr) in enumerate(v.fn.next_functions):
                if child is not None:
                    ck = _fn_key(child, child_nr)
                    v.inputs.append((slot, ck, True))
                    leaf = type(child).__name__ == "AccumulateGrad"
                    todo.append((ck, child, child_nr, child.variable if leaf else self.tensors.get(ck), False))
        if r is not None and r.module_call is None:
            todo.extend(self.data_inputs(v, r))
        return [e for e in todo if e[0] not in self.values]

    def data_inputs(self, v: _Value, r: Record) -> list[tuple]:
        """Data edges: what an operation with no derivative read, and the constants and such values an
        operation with a derivative read, so that the graph shows them."""
        todo = []
        for slot, a in enumerate(r.args):
            for t in _tensors(a):
                ak = value_key(t)
                made = self.producers.get(ak)
                if r.differentiable:
                    wanted = made is not None and not made.differentiable or \
                        id(t) in self.leaf_names and not t.requires_grad
                else:
                    wanted = v.fn is None and (ak in self.values or made is not None or id(t) in self.leaf_names
                                               or t.requires_grad)
                if wanted:
                    v.inputs.append((slot, ak, False))
                    todo.append(_start(t))
        return todo

    # -- labels
    def unique(self, label: str) -> str:
        """*label*, or ``label#2``, ``label#3``… when taken (the same text computed again in a loop)."""
        out, i = label, self.suffix.get(label, 1)
        while out in self.used:
            i += 1
            out = f"{label}#{i}"
        self.suffix[label] = i
        self.used.add(out)
        return out

    def version_label(self, b: Binding) -> str:
        return b.name if self.recorder.versions[b.name] == 1 else f"{b.name}#{b.version}"

    def first_bindings(self) -> dict[tuple, str]:
        """The name first bound to each value: it labels the value unless it is a leaf or a module call."""
        first: dict[tuple, str] = {}
        for b in self.recorder.bindings:
            if b.key is not None:
                first.setdefault(b.key, self.version_label(b))
        return first

    def add_nodes(self, first: dict[tuple, str]) -> None:
        """Nodes in topological order: leaves, operations and module calls labelled as they ran."""
        for key in self.order:
            v, r = self.values[key], self.producers.get(key)
            leaf_t = v.fn.variable if type(v.fn).__name__ == "AccumulateGrad" else v.tensor if v.fn is None else None
            if leaf_t is not None and id(leaf_t) in self.leaf_names:
                name, kind = self.leaf_names[id(leaf_t)]
                node = self.graph.add_node(self.unique(name), leaf_t, None, OpInfo("leaf", None, name), kind=kind)
            elif r is not None:
                label = r.module_call or first.get(key, r.text)
                info = OpInfo(r.key, None, r.text, r.differentiable, r.loc)
                node = self.graph.add_node(self.unique(label), v.tensor, r.symbol, info,
                                           kind="module" if r.module_call else "op", shape=_shape(v))
            else:
                op = _autograd_name(v.fn) if v.fn is not None else "value"
                node = self.graph.add_node("", v.tensor, op, OpInfo(op, None, ""), kind="internal", shape=_shape(v))
            if v.tensor is None:
                node.dtype, node.device = _dtype_device(v)
            self.nodes[key] = node

    def label_internal(self, first: dict[tuple, str]) -> None:
        """Values only autograd saw are named after the operation or module call they are inside of."""
        owners: dict[tuple, str] = {}
        for key in reversed(self.order):  # consumers first
            node = self.nodes[key]
            mine = node.label if node.kind in ("op", "module") else owners.get(key)
            for _, ck, _ in self.values[key].inputs:
                if mine:
                    owners.setdefault(ck, mine)
        for key in self.order:
            node = self.nodes[key]
            if node.kind == "internal":
                owner = owners.get(key)
                node.label = self.unique(first.get(key) or (f"{owner}/{node.op}" if owner else node.op))
                node.info.text = node.label

    # -- edges
    def add_edges(self) -> None:
        for key in self.order:
            v, node = self.values[key], self.nodes[key]
            r = self.producers.get(key)
            slots = _slot_positions(v, r) if r is not None and r.simple and v.inside is None else {}
            for slot, ck, differentiable in v.inputs:
                if ck not in self.nodes:
                    continue
                if not differentiable:
                    vjp = None
                elif v.inside is not None:
                    vjp = _inside_vjp(v.inside, v.fn, v.nr, ck)
                else:
                    vjp = _slot_vjp(v.fn, v.nr, slot)
                self.graph.add_edge(node, self.nodes[ck], slots.get(slot, slot), node.op or node.info.key, vjp,
                                    differentiable=differentiable)
            if r is not None and r.simple and node.kind == "op":
                node.info.operands = _operands(r, self.nodes)

    # -- names a user may type: labels, versions, aliases, parameters
    def names(self) -> tuple[dict[str, Node], dict[str, str]]:
        names: dict[str, Node] = {n.label: n for n in self.graph.nodes if n.kind in ("input", "parameter", "constant")}
        aliases: dict[str, str] = {}
        last: dict[str, tuple | None] = {}
        for b in self.recorder.bindings:
            last[b.name] = b.key
            node = self.nodes.get(b.key) if b.key is not None else None
            if node is None:
                continue
            label = self.version_label(b)
            node.names.append(label)
            if label != node.label:
                aliases[label] = node.label
            names.setdefault(label, node)
        for node in self.graph.nodes:
            names.setdefault(node.label, node)
        for name, key in last.items():  # a bare versioned name means its last version
            if key is not None and key in self.nodes:
                names.setdefault(name, self.nodes[key])
        return names, aliases


def _shape(v: _Value) -> tuple[int, ...]:
    if v.tensor is not None:
        return tuple(v.tensor.shape)
    try:
        return tuple(v.fn._input_metadata[v.nr].shape)
    except (AttributeError, IndexError, RuntimeError):
        return ()


def _dtype_device(v: _Value):
    if v.tensor is not None:
        return v.tensor.dtype, v.tensor.device
    try:
        meta = v.fn._input_metadata[v.nr]
        return meta.dtype, meta.device
    except (AttributeError, IndexError, RuntimeError):
        return torch.float32, torch.device("cpu")


def _autograd_name(fn) -> str:
    name = type(fn).__name__
    for suffix in ("Backward0", "Backward1", "Backward2", "Backward"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.lower() or "op"


def _slot_positions(v: _Value, r: Record) -> dict[int, int]:
    """Autograd's slot order to the operation's argument order (``2 * x`` runs as ``x.__rmul__(2)``)."""
    arg_keys = [value_key(a) if isinstance(a, torch.Tensor) else None for a in r.args]
    taken: set[int] = set()
    out = {}
    for slot, ck, _ in v.inputs:
        for pos, ak in enumerate(arg_keys):
            if pos not in taken and ak == ck:
                out[slot] = pos
                taken.add(pos)
                break
    return out


def _operands(r: Record, nodes) -> list | None:
    out = []
    for a in r.args:
        if isinstance(a, torch.Tensor):
            node = nodes.get(value_key(a))
            if node is not None:
                out.append(node)
            elif a.numel() == 1:
                out.append(a.item())
            else:
                return None
        else:
            out.append(a)
    return out


def _slot_vjp(fn, nr: int, slot: int):
    """Cotangent of one output of *fn* → cotangent of its input *slot*, by calling the autograd node."""
    outputs = len(fn._input_metadata)

    def vjp(cotangent: torch.Tensor) -> torch.Tensor:
        grads = [None] * outputs
        grads[nr] = cotangent
        with torch.no_grad():
            try:
                result = fn(*grads)
            except (RuntimeError, TypeError):  # a node that wants every output's gradient
                for i, meta in enumerate(fn._input_metadata):
                    if grads[i] is None:
                        grads[i] = torch.zeros(tuple(meta.shape), dtype=meta.dtype, device=meta.device)
                result = fn(*grads)
        if not isinstance(result, tuple):
            result = (result,)
        g = result[slot] if slot < len(result) else None
        if g is None:
            child, child_nr = fn.next_functions[slot]
            meta = child._input_metadata[child_nr] if type(child).__name__ != "AccumulateGrad" else None
            like = child.variable if meta is None else None
            return torch.zeros_like(like) if like is not None else torch.zeros(tuple(meta.shape), dtype=meta.dtype)
        return g

    return vjp


MAX_INSIDE = 1_000  # autograd nodes one composite operation may have to be shown as one node


def _composite(fn, r: Record):
    """For an operation run as several autograd nodes: (its nodes, consumers first; operand key -> (slot, tensor)).

    None when it is one autograd node, or when it cannot be told apart (an operand given twice)."""
    boundary: dict[tuple, tuple[int, torch.Tensor]] = {}
    for position, a in enumerate(r.args):
        for i, t in enumerate(_tensors(a)):
            k = value_key(t) if t.grad_fn is not None else ("tensor", id(t))
            if not t.requires_grad:
                continue
            if k in boundary:
                return None
            boundary[k] = (position if r.simple else len(boundary), t)
    seen: set[int] = set()
    post: list = []
    stack = [(fn, False)]
    while stack:
        f, done = stack.pop()
        if done:
            post.append(f)
            continue
        if id(f) in seen:
            continue
        seen.add(id(f))
        if len(seen) > MAX_INSIDE:
            return None
        stack.append((f, True))
        for child, nr in f.next_functions:
            if child is None:
                continue
            ck = _fn_key(child, nr)
            if ck in boundary:
                continue
            if type(child).__name__ == "AccumulateGrad":
                return None  # reads a leaf that is not an operand
            stack.append((child, False))
    if len(post) <= 1:
        return None
    return list(reversed(post)), boundary


def _meta_shape(fn, nr: int):
    if type(fn).__name__ == "AccumulateGrad":
        return tuple(fn.variable.shape)
    return tuple(fn._input_metadata[nr].shape)


def _inside_vjp(inside: list, fn, nr: int, target: tuple):
    """Cotangent of one output of a composite operation → cotangent of one operand, through its inside only."""

    def vjp(cotangent: torch.Tensor) -> torch.Tensor:
        pending: dict[tuple, torch.Tensor] = {_fn_key(fn, nr): cotangent}
        out = None
        with torch.no_grad():
            for f in inside:
                grads = [pending.pop(_fn_key(f, i), None) for i in range(len(f._input_metadata))]
                if all(g is None for g in grads):
                    continue
                for i, meta in enumerate(f._input_metadata):
                    if grads[i] is None and len(grads) > 1:
                        grads[i] = torch.zeros(tuple(meta.shape), dtype=meta.dtype, device=meta.device)
                result = f(*grads)
                result = result if isinstance(result, tuple) else (result,)
                for (child, cnr), g in zip(f.next_functions, result):
                    if child is None or g is None:
                        continue
                    shape = _meta_shape(child, cnr)
                    if tuple(g.shape) != shape:
                        g = g.sum_to_size(shape)
                    ck = _fn_key(child, cnr)
                    if ck == target:
                        out = g if out is None else out + g
                    elif ck[0] == "fn":
                        pending[ck] = g if ck not in pending else pending[ck] + g
        if out is None:
            raise RuntimeError("no gradient reached the operand")  # pragma: no cover - the boundary was read
        return out

    return vjp


# --------------------------------------------------------------------------- models


def capture_model(built, inputs: dict[str, torch.Tensor], *, limits: Limits | None = None) -> Capture:
    """Run a built spec once on *inputs* in capture mode and read its graph.

    Parameters are leaves by qualified name (``linear.weight``), buffers are constants,
    floating inputs are leaves that require grad (so paths can end at them). The spec's
    own forward runs in capture mode (variables and operations at the spec's lines);
    module calls, at any depth, are nodes ``name#k`` from forward hooks.
    """
    from ..build.builder import compile_spec_forward

    module = built.module
    module_names: dict[int, str] = {}
    for name, m in module.named_modules(remove_duplicate=False):
        module_names.setdefault(id(m), name)
    leaves: dict[str, tuple[torch.Tensor, str]] = {}
    for name, t in inputs.items():
        t = t.detach().clone()
        leaves[name] = (t.requires_grad_(True) if t.is_floating_point() else t, "input")
    for name, p in module.named_parameters():
        leaves[name] = (p, "parameter")
    for name, b in module.named_buffers():
        leaves[name] = (b, "constant")
    args = [leaves[n][0] for n in built.input_names]
    spec = built.spec
    limits = limits or Limits()
    with torch.enable_grad():
        if spec.kind != "sequential" and spec.forward is not None:
            recorder = Recorder(spec.forward.source, limits=limits, module_names=module_names)
            compiled = compile_spec_forward(spec, limits=limits, recorder=recorder.namespace())
            recorder.sites = compiled.sites
            out = run_compiled(compiled.fn, [module, *args], recorder, set(built.files))
        else:
            recorder = Recorder(None, limits=limits, module_names=module_names)
            out = run_compiled(module, args, recorder, set(built.files))
    cap = read_graph(recorder, leaves)
    cap.returned = out
    return cap

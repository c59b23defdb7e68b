"""``cgtool grad``: explain a gradient as a sum over paths. Returns plain data; never prints.

:func:`explain` parses an expression, evaluates it (:mod:`cgtool.expr`), and for
each ``wrt`` asks the path engine (:mod:`cgtool.paths`) for the exact path count,
the listed paths with their factors and contributions, and the sum over paths,
which it checks against autograd. Symbolic forms come from :mod:`cgtool.symbolic`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import paths as P
from .model import Edge, Node
from . import symbolic as S
from ..errors import CgError, did_you_mean
from .expression import Evaluation, autograd_gradients, evaluate, parse_expression
from ..lang import DEFAULT_LIMITS, Limits

MAX_SYMBOLIC_PATHS = 64  # a total is written out path by path only up to this many paths
MAX_JACOBIAN = 64  # entries of a tensor edge's local Jacobian that are shown
CANCEL_RATIO = 0.5  # warn when |sum| is under this share of the sum of |contribution|


@dataclass
class Factor:
    """One local derivative on a path: ∂src/∂dst through one operand slot."""

    src: str
    dst: str
    op: str
    slot: int  # which operand of the operation (w * w: 0 and 1)
    value: float | torch.Tensor | None  # a number; a tensor edge's Jacobian (out shape + in shape); None
    symbolic: str | None  # in the operands' names: "b"


@dataclass
class PathReport:
    nodes: list[str]  # root first
    factors: list[Factor]
    contribution: float | torch.Tensor | None
    product: str | None  # the factors' symbolic forms multiplied: "b · 1"
    symbolic: str | None  # the product in the leaves: "x2 + w"


@dataclass
class GradientPaths:
    wrt: str
    autograd: float | torch.Tensor | None
    sum_over_paths: float | torch.Tensor | None
    match: bool
    path_count: int
    paths: list[PathReport]
    exact_order: bool  # the listed paths are truly the largest |contribution| (or all of them)
    by_magnitude: bool  # listed largest first (False without values: depth-first order)
    symbolic: str | None  # the total, path by path: "(x2 + w) + (x1 + w)"
    symbolic_note: str | None  # why a symbolic form is missing
    cancellation: str | None  # a warning when contributions cancel

    @property
    def not_listed(self) -> int:
        return self.path_count - len(self.paths)


@dataclass
class GraphNode:
    label: str
    definition: str | None  # "a * b" in the operands' labels; None for a leaf
    value: float | torch.Tensor | None
    shape: list[int]


@dataclass
class GraphEdge:
    src: str
    dst: str
    op: str
    slot: int
    differentiable: bool = True  # False: a data edge of an operation with no derivative (//, >)


@dataclass
class Explanation:
    expression: str
    root: str
    root_label: str  # the node's label (differs from root when the root name is an alias)
    value: float | torch.Tensor | None
    numeric: bool  # False: no --at values; only symbolic forms are meaningful
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    aliases: dict[str, str]
    gradients: list[GradientPaths] = field(default_factory=list)
    nondifferentiable: list[str] = field(default_factory=list)  # values made by operations with no derivative


def explain(
    text: str,
    at: dict[str, object] | None = None,
    *,
    wrt: list[str] | None = None,
    root: str | None = None,
    max_paths: int = 20,
    file: str = "<expr>",
    max_symbolic: int = S.DEFAULT_MAX_SIZE,
    limits: Limits = DEFAULT_LIMITS,
) -> Explanation:
    """Explain d(root)/d(wrt) for an expression as a sum over paths.

    ``at`` maps leaves to values (numbers, nested lists, tensors); without any, the
    graph is traced with placeholder values and only symbolic forms are meaningful.
    """
    if max_paths < 0:
        raise CgError(f"--max-paths must be 0 or more, not {max_paths}", "--max-paths")
    program = parse_expression(text, file)
    ev = evaluate(program, at, root=root, limits=limits)
    targets = _targets(ev, wrt)
    grads = autograd_gradients(ev, targets)
    reachable = ev.graph.reachable(ev.root.id)  # the values the root depends on: the graph shown
    forms = _Forms(ev, reachable, max_symbolic)
    report = Explanation(
        expression=text,
        root=ev.root_name,
        root_label=ev.root.label,
        value=_number(ev.root.value) if ev.numeric else None,
        numeric=ev.numeric,
        nodes=[_graph_node(ev, ev.graph.nodes[v]) for v in reachable],
        edges=[GraphEdge(ev.graph.nodes[e.src].label, ev.graph.nodes[e.dst].label, e.op, e.slot, e.differentiable)
               for v in reachable for e in (ev.graph.edges[i] for i in ev.graph.inputs_of(v))],
        aliases=dict(ev.aliases),
        nondifferentiable=[ev.graph.nodes[v].label for v in reachable
                           if ev.graph.nodes[v].info is not None and not ev.graph.nodes[v].info.differentiable],
    )
    for node, grad in zip(targets, grads):
        report.gradients.append(_gradient(ev, node, grad, max_paths, forms))
    return report


def _targets(ev: Evaluation, wrt: list[str] | None):
    if not wrt:
        if not ev.leaves:
            raise CgError("the expression has no leaves to differentiate with respect to", "--wrt")
        return list(ev.leaves.values())
    out, seen = [], set()
    for name in wrt:
        if name not in ev.names:
            hint = did_you_mean(name, list(ev.names))
            raise CgError(f"no value named {name!r} in the expression", f"--wrt {name}",
                          hint=hint or f"leaves: {', '.join(ev.leaves) or 'none'}")
        node = ev.names[name]
        if node.id not in seen:
            seen.add(node.id)
            out.append(node)
    return out


def _graph_node(ev: Evaluation, node: Node) -> GraphNode:
    value = _number(node.value) if ev.numeric and node.value is not None else None
    return GraphNode(node.label, _definition(node), value, list(node.shape))


def _definition(node: Node) -> str | None:
    """How a node is computed: in its operands' labels (``a * b``) where a rule can say so,
    else the user's source text. None for a leaf."""
    info = node.info
    if info.key == "leaf":
        return None
    if info.operands is not None:
        operands = [S.ref(o.label) if isinstance(o, Node) else S.constant(o) for o in info.operands]
        if all(o is not None for o in operands):
            form = S.forward(info.key, operands)
            if form is not None:
                return str(form)
    return info.text


# --------------------------------------------------------------------------- numbers


def _number(t: torch.Tensor):
    """A float for a 0-d tensor, else the tensor (rendering turns it into nested lists)."""
    t = t.detach()
    return float(t) if t.dim() == 0 else t


def _like(x, node: Node):
    """*x* (a float or a tensor) shaped like *node*'s value."""
    shape = node.shape
    if isinstance(x, torch.Tensor):
        x = x.detach()
        return float(x.reshape(-1)[0]) if len(shape) == 0 and x.numel() == 1 else x.reshape(shape)
    return x if len(shape) == 0 else torch.full(shape, float(x), dtype=node.dtype)


def _close(a, b, scale: float) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        a = torch.as_tensor(a, dtype=torch.float64)
        b = torch.as_tensor(b, dtype=torch.float64)
        return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-9, atol=1e-12 * max(1.0, scale),
                                                          equal_nan=True))
    if math.isnan(a) and math.isnan(b):
        return True
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= 1e-9 * max(1.0, scale, abs(a), abs(b))


def _norm(x) -> float:
    if isinstance(x, torch.Tensor):
        return float(torch.linalg.vector_norm(x.detach().double()))
    return abs(x)


# --------------------------------------------------------------------------- symbolic forms


class _Forms:
    """Symbolic forms for the scalar part of a graph, built on demand and memoised."""

    def __init__(self, ev: Evaluation, reachable: list[int], max_size: int):
        self.ev = ev
        self.max_size = max_size
        self._leaf: dict[int, S.Sym | None] = {}
        self.why: str | None = None
        if not all(ev.graph.nodes[v].is_scalar for v in reachable):
            self.why = "symbolic forms are given for scalar expressions only"

    def _operands(self, node: Node, leaves: bool) -> list[S.Sym] | None:
        ops = node.info.operands
        if ops is None:
            return None
        out = []
        for o in ops:
            s = (self.leaf_form(o) if leaves else S.ref(o.label)) if isinstance(o, Node) else S.constant(o)
            if s is None:
                return None
            out.append(s)
        return out

    def leaf_form(self, node: Node) -> S.Sym | None:
        """The node as an expression of the leaves (shared subtrees; may be huge when printed)."""
        if node.id in self._leaf:
            return self._leaf[node.id]
        # operands always have smaller ids: fill bottom-up so deep chains need no recursion
        for v in range(node.id + 1):
            if v in self._leaf:
                continue
            n = self.ev.graph.nodes[v]
            if n.info.key == "leaf" or not n.info.differentiable:
                # a step with no derivative is a constant for every gradient: it stays a name
                self._leaf[v] = S.ref(n.label)
                continue
            ops = self._operands(n, leaves=True)
            self._leaf[v] = None if ops is None else S.forward(n.info.key, ops)
        return self._leaf[node.id]

    def factor(self, edge: Edge, leaves: bool) -> S.Sym | None:
        if self.why:
            return None
        node = self.ev.graph.nodes[edge.src]
        ops = self._operands(node, leaves)
        if ops is None:
            return None
        return S.derivative(node.info.key, ops, edge.slot)

    def missing_rule(self, path: P.Path) -> str | None:
        for e in path.edges:
            node = self.ev.graph.nodes[self.ev.graph.edges[e].src]
            if node.info.key not in S.RULES or node.info.operands is None:
                return f"no symbolic rule for `{node.info.text}`"
        return None


# --------------------------------------------------------------------------- one gradient


def _gradient(ev: Evaluation, target: Node, grad: torch.Tensor, max_paths: int, forms: _Forms) -> GradientPaths:
    g = ev.graph
    root = ev.root.id
    counts = P.path_counts(g, root, target.id)
    count = counts[root]
    scalar = P.is_scalar(g, root, target.id, counts)
    total = P.sum_over_paths(g, root, target.id, counts=counts)
    listing = P.top_paths(g, root, target.id, max_paths, counts=counts, by_magnitude=ev.numeric)
    autograd = _like(grad, target)
    summed = _like(total, target)
    abs_sum = P.sum_over_paths(g, root, target.id, counts=counts, absolute=True) if scalar and count else None
    match = _close(summed, autograd, abs_sum or _norm(autograd))

    reports = [_path(ev, p, c, forms) for p, c in zip(listing.paths, listing.contributions)]
    symbolic, note = _total_symbolic(ev, target, counts, listing, forms)
    cancellation = None
    if ev.numeric and count > 1:
        if scalar:
            magnitude, net = abs_sum, abs(total)
        elif len(listing.paths) == count:
            magnitude, net = sum(_norm(c) for c in listing.contributions), _norm(total)
        else:
            magnitude = net = None
        if magnitude and net < CANCEL_RATIO * magnitude:
            cancellation = (f"contributions cancel: the paths' magnitudes add up to {magnitude:.6g}, "
                            f"but their sum is {net:.6g} in size")
    return GradientPaths(
        wrt=target.label,
        autograd=autograd if ev.numeric else None,
        sum_over_paths=summed if ev.numeric else None,
        match=match,
        path_count=count,
        paths=reports,
        exact_order=listing.exact_order,
        by_magnitude=ev.numeric,
        symbolic=symbolic,
        symbolic_note=note,
        cancellation=cancellation,
    )


def _path(ev: Evaluation, path: P.Path, contribution, forms: _Forms) -> PathReport:
    g = ev.graph
    edges = [g.edges[e] for e in path.edges]
    factors = []
    named = []
    leaf_factors = []
    for e in edges:
        src, dst = g.nodes[e.src], g.nodes[e.dst]
        in_names = forms.factor(e, leaves=False)
        in_leaves = forms.factor(e, leaves=True)
        named.append(in_names)
        leaf_factors.append(in_leaves)
        factors.append(Factor(src.label, dst.label, e.op, e.slot, _edge_value(ev, e) if ev.numeric else None,
                              S.shown(in_names, forms.max_size)))
    product = symbolic = None
    if edges and all(f is not None for f in named):
        product = _product_text(named) if sum(f.size for f in named) <= forms.max_size else None
        symbolic = S.shown(S.product(leaf_factors), forms.max_size) if all(f is not None for f in leaf_factors) \
            else None
    root = edges[0].src if edges else ev.root.id
    nodes = [g.nodes[v].label for v in P.path_nodes(g, path, root)]
    if ev.numeric:
        target = g.nodes[edges[-1].dst] if edges else ev.root
        contribution = _like(contribution, target)
    else:
        contribution = None
    return PathReport(nodes, factors, contribution, product, symbolic)


def _product_text(factors: list[S.Sym]) -> str:
    """``b · 1`` for short paths, as in the lesson; a long path's unit factors are left out."""
    if len(factors) > 3:
        factors = [f for f in factors if not f.is_num(1)] or [S.ONE]
    return " · ".join(_factor_text(f) for f in factors)


def _factor_text(f: S.Sym) -> str:
    return f"({f})" if f.kind in ("add", "sub") else str(f)


def _edge_value(ev: Evaluation, edge: Edge):
    if edge.derivative is not None:
        return edge.derivative
    src, dst = ev.graph.nodes[edge.src], ev.graph.nodes[edge.dst]
    n_src, n_dst = math.prod(src.shape), math.prod(dst.shape)
    if n_src * n_dst > MAX_JACOBIAN:
        return None
    rows = []
    for i in range(n_src):
        seed = torch.zeros(n_src, dtype=src.dtype)
        seed[i] = 1
        rows.append(P._vjp(ev.graph, edge, seed.reshape(src.shape)).reshape(-1))
    return torch.stack(rows).reshape(tuple(src.shape) + tuple(dst.shape)).detach()


def _total_symbolic(ev: Evaluation, target: Node, counts, listing: P.Listing, forms: _Forms):
    """The symbolic sum over paths, written path by path, or why it is omitted."""
    if forms.why:
        return None, forms.why
    count = counts[ev.root.id]
    if count == 0:
        return "0", None
    if count > MAX_SYMBOLIC_PATHS:
        return None, f"symbolic forms omitted: {count:,} paths are too many to write out (cap {MAX_SYMBOLIC_PATHS})"
    listed = list(listing.paths)
    seen = {p.edges for p in listed}
    rest = [p for p in P.all_paths(ev.graph, ev.root.id, target.id, MAX_SYMBOLIC_PATHS, counts) if p.edges not in seen]
    terms = []
    for p in listed + rest:
        why = forms.missing_rule(p)
        if why:
            return None, why
        fs = [forms.factor(ev.graph.edges[e], leaves=True) for e in p.edges]
        if any(f is None for f in fs):
            return None, "no symbolic rule for an operation on the path"
        terms.append(S.product(fs))
        if sum(t.size for t in terms) > forms.max_size:
            return None, f"symbolic forms omitted: they grow over the size cap ({forms.max_size} terms)"
    form = S.total(terms)
    shown = S.shown(form, forms.max_size)
    if shown is None:
        return None, f"symbolic forms omitted: they grow over the size cap ({forms.max_size} terms)"
    return shown, None

"""The Graph data model: values as nodes, operand slots as edges. Plain data; nothing here runs torch.

A :class:`Graph` is what every consumer reads (gradient paths, pictures, tables): one
node per value — a leaf (an input, a parameter by qualified name, a constant) or the
output of one operation or module call — and one edge per operand slot of that
operation. ``y = w * w`` has two edges to ``w``, hence two paths. Gradient edges carry
the operation's vector-Jacobian product for their one slot; data edges
(``differentiable=False``) say what a non-differentiable operation (``//``, a
comparison) read, and carry no gradient.

Node ids are a topological order: an edge always points to a smaller id.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

KINDS = ("input", "parameter", "constant", "op", "module", "internal")


@dataclass
class OpInfo:
    """What made a node: the operation's key and its operands (Nodes or numbers), in argument order."""

    key: str  # "add", "sin", "matmul", "leaf", "linear" (a module call), "addmm" (an autograd node)
    operands: list | None  # None when unknown (keywords, nested arguments, an internal node)
    text: str  # the user's source text of the operation, or the node's label
    differentiable: bool = True
    loc: str | None = None  # file:line of the operation in the spec or expression


def value_summary(value) -> dict | None:
    """A tensor's value in four numbers (min, max, mean, norm), or the number itself; None on meta or empty."""
    if not isinstance(value, torch.Tensor) or value.device.type == "meta":
        return None
    t = value.detach()
    if t.numel() == 0:
        return None
    t = t.abs() if t.is_complex() else t
    if t.numel() == 1:
        return {"value": float(t.reshape(()).double())}
    if not t.is_floating_point():
        t = t.double()  # integers and booleans: small (indices, masks), and their mean needs a float
    # no float64 copy of a large value (an embedding is 150 MB): min and max are exact in its own dtype, the
    # mean is summed in float64 as torch reduces, and the norm is taken in its dtype unless that overflows
    norm = torch.linalg.vector_norm(t)
    if not torch.isfinite(norm) and bool(torch.isfinite(t).all()):
        norm = torch.linalg.vector_norm(t.double())
    return {"min": float(t.min()), "max": float(t.max()), "mean": float(t.sum(dtype=torch.float64) / t.numel()),
            "norm": float(norm)}


@dataclass(frozen=True)
class Snapshot:
    """A value as it was before a layer overwrote it in place (``ReLU(inplace=True)``): its shape, dtype, device
    and summary, kept instead of a copy (a copy per in-place call would hold one activation each)."""

    shape: tuple
    dtype: torch.dtype
    device: torch.device
    summary: dict | None

    @classmethod
    def of(cls, t: torch.Tensor) -> Snapshot:
        with torch.no_grad():
            return cls(tuple(t.shape), t.dtype, t.device, value_summary(t))


@dataclass(eq=False)
class Node:
    """A value: a leaf (no operation) or the output of one operation."""

    id: int
    label: str
    value: torch.Tensor | None = None  # None for values only autograd saw (inside a module or composite op)
    op: str | None = None  # what made it, for display ("+", "sin"); None for a leaf
    info: OpInfo | None = None
    kind: str = "op"  # one of KINDS
    shape: tuple[int, ...] = ()
    names: list[str] = field(default_factory=list)  # forward variables bound to this value ("x#2")
    calls: list[str] = field(default_factory=list)  # module calls that returned it, innermost first
    dtype: torch.dtype | None = None
    device: torch.device | None = None

    @property
    def is_scalar(self) -> bool:
        n = 1
        for s in self.shape:
            n *= s
        return n == 1


@dataclass(eq=False)
class Edge:
    """One operand slot of one operation: ``src`` (the output) depends on ``dst`` (the operand)."""

    id: int
    src: int
    dst: int
    slot: int  # which operand of the operation
    op: str
    vjp: Callable[[torch.Tensor], torch.Tensor] | None  # cotangent of src -> of dst, through this slot only
    derivative: float | None = None  # the local derivative, when both ends are scalars
    differentiable: bool = True


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    operands: list[list[int]] = field(default_factory=list)  # node id -> its gradient edges, in slot order
    data: list[list[int]] = field(default_factory=list)  # node id -> its data-only edges (no gradient)

    def add_node(self, label: str, value=None, op=None, info=None, *, kind: str = "op", shape=None) -> Node:
        if shape is None:
            shape = tuple(value.shape) if isinstance(value, (torch.Tensor, Snapshot)) else ()
        node = Node(len(self.nodes), label, value, op, info, kind, tuple(shape))
        if isinstance(value, (torch.Tensor, Snapshot)):
            node.dtype, node.device = value.dtype, value.device
        self.nodes.append(node)
        self.operands.append([])
        self.data.append([])
        return node

    def add_edge(self, src: Node, dst: Node, slot: int, op: str, vjp, derivative: float | None = None,
                 *, differentiable: bool = True) -> Edge:
        if dst.id >= src.id:
            raise ValueError(f"edge {src.label} -> {dst.label} is not topological (operands must be added first)")
        edge = Edge(len(self.edges), src.id, dst.id, slot, op, vjp, derivative, differentiable)
        self.edges.append(edge)
        (self.operands if differentiable else self.data)[src.id].append(edge.id)
        return edge

    def inputs_of(self, v: int) -> list[int]:
        """Every edge out of node *v*, gradient and data edges, in slot order."""
        return sorted(self.operands[v] + self.data[v], key=lambda e: (self.edges[e].slot, e))

    def reachable(self, root: int) -> list[int]:
        """Ids of the nodes *root* reads, through gradient and data edges (itself included), increasing."""
        seen = [False] * len(self.nodes)
        seen[root] = True
        for v in range(root, -1, -1):
            if seen[v]:
                for e in self.operands[v] + self.data[v]:
                    seen[self.edges[e].dst] = True
        return [v for v in range(root + 1) if seen[v]]

    def lint(self) -> None:
        """Check the invariants every consumer relies on; raise ValueError naming the first broken one."""
        labels = set()
        for i, n in enumerate(self.nodes):
            if n.id != i:
                raise ValueError(f"node {n.label} has id {n.id} at position {i}")
            if n.label in labels:
                raise ValueError(f"two nodes are labelled {n.label!r}")
            labels.add(n.label)
            if n.kind not in KINDS:
                raise ValueError(f"node {n.label} has unknown kind {n.kind!r}")
        for e in self.edges:
            if not e.dst < e.src < len(self.nodes):
                raise ValueError(f"edge {e.id} ({e.src} -> {e.dst}) is not topological")
            if e.differentiable and e.vjp is None:
                raise ValueError(f"gradient edge {e.id} has no vector-Jacobian product")


@dataclass
class Path:
    """A path from the root down to the target, as its edges (root side first)."""

    edges: tuple[int, ...]
    score: float = 0.0  # log |contribution| used to order (scalar graphs: exact)

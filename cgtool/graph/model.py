"""The Graph data model: values as nodes, operand slots as edges.
"""
from __future__ import annotations
from dataclasses import dataclass, field
from typing import Callable
import torch




@dataclass(eq=False)
class Node:
    """A value: a leaf (no operation) or the output of one operation."""

    id: int
    label: str
    value: torch.Tensor | None = None
    op: str | None = None  # what made it, for display ("+", "sin"); None for a leaf
    info: object = None  # whatever the builder wants to keep (source text, operands, ...)

    @property
    def is_scalar(self) -> bool:
        return self.value is not None and self.value.numel() == 1


@dataclass(eq=False)
class Edge:
    """One operand slot of one operation: ``src`` (the output) depends on ``dst`` (the operand)."""

    id: int
    src: int
    dst: int
    slot: int  # which operand of the operation
    op: str
    vjp: Callable[[torch.Tensor], torch.Tensor]  # cotangent of src -> cotangent of dst through this slot only
    derivative: float | None = None  # the local derivative, when both ends are scalars


@dataclass
class ValueGraph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    operands: list[list[int]] = field(default_factory=list)  # node id -> its edges, in slot order

    def add_node(self, label: str, value=None, op=None, info=None) -> Node:
        node = Node(len(self.nodes), label, value, op, info)
        self.nodes.append(node)
        self.operands.append([])
        return node

    def add_edge(self, src: Node, dst: Node, slot: int, op: str, vjp, derivative: float | None = None) -> Edge:
        if dst.id >= src.id:
            raise ValueError(f"edge {src.label} -> {dst.label} is not topological (operands must be added first)")
        edge = Edge(len(self.edges), src.id, dst.id, slot, op, vjp, derivative)
        self.edges.append(edge)
        self.operands[src.id].append(edge.id)
        return edge

    def reachable(self, root: int) -> list[int]:
        """Ids of the nodes *root* depends on (itself included), in increasing order."""
        seen = [False] * len(self.nodes)
        seen[root] = True
        for v in range(root, -1, -1):
            if seen[v]:
                for e in self.operands[v]:
                    seen[self.edges[e].dst] = True
        return [v for v in range(root + 1) if seen[v]]


@dataclass
class Path:
    """A path from the root down to the target, as its edges (root side first)."""

    edges: tuple[int, ...]
    score: float = 0.0  # log |contribution| used to order (scalar graphs: exact)



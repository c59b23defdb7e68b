"""Levels of a Graph: the op level (every autograd node) and the module level (what a reader names).

:func:`contract` keeps some nodes and folds the others away: each kept node gets one edge
to every kept node it reaches through folded ones, whose vector-Jacobian product runs
the folded region as a whole (the sum over the region's routes). At the module level
the kept nodes are the leaves, the module calls, the values a forward named, and the
root: the inside of ``linear#2`` (its transpose, its ``addmm``) is folded into it, so
FancyMLP's ``linear.weight`` has exactly two paths, one per call.
"""
from __future__ import annotations

from typing import Callable

import torch

from .model import Graph, Node
from .paths import _vjp

LEVELS = ("module", "op")


def module_level_node(node: Node) -> bool:
    """Kept at the module level: leaves, module calls, and values bound to a forward's names."""
    return node.kind in ("input", "parameter", "constant", "module") or bool(node.names)


def contract(graph: Graph, keep: Callable[[Node], bool], root: int) -> tuple[Graph, dict[int, int]]:
    """The graph of the kept nodes that *root* reaches (the root always kept); old id -> new id."""
    reach = graph.reachable(root)
    kept = [v for v in reach if v == root or keep(graph.nodes[v])]
    out = Graph()
    new_id: dict[int, int] = {}
    for v in kept:
        n = graph.nodes[v]
        m = out.add_node(n.label, n.value, n.op, n.info, kind=n.kind, shape=n.shape)
        m.names, m.calls, m.dtype, m.device = list(n.names), list(n.calls), n.dtype, n.device
        new_id[v] = m.id
    for v in kept:
        targets, region = _region(graph, v, new_id)
        for slot, t in enumerate(targets):
            out.add_edge(out.nodes[new_id[v]], out.nodes[new_id[t]], slot, graph.nodes[v].op or "",
                         _region_vjp(graph, v, t, region))
        for e in graph.data[v]:
            d = graph.edges[e].dst
            if d in new_id:
                out.add_edge(out.nodes[new_id[v]], out.nodes[new_id[d]], graph.edges[e].slot, graph.edges[e].op,
                             None, differentiable=False)
    return out, new_id


def _region(graph: Graph, v: int, kept: dict[int, int]) -> tuple[list[int], list[int]]:
    """The kept nodes *v* reaches through folded ones (in first-reached order), and those folded nodes."""
    targets: list[int] = []
    region: set[int] = set()
    stack = [graph.edges[e].dst for e in reversed(graph.operands[v])]
    while stack:
        d = stack.pop()
        if d in kept:
            if d not in targets:
                targets.append(d)
        elif d not in region:
            region.add(d)
            stack.extend(graph.edges[e].dst for e in reversed(graph.operands[d]))
    return targets, sorted(region, reverse=True)


def _region_vjp(graph: Graph, src: int, dst: int, region: list[int]):
    """Cotangent of *src* → cotangent of *dst*, summed over every route through the folded *region*."""
    inside = set(region)

    def vjp(cotangent: torch.Tensor) -> torch.Tensor:
        adj: dict[int, torch.Tensor] = {src: cotangent}
        out = None
        for v in [src, *region]:  # decreasing ids: every route into v is summed before v is passed on
            a = adj.pop(v, None)
            if a is None:
                continue
            for e in graph.operands[v]:
                d = graph.edges[e].dst
                if d == dst or d in inside:
                    g = _vjp(graph, graph.edges[e], a)
                    if d == dst:
                        out = g if out is None else out + g
                    else:
                        adj[d] = g if d not in adj else adj[d] + g
        if out is None:  # pragma: no cover - dst was reached when the region was read
            raise RuntimeError("no route to the operand")
        return out

    return vjp

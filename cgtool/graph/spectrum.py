"""The gradient as a spectrum over path lengths: ``--by-length``. Plain data; never prints.

The length of a path is the number of *counted* nodes on it (for a residual network:
the outputs of the blocks whose residual branch the path goes through), the root
included when counted, the target never. :func:`length_spectrum` gives, per length,
the exact number of paths and the sum of their contributions; the sums add up to the
gradient (:func:`cgtool.graph.paths.sum_over_paths`) and the counts to
:func:`cgtool.graph.paths.count_paths`.

It is one pass from the root down, like ``sum_over_paths``, that carries one cotangent
per (node, length of the prefix above it) instead of one per node: time about
edges x distinct lengths, never one step per path. Counts ride along as generating
polynomials packed in one Python int per node (the coefficient of length L in bits
``[L*B, (L+1)*B)``), so exact counts such as C(1000, 500) cost a few big-int additions
per edge.

:func:`sample_path_magnitudes` is the estimate of Veit et al. (NeurIPS 2016,
"Residual networks behave like ensembles of relatively shallow networks"): paths
drawn uniformly at random, the mean norm of their contributions per length.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

import torch

from .model import Graph, Node, Path
from .paths import _vjp, contribution, is_scalar, local_derivative, ones, path_counts


@dataclass
class LengthRow:
    length: int  # counted nodes on the paths (root included when counted, target excluded)
    count: int  # exact number of paths of this length
    contribution: float | torch.Tensor  # the sum of their contributions (shaped like the target)


def _flags(graph: Graph, root: int, target: int, counted: Callable[[Node], bool], counts: list[int]) -> list[int]:
    """1 for the nodes on some path that add to a path's length (the target never does), else 0."""
    flags = [0] * len(graph.nodes)
    for v in range(target + 1, root + 1):
        if counts[v] and counted(graph.nodes[v]):
            flags[v] = 1
    return flags


def _width(counts: list[int], root: int) -> int:
    """Bits per coefficient of the packed count polynomials, in whole bytes.

    A node on some path has at most ``counts[root]`` prefixes from the root (each one
    extends to a different whole path), so no coefficient, nor any sum taken along the
    way, reaches ``2**B``.
    """
    return 8 * max(1, (counts[root].bit_length() + 7) // 8)


def _unpack(poly: int, bits: int) -> dict[int, int]:
    """The nonzero coefficients of a packed polynomial: {length: count}."""
    nb = bits // 8
    raw = poly.to_bytes(max(1, (poly.bit_length() + 7) // 8), "little")
    out = {}
    for L in range((len(raw) + nb - 1) // nb):
        c = int.from_bytes(raw[L * nb:(L + 1) * nb], "little")
        if c:
            out[L] = c
    return out


def length_counts(graph: Graph, root: int, target: int, counted: Callable[[Node], bool], *,
                  counts=None) -> dict[int, int]:
    """{length: exact number of paths root -> target of that length}, lengths with paths only, increasing."""
    counts = counts if counts is not None else path_counts(graph, root, target)
    if not counts[root]:
        return {}
    flags = _flags(graph, root, target, counted, counts)
    bits = _width(counts, root)
    poly: dict[int, int] = {root: 1}
    for v in range(root, target, -1):
        p = poly.pop(v, None)
        if p is None:
            continue
        if flags[v]:
            p <<= bits
        for e in graph.operands[v]:
            d = graph.edges[e].dst
            if counts[d]:
                poly[d] = poly.get(d, 0) + p
    return _unpack(poly[target], bits)


# --------------------------------------------------------------------------- the spectrum


class _Spread:
    """Scalar graphs: the cotangents of one node for lengths lo, lo+1, ... as one float64 vector."""

    __slots__ = ("lo", "values")

    def __init__(self, lo: int, values: torch.Tensor):
        self.lo, self.values = lo, values

    def plus(self, other: "_Spread") -> "_Spread":
        a, b = self, other
        if a.lo == b.lo and a.values.shape == b.values.shape:
            return _Spread(a.lo, a.values + b.values)
        lo = min(a.lo, b.lo)
        hi = max(a.lo + a.values.shape[0], b.lo + b.values.shape[0])
        out = torch.zeros(hi - lo, dtype=torch.float64)
        out[a.lo - lo:a.lo - lo + a.values.shape[0]] += a.values
        out[b.lo - lo:b.lo - lo + b.values.shape[0]] += b.values
        return _Spread(lo, out)


def _present(poly: int, bits: int, lo: int, size: int) -> torch.Tensor:
    """Which of the lengths lo .. lo+size-1 some prefix has (from a packed count polynomial)."""
    mask = (1 << bits) - 1
    return torch.tensor([bool((poly >> ((lo + i) * bits)) & mask) for i in range(size)])


def length_spectrum(graph: Graph, root: int, target: int, counted: Callable[[Node], bool], *,
                    counts=None) -> list[LengthRow]:
    """Per path length: the exact number of paths root -> target and the sum of their contributions.

    Rows for lengths that no path has are left out; rows are sorted by length. The
    contributions are floats when every value on the paths is a scalar, else tensors
    shaped like the target; they add up to the gradient, the counts to the number of paths.
    """
    counts = counts if counts is not None else path_counts(graph, root, target)
    if not counts[root]:
        return []
    flags = _flags(graph, root, target, counted, counts)
    bits = _width(counts, root)
    scalar = is_scalar(graph, root, target, counts)
    poly: dict[int, int] = {root: 1}
    adj: dict[int, object] = {root: _Spread(0, torch.ones(1, dtype=torch.float64)) if scalar
                              else {0: ones(graph.nodes[root])}}
    for v in range(root, target, -1):
        a = adj.pop(v, None)
        p = poly.pop(v, None)
        if a is None:
            continue
        if flags[v]:  # v is on every path below: one more counted node
            p <<= bits
            a = _Spread(a.lo + 1, a.values) if scalar else {L + 1: g for L, g in a.items()}
        for e in graph.operands[v]:
            edge = graph.edges[e]
            d = edge.dst
            if not counts[d]:
                continue
            poly[d] = poly.get(d, 0) + p
            if scalar:
                der = local_derivative(graph, edge)
                g = a.values * der
                if not math.isfinite(der):  # 0 * inf is nan: keep lengths that no prefix has at exactly 0
                    g = torch.where(_present(p, bits, a.lo, a.values.shape[0]), g, 0.0)
                g = _Spread(a.lo, g)
                prev = adj.get(d)
                adj[d] = g if prev is None else prev.plus(g)
            else:
                into = adj.setdefault(d, {})
                for L, cot in a.items():
                    g = _vjp(graph, edge, cot)
                    prev = into.get(L)
                    into[L] = g if prev is None else prev + g
    found = _unpack(poly[target], bits)
    final = adj[target]
    rows = []
    for L, c in sorted(found.items()):
        if scalar:
            value = float(final.values[L - final.lo])
        else:
            value = final[L]
        rows.append(LengthRow(L, c, value))
    return rows


# --------------------------------------------------------------------------- sampling (Veit et al.)


def sample_path(graph: Graph, root: int, target: int, rng: random.Random, counts: list[int]) -> Path:
    """One path root -> target drawn uniformly among all of them (exactly, with the path counts)."""
    v, chosen = root, []
    while v != target:
        r = rng.randrange(counts[v])
        for e in graph.operands[v]:
            c = counts[graph.edges[e].dst]
            if r < c:
                chosen.append(e)
                v = graph.edges[e].dst
                break
            r -= c
    return Path(tuple(chosen))


def _magnitude(x) -> float:
    if isinstance(x, torch.Tensor):
        return float(torch.linalg.vector_norm(x.detach().double()))
    return abs(float(x))


def sample_path_magnitudes(graph: Graph, root: int, target: int, counted: Callable[[Node], bool], n: int, *,
                           seed: int = 0, counts=None) -> dict[int, float]:
    """{length: mean norm of the contribution} over *n* paths drawn uniformly at random, lengths increasing.

    Only the lengths some drawn path has appear; with no path, or ``n <= 0``, the result is empty.
    """
    counts = counts if counts is not None else path_counts(graph, root, target)
    if n <= 0 or not counts[root]:
        return {}
    flags = _flags(graph, root, target, counted, counts)
    rng = random.Random(seed)
    sums: dict[int, float] = {}
    seen: dict[int, int] = {}
    for _ in range(n):
        path = sample_path(graph, root, target, rng, counts)
        length = flags[root] + sum(flags[graph.edges[e].dst] for e in path.edges)
        m = _magnitude(contribution(graph, path))
        sums[length] = sums.get(length, 0.0) + m
        seen[length] = seen.get(length, 0) + 1
    return {L: sums[L] / seen[L] for L in sorted(sums)}

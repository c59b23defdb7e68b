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
"Residual networks behave like ensembles of relatively shallow networks"): for each
length, paths of that length drawn uniformly at random, the mean norm of their contributions.
"""
from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from .model import Graph, Node, Path
from .paths import _vjp, contributions, is_scalar, local_derivative, norm, ones, path_counts


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


def _ldexp(u: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``u * 2**e`` row by row (*e* holds one int exponent per row of *u*), exact: a multiplication by a
    power of two. In float32 when every factor fits float32 (|e| <= 120: the common case, and fast), else
    in float64, as two factors so that neither overflows (results beyond float64's range are inf, or 0)."""
    e = e.clamp(-4000, 4000)
    shape = (-1, *([1] * (u.dim() - 1)))
    if u.dtype != torch.float64 and bool((e.abs() <= 120).all()):
        factor = torch.ldexp(torch.ones(e.shape[0], dtype=torch.float32), e).reshape(shape)
        return u.float() * factor
    half = torch.div(e, 2, rounding_mode="floor")
    one = torch.ones(e.shape[0], dtype=torch.float64)
    return u.double() * torch.ldexp(one, half).reshape(shape) * torch.ldexp(one, e - half).reshape(shape)


class _Block:
    """The tensor cotangents of one node for lengths lo, lo+1, ...: row i is ``U[i] * 2**K[i]``, *U* in the
    graph's dtype with each row's max |U| in [0.5, 1) (or all zero), *K* int64 exponents.

    A path through a thousand blocks multiplies a thousand factors; per-length sums of C(1000, 500)
    of them reach 1e46 and more, past float32's 3e38 — scaled this way nothing overflows or
    underflows, and as the scales are powers of two, scaling rounds nothing. All lengths of a
    node go through one vector-Jacobian product at once (``torch.func.vmap`` over the edge's VJP).
    """

    __slots__ = ("lo", "U", "K")

    def __init__(self, lo: int, U: torch.Tensor, K: torch.Tensor):
        self.lo, self.U, self.K = lo, U, K

    @classmethod
    def normalized(cls, lo: int, U: torch.Tensor, K: torch.Tensor, dtype: torch.dtype) -> "_Block":
        m = U.detach().reshape(U.shape[0], -1).abs().amax(dim=1).double() if U[0].numel() else \
            torch.zeros(U.shape[0], dtype=torch.float64)
        e = torch.frexp(m).exponent.to(torch.int64)
        e = torch.where(torch.isfinite(m) & (m > 0), e, torch.zeros_like(e))
        return cls(lo, _ldexp(U, -e).to(dtype), K + e)

    def __len__(self) -> int:
        return self.U.shape[0]

    def plus(self, other: "_Block") -> "_Block":
        a, b = self, other
        lo = min(a.lo, b.lo)
        n = max(a.lo + len(a), b.lo + len(b)) - lo
        floor = -(1 << 62)
        K = torch.full((n,), floor, dtype=torch.int64)
        ra, rb = slice(a.lo - lo, a.lo - lo + len(a)), slice(b.lo - lo, b.lo - lo + len(b))
        K[ra] = torch.maximum(K[ra], a.K)
        K[rb] = torch.maximum(K[rb], b.K)
        K = torch.where(K == floor, torch.zeros_like(K), K)  # lengths neither has
        U = torch.zeros((n, *a.U.shape[1:]), dtype=torch.float64)
        U[ra] += _ldexp(a.U, a.K - K[ra])
        U[rb] += _ldexp(b.U, b.K - K[rb])
        return _Block.normalized(lo, U, K, a.U.dtype)

    def shifted(self) -> "_Block":
        return _Block(self.lo + 1, self.U, self.K)

    def value(self, length: int) -> torch.Tensor:
        """The cotangent for *length* as float64 (inf where it leaves float64's range, about 1.8e308)."""
        i = length - self.lo
        return _ldexp(self.U[i:i + 1].double(), self.K[i:i + 1])[0]


def _batched_vjp(graph: Graph, edge, U: torch.Tensor, unbatchable: set[int]) -> torch.Tensor:
    """The edge's VJP of every row of *U* at once; row by row where the VJP cannot be vmapped."""
    if edge.id not in unbatchable and U.shape[0] > 1:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.func.vmap(lambda g: _vjp(graph, edge, g))(U)
        except Exception:  # noqa: BLE001 - an op without a batching rule: fall back to one row at a time
            unbatchable.add(edge.id)
    return torch.stack([_vjp(graph, edge, u) for u in U])


def length_spectrum(graph: Graph, root: int, target: int, counted: Callable[[Node], bool], *,
                    counts=None, progress=None) -> list[LengthRow]:
    """Per path length: the exact number of paths root -> target and the sum of their contributions.

    Rows for lengths that no path has are left out; rows are sorted by length. The
    contributions are floats when every value on the paths is a scalar, else float64
    tensors shaped like the target (carried scaled by powers of two, so they neither
    overflow nor underflow in the graph's dtype); they add up to the gradient, the counts
    to the number of paths. *progress*, if given, is called with the fraction done.
    """
    counts = counts if counts is not None else path_counts(graph, root, target)
    if not counts[root]:
        return []
    flags = _flags(graph, root, target, counted, counts)
    bits = _width(counts, root)
    scalar = is_scalar(graph, root, target, counts)
    poly: dict[int, int] = {root: 1}
    top = ones(graph.nodes[root])
    adj: dict[int, object] = {root: _Spread(0, torch.ones(1, dtype=torch.float64)) if scalar
                              else _Block(0, top[None], torch.zeros(1, dtype=torch.int64))}
    unbatchable: set[int] = set()
    span = max(1, root - target)
    for v in range(root, target, -1):
        if progress is not None and (root - v) % 64 == 0:
            progress((root - v) / span)
        a = adj.pop(v, None)
        p = poly.pop(v, None)
        if a is None:
            continue
        if flags[v]:  # v is on every path below: one more counted node
            p <<= bits
            a = _Spread(a.lo + 1, a.values) if scalar else a.shifted()
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
                G = _batched_vjp(graph, edge, a.U, unbatchable)
                g = _Block.normalized(a.lo, G, a.K, a.U.dtype)
                prev = adj.get(d)
                adj[d] = g if prev is None else prev.plus(g)
    found = _unpack(poly[target], bits)
    final = adj[target]
    rows = []
    for L, c in sorted(found.items()):
        if scalar:
            value = float(final.values[L - final.lo])
        else:
            value = final.value(L)
        rows.append(LengthRow(L, c, value))
    return rows


# --------------------------------------------------------------------------- sampling (Veit et al.)


def sample_path(graph: Graph, root: int, target: int, rng: random.Random, counts: list[int]) -> Path:
    """One path root -> target drawn uniformly among all of them (exactly, with the path counts)."""
    v, chosen = root, []
    while v != target:
        e = _pick([(e, counts[graph.edges[e].dst]) for e in graph.operands[v]], rng)
        chosen.append(e)
        v = graph.edges[e].dst
    return Path(tuple(chosen))


def _pick(options: list[tuple[int, int]], rng: random.Random) -> int:
    """One edge of *options* ``[(edge, weight)]``, drawn with probability weight / total (exact, integer weights)."""
    r = rng.randrange(sum(w for _, w in options))
    for e, w in options:
        if r < w:
            return e
        r -= w
    raise AssertionError("unreachable: r < total")  # pragma: no cover


def _suffix_polys(graph: Graph, root: int, target: int, flags: list[int], counts: list[int], bits: int) -> dict:
    """For every node v on some path: the packed polynomial of the paths v -> target by length."""
    polys = {target: 1}
    for v in range(target + 1, root + 1):
        if not counts[v]:
            continue
        p = 0
        for e in graph.operands[v]:
            d = graph.edges[e].dst
            if counts[d]:
                p += polys[d]
        polys[v] = p << bits if flags[v] else p
    return polys


def sample_path_of_length(graph: Graph, root: int, target: int, length: int, rng: random.Random, *,
                          flags: list[int], counts: list[int], polys: dict, bits: int) -> Path:
    """One path root -> target drawn uniformly among those of *length* (exactly, with the per-length counts)."""
    mask = (1 << bits) - 1
    v, r, chosen = root, length, []
    while v != target:
        r -= flags[v]
        options = []
        for e in graph.operands[v]:
            d = graph.edges[e].dst
            if counts[d]:
                c = (polys[d] >> (r * bits)) & mask if r >= 0 else 0
                if c:
                    options.append((e, c))
        e = _pick(options, rng)
        chosen.append(e)
        v = graph.edges[e].dst
    return Path(tuple(chosen))


def sample_path_magnitudes(graph: Graph, root: int, target: int, counted: Callable[[Node], bool], n: int, *,
                           seed: int = 0, counts=None, progress=None) -> dict[int, float]:
    """{length: mean norm of the contribution of one path of that length}, estimated as Veit et al. did.

    For every length that some path has, *n* paths of exactly that length are drawn
    uniformly at random (with replacement; reproducible with *seed*), so short and long
    lengths are sampled alike however rare they are among all paths. With no path, or
    ``n <= 0``, the result is empty. *progress*, if given, is called with the fraction done.
    """
    counts = counts if counts is not None else path_counts(graph, root, target)
    if n <= 0 or not counts[root]:
        return {}
    flags = _flags(graph, root, target, counted, counts)
    bits = _width(counts, root)
    polys = _suffix_polys(graph, root, target, flags, counts, bits)
    lengths = sorted(_unpack(polys[root], bits))
    rng = random.Random(seed)
    out: dict[int, float] = {}
    for i, L in enumerate(lengths):
        if progress is not None:
            progress(i / len(lengths))
        drawn = [sample_path_of_length(graph, root, target, L, rng, flags=flags, counts=counts, polys=polys,
                                       bits=bits) for _ in range(n)]
        out[L] = sum(norm(c) for c in contributions(graph, drawn)) / n  # shared prefixes computed once
    return out

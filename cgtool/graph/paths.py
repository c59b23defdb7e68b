"""The chain rule as a sum over paths, on a Graph: counts, sums, top paths, one path's contribution.
"""
from __future__ import annotations
import heapq
import math
from dataclasses import dataclass
import torch
from .model import Edge, Graph, Node, Path

EXACT_TENSOR_PATHS = 512  # tensor graphs: up to this many paths are all computed and sorted exactly
MAX_SEARCH_STEPS = 200_000  # a hard bound on best-first steps, whatever the graph


# --------------------------------------------------------------------------- counting


def path_counts(graph: Graph, root: int, target: int) -> list[int]:
    """For every node v, the number of paths v -> target (Python ints; 0 off the paths)."""
    counts = [0] * len(graph.nodes)
    if target > root:
        return counts
    counts[target] = 1
    edges, operands = graph.edges, graph.operands
    for v in range(target + 1, root + 1):
        c = 0
        for e in operands[v]:
            c += counts[edges[e].dst]
        counts[v] = c
    return counts


def count_paths(graph: Graph, root: int, target: int) -> int:
    """The exact number of paths from *root* to *target*, in time linear in the graph."""
    return path_counts(graph, root, target)[root]


# --------------------------------------------------------------------------- sums


def is_scalar(graph: Graph, root: int, target: int, counts: list[int] | None = None) -> bool:
    """Whether every value on a path root -> target is a scalar (local derivatives are numbers)."""
    counts = counts if counts is not None else path_counts(graph, root, target)
    return all(graph.nodes[v].is_scalar for v in range(target, root + 1) if counts[v])


def local_derivative(graph: Graph, edge: Edge) -> float:
    """d src / d dst through this edge, for scalar ends (computed once, then kept)."""
    if edge.derivative is None:
        seed = ones(graph.nodes[edge.src])
        edge.derivative = float(edge.vjp(seed).reshape(-1)[0])
    return edge.derivative


def ones(node: Node) -> torch.Tensor:
    """A cotangent of ones shaped like *node*'s value."""
    return torch.ones(node.shape, dtype=node.dtype or torch.float64, device=node.device)


def _vjp(graph: Graph, edge: Edge, cotangent: torch.Tensor) -> torch.Tensor:
    g = edge.vjp(cotangent)
    shape = graph.nodes[edge.dst].shape
    if g.shape != shape:  # broadcasting the operand: reduce to its own size
        g = g.sum_to_size(shape)
    return g


def sum_over_paths(graph: Graph, root: int, target: int, *, absolute: bool = False, counts=None,
                   gains: dict[int, float] | None = None):
    """The sum over all paths of their products (a float for scalar graphs, else a tensor).

    Computed as adjoints accumulated edge by edge from the root down, restricted to
    the nodes on some path to *target*: linear in the graph, however many paths.
    With ``absolute`` (scalar graphs only), the sum of |product|, to detect cancellation.
    With *gains* (tensor graphs), records for every edge log(|VJP of the adjoint| / |adjoint|):
    how much the edge passes on of what actually flows through it, a weight for :func:`best_first`.
    """
    counts = counts if counts is not None else path_counts(graph, root, target)
    if not counts[root]:
        node = graph.nodes[target]
        return 0.0 if node.is_scalar else torch.zeros(node.shape, dtype=node.dtype, device=node.device)
    scalar = is_scalar(graph, root, target, counts)
    if absolute and not scalar:
        raise ValueError("absolute sums are defined for scalar graphs only")
    adj: dict[int, object] = {root: 1.0 if scalar else ones(graph.nodes[root])}
    for v in range(root, target, -1):
        a = adj.pop(v, None)
        if a is None:
            continue
        for e in graph.operands[v]:
            edge = graph.edges[e]
            if not counts[edge.dst]:
                continue
            if scalar:
                d = local_derivative(graph, edge)
                g = a * (abs(d) if absolute else d)
            else:
                g = _vjp(graph, edge, a)
                if gains is not None:
                    gains[e] = _log_abs(norm(g)) - _log_abs(norm(a))
            prev = adj.get(edge.dst)
            adj[edge.dst] = g if prev is None else prev + g
    return adj[target]


def contribution(graph: Graph, path: Path, seed=None):
    """One path's product: the VJP along its edges with every other edge masked."""
    first = graph.edges[path.edges[0]] if path.edges else None
    if first is None:
        return 1.0 if seed is None else seed
    root = graph.nodes[first.src]
    if seed is None and root.is_scalar and all(graph.nodes[graph.edges[e].dst].is_scalar for e in path.edges):
        return math.prod(local_derivative(graph, graph.edges[e]) for e in path.edges)
    g = ones(root) if seed is None else seed
    for e in path.edges:
        g = _vjp(graph, graph.edges[e], g)
    return g


def path_nodes(graph: Graph, path: Path, root: int) -> list[int]:
    """The node ids along *path*, root first."""
    return [root] + [graph.edges[e].dst for e in path.edges]


# --------------------------------------------------------------------------- listing


def _log_abs(x: float) -> float:
    if x != x:  # nan: list it early, it is what a user needs to see
        return math.inf
    return math.log(abs(x)) if x else -math.inf


def _plus(a: float, b: float) -> float:
    return -math.inf if a == -math.inf or b == -math.inf else a + b


def norm(x) -> float:
    """The Euclidean norm of a contribution or cotangent (a tensor, in float64), or |x| of a number."""
    if isinstance(x, torch.Tensor):
        return float(torch.linalg.vector_norm(x.detach().double()))
    return abs(float(x))


def best_first(graph: Graph, root: int, target: int, k: int, weight, counts=None) -> list[Path]:
    """Up to *k* paths with the largest total weight (a sum of per-edge log-weights), best first.

    The bound ``h[v]`` (the best weight from v down to the target) is exact, so the
    first *k* complete paths popped are the *k* best; ties go depth-first (newest
    first), so equal weights cannot make the search breadth-first and explode.
    """
    counts = counts if counts is not None else path_counts(graph, root, target)
    if k <= 0 or not counts[root]:
        return []
    edges, operands = graph.edges, graph.operands
    w = {}
    h = [-math.inf] * len(graph.nodes)
    h[target] = 0.0
    for v in range(target + 1, root + 1):
        if not counts[v]:
            continue
        best = -math.inf
        for e in operands[v]:
            d = edges[e].dst
            if counts[d]:
                w[e] = weight(edges[e])
                best = max(best, _plus(w[e], h[d]))
        h[v] = best
    found: list[Path] = []
    tick = 0
    # entries: (-priority, -tick, node, prefix weight, edges as a cons list)
    heap = [(-h[root], 0, root, 0.0, None)]
    steps = 0
    while heap and len(found) < k and steps < MAX_SEARCH_STEPS:
        steps += 1
        neg_p, _, v, prefix, chain = heapq.heappop(heap)
        if v == target:
            found.append(Path(_unchain(chain), -neg_p))
            continue
        for e in reversed(operands[v]):
            d = edges[e].dst
            if not counts[d]:
                continue
            tick += 1
            p = _plus(prefix, w[e])
            heapq.heappush(heap, (-_plus(p, h[d]), -tick, d, p, (e, chain)))
    return found


def _unchain(chain) -> tuple[int, ...]:
    out = []
    while chain is not None:
        out.append(chain[0])
        chain = chain[1]
    return tuple(reversed(out))


def all_paths(graph: Graph, root: int, target: int, limit: int, counts=None) -> list[Path]:
    """Every path in depth-first slot order, at most *limit* of them."""
    counts = counts if counts is not None else path_counts(graph, root, target)
    out: list[Path] = []
    if not counts[root]:
        return out
    stack = [(root, ())]
    while stack and len(out) < limit:
        v, prefix = stack.pop()
        if v == target:
            out.append(Path(prefix))
            continue
        for e in reversed(graph.operands[v]):
            d = graph.edges[e].dst
            if counts[d]:
                stack.append((d, prefix + (e,)))
    return out


@dataclass
class Listing:
    paths: list[Path]
    exact_order: bool  # whether the listed paths are truly the largest |contribution|
    contributions: list  # per listed path: float (scalar graphs) or tensor
    total: object = None  # the sum over all paths, when the search needed the linear-time pass anyway


def _common(a: tuple, b: tuple) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def prefix_steps(paths: list[Path]) -> int:
    """The vector-Jacobian products :func:`contributions` needs: the edges of the trie of the paths."""
    steps, prev = 0, ()
    for p in sorted(paths, key=lambda p: p.edges):
        steps += len(p.edges) - _common(prev, p.edges)
        prev = p.edges
    return steps


def contributions(graph: Graph, paths: list[Path]) -> list:
    """Every path's contribution, sharing the work of common prefixes (paths from one root).

    Paths are taken in lexicographic order of their edges with a stack of the cotangents
    along the previous one: a path costs only the edges after the prefix it shares with
    the previous one (:func:`prefix_steps` in all), not its whole length.
    """
    out: list = [None] * len(paths)
    order = sorted(range(len(paths)), key=lambda i: paths[i].edges)
    stack: list = []  # stack[j]: the cotangent after the first j edges of prev
    prev: tuple = ()
    for i in order:
        edges = paths[i].edges
        if not edges:
            out[i] = contribution(graph, paths[i])
            continue
        if not stack:
            stack = [ones(graph.nodes[graph.edges[edges[0]].src])]
        keep = _common(prev, edges)
        del stack[keep + 1:]
        for e in edges[keep:]:
            stack.append(_vjp(graph, graph.edges[e], stack[-1]))
        out[i] = stack[-1]
        prev = edges
    return out


# tensor graphs: the work allowed for contributions, in vector-Jacobian products per edge on the paths
# (with a floor): past it, paths are found by a best-first search instead of compared all together
STEP_BUDGET = 4
MIN_STEPS = 2_000


def top_paths(graph: Graph, root: int, target: int, k: int, *, counts=None, by_magnitude: bool = True) -> Listing:
    """Up to *k* paths, largest |contribution| first (or in depth-first order without ``by_magnitude``).

    Scalar graphs: exact, by a best-first search on log |local derivative|. Tensor graphs:
    every path is computed and compared when there are at most ``EXACT_TENSOR_PATHS`` and
    their prefix trie fits the step budget (``exact_order``); otherwise the candidates come
    from a best-first search on per-edge magnitudes and the order is approximate.
    """
    counts = counts if counts is not None else path_counts(graph, root, target)
    total = counts[root]
    if k <= 0 or not total:
        return Listing([], True, [])
    if not by_magnitude:
        paths = all_paths(graph, root, target, k, counts)
        return Listing(paths, True, contributions(graph, paths))
    if is_scalar(graph, root, target, counts):
        paths = best_first(graph, root, target, k, lambda e: _log_abs(local_derivative(graph, e)), counts)
        # sums of logs and products of factors round differently: order the chosen paths by their products
        # (stable, so paths equal in both keep the search's order; nan first, as in the search)
        listed = sorted(((p, contribution(graph, p)) for p in paths), key=lambda pc: (pc[1] == pc[1], -abs(pc[1])))
        return Listing([p for p, _ in listed], len(paths) == min(k, total), [c for _, c in listed])
    budget = max(MIN_STEPS, STEP_BUDGET * sum(len(graph.operands[v]) for v in range(target, root + 1) if counts[v]))
    candidates = all_paths(graph, root, target, EXACT_TENSOR_PATHS, counts) if total <= EXACT_TENSOR_PATHS else None
    exact = candidates is not None and prefix_steps(candidates) <= budget
    total_sum = None
    if not exact:  # weights from the linear-time pass: each edge's gain on the adjoint that reaches it
        gains: dict[int, float] = {}
        total_sum = sum_over_paths(graph, root, target, counts=counts, gains=gains)
        candidates = best_first(graph, root, target, max(2 * k, 16), lambda e: gains.get(e.id, -math.inf), counts)
    values = contributions(graph, candidates)
    scored = []
    for i, (p, c) in enumerate(zip(candidates, values)):
        n = norm(c)
        p.score = _log_abs(n)
        scored.append((-p.score if p.score == p.score else -math.inf, i, p, c))
    scored.sort(key=lambda t: (t[0], t[1]))
    chosen = scored[:k]
    return Listing([t[2] for t in chosen], exact or len(candidates) == total, [t[3] for t in chosen], total_sum)

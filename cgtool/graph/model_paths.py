"""Gradient paths of a model's parameters: ``cgtool paths``. Returns plain data; never prints.

The model is captured once (:func:`cgtool.graph.capture.capture_model`); its output is
reduced to a scalar loss (``sum``, ``mean`` or ``norm``) when it is not one; the graph is
read at the module level (module calls and named values; :mod:`cgtool.graph.levels`) or
at the op level (every autograd node). For a parameter (or input, or constant): the
exact number of paths from the loss to it, the top paths by the norm of their
contribution (the vector-Jacobian product restricted to that path), and the check that
the contributions add up to the gradient autograd gives.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import torch

from ..errors import CgError, closest
from . import paths as P
from .capture import Capture, _slot_vjp
from .levels import LEVELS, contract, module_level_node
from .model import Graph, Node, OpInfo

LOSSES = {"sum": torch.sum, "mean": torch.mean, "norm": torch.linalg.vector_norm}


@dataclass
class PathRow:
    nodes: list[str]  # root first: ["sum(output)", "linear#2", "x#2", "linear#1", "linear.weight"]
    contribution_norm: float


@dataclass
class ParameterPaths:
    wrt: str
    root: str
    loss: str | None  # the reduction applied to a non-scalar output; None when it was a scalar
    level: str
    path_count: int  # exact
    grad_norm: float
    sum_matches_grad: bool
    checked_by: str  # "listed paths" (every path was listed) or "sum over all paths" (linear-time DP)
    paths: list[PathRow]
    left_out: int  # paths not listed
    by_length: list = field(default_factory=list)  # [{"length", "count", "contribution_norm", "share"}]
    by_length_matches: bool | None = None  # the per-length sums add up to the gradient


@dataclass
class ParameterRow:
    name: str
    path_count: int
    grad_norm: float
    uses: int  # operations that read it
    reached: bool
    why: str | None  # for an unreached parameter: "never used (…)" or "output unused (…)"


@dataclass
class AllParameters:
    root: str
    loss: str | None
    level: str
    parameters: list[ParameterRow]


@dataclass
class _Rooted:
    graph: Graph  # at the requested level
    root: Node
    loss: str | None
    ids: dict[int, int]  # op-level id -> id at the level


def rooted(cap: Capture, *, root: str | None, loss: str, level: str, keep_also: set[int] = frozenset()) -> _Rooted:
    """The graph at *level*, rooted at the (reduced) output or at ``--root``."""
    if level not in LEVELS:
        raise CgError(f"--level must be one of {', '.join(LEVELS)}, not {level!r}", "--level")
    if loss not in LOSSES:
        raise CgError(f"--loss must be one of {', '.join(LOSSES)}, not {loss!r}", "--loss")
    if root is not None:
        if root not in cap.names:
            raise _unknown(root, cap, "--root")
        node = cap.names[root]
    else:
        outputs = [cap.returned] if isinstance(cap.returned, torch.Tensor) else \
            [t for t in (cap.returned or ()) if isinstance(t, torch.Tensor)]
        node = cap.node_of(outputs[0]) if outputs else None
        if node is None:
            raise CgError("the model's output does not depend on its inputs or parameters", "--root",
                          hint="pick a value with --root NAME")
    reduced = None
    if not node.is_scalar:
        node, reduced = _add_loss(cap.graph, node, loss), loss
    if level == "op":
        return _Rooted(cap.graph, node, reduced, {v: v for v in range(len(cap.graph.nodes))})
    graph, ids = contract(cap.graph, lambda n: module_level_node(n) or n.id in keep_also, node.id)
    return _Rooted(graph, graph.nodes[ids[node.id]], reduced, ids)


def _add_loss(graph: Graph, node: Node, loss: str) -> Node:
    """The scalar loss as one more node of the graph, with the reduction's own autograd edge."""
    value = LOSSES[loss](node.value)
    label = f"{loss}({node.label})"
    root = graph.add_node(label, value, loss, OpInfo(loss, [node], label), kind="op", shape=())
    graph.add_edge(root, node, 0, loss, _slot_vjp(value.grad_fn, 0, 0))
    return root


def _unknown(name: str, cap: Capture, option: str) -> CgError:
    leaves = [n for n, node in cap.names.items() if node.kind in ("parameter", "input", "constant")]
    near = closest(name, leaves, n=5) or leaves[:8]
    return CgError(f"no value named {name!r} in the model", f"{option} {name}",
                   hint=f"names that exist: {', '.join(near)}" + (" …" if len(leaves) > len(near) else ""))


def _norm(x) -> float:
    if isinstance(x, torch.Tensor):
        return float(torch.linalg.vector_norm(x.detach().double()))
    return abs(float(x))


def _autograd(root: Node, target: Node) -> torch.Tensor:
    value = target.value
    zeros = torch.zeros(target.shape, dtype=target.dtype or torch.float32)
    if root.value is None or value is None or not root.value.requires_grad or not value.requires_grad:
        return zeros
    (g,) = torch.autograd.grad(root.value, value, retain_graph=True, allow_unused=True)
    return zeros if g is None else g


def _gradient_norms(root: Node, targets: list[Node | None]) -> list[float]:
    """Autograd's gradient norm for every target, from one backward pass (0 where none reaches)."""
    live = [i for i, t in enumerate(targets) if t is not None and t.value is not None and t.value.requires_grad]
    norms = [0.0] * len(targets)
    if root.value is None or not root.value.requires_grad or not live:
        return norms
    grads = torch.autograd.grad(root.value, [targets[i].value for i in live], retain_graph=True, allow_unused=True)
    for i, g in zip(live, grads):
        norms[i] = 0.0 if g is None else _norm(g)
    return norms


def _close(a, b) -> bool:
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(b, dtype=torch.float64).reshape(-1)
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * scale))


def length_counter(*, depth: int = 1, pattern: str | None = None, with_parameters: set[str] = frozenset()):
    """What adds one to a path's length: a module call whose path matches *pattern* (``*`` is one
    component: ``stages.*.*.branch``), else a call at *depth* of a module that has parameters."""
    wanted = pattern.split(".") if pattern else None

    def matches(path: str) -> bool:
        if wanted is not None:
            parts = path.split(".")
            return len(parts) == len(wanted) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, wanted))
        return path in with_parameters and path.count(".") + 1 == depth

    def counted(node: Node) -> bool:
        return any(matches(call.rsplit("#", 1)[0]) for call in node.calls)

    return counted


def parameter_paths(cap: Capture, wrt: str, *, root: str | None = None, loss: str = "sum", level: str = "module",
                    max_paths: int = 10, counted=None, sample: int = 0) -> ParameterPaths:
    """Every path from the loss to *wrt*: the exact count, the top paths, and the check against autograd.

    With *counted* (see :func:`length_counter`), also the path-length spectrum: per length, the exact
    number of paths and the exact sum of their contributions (one cotangent per length, a DP over the
    graph), checked to add up to the gradient; *sample* paths per run add Veit et al.'s estimate."""
    if max_paths < 0:
        raise CgError(f"--max-paths must be 0 or more, not {max_paths}", "--max-paths")
    if wrt not in cap.names:
        raise _unknown(wrt, cap, "--wrt")
    target_op = cap.names[wrt]
    r = rooted(cap, root=root, loss=loss, level=level, keep_also={target_op.id})
    g, root_node = r.graph, r.root
    target = g.nodes[r.ids[target_op.id]] if target_op.id in r.ids else None
    grad = _autograd(root_node, target_op)
    if target is None:  # not reached from the root at all
        return ParameterPaths(wrt, root_node.label, r.loss, level, 0, _norm(grad), _norm(grad) == 0.0,
                              "sum over all paths", [], 0)
    counts = P.path_counts(g, root_node.id, target.id)
    count = counts[root_node.id]
    listing = P.top_paths(g, root_node.id, target.id, max_paths, counts=counts)
    rows = [PathRow([g.nodes[v].label for v in P.path_nodes(g, p, root_node.id)], _norm(c))
            for p, c in zip(listing.paths, listing.contributions)]
    rows.sort(key=lambda row: -row.contribution_norm)
    if count and len(listing.paths) == count:
        total, how = sum(listing.contributions[1:], listing.contributions[0]), "listed paths"
    else:
        total, how = P.sum_over_paths(g, root_node.id, target.id, counts=counts), "sum over all paths"
    matches = _close(total, grad) if count else _norm(grad) == 0.0
    result = ParameterPaths(wrt, root_node.label, r.loss, level, count, _norm(grad), matches, how, rows,
                            count - len(rows))
    if counted is not None and count:
        result.by_length, result.by_length_matches = _spectrum(g, root_node, target, counted, counts, grad, sample)
    return result


def _spectrum(g: Graph, root: Node, target: Node, counted, counts, grad, sample: int):
    from .spectrum import length_spectrum, sample_path_magnitudes

    rows = length_spectrum(g, root.id, target.id, counted, counts=counts)
    total = sum((row.contribution for row in rows[1:]), rows[0].contribution)
    out = spectrum_shares(rows, _norm(grad))
    if sample:
        means = sample_path_magnitudes(g, root.id, target.id, counted, sample)
        for row in out:
            row["sampled_mean_path_norm"] = means.get(row["length"])
    return out, _close(total, grad)


def all_parameters(cap: Capture, parameters: list[str], *, root: str | None = None, loss: str = "sum",
                   level: str = "module") -> AllParameters:
    """One row per parameter: paths, gradient norm, uses, and whether any path reaches it (and why not)."""
    keep = {cap.names[p].id for p in parameters if p in cap.names}
    r = rooted(cap, root=root, loss=loss, level=level, keep_also=keep)
    uses: dict[int, int] = {}
    for e in cap.graph.edges:
        if e.differentiable:
            uses[e.dst] = uses.get(e.dst, 0) + 1
    norms = _gradient_norms(r.root, [cap.names.get(name) for name in parameters])
    rows = []
    for name, grad_norm in zip(parameters, norms):
        node = cap.names.get(name)
        used = uses.get(node.id, 0) if node is not None else 0
        count = 0
        if node is not None and node.id in r.ids:
            count = P.count_paths(r.graph, r.root.id, r.ids[node.id])
        why = None
        if not count:
            why = "never used (its module is never called)" if not used else \
                "output unused (what reads it does not reach the output)"
        rows.append(ParameterRow(name, count, grad_norm, used, bool(count), why))
    return AllParameters(r.root.label, r.loss, level, rows)


def spectrum_shares(rows, grad_norm: float) -> list[dict]:
    """Per-length rows with the norm of their summed contribution and its share of the gradient's norm."""
    out = []
    for row in rows:
        n = _norm(row.contribution)
        out.append({"length": row.length, "count": row.count, "contribution_norm": n,
                    "share": n / grad_norm if grad_norm else math.nan})
    return out

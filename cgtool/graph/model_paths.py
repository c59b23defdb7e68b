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
from .paths import norm as _norm
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
    by_length_matches: bool | None = None  # the per-length sums add up to the gradient (None: not checkable)
    order: str = "exact"  # "exact": the listed paths are the largest; "approximate": found by a best-first search
    reason: str | None = None  # why there is no path, when path_count is 0
    same_tensor_as: str | None = None  # wrt names a tied parameter: the qualified name it is shared under
    root_given: bool = False  # the root is --root NAME (else the model's output)
    by_length_check: str | None = None  # why the per-length sums could not be checked, when they could not


@dataclass
class ParameterRow:
    name: str
    path_count: int
    grad_norm: float
    uses: int  # operations that read it
    reached: bool
    why: str | None  # for an unreached parameter: "never used (…)" or "output unused (…)"
    tied: list[str] = field(default_factory=list)  # other names of the same tensor (tied weights)


@dataclass
class AllParameters:
    root: str
    loss: str | None
    level: str
    parameters: list[ParameterRow]
    root_given: bool = False


@dataclass
class _Rooted:
    graph: Graph  # at the requested level
    root: Node
    loss: str | None
    ids: dict[int, int]  # op-level id -> id at the level
    given: bool = False  # the root was named with --root
    op_root: int = -1  # op-level id of the root before any reduction
    name: str | None = None  # --root NAME as given


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
        if node.value is None or not node.value.is_floating_point():
            raise CgError(f"{root} is not a floating-point value: no gradient flows from it", f"--root {root}",
                          hint="pick a floating-point value, or leave --root out to use the output")
    else:
        outputs = [cap.returned] if isinstance(cap.returned, torch.Tensor) else \
            [t for t in (cap.returned or ()) if isinstance(t, torch.Tensor)]
        node = cap.node_of(outputs[0]) if outputs else None
        if node is None:
            raise CgError("the model's output does not depend on its inputs or parameters", "--root",
                          hint="pick a value with --root NAME")
    reduced, op_root = None, node.id
    if not node.is_scalar:
        node, reduced = _add_loss(cap.graph, node, loss), loss
    given = root is not None
    if level == "op":
        return _Rooted(cap.graph, node, reduced, {v: v for v in range(len(cap.graph.nodes))}, given,
                       op_root, root)
    graph, ids = contract(cap.graph, lambda n: module_level_node(n) or n.id in keep_also, node.id)
    return _Rooted(graph, graph.nodes[ids[node.id]], reduced, ids, given, op_root, root)


def _add_loss(graph: Graph, node: Node, loss: str) -> Node:
    """The scalar loss as one more node of the graph, with the reduction's own autograd edge; the same node
    again when an earlier call added it (the graph keeps one node per label)."""
    label = f"{loss}({node.label})"
    for v in range(len(graph.nodes) - 1, node.id, -1):
        made = graph.nodes[v]
        if made.label == label and made.info is not None and made.info.key == loss and made.info.operands == [node]:
            return made
    value = LOSSES[loss](node.value)
    root = graph.add_node(label, value, loss, OpInfo(loss, [node], label), kind="op", shape=())
    graph.add_edge(root, node, 0, loss, _slot_vjp(value.grad_fn, 0, 0))
    return root


def _unknown(name: str, cap: Capture, option: str, aliases: dict[str, str] | None = None) -> CgError:
    """No such name: the names that exist, closest first (leaves for --wrt, forward values for --root)."""
    if option == "--root":
        names = [n for n, node in cap.names.items() if node.kind not in ("parameter", "constant")]
        what = "forward values"
    else:
        names = [n for n, node in cap.names.items() if node.kind in ("parameter", "input", "constant")]
        names += list(aliases or ())
        what = "parameters, constants and inputs"
    near = closest(name, names, n=5) or names[:8]
    place = f"{option} {name}" if name.strip() else f"{option} {name!r}"
    return CgError(f"no value named {name!r} in the model", place,
                   hint=f"{what} that exist: {', '.join(near)}" + (" …" if len(names) > len(near) else ""))


def _autograd(root: Node, target: Node) -> torch.Tensor:
    """Autograd's gradient of the root with respect to *target* (zeros where none reaches it)."""
    (g,) = _gradients(root, [target])
    return g if g is not None else torch.zeros(target.shape, dtype=target.dtype or torch.float32)


def _gradient_norms(root: Node, targets: list[Node | None]) -> list[float]:
    """Autograd's gradient norm for every target, from one backward pass (0 where none reaches)."""
    return [0.0 if g is None else _norm(g) for g in _gradients(root, targets)]


def _gradients(root: Node, targets: list[Node | None]) -> list[torch.Tensor | None]:
    """One backward pass from *root* to every target; None where no gradient reaches it. A spec constant
    took part in the graph with requires_grad on (see capture_model): it is switched on again for the call."""
    live = [i for i, t in enumerate(targets) if t is not None and isinstance(t.value, torch.Tensor)
            and (t.value.requires_grad or (t.kind == "constant" and t.value.is_floating_point()))]
    out: list[torch.Tensor | None] = [None] * len(targets)
    if root.value is None or not root.value.requires_grad or not live:
        return out
    values = [targets[i].value for i in live]
    switched = [v for v in values if not v.requires_grad]
    try:
        for v in switched:
            v.requires_grad_(True)
        grads = torch.autograd.grad(root.value, values, retain_graph=True, allow_unused=True)
    finally:
        for v in switched:
            v.requires_grad_(False)
    for i, g in zip(live, grads):
        out[i] = g
    return out


# relative tolerance of a sum over paths against autograd, by the dtype both were computed in: the two add
# the same products in different orders, so they agree to a few hundred roundings of that dtype
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def _tolerance(dtype) -> float:
    return TOLERANCE.get(dtype, 1e-4)


def _close(a, b, dtype=torch.float32, spread: float = 0.0) -> bool:
    """Whether a sum over paths *a* equals autograd's gradient *b*, within rounding: relative to the larger
    of |b| and *spread*, the sum of the norms of the terms that were added (when they cancel, rounding
    scales with them, not with the result)."""
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(b, dtype=torch.float64).reshape(-1)
    if a.shape != b.shape or not bool(torch.isfinite(a).all()):
        return False
    scale = max(_norm(b), spread)
    return _norm(a - b) <= _tolerance(dtype) * scale + 1e-12 * math.sqrt(b.numel())


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

    counted.matches = matches  # whether a module path counts
    return counted


def _uses(cap: Capture) -> tuple[dict[int, int], dict[int, int]]:
    """Per op-level node: how many operations read it with a gradient, and how many without one."""
    grad_uses: dict[int, int] = {}
    data_uses: dict[int, int] = {}
    for e in cap.graph.edges:
        into = grad_uses if e.differentiable else data_uses
        into[e.dst] = into.get(e.dst, 0) + 1
    return grad_uses, data_uses


def _why_unreached(name: str, node: Node | None, uses: tuple[dict, dict], r: _Rooted, cap: Capture) -> str:
    """Why no path reaches *name* from the root, in words about the model."""
    grad_uses, data_uses = uses
    where = f"--root {r.name}" if r.given else "the output"
    if node is None or (not grad_uses.get(node.id) and not data_uses.get(node.id)):
        if node is not None and node.kind in ("input", "constant"):
            return "never used (the forward does not read it)"
        return "never used (its module is never called)"
    readers = [e.src for e in cap.graph.edges if e.dst == node.id]
    if r.given and readers and min(readers) > r.op_root:
        return f"not before {where} (it is used only after {where} is computed)"
    if node.id in set(cap.graph.reachable(r.op_root)):
        return f"reaches {where} only through operations with no derivative (//, round, comparisons)"
    return f"output unused (what reads it does not reach {where})"


def parameter_paths(cap: Capture, wrt: str, *, root: str | None = None, loss: str = "sum", level: str = "module",
                    max_paths: int = 10, counted=None, sample: int = 0, seed: int = 0,
                    aliases: dict[str, str] | None = None, progress=None) -> ParameterPaths:
    """Every path from the loss to *wrt*: the exact count, the top paths, and the check against autograd.

    With *counted* (see :func:`length_counter`), also the path-length spectrum: per length, the exact
    number of paths and the exact sum of their contributions (one cotangent per length, a DP over the
    graph), checked to add up to the gradient; *sample* paths of each length (drawn with *seed*) add
    Veit et al.'s estimate. *aliases* maps other names of tied parameters to the name they are captured
    under. *progress*, if given, is called with (stage, fraction done or None)."""
    progress = progress or (lambda stage, fraction=None: None)
    if max_paths < 0:
        raise CgError(f"--max-paths must be 0 or more, not {max_paths}", "--max-paths")
    aliases = aliases or {}
    name = wrt
    if wrt not in cap.names and wrt in aliases and aliases[wrt] in cap.names:
        name = aliases[wrt]
    if name not in cap.names:
        raise _unknown(wrt, cap, "--wrt", aliases)
    target_op = cap.names[name]
    r = rooted(cap, root=root, loss=loss, level=level, keep_also={target_op.id})
    g, root_node = r.graph, r.root
    target = g.nodes[r.ids[target_op.id]] if target_op.id in r.ids else None
    grad = _autograd(root_node, target_op)
    dtype = target_op.dtype or torch.float32
    base = dict(same_tensor_as=name if name != wrt else None, root_given=r.given)
    counts = P.path_counts(g, root_node.id, target.id) if target is not None else None
    count = counts[root_node.id] if counts is not None else 0
    if not count:  # not reached from the root at all
        why = _why_unreached(wrt, target_op, _uses(cap), r, cap)
        return ParameterPaths(wrt, root_node.label, r.loss, level, 0, _norm(grad), _norm(grad) == 0.0,
                              "sum over all paths", [], 0, reason=f"no path reaches {wrt}: {why}", **base)
    progress("listing the largest paths", None)
    listing = P.top_paths(g, root_node.id, target.id, max_paths, counts=counts)
    rows = [PathRow([g.nodes[v].label for v in P.path_nodes(g, p, root_node.id)], _norm(c))
            for p, c in zip(listing.paths, listing.contributions)]
    rows.sort(key=lambda row: -row.contribution_norm)
    if len(listing.paths) == count:
        total, how = sum(listing.contributions[1:], listing.contributions[0]), "listed paths"
        spread = sum(_norm(c) for c in listing.contributions)
    else:
        progress("checking the sum over all paths", None)
        total = listing.total if listing.total is not None else P.sum_over_paths(g, root_node.id, target.id,
                                                                                  counts=counts)
        how = "sum over all paths"
        spread = 0.0
    result = ParameterPaths(wrt, root_node.label, r.loss, level, count, _norm(grad), _close(total, grad, dtype, spread),
                            how, rows, count - len(rows), order="exact" if listing.exact_order else "approximate",
                            **base)
    if counted is not None:
        _spectrum(result, g, root_node, target, counted, counts, grad, dtype, sample, seed, progress)
    return result


def _spectrum(result: ParameterPaths, g: Graph, root: Node, target: Node, counted, counts, grad, dtype,
              sample: int, seed: int, progress) -> None:
    from .spectrum import length_spectrum, sample_path_magnitudes

    rows = length_spectrum(g, root.id, target.id, counted, counts=counts,
                           progress=lambda f: progress("the path-length spectrum", f))
    total = sum((row.contribution for row in rows[1:]), rows[0].contribution)
    grad_norm = _norm(grad)
    result.by_length = spectrum_shares(rows, grad_norm)
    spread = sum(_norm(row.contribution) for row in rows)
    if not math.isfinite(spread) or _tolerance(dtype) * spread > 0.1 * max(grad_norm, 1e-300):
        result.by_length_matches = None
        result.by_length_check = (
            f"not checkable in {str(dtype).removeprefix('torch.')}: the per-length sums reach "
            f"{max(_norm(row.contribution) for row in rows):.3g} and cancel to a gradient of norm {grad_norm:.3g}, "
            "smaller than their rounding error")
    else:
        result.by_length_matches = _close(total, grad, dtype, spread)
    if sample:
        means = sample_path_magnitudes(g, root.id, target.id, counted, sample, seed=seed, counts=counts,
                                       progress=lambda f: progress("sampling paths of each length", f))
        for row in result.by_length:
            mean = means.get(row["length"])
            row["sampled_mean_path_norm"] = mean
            row["sampled_estimate_norm"] = None if mean is None else mean * row["count"]


def all_parameters(cap: Capture, parameters: list[str], *, root: str | None = None, loss: str = "sum",
                   level: str = "module", tied: dict[str, list[str]] | None = None) -> AllParameters:
    """One row per parameter: paths, gradient norm, uses, and whether any path reaches it (and why not).
    *tied* maps a parameter's name to the other names of the same tensor."""
    keep = {cap.names[p].id for p in parameters if p in cap.names}
    r = rooted(cap, root=root, loss=loss, level=level, keep_also=keep)
    uses = _uses(cap)
    norms = _gradient_norms(r.root, [cap.names.get(name) for name in parameters])
    rows = []
    for name, grad_norm in zip(parameters, norms):
        node = cap.names.get(name)
        used = uses[0].get(node.id, 0) if node is not None else 0
        count = 0
        if node is not None and node.id in r.ids:
            count = P.count_paths(r.graph, r.root.id, r.ids[node.id])
        why = None if count else _why_unreached(name, node, uses, r, cap)
        rows.append(ParameterRow(name, count, grad_norm, used, bool(count), why, list((tied or {}).get(name, ()))))
    return AllParameters(r.root.label, r.loss, level, rows, r.given)


def spectrum_shares(rows, grad_norm: float) -> list[dict]:
    """Per-length rows with the norm of their summed contribution and its share of the gradient's norm
    (None when the gradient is zero: a share of nothing is undefined)."""
    out = []
    for row in rows:
        n = _norm(row.contribution)
        out.append({"length": row.length, "count": row.count,
                    "contribution_norm": n if math.isfinite(n) else None,
                    "share": n / grad_norm if grad_norm and math.isfinite(n) else None})
    return out

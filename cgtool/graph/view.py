"""What a picture of a graph shows: :class:`GraphView`, built from one capture. Plain data; never prints.

Every renderer (text, DOT, Mermaid, JSON, SVG/PNG, HTML) draws the same view, so a label
in a picture is the label in the JSON and in ``cgtool paths``. Building a view:

- **level**: ``module`` keeps what a reader names (leaves, module calls, named values; the
  predicate of ``cgtool paths --level module``), ``op`` every autograd node. Folded nodes
  leave one edge from each kept node to each kept node it read through them; an edge is a
  data edge (no gradient) when no route through the folded ones carries a gradient.
- **regions**: the nodes computed inside one module call (``h.0#1``): the call's output and,
  backwards from it, every value owned by that module or its children (named values of a
  nested forward ``h.0/x``, calls of sub-modules, their own parameters when nothing outside
  reads them). Regions are drawn as boxes, and are what folding folds.
- **repeat**: the copies of a ``repeat: N`` entry (the builder records where each module
  came from; copies torch made itself, such as ``TransformerEncoder``'s layers, are told by
  class and parameter shapes) fold into one node marked ×N, unless ``expand``; **depth**: a
  call of a module at *depth* (``stem`` is 1, ``stem.0`` is 2) that computed more than one
  value folds, with everything inside it, into one node.
- **highlight**: every path from the root to a name, with its edges' local derivatives
  (expressions: symbolic, and numeric when the leaves have values), from the paths engine.

Edges point the way data flows: ``source`` is an operand, ``target`` the value computed from it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..errors import CgError, closest
from . import paths as P
from .levels import LEVELS, module_level_node
from .model import Graph, Node, Snapshot, value_summary

MAX_NODES = 400  # a picture with more nodes is refused (--max-nodes raises it)
TOP_PATHS = 5  # paths listed per parameter on the page
PAGE_PATHS_SECONDS = 5.0  # time spent listing paths with contributions for the page, at most
MAX_VARIANTS = 8  # the page opens at most this many folded nodes on click (each is one more layout)
PAGE_LIST_PATHS = 512  # the page lists a leaf's paths when it has at most this many


@dataclass
class ViewNode:
    id: str  # n0, n1, … in topological order (operands first)
    label: str  # the user's name: x#2, linear#2, linear.weight, (x1 + w)
    kind: str  # input | parameter | constant | op | module | internal; a folded region: module
    shape: list[int]
    dtype: str | None = None
    op: str | None = None  # what computed it: "+", "relu", "linear" (a module call)
    text: str | None = None  # the user's source text of the operation
    loc: str | None = None  # file:line:col of the operation in the spec or expression
    names: list[str] = field(default_factory=list)  # forward variables bound to it
    calls: list[str] = field(default_factory=list)  # module calls that returned it, innermost first
    trainable: bool | None = None  # parameters True, constants (buffers) False
    value: dict | None = None  # {"value": x} for a number, else {"min", "max", "mean", "norm"}
    group: str | None = None  # the box (module call) it is drawn in
    folded: int = 1  # values of the graph this node stands for (more than 1 when folded)
    repeat: int | None = None  # ×N: the copies of a repeated block folded into this node
    members: list[str] = field(default_factory=list)  # folded: the module calls it stands for
    highlighted: bool = False


@dataclass
class ViewEdge:
    id: str
    source: str  # the operand's node id
    target: str  # the id of the value computed from it
    op: str
    slot: int  # which operand of the operation
    differentiable: bool = True
    label: str | None = None  # highlighted: the local derivative ∂target/∂source
    highlighted: bool = False


@dataclass
class ViewGroup:
    """A module call drawn as a box around the values computed inside it."""

    id: str  # g0, g1, …
    label: str  # the call: h.0#1
    module: str  # the module's qualified name: h.0
    parent: str | None
    nodes: int  # values inside, boxes within included


@dataclass
class PathView:
    nodes: list[str]  # labels, root first (as `cgtool paths` lists them)
    contribution: str | None  # a number (expressions) or "|c| = 0.31" (tensors); None when unknown
    contribution_norm: float | None
    symbolic: str | None = None  # expressions: the product of the local derivatives, in the leaves


@dataclass
class Highlight:
    """The gradient paths from the root to one name."""

    name: str
    root: str  # label of the root the paths start at (a reduction of a non-scalar output: sum(…))
    path_count: int  # exact
    nodes: list[str]  # view node ids on the paths
    edges: list[str]  # view edge ids on the paths
    paths: list[PathView]  # the largest contributions first (or in order, without values)
    symbolic: str | None = None  # expressions: the gradient, path by path
    gradient: str | None = None  # the gradient's value (expressions)
    edge_labels: dict[str, str] = field(default_factory=dict)  # edge id -> its local derivative, where known


@dataclass
class ControlFlow:
    kind: str  # if | while | ifexp
    text: str
    loc: str | None
    runs: int | None  # None when unknown (expressions)
    held: int | None


@dataclass
class GraphView:
    title: str
    source: str  # "spec" or "expression"
    level: str
    root: str  # node id
    nodes: list[ViewNode]
    edges: list[ViewEdge]
    groups: list[ViewGroup]
    values: int  # values in this input's whole graph (op level, reached from the root)
    data_dependent: bool  # the forward's control flow read tensor values: another input, another graph
    control_flow: list[ControlFlow] = field(default_factory=list)
    expand: bool = False
    depth: int | None = None
    repeats: list[str] = field(default_factory=list)  # labels of the ×N nodes
    highlight: Highlight | None = None
    parameters: dict[str, Highlight] = field(default_factory=dict)  # the page: paths of every leaf
    opened: list[str] = field(default_factory=list)  # folded nodes drawn open (a variant of the page)
    variants: dict[str, "GraphView"] = field(default_factory=dict)  # the page: folded node label -> it open
    numeric: bool = True  # values are real (False: meta tensors, or an expression without --at)

    def node(self, label: str) -> ViewNode | None:
        for n in self.nodes:
            if n.label == label:
                return n
        return None


# --------------------------------------------------------------------------- the structure at a level


@dataclass
class _Base:
    graph: Graph
    kept: list[int]  # graph ids, increasing
    edges: list[tuple[int, int, str, int, bool]]  # (result, operand, op, slot, differentiable)


def _structure(g: Graph, root: int, level: str) -> _Base:
    """The nodes the root reads at *level*: one edge per operand slot between kept nodes (``w * w`` has two),
    and one edge from a kept node to each kept node it reads through folded ones."""
    reach = g.reachable(root)
    if level == "op":
        kept = reach
    else:
        kept = [v for v in reach if v == root or module_level_node(g.nodes[v])]
    is_kept = set(kept)
    edges = []
    for v in kept:
        op = g.nodes[v].op
        through: dict[int, list] = {}  # a kept node read through folded ones -> [op, slot, differentiable]
        for e in g.inputs_of(v):
            edge = g.edges[e]
            if edge.dst in is_kept:
                edges.append((v, edge.dst, edge.op if level == "op" else (op or edge.op), edge.slot,
                              edge.differentiable))
                continue
            stack, seen = [(edge.dst, edge.differentiable)], set()
            while stack:
                d, grad = stack.pop()
                if d in is_kept:
                    if d not in through:
                        through[d] = [op or edge.op, edge.slot, grad]
                    else:
                        through[d][2] = through[d][2] or grad
                elif (d, grad) not in seen:
                    seen.add((d, grad))
                    stack.extend((g.edges[e2].dst, grad and g.edges[e2].differentiable)
                                 for e2 in reversed(g.inputs_of(d)))
        for d, (op_, slot, grad) in through.items():
            edges.append((v, d, op_, slot, grad))
    return _Base(g, kept, edges)


def _module_of_call(call: str) -> str:
    return call.rsplit("#", 1)[0]


def _scope(n: Node) -> str | None:
    """The module a value belongs to ("" for the top forward; None for an input, which is nobody's)."""
    if n.kind == "input":
        return None
    if n.kind in ("parameter", "constant"):
        return n.label.rsplit(".", 1)[0] if "." in n.label else ""
    if n.kind == "module" and n.calls:
        return _module_of_call(n.calls[0])
    if "/" in n.label:  # blocks.0/out (a nested forward's value), linear#1/t (inside a call)
        owner = n.label.split("/", 1)[0]
        return _module_of_call(owner) if "#" in owner else owner
    return ""


def _inside(scope: str | None, module: str) -> bool:
    return scope is not None and (scope == module or scope.startswith(module + "."))


def _depth(module: str) -> int:
    return module.count(".") + 1 if module else 0


@dataclass
class _Region:
    call: str  # h.0#1
    module: str
    node: int  # the call's output (graph id)
    members: set[int]


def _regions(base: _Base) -> list[_Region]:
    """For every module call: the values computed inside it (see the module docstring)."""
    g = base.graph
    operands: dict[int, list[int]] = {v: [] for v in base.kept}
    consumers: dict[int, set[int]] = {v: set() for v in base.kept}
    for v, d, *_ in base.edges:
        operands[v].append(d)
        consumers[d].add(v)
    out = []
    for v in base.kept:
        for call in g.nodes[v].calls:
            module = _module_of_call(call)
            members, stack, leaves = {v}, list(operands[v]), set()
            while stack:
                u = stack.pop()
                n = g.nodes[u]
                if u in members or u in leaves or not _inside(_scope(n), module):
                    continue
                if n.kind in ("parameter", "constant"):
                    leaves.add(u)
                    continue
                members.add(u)
                stack.extend(operands[u])
            members |= {u for u in leaves if consumers[u] <= members}  # a shared weight stays outside
            out.append(_Region(call, module, v, members))
    return out


def _repeat_runs(built) -> list[list[str]]:
    """Qualified names of the copies of each ``repeat: N`` entry (N ≥ 2), from where the builder made them."""
    if built is None:
        return []
    runs = []
    for path, mod in built.module.named_modules():
        children = [(f"{path}.{name}" if path else name, child) for name, child in mod._modules.items()
                    if child is not None]
        origin = built.origins.get(id(mod))
        if origin is not None and " × " in origin.text and isinstance(mod, torch.nn.Sequential):
            if len(children) > 1:
                runs.append([p for p, _ in children])
            continue
        if isinstance(mod, (torch.nn.ModuleList, torch.nn.Sequential)) and len(children) > 1 and \
                not any(id(c) in built.origins for _, c in children) and _alike([c for _, c in children]):
            runs.append([p for p, _ in children])  # copies made inside torch (TransformerEncoder's layers)
            continue
        run: list[str] = []
        last = None
        for p, child in children + [(None, None)]:
            o = built.origins.get(id(child)) if child is not None else None
            key = (o.where, str(o.loc), o.text, type(child).__name__) if o is not None else None
            if key is not None and key == last:
                run.append(p)
                continue
            if len(run) > 1:
                runs.append(run)
            run, last = ([p] if p is not None else []), key
    return runs


def _alike(modules) -> bool:
    """Copies of one block: the same class, and parameters of the same names and shapes."""
    def signature(m):
        return type(m).__name__, [(n, tuple(p.shape)) for n, p in m.named_parameters()]

    first = signature(modules[0])
    return all(signature(m) == first for m in modules[1:])


def _run_label(run: list[str]) -> str:
    first, last = run[0], run[-1]
    head, _, a = first.rpartition(".")
    b = last.rpartition(".")[2]
    return f"{head + '.' if head else ''}{a}…{b}"


# --------------------------------------------------------------------------- values


def _summary(value) -> dict | None:
    return value.summary if isinstance(value, Snapshot) else value_summary(value)


def _loc(info) -> str | None:
    loc = getattr(info, "loc", None)
    return None if loc in (None, "None") else loc


def _dtype(n: Node) -> str | None:
    return str(n.dtype).replace("torch.", "") if n.dtype is not None else None


# --------------------------------------------------------------------------- building the view


class _Builder:
    def __init__(self, g: Graph, root: int, level: str, built=None, *, depth=None, expand=False,
                 opened: frozenset[str] = frozenset()):
        if level not in LEVELS:
            raise CgError(f"--level must be one of {', '.join(LEVELS)}, not {level!r}", "--level")
        if depth is not None and depth < 1:
            raise CgError(f"--depth must be 1 or more, not {depth}", "--depth")
        self.g, self.root, self.level = g, root, level
        self.base = _structure(g, root, level)
        self.regions = _regions(self.base)
        self.rep: dict[int, str] = {}  # graph id -> the key of what it is drawn as
        self.folds: dict[str, dict] = {}  # key of a folded node -> its description
        self.repeats: list[str] = []
        self.opened = opened  # folds drawn open: a repeated block's first copy, a --depth call's inside
        if not expand:
            self._fold_repeats(built)
        if depth is not None:
            self._fold_depth(depth)

    def _fold(self, key: str, members: set[int], label: str, module: str, calls: list[str], repeat=None):
        members = {v for v in members if v not in self.rep}
        if not members:
            return
        for v in members:
            self.rep[v] = key
        self.folds[key] = {"label": label, "members": members, "module": module, "calls": calls, "repeat": repeat,
                           "out": max(members)}

    def _fold_repeats(self, built) -> None:
        for run in _repeat_runs(built):
            if _run_label(run) in self.opened:
                run = run[1:]  # the first copy drawn in full, the others folded
            if not run:
                continue
            regions = [r for r in self.regions if any(_inside(r.module, m) for m in run)]
            members = set().union(*(r.members for r in regions)) if regions else set()
            if not members:
                continue
            calls = sorted({r.call for r in regions if r.module in run}, key=lambda c: run.index(_module_of_call(c)))
            if len(run) == 1:  # one copy left: a folded call
                self._fold(f"call:{calls[0]}", members, calls[0], run[0], calls)
                continue
            label = _run_label(run)
            self._fold(f"repeat:{label}", members, label, run[0].rpartition(".")[0], calls, repeat=len(run))
            if f"repeat:{label}" in self.folds:
                self.repeats.append(label)

    def _fold_depth(self, depth: int) -> None:
        computed = lambda r: sum(self.g.nodes[v].kind not in ("parameter", "constant") for v in r.members)  # noqa: E731
        for r in sorted(self.regions, key=lambda r: (_depth(r.module), r.node)):
            # a call at depth N (or below, inside a container that is never called itself) becomes one node;
            # a call that computed one value (a Linear) is one node already, and its parameters stay in view
            if _depth(r.module) >= depth and r.node not in self.rep and computed(r) > 1 and r.call not in self.opened:
                self._fold(f"call:{r.call}", r.members, r.call, r.module, [r.call])

    def build(self, title: str, source: str) -> GraphView:
        g = self.g
        nodes: list[ViewNode] = []
        ids: dict[str, str] = {}  # key -> view id
        key_of = {v: self.rep.get(v, f"v{v}") for v in self.base.kept}
        order: list[str] = []
        for v in self.base.kept:  # a folded node sits where its output does
            k = key_of[v]
            if k.startswith("v") or self.folds[k]["out"] == v:
                order.append(k)
        for k in order:
            vid = ids[k] = f"n{len(nodes)}"
            if k.startswith("v"):
                nodes.append(self._node(vid, g.nodes[int(k[1:])]))
            else:
                f = self.folds[k]
                out = g.nodes[f["out"]]
                nodes.append(ViewNode(vid, f["label"], "module", list(out.shape), _dtype(out), out.op,
                                      loc=_loc(out.info), folded=len(f["members"]), repeat=f["repeat"],
                                      members=f["calls"], value=_summary(out.value), calls=list(out.calls)))
        edges: list[ViewEdge] = []
        seen: dict[tuple, ViewEdge] = {}
        for v, d, op, slot, grad in self.base.edges:
            s, t = ids[key_of[d]], ids[key_of[v]]
            if s == t:
                continue
            # parallel edges are operand slots (w * w reads w twice); edges into or out of a folded node merge
            key = (s, t) if key_of[d] in self.folds or key_of[v] in self.folds else (s, t, slot)
            if key in seen:
                seen[key].differentiable |= grad
                continue
            e = seen[key] = ViewEdge(f"e{len(edges)}", s, t, op, slot, grad)
            edges.append(e)
        view = GraphView(title, source, self.level, ids[key_of[self.root]], nodes, edges, [],
                         len(g.reachable(self.root)), False, repeats=list(self.repeats))
        self._groups(view, ids, key_of)
        self.ids, self.key_of = ids, key_of
        return view

    def _node(self, vid: str, n: Node) -> ViewNode:
        info = n.info
        trainable = {"parameter": True, "constant": False}.get(n.kind)
        return ViewNode(vid, n.label, n.kind, list(n.shape), _dtype(n), n.op,
                        text=info.text if info is not None and info.key != "leaf" else None, loc=_loc(info),
                        names=list(n.names), calls=list(n.calls), trainable=trainable, value=_summary(n.value))

    def _groups(self, view: GraphView, ids: dict[str, str], key_of: dict[int, str]) -> None:
        """Boxes: the regions of calls not folded away that hold more than their own output."""
        boxes = []
        for r in self.regions:
            if r.node in self.rep:
                continue
            inner = {ids[key_of[v]] for v in r.members}
            computed = [v for v in r.members if self.g.nodes[v].kind not in ("parameter", "constant")]
            if len(computed) < 2 and len(inner) < 2:
                continue
            if len({key_of[v] for v in computed}) < 2:
                continue
            boxes.append((r, inner))
        boxes.sort(key=lambda b: (-len(b[1]), _depth(b[0].module)))  # outer boxes first
        by_node: dict[str, str] = {}
        for i, (r, inner) in enumerate(boxes):
            gid = f"g{i}"
            parent = by_node.get(ids[key_of[r.node]])
            view.groups.append(ViewGroup(gid, r.call, r.module, parent, len(inner)))
            for nid in inner:
                by_node[nid] = gid  # smaller boxes come later: the innermost wins
        for n in view.nodes:
            n.group = by_node.get(n.id)


def _check_size(view: GraphView, max_nodes: int | None) -> None:
    limit = MAX_NODES if max_nodes is None else max_nodes
    if limit and len(view.nodes) > limit:
        hints = []
        if view.level == "op":
            hints.append("--level module")
        hints.append("--depth 1 (fold modules into one node each)" if view.depth is None else
                     f"a smaller --depth than {view.depth}")
        if view.expand:
            hints.append("no --expand (repeated blocks as one node ×N)")
        hints.append(f"or --max-nodes {len(view.nodes)} to draw it anyway")
        raise CgError(f"the graph has {len(view.nodes):,} nodes, over the limit of {limit:,} for a picture "
                      "anyone can read", "--max-nodes", hint="try " + ", ".join(hints))


def graph_view(graph: Graph, root: int, *, title: str, source: str, level: str = "op",
               max_nodes: int | None = None) -> GraphView:
    """The view of any :class:`Graph` from *root*, every repeated block drawn (used for the static program of
    :mod:`cgtool.graph.static`); refused over *max_nodes* (default ``MAX_NODES``) like every picture."""
    view = _Builder(graph, root, level, None, expand=True).build(title, source)
    _check_size(view, max_nodes)
    return view


# --------------------------------------------------------------------------- specs


def spec_view(cap, built=None, *, title: str = "", level: str = "module", depth: int | None = None,
              expand: bool = False, highlight: str | None = None, max_paths: int = 10,
              max_nodes: int | None = None, all_paths: bool = False, loss: str = "sum",
              opened: frozenset[str] = frozenset(), variants: bool = True) -> GraphView:
    """The view of a model's captured forward (:class:`cgtool.graph.capture.Capture`).

    *all_paths* (the page): every leaf's gradient paths, and with *variants*, the same view with each
    folded node drawn open (up to MAX_VARIANTS), so that the page opens a folded node on click."""
    outputs = [cap.returned] if isinstance(cap.returned, torch.Tensor) else \
        [t for t in (cap.returned or ()) if isinstance(t, torch.Tensor)] if isinstance(cap.returned, (list, tuple)) \
        else []
    root = cap.node_of(outputs[0]) if outputs else None
    if root is None:
        raise CgError("the model's output does not depend on its inputs or parameters: there is no graph to draw")
    if highlight is not None and highlight not in cap.names:
        leaves = [n for n, node in cap.names.items() if node.kind in ("parameter", "input", "constant")]
        near = closest(highlight, list(cap.names), n=5) or leaves[:8]
        raise CgError(f"no value named {highlight!r} in the model", f"--highlight {highlight}",
                      hint=f"names that exist: {', '.join(near)}")
    b = _Builder(cap.graph, root.id, level, built, depth=depth, expand=expand, opened=frozenset(opened))
    view = b.build(title, "spec")
    view.depth, view.expand, view.opened = depth, expand, sorted(opened)
    view.numeric = root.value is not None and root.value.device.type != "meta"
    view.control_flow = [ControlFlow(br.kind, br.text, br.loc, br.runs, br.held) for br in cap.branches
                         if br.data_dependent]
    view.data_dependent = bool(view.control_flow)
    _check_size(view, max_nodes)
    names = [highlight] if highlight else []
    if all_paths:
        names += [n.label for n in view.nodes if n.kind in ("parameter", "input", "constant") and n.label not in names]
    if names:
        found = _model_paths(cap, b, view, names, level, max_paths, loss, highlight)
        if highlight:
            view.highlight = found[highlight]
            _mark(view, view.highlight)
        if all_paths:
            view.parameters = found
    if all_paths and variants:
        folded = [n.label for n in view.nodes if n.folded > 1][:MAX_VARIANTS]
        for label in folded:
            try:
                view.variants[label] = spec_view(
                    cap, built, title=title, level=level, depth=depth, expand=expand, highlight=highlight,
                    max_paths=max_paths, max_nodes=max_nodes, all_paths=True, loss=loss,
                    opened=frozenset(opened) | {label}, variants=False)
            except CgError:
                continue  # drawn open it would be over the size limit: the page says to use --expand / --depth
    return view


def _model_paths(cap, b: _Builder, view: GraphView, names: list[str], level: str, k: int, loss: str,
                 highlight: str | None) -> dict[str, Highlight]:
    """The paths engine on the graph `cgtool paths` reads (the output reduced with *loss* when not a scalar).

    Every name gets its exact path count and the nodes and edges on its paths. The paths themselves,
    with contributions, are listed for *highlight* (up to *k*), and for the page's other names (up to
    TOP_PATHS) when they have at most PAGE_LIST_PATHS paths, within PAGE_PATHS_SECONDS in all: a deep
    model's paths are `cgtool paths`' to list."""
    from .model_paths import rooted

    targets = {name: cap.names[name] for name in names}
    r = rooted(cap, root=None, loss=loss, level=level, keep_also={n.id for n in targets.values()})
    rg, rroot = r.graph, r.root
    back = {new: old for old, new in r.ids.items()}  # the level's ids -> the capture's
    root_vid = _root_node(view, b, rg, rroot, back)
    numeric = view.numeric
    started = time.monotonic()
    out = {}
    for name, node in targets.items():
        if node.id not in r.ids:
            out[name] = Highlight(name, rroot.label, 0, [], [], [])
            continue
        target = r.ids[node.id]
        counts = P.path_counts(rg, rroot.id, target)
        on = _on_paths(rg, rroot.id, counts)
        vids = {root_vid} if rroot.id in on and root_vid else set()
        eids, labels = set(), {}
        edge_index = _edge_index(view)
        for v in on:
            s_vid = _vid(b, back, v, root_vid, rroot.id)
            vids.add(s_vid)
            for e in rg.operands[v]:
                d = rg.edges[e].dst
                if counts[d]:
                    d_vid = _vid(b, back, d, root_vid, rroot.id)
                    between = edge_index.get((d_vid, s_vid), [])
                    for edge in between:
                        eids.add(edge.id)
                    if len(between) == 1:
                        labels[between[0].id] = _local_derivative(rg, rg.edges[e], numeric)
        paths = []
        listed = k if name == highlight else TOP_PATHS if counts[rroot.id] <= PAGE_LIST_PATHS and \
            time.monotonic() - started < PAGE_PATHS_SECONDS else 0
        if counts[rroot.id] and listed:
            if numeric:
                listing = P.top_paths(rg, rroot.id, target, listed, counts=counts)
                for p, c in zip(listing.paths, listing.contributions):
                    nrm = _norm(c)
                    paths.append(PathView([rg.nodes[v].label for v in P.path_nodes(rg, p, rroot.id)],
                                          _number_text(c), nrm))
                paths.sort(key=lambda p: -(p.contribution_norm or 0.0))
            else:
                for p in P.all_paths(rg, rroot.id, target, listed, counts):
                    paths.append(PathView([rg.nodes[v].label for v in P.path_nodes(rg, p, rroot.id)], None, None))
        vids.discard(None)
        out[name] = Highlight(name, rroot.label, counts[rroot.id], sorted(vids, key=_idx), sorted(eids, key=_idx),
                              paths, edge_labels=labels)
    return out


def _local_derivative(g: Graph, e, numeric: bool) -> str:
    """∂src/∂dst of a model's edge: a number between scalars, else the Jacobian's shape."""
    src, dst = g.nodes[e.src], g.nodes[e.dst]
    head = f"∂{src.label}/∂{dst.label}"
    if src.is_scalar and dst.is_scalar and numeric:
        return f"{head} = {P.local_derivative(g, e):.6g}"
    shape = lambda s: "×".join(str(d) for d in s) or "1"  # noqa: E731
    return f"{head}: {shape(src.shape)} by {shape(dst.shape)}"


def _idx(vid: str) -> int:
    return int(vid[1:])


def _root_node(view: GraphView, b: _Builder, rg: Graph, rroot: Node, back: dict[int, int]) -> str | None:
    """The view id of the paths' root; a reduction of a non-scalar output is added to the view."""
    if rroot.id in back and back[rroot.id] in b.key_of:
        return b.ids[b.key_of[back[rroot.id]]]
    vid = f"n{len(view.nodes)}"
    view.nodes.append(ViewNode(vid, rroot.label, "op", [], _dtype(rroot), rroot.op, text=rroot.label,
                               value=_summary(rroot.value)))
    view.edges.append(ViewEdge(f"e{len(view.edges)}", view.root, vid, rroot.op or "", 0, True))
    return vid


def _vid(b: _Builder, back: dict[int, int], v: int, root_vid: str | None, rroot: int) -> str | None:
    if v == rroot and root_vid:
        return root_vid
    old = back.get(v)
    if old is None or old not in b.key_of:
        return None
    return b.ids[b.key_of[old]]


def _on_paths(g: Graph, root: int, counts: list[int]) -> list[int]:
    """Nodes on some path from *root* to the target (counts[v] > 0 and *root* reaches v)."""
    if not counts[root]:
        return []
    seen = {root}
    for v in range(root, -1, -1):
        if v in seen:
            for e in g.operands[v]:
                d = g.edges[e].dst
                if counts[d]:
                    seen.add(d)
    return sorted(seen, reverse=True)


def _norm(x) -> float | None:
    try:
        if isinstance(x, torch.Tensor):
            return float(torch.linalg.vector_norm(x.detach().double()))
        return abs(float(x))
    except (RuntimeError, TypeError, ValueError):
        return None


def _number_text(x) -> str | None:
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        x = float(x.reshape(()))
    if isinstance(x, (int, float)):
        return f"{x:.6g}"
    n = _norm(x)
    return None if n is None else f"|contribution| {n:.4g}"


def _mark(view: GraphView, h: Highlight) -> None:
    nodes, edges = set(h.nodes), set(h.edges)
    for n in view.nodes:
        n.highlighted = n.id in nodes
    for e in view.edges:
        e.highlighted = e.id in edges
        e.label = h.edge_labels.get(e.id)


# --------------------------------------------------------------------------- expressions


def expression_view(text: str, at=None, *, level: str = "op", highlight: str | None = None, root: str | None = None,
                    max_paths: int = 20, max_nodes: int | None = None, all_paths: bool = False,
                    file: str = "<expr>", limits=None) -> GraphView:
    """The view of a ``cgtool grad`` expression: values as nodes, operations on the edges (the lesson's picture)."""
    from ..lang import DEFAULT_LIMITS
    from .expression import evaluate, parse_expression
    from .gradients import explain

    limits = limits or DEFAULT_LIMITS
    program = parse_expression(text, file)
    ev = evaluate(program, at, root=root, limits=limits)
    b = _Builder(ev.graph, ev.root.id, level)
    view = b.build(" ".join(text.split()), "expression")
    view.numeric = ev.numeric
    if not ev.numeric:
        for n in view.nodes:
            n.value = None  # placeholder values trace the structure only
    view.control_flow = [ControlFlow(br.kind, br.text, br.loc, br.runs, br.held) for br in ev.branches
                         if br.data_dependent]
    view.data_dependent = bool(view.control_flow)
    _check_size(view, max_nodes)
    if highlight is None and not all_paths:
        return view
    if highlight is not None and highlight not in ev.names:
        raise CgError(f"no value named {highlight!r} in the expression", f"--highlight {highlight}",
                      hint=f"leaves: {', '.join(ev.leaves) or 'none'}")
    wrt = [highlight] if highlight else []
    if all_paths:
        wrt += [n for n in ev.leaves if n not in wrt]
    report = explain(text, at, wrt=wrt, root=root, max_paths=max_paths, file=file, limits=limits)
    by_label = {n.label: n for n in view.nodes}
    edge_index = _edge_index(view)
    found = {}
    for name, grad in zip(wrt, report.gradients):
        target = ev.names[name]
        counts = P.path_counts(ev.graph, ev.root.id, target.id)
        on = _on_paths(ev.graph, ev.root.id, counts)
        vids, eids, labels = set(), set(), {}
        for v in on:
            src = by_label.get(ev.graph.nodes[v].label)
            if src is None:
                continue
            vids.add(src.id)
            for e in ev.graph.operands[v]:
                d = ev.graph.nodes[ev.graph.edges[e].dst]
                dst = by_label.get(d.label)
                if counts[d.id] and dst is not None:
                    eids.update(edge.id for edge in _slot_edges(edge_index, dst.id, src.id, ev.graph.edges[e].slot))
        for p in grad.paths:
            for f in p.factors:
                src, dst = by_label.get(f.src), by_label.get(f.dst)
                if src is not None and dst is not None:
                    for edge in _slot_edges(edge_index, dst.id, src.id, f.slot):
                        labels[edge.id] = _factor_label(f)
        paths = [PathView(p.nodes, _number_text(p.contribution) if p.contribution is not None else None,
                          _norm(p.contribution) if p.contribution is not None else None, p.symbolic or p.product)
                 for p in grad.paths]
        h = Highlight(grad.wrt, report.root, grad.path_count, sorted(vids, key=_idx), sorted(eids, key=_idx), paths,
                      symbolic=grad.symbolic, gradient=_number_text(grad.autograd) if grad.autograd is not None
                      else None)
        h.edge_labels = labels
        found[name] = h
    if highlight:
        view.highlight = found[highlight]
        _mark(view, view.highlight)
    if all_paths:
        view.parameters = found
    return view


def _edge_index(view: GraphView) -> dict[tuple[str, str], list[ViewEdge]]:
    index: dict[tuple[str, str], list[ViewEdge]] = {}
    for e in view.edges:
        index.setdefault((e.source, e.target), []).append(e)
    return index


def _slot_edges(index, source: str, target: str, slot: int) -> list[ViewEdge]:
    """The view's edges for one operand slot: the one of that slot, or the single edge a fold left."""
    between = index.get((source, target), [])
    same = [e for e in between if e.slot == slot]
    return same or (between if len(between) == 1 else [])


def _factor_label(f) -> str:
    """∂y/∂(x1 + w) = x2 + w = 5: the local derivative, symbolic and numeric where known."""
    text = f"∂{f.src}/∂{f.dst}"
    if f.symbolic is not None:
        text += f" = {f.symbolic}"
    if isinstance(f.value, (int, float)) and not (f.symbolic is not None and _is_number(f.symbolic)):
        text += f" = {f.value:.6g}"
    elif isinstance(f.value, torch.Tensor) and f.value.numel() == 1:
        text += f" = {float(f.value.reshape(())):.6g}"
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


"""``cgtool grad`` expressions: parsed and compiled by the language of spec forwards, run by torch.

An expression is a forward whose leaves are its free names (the names read before they
are assigned). It is compiled by :func:`cgtool.lang.compile_forward` in capture mode and
run once on float64 leaf values; its graph is read from torch's autograd graph by
:mod:`cgtool.graph.capture`. There is no interpreter here.

Names: a leaf is a free name; a value assigned to a name takes the name (an unnamed
intermediate is shown by its source text, ``(x1 + w)``); assigning a value that already
has a name is an alias and adds no node (``h0 = w``); a name assigned more than once is
shown with its version (``c#2``; a leaf that is rebound is version 1), so paths stay
unambiguous.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field

import torch

from ..errors import CgError, Loc, did_you_mean, first_line
from ..lang import DEFAULT_LIMITS, Limits, Program, Source, compile_forward, parse
from .capture import Capture, Recorder, SourceMap, read_graph, run_compiled
from .model import Graph, Node

DTYPE = torch.float64


@dataclass
class Evaluation:
    program: Program
    graph: Graph
    root: Node
    root_name: str  # as the user names it: usually the root's label; "y" when y is an alias of a
    leaves: dict[str, Node]  # free names, in order of first use
    names: dict[str, Node]  # every label a user may type for --wrt / --root, versions and aliases included
    aliases: dict[str, str]  # alias label -> label of the node it names
    numeric: bool  # False when leaves had no values (placeholders; only symbolic forms are meaningful)
    has_control_flow: bool = False
    branches: list = field(default_factory=list)  # the conditions that ran (cgtool.graph.capture.Branch)


# --------------------------------------------------------------------------- values from the command line


def parse_value(text: str, place: str = "--at"):
    """A leaf value from text: a number (``1.5``, ``-2``, ``inf``) or a JSON list (``[[1, 2], [3, 4]]``)."""
    text = text.strip()
    if text.lower() in ("true", "false", "null", "none"):
        raise CgError(f"{text!r} is not a number or a JSON list", place,
                      hint="write a number (--at w=1.5) or a JSON list (--at x='[1, 2, 3]')")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        try:
            value = float(text)
        except ValueError:
            raise CgError(f"{text!r} is not a number or a JSON list", place,
                          hint="write a number (--at w=1.5) or a JSON list (--at x='[1, 2, 3]')") from None
    return to_tensor(value, place)


def to_tensor(value, place: str = "--at") -> torch.Tensor:
    """A float64 tensor from a number, a (nested) list, a numpy array or a tensor."""
    if isinstance(value, torch.Tensor):
        if not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64, torch.int16, torch.int8)):
            raise CgError(f"a {value.dtype} tensor cannot be a leaf value", place)
        return value.detach().to(DTYPE).clone()
    if isinstance(value, bool) or (not isinstance(value, (int, float, list, tuple)) and not hasattr(value, "__array__")):
        raise CgError(f"{value!r} is not a number or a list of numbers", place,
                      hint="write a number (--at w=1.5) or a JSON list (--at x='[1, 2, 3]')")
    if isinstance(value, (list, tuple)) and _has_bool_or_str(value):
        raise CgError(f"{json.dumps(value)} is not a list of numbers", place)
    try:
        return torch.tensor(value, dtype=DTYPE)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise CgError(f"{value!r} is not a rectangular list of numbers ({first_line(e)})", place,
                      hint="every row must have the same length, e.g. [[1, 2], [3, 4]]") from None


def _has_bool_or_str(v) -> bool:
    if isinstance(v, (list, tuple)):
        return any(_has_bool_or_str(x) for x in v)
    return isinstance(v, (bool, str)) or v is None


def parse_assignments(items: list[str] | None, option: str = "--at") -> dict[str, torch.Tensor]:
    """``NAME=VALUE`` items (repeatable option) to a dict; a name given twice is a mistake."""
    out: dict[str, torch.Tensor] = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise CgError(f"expected NAME=VALUE, got {item!r}", option,
                          hint=f"for example {option} w=1.5 or {option} x='[1, 2, 3]'")
        if not name.isidentifier():
            raise CgError(f"{name!r} is not a name (in {item!r})", option)
        if name in out:
            raise CgError(f"{name} is given twice", f"{option} {name}", hint="give each leaf one value")
        out[name] = parse_value(text, f"{option} {name}")
    return out



# --------------------------------------------------------------------------- the expression


def parse_expression(text: str, file: str = "<expr>") -> Program:
    """Parse an expression. A single bare expression (``sin(x) * w``) is its own root."""
    if not text.strip():
        raise CgError("the expression is empty", file, hint='write one, e.g. "y = (x1 + w) * (x2 + w)"')
    stripped = text.strip()
    if "\n" not in stripped and _is_bare_expression(stripped):
        lead = len(text) - len(text.lstrip())
        prefix = "return "
        return parse(Source(prefix + stripped, file=file, col=lead - len(prefix)))
    return parse(Source(text, file=file))


def _is_bare_expression(text: str) -> bool:
    try:
        ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _check_plain_targets(program: Program) -> None:
    """Values are never changed in place in an expression: each step is a new node of the graph."""
    for node in ast.walk(program.tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, (ast.AugAssign, ast.For)) else []
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, (ast.Subscript, ast.Attribute)) and isinstance(n.ctx, ast.Store):
                    raise CgError(f"cannot assign to {ast.unparse(n)} in a grad expression", program.source.loc(n),
                                  hint="assign to plain names; tensors are not changed in place here")


def _check_values(program: Program, leaves: list[str], values: dict) -> None:
    for name in values:
        if name not in leaves:
            if name in program.assigned:
                raise CgError(f"{name} is computed by the expression, not a leaf", f"--at {name}",
                              hint=f"give values to the leaves: {', '.join(leaves) or 'there are none'}")
            hint = did_you_mean(name, leaves)
            raise CgError(f"{name} is not a name in the expression", f"--at {name}",
                          hint=hint or f"the leaves are: {', '.join(leaves) or 'none'}")
    if values:
        missing = [n for n in leaves if n not in values]
        if missing:
            first = _first_use(program, missing[0])
            raise CgError(f"no value for {', '.join(missing)}", first,
                          hint="give every leaf a value: " + " ".join(f"--at {n}=..." for n in missing)
                          + " (or no --at at all for the symbolic answer alone)")


def _first_use(program: Program, name: str) -> Loc:
    for node in ast.walk(program.tree):
        if isinstance(node, ast.Name) and node.id == name:
            return program.source.loc(node)
    return program.source.loc(1)


def evaluate(
    program: Program,
    values: dict[str, object] | None = None,
    *,
    root: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Evaluation:
    """Run *program* with leaf *values* (float64; none at all: placeholders, symbolic use only)."""
    values = dict(values or {})
    leaves = list(program.free)
    _check_plain_targets(program)
    _check_values(program, leaves, values)
    numeric = bool(values)
    control = any(isinstance(n, (ast.If, ast.While, ast.IfExp, ast.BoolOp)) for n in ast.walk(program.tree))
    if not numeric and control:
        raise CgError("the graph depends on the values (if / while): give every leaf a value with --at",
                      program.source.loc(1), hint=f"leaves: {', '.join(leaves)}" if leaves else None)
    tensors = {}
    for i, name in enumerate(leaves):
        # Placeholder values only trace the graph's structure; nothing numeric is shown.
        t = to_tensor(values[name], f"--at {name}") if numeric else torch.tensor(0.7 + 0.13 * i, dtype=DTYPE)
        tensors[name] = t.requires_grad_(True)
    recorder = Recorder(limits=limits, numeric=numeric)
    sm = SourceMap(program.source)
    compiled = compile_forward(program, name="expression", params=leaves, prelude=[],
                               namespace=recorder.namespace(sm), limits=limits, with_self=False, capture=True)
    sm.sites = compiled.sites
    for name in leaves:
        recorder.versions[name] = 1  # a leaf that is rebound: the leaf is version 1
    returned = run_compiled(compiled.fn, [tensors[n] for n in leaves], recorder, {program.source.file})
    cap = read_graph(recorder, {n: (t, "input") for n, t in tensors.items()})
    leaf_nodes = {n: cap.node_of(t) for n, t in tensors.items()}
    node, root_name, where = _root(program, cap, recorder, returned, root)
    return Evaluation(program, cap.graph, node, root_name, leaf_nodes, cap.names, cap.aliases, numeric, control,
                      cap.branches)


def _root(program: Program, cap: Capture, recorder: Recorder, returned, root: str | None):
    """The value to differentiate: --root, else what is returned, else the last assigned name."""
    if root is not None:
        if root not in cap.names:
            known = [n for n, node in cap.names.items() if node.kind != "input"]
            hint = did_you_mean(root, known)
            raise CgError(f"no value named {root!r} in the expression", f"--root {root}",
                          hint=hint or f"names: {', '.join(known) or 'none'}")
        node = cap.names[root]
        return node, (root if root in cap.aliases else node.label), None
    if recorder.returned is not None:
        sm, site = recorder.returned
        node = cap.node_of(returned)
        name = node.label if node is not None else sm.label(site)
        where = sm.loc(site)
    elif cap.last_assigned is not None:
        name = cap.last_assigned
        version = cap.versions[name]
        name = name if version == 1 else f"{name}#{version}"
        last = [b for b in recorder.bindings if b.name == cap.last_assigned][-1]
        node = cap.nodes.get(last.key) if last.key is not None else None
        if node is not None and name not in cap.aliases:
            name = node.label
        where = program.source.loc(1)
    else:
        raise CgError("the expression assigns nothing, so it has no root", program.source.loc(1),
                      hint='assign the result to a name, e.g. "y = (x1 + w) * (x2 + w)"')
    where = where or program.source.loc(1)
    if node is None:
        raise CgError(f"the root {name} does not depend on any leaf", where,
                      hint="the root must be computed from the leaves (free names) with differentiable operations")
    if not node.is_scalar:
        raise CgError(f"the root {name} has shape {list(node.shape)}, not a single number: gradients need a scalar "
                      "root", where, hint=f"reduce it, e.g. `sum({name})` or `mean({name})`, or pick --root")
    return node, name, where


def autograd_gradients(ev: Evaluation, wrt: list[Node]) -> list[torch.Tensor]:
    """Autograd's own gradients of the root with respect to *wrt* (zeros where it does not depend)."""
    root = ev.root.value
    zeros = [torch.zeros(n.shape, dtype=n.dtype) for n in wrt]
    if root is None or not root.requires_grad or any(n.value is None for n in wrt):
        return zeros
    grads = torch.autograd.grad(root, [n.value for n in wrt], retain_graph=True, allow_unused=True)
    return [z if g is None else g for z, g in zip(zeros, grads)]

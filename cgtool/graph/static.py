"""Static capture: the spec's forward as one program, defined once and then run (``torch.export``).

The dynamic graph (:mod:`cgtool.graph.capture`) is what one run recorded; a static graph is
a program captured ahead of time, with symbolic values in place of data, and then run on
any input. Ordinary Python control flow that reads a tensor's *value* cannot be captured
that way: the program would have to bake in one branch. :func:`static_capture` says which,
in words about the spec:

- capturable: the :class:`torch.export.ExportedProgram` and its :class:`Graph` (one node
  per placeholder and call, labelled with the parameter's qualified name, the input's name,
  or the FX name of the call, with the spec line that made it);
- not capturable: the statement of the spec that prevents it (``file:line`` and its text),
  why, and torch's error in one line.

Non-strict export is used: it runs the forward as Python (the compiled spec code, so errors
point at the spec's own lines) with fake tensors, and names placeholders by qualified name.
:func:`baked_branch` shows the cost with numbers: a trace taken on one input, run on the
same input scaled, against eager.
"""
from __future__ import annotations

import re
import traceback
import warnings
from dataclasses import dataclass, field

import torch

from ..errors import first_line
from .model import Graph, Node, OpInfo


@dataclass
class StaticCapture:
    capturable: bool
    reason: str | None = None  # why not, in words about the spec
    line: str | None = None  # file:line of the statement that prevents capture
    statement: str | None = None  # that statement's source text
    error: str | None = None  # torch's error, one line
    program: object = None  # torch.export.ExportedProgram when capturable
    graph: Graph | None = None  # the captured program as a Graph
    names: dict[str, Node] = field(default_factory=dict)  # label -> node of the graph
    seconds: float = 0.0  # time the capture took
    root: int | None = None  # id of the node the program returns (its first output)

    @property
    def nodes(self) -> int | None:
        """Operations in the captured program (None when it could not be captured)."""
        if self.graph is None:
            return None
        return sum(1 for n in self.graph.nodes if n.kind == "op")


_DATA_DEPENDENT = ("GuardOnDataDependentSymNode", "UserError", "DataDependentOutputException")


def static_capture(built, inputs: dict[str, torch.Tensor]) -> StaticCapture:
    """Capture the built spec's forward with ``torch.export`` (non-strict), in evaluation mode."""
    import time

    from torch.export import export

    module = built.module
    args = tuple(inputs[n] for n in built.input_names)
    was_training = module.training
    module.eval()
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(), _quiet_logging():
            warnings.simplefilter("ignore")
            program = export(module, args, strict=False)
    except Exception as e:  # noqa: BLE001 - every refusal is a finding, reported in words
        seconds = time.perf_counter() - start
        return _refusal(e, built, seconds)
    finally:
        module.train(was_training)
    seconds = time.perf_counter() - start
    graph, names, root = program_graph(program, built)
    return StaticCapture(True, program=program, graph=graph, names=names, seconds=seconds, root=root)


class _quiet_logging:
    """torch logs, and prints to stderr, the half-captured program when export fails: not for the user's
    terminal (the refusal is reported in words instead)."""

    def __enter__(self):
        import contextlib
        import io
        import logging

        self.level = logging.root.manager.disable
        logging.disable(logging.CRITICAL)
        self.redirect = contextlib.redirect_stderr(io.StringIO())
        self.redirect.__enter__()

    def __exit__(self, *exc):
        import logging

        self.redirect.__exit__(*exc)
        logging.disable(self.level)
        return False


def _spec_frame(e: BaseException, files: set[str]) -> tuple[str | None, str | None]:
    """(file:line, source text) of the innermost frame of *e* in a spec file; also read from torch's
    "Caused by: (FILE:LINE in forward)" note when the frame is gone."""
    found = None
    for frame in traceback.extract_tb(e.__traceback__):
        if frame.filename in files:
            found = frame
    if found is not None:
        return f"{found.filename}:{found.lineno}", _source_line(found.filename, found.lineno, files)
    m = re.search(r"\(([^()\s]+):(\d+) in forward\)", str(e))
    if m and m.group(1) in files:
        return f"{m.group(1)}:{m.group(2)}", _source_line(m.group(1), int(m.group(2)), files)
    return None, None


def _source_line(file: str, line: int, files: set[str]) -> str | None:
    import linecache

    text = linecache.getline(file, line)
    return _without_comment(text).strip() or None


def _without_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` inside quotes stays)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[:i]
    return line


def _refusal(e: BaseException, built, seconds: float) -> StaticCapture:
    where, statement = _spec_frame(e, set(built.files))
    kind = type(e).__name__
    message = first_line(e) or kind
    if kind in _DATA_DEPENDENT or "data-dependent" in str(e) or "data dependent" in str(e):
        what = _control_word(statement)
        reason = (f"{what} reads a tensor's value: which way it goes depends on the data, so a static graph, "
                  "defined before any data is seen, would bake in the one branch taken at capture")
    else:
        reason = f"torch.export cannot capture this forward: {message}"
    return StaticCapture(False, reason=reason, line=where, statement=statement, error=f"{kind}: {message}",
                         seconds=seconds)


def _control_word(statement: str | None) -> str:
    if not statement:
        return "a condition"
    head = statement.split()[0] if statement.split() else ""
    if head == "while":
        return "the loop condition"
    if head in ("if", "elif"):
        return "the condition"
    if head == "for":
        return "the loop bound"
    return "this statement"


# --------------------------------------------------------------------------- the program as a Graph


def program_graph(program, built=None) -> tuple[Graph, dict[str, Node], int | None]:
    """The exported program as a :class:`Graph`: a node per placeholder (parameters and constants by
    qualified name, inputs by name) and per call; an edge per tensor operand. A static program has no
    autograd graph, so its edges carry no vector-Jacobian product (data edges)."""
    sig = program.graph_signature
    canonical: dict[str, str] = {}  # tied parameters: every name -> the name named_parameters() gives it
    if built is not None:
        first: dict[int, str] = {}
        for name, p in built.module.named_parameters(remove_duplicate=False):
            canonical[name] = first.setdefault(id(p), name)
    leaf_names: dict[str, tuple[str, str]] = {}
    for spec in sig.input_specs:
        arg = getattr(spec.arg, "name", None)
        kind = spec.kind.name
        if arg is None:
            continue
        if kind == "PARAMETER":
            leaf_names[arg] = (canonical.get(spec.target, spec.target), "parameter")
        elif kind in ("BUFFER", "CONSTANT_TENSOR"):
            leaf_names[arg] = (spec.target, "constant")
        elif kind == "USER_INPUT":
            leaf_names[arg] = (arg, "input")
    files = set(getattr(built, "files", ()) or ())
    g = Graph()
    root = None
    by_fx: dict[str, Node] = {}
    names: dict[str, Node] = {}
    for fx in program.graph.nodes:
        if fx.op == "placeholder":
            label, kind = leaf_names.get(fx.name, (fx.name, "input"))
            if label in names:  # a tied parameter: one tensor, given to the program under each of its names
                by_fx[fx.name] = names[label]
                continue
            node = g.add_node(label, None, None, OpInfo("leaf", None, label), kind=kind, shape=_shape(fx))
            node.dtype = _dtype(fx)
        elif fx.op == "call_function":
            operands = [by_fx[a.name] for a in _fx_args(fx) if a.name in by_fx]
            op = _op_name(fx.target)
            loc = _loc(fx, files)
            stack = fx.meta.get("nn_module_stack") or {}
            modules = [path for path, _ in reversed(list(stack.values())) if path and not path.startswith("L[")]
            label = f"{modules[0]}/{fx.name}" if modules else fx.name  # hidden/linear: the call of module hidden
            node = g.add_node(label, None, op, OpInfo(op, operands, f"{op}({', '.join(o.label for o in operands)})",
                                                      loc=loc), kind="op", shape=_shape(fx))
            node.dtype = _dtype(fx)
            node.calls = modules
            for slot, operand in enumerate(operands):
                g.add_edge(node, operand, slot, op, None, differentiable=False)
        elif fx.op == "output":
            outs = [a for a in _fx_args(fx) if a.name in by_fx]
            if outs:
                root = by_fx[outs[0].name].id
            continue
        else:
            continue
        by_fx[fx.name] = node
        names[node.label] = node
    return g, names, root


def _fx_args(fx) -> list:
    out = []

    def walk(a):
        if isinstance(a, torch.fx.Node):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            for x in a:
                walk(x)
        elif isinstance(a, dict):
            for x in a.values():
                walk(x)

    walk(fx.args)
    walk(fx.kwargs)
    seen, unique = set(), []
    for a in out:
        if a.name not in seen:
            seen.add(a.name)
            unique.append(a)
    return unique


def _op_name(target) -> str:
    name = getattr(target, "__name__", None) or str(target)
    # aten.linear.default -> linear; operator.getitem -> getitem
    name = str(getattr(target, "_opname", None) or name)
    return name.split(".")[0]


def _shape(fx) -> tuple[int, ...]:
    val = fx.meta.get("val")
    if isinstance(val, torch.Tensor):
        try:
            return tuple(int(s) for s in val.shape)
        except (TypeError, ValueError):  # symbolic sizes
            return tuple(-1 for _ in val.shape)
    return ()


def _dtype(fx):
    val = fx.meta.get("val")
    return val.dtype if isinstance(val, torch.Tensor) else None


def _loc(fx, files: set[str]) -> str | None:
    trace = fx.meta.get("stack_trace") or ""
    found = None
    for m in re.finditer(r'File "([^"]+)", line (\d+), in (\S+)', trace):
        # a spec module's __call__ hands a traced call to nn.Module.__call__ from its first line: the
        # line that computed the value is the forward's (cgtool.lang.fast)
        if m.group(1) in files and m.group(3) != "__call__":
            found = f"{m.group(1)}:{m.group(2)}"
    return found


# --------------------------------------------------------------------------- a baked branch, in numbers


@dataclass
class BakedBranch:
    """A trace taken on one input (it records the branches that input took), run on the input scaled:
    its answer against eager's on the same scaled input."""

    scale: float
    traced_on: str  # "the default input"
    eager: float  # the norm of eager's output on the scaled input (the output itself when a scalar)
    traced: float
    differs: bool


def baked_branch(built, inputs: dict[str, torch.Tensor], scale: float = 100.0) -> BakedBranch | None:
    """Trace the forward with ``torch.jit.trace`` on *inputs*, then run eager and the trace on the floating
    inputs scaled by *scale*; None when the trace itself fails."""
    module = built.module
    args = tuple(inputs[n] for n in built.input_names)
    scaled = tuple(a * scale if a.is_floating_point() else a for a in args)
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, args, check_trace=False)
            want = module(*scaled)
            got = traced(*scaled)
    except Exception:  # noqa: BLE001 - a model the tracer cannot follow: no numbers to show
        return None
    finally:
        module.train(was_training)
    if not isinstance(want, torch.Tensor) or not isinstance(got, torch.Tensor):
        return None
    e, t = output_number(want), output_number(got)
    return BakedBranch(scale, "the default input", e, t,
                       not torch.allclose(want.double(), got.double(), rtol=1e-5, atol=1e-6))


def output_number(t: torch.Tensor) -> float:
    """A model output as one number: itself when it is a scalar, else its norm (in float64)."""
    t = t.detach().double()
    return float(t.reshape(())) if t.numel() == 1 else float(torch.linalg.vector_norm(t))


# --------------------------------------------------------------------------- the picture


def static_view(sc: StaticCapture, *, title: str = "", max_nodes: int | None = None):
    """The captured program as a :class:`cgtool.graph.view.GraphView`, drawn by the same renderers as the
    dynamic graph: every call of the program is a node (the op level), placeholders are the leaves."""
    from .view import graph_view

    if not sc.capturable or sc.graph is None or sc.root is None:
        raise ValueError("no static graph: the forward could not be captured")
    view = graph_view(sc.graph, sc.root, title=title, source="static", max_nodes=max_nodes)
    for e in view.edges:  # a captured program differentiates like the forward it came from
        e.differentiable = True
    return view

"""Data-dependent control flow, found in a checked forward before anything runs.

A dynamic graph (PyTorch's) is built while the program runs, so a condition may read a
tensor's value — FancyMLP's ``while norm(x) > 1`` — and the graph then differs from one
input to the next. A static graph is defined before any data is seen: such a condition
would be baked in. :func:`data_dependent` finds the conditions (``if``, ``while``,
``a if c else b``, ``assert``) and loop bounds (``for i in range(n)``) whose value depends on a
tensor's *values*, by a small abstract interpretation of the forward: every expression
is ``static`` (a Python value: args, numbers, shapes, lengths, loop indices over static
ranges), ``module`` (a module or a container of modules) or ``tensor`` (it reads data).
Shapes (``x.shape``, ``x.size(0)``, ``len(x)``, ``x.dim()``) are static: they are known when the
graph is captured for given input shapes.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

from .check import Program

STATIC, MODULE, TENSOR = "static", "module", "tensor"
SHAPE_ATTRIBUTES = {"shape", "ndim", "dtype", "device", "is_cuda", "layout", "requires_grad"}
SHAPE_METHODS = {"size", "dim", "numel", "nelement", "ndimension", "element_size", "is_floating_point",
                 "is_complex", "is_contiguous", "get_device"}
STATIC_FUNCTIONS = {"len", "range", "isinstance", "enumerate", "zip", "reversed", "min", "max", "abs", "round",
                    "int", "float", "bool", "list", "tuple"}


@dataclass
class DataDependence:
    kind: str  # if | while | ifexp | assert | for
    line: str  # file:line:col of the statement
    text: str  # the condition (or the loop's iterable) as written

    @property
    def statement(self) -> str:
        return {"if": "if", "while": "while", "ifexp": "conditional expression", "assert": "assert",
                "for": "for loop bound"}[self.kind]


def _join(*kinds: str) -> str:
    if TENSOR in kinds:
        return TENSOR
    if MODULE in kinds:
        return MODULE
    return STATIC


class _Flow:
    def __init__(self, program: Program, known: dict[str, str]):
        self.program = program
        self.env: dict[str, str] = {}
        for name, what in known.items():
            if what in ("input", "constant", "parameter"):
                self.env[name] = TENSOR
            elif what in ("module", "container"):
                self.env[name] = MODULE
            else:
                self.env[name] = STATIC
        self.found: dict[tuple[int, int], DataDependence] = {}

    # ------------------------------------------------------------------ expressions

    def kind(self, node: ast.AST) -> str:
        if isinstance(node, ast.Constant):
            return STATIC
        if isinstance(node, ast.Name):
            return self.env.get(node.id, STATIC)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return self.env.get(node.attr, STATIC)
            base = self.kind(node.value)
            if base == TENSOR and node.attr in SHAPE_ATTRIBUTES:
                return STATIC
            return base
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Subscript):
            base = self.kind(node.value)
            index = self.kind(node.slice)
            if base == MODULE:
                return MODULE
            return _join(base, index) if base != STATIC else (TENSOR if index == TENSOR else STATIC)
        if isinstance(node, ast.IfExp):
            self.condition("ifexp", node.test)
            return _join(self.kind(node.body), self.kind(node.orelse))
        if isinstance(node, (ast.BinOp,)):
            return _join(self.kind(node.left), self.kind(node.right))
        if isinstance(node, ast.UnaryOp):
            return self.kind(node.operand)
        if isinstance(node, ast.BoolOp):
            return _join(*(self.kind(v) for v in node.values))
        if isinstance(node, ast.Compare):
            return _join(self.kind(node.left), *(self.kind(c) for c in node.comparators))
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return _join(STATIC, *(self.kind(e) for e in node.elts))
        if isinstance(node, ast.Dict):
            return _join(STATIC, *(self.kind(v) for v in node.values if v is not None))
        if isinstance(node, ast.Slice):
            return _join(*(self.kind(p) for p in (node.lower, node.upper, node.step) if p is not None), STATIC)
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)):
            for gen in node.generators:
                self.bind(gen.target, self.element(gen.iter))
                for cond in gen.ifs:
                    self.condition("if", cond)
            return _join(STATIC, self.kind(node.elt))
        if isinstance(node, ast.Starred):
            return self.kind(node.value)
        return _join(STATIC, *(self.kind(c) for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr)))

    def call(self, node: ast.Call) -> str:
        args = [self.kind(a) for a in node.args] + [self.kind(k.value) for k in node.keywords]
        func = node.func
        if isinstance(func, ast.Attribute):
            base = self.kind(func.value)
            if base == TENSOR:
                if func.attr in SHAPE_METHODS:
                    return _join(STATIC, *[a for a in args if a == TENSOR])
                return TENSOR  # tensor methods, .item() and .tolist() included: they read values
            if base == MODULE:
                return TENSOR  # a module call computes on data
            if isinstance(func.value, ast.Name) and func.value.id in ("torch", "F") or _qualified(func):
                return _join(*args) if args else STATIC
            return _join(base, *args)
        name = func.id if isinstance(func, ast.Name) else None
        if name is not None and self.env.get(name) == MODULE:
            return TENSOR
        if name == "len":
            return STATIC  # a length is a shape
        if name in STATIC_FUNCTIONS:
            return _join(STATIC, *args)
        return _join(STATIC, *args)

    def element(self, iterable: ast.AST) -> str:
        """The kind of the values a ``for`` loop over *iterable* binds."""
        kind = self.kind(iterable)
        if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name) and \
                iterable.func.id in ("enumerate", "zip"):
            return _join(*(self.element(a) for a in iterable.args)) if iterable.func.id == "zip" else \
                self.element(iterable.args[0]) if iterable.args else STATIC
        return kind

    # ------------------------------------------------------------------ statements

    def condition(self, kind: str, test: ast.AST) -> None:
        if self.kind(test) == TENSOR:
            key = (test.lineno, test.col_offset)
            if key not in self.found:
                loc = self.program.source.loc(test)
                self.found[key] = DataDependence(kind, str(loc), self.program.source.segment(test))

    def bind(self, target: ast.AST, kind: str) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = kind
        elif isinstance(target, (ast.Tuple, ast.List)):
            for e in target.elts:
                self.bind(e, kind if kind != STATIC else STATIC)
        elif isinstance(target, ast.Starred):
            self.bind(target.value, kind)

    def body(self, statements: list[ast.stmt]) -> None:
        for s in statements:
            self.statement(s)

    def statement(self, s: ast.stmt) -> None:
        if isinstance(s, ast.Assign):
            kind = self.kind(s.value)
            for t in s.targets:
                self.bind(t, kind)
        elif isinstance(s, ast.AnnAssign) and s.value is not None:
            self.bind(s.target, self.kind(s.value))
        elif isinstance(s, ast.AugAssign):
            if isinstance(s.target, ast.Name):
                self.env[s.target.id] = _join(self.env.get(s.target.id, STATIC), self.kind(s.value))
        elif isinstance(s, ast.If):
            self.condition("if", s.test)
            self.body(s.body)
            self.body(s.orelse)
        elif isinstance(s, ast.While):
            for _ in range(2):  # twice: what the body assigns may feed the condition
                self.condition("while", s.test)
                self.body(s.body)
            self.body(s.orelse)
        elif isinstance(s, ast.For):
            it = s.iter
            if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range":
                if any(self.kind(a) == TENSOR for a in it.args):
                    self.condition("for", it)
                self.bind(s.target, STATIC)
            else:
                self.bind(s.target, self.element(it))
            for _ in range(2):
                self.body(s.body)
            self.body(s.orelse)
        elif isinstance(s, ast.Assert):
            self.condition("assert", s.test)
        elif isinstance(s, (ast.Return, ast.Expr)) and s.value is not None:
            self.kind(s.value)


def _qualified(func: ast.Attribute) -> bool:
    parts = []
    node: ast.AST = func
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return isinstance(node, ast.Name) and node.id == "torch"


def data_dependent(program: Program, known: dict[str, str]) -> list[DataDependence]:
    """The conditions and loop bounds of *program* that read a tensor's value, in source order.
    *known* maps the names a forward may read to what they are (arg, input, module, container,
    constant, parameter), as :func:`cgtool.lang.check_forward` takes them."""
    flow = _Flow(program, known)
    flow.body(program.tree.body)
    return [flow.found[k] for k in sorted(flow.found)]

"""Capture mode of the compiler: the lowered program, with every operation and binding reported.

:func:`instrument` rewrites an already lowered program (guards and caps in place) so that
each operation runs through a recorder and each name binding is announced to it::

    a = x1 + w          →   a = _cg_op(0, _cg_add, x1, w); _cg_bind(1, 'a', a)
    y = relu(mm(x, r))  →   y = _cg_op(3, relu, _cg_op(2, mm, x, r)); _cg_bind(4, 'y', y)
    h = x.sum(dim=0)    →   h = _cg_method(5, x, 'sum', dim=0); _cg_bind(6, 'h', h)
    return y            →   return _cg_return(7, y)

The first argument indexes :attr:`Site` records (the operation's key, its symbol, and its
position in the program's text), so the recorder knows what ran and where without any
second interpreter: the code is still compiled once and run by Python and torch. The
recorder (``cgtool.graph.capture``) supplies the ``_cg_*`` functions at run time.
"""
from __future__ import annotations

import ast
import operator
from dataclasses import dataclass

BINARY = {
    ast.Add: ("add", "+", "add"), ast.Sub: ("sub", "-", "sub"), ast.Mult: ("mul", "*", "mul"),
    ast.Div: ("div", "/", "truediv"), ast.FloorDiv: ("floordiv", "//", "floordiv"), ast.Mod: ("mod", "%", "mod"),
    ast.Pow: ("pow", "**", "pow"), ast.MatMult: ("matmul", "@", "matmul"),
}  # fmt: skip
UNARY = {ast.USub: ("neg", "-", "neg"), ast.UAdd: ("pos", "+", "pos"), ast.Invert: ("invert", "~", "invert")}
COMPARE = {
    ast.Eq: ("eq", "eq"), ast.NotEq: ("ne", "ne"), ast.Lt: ("lt", "lt"), ast.LtE: ("le", "le"),
    ast.Gt: ("gt", "gt"), ast.GtE: ("ge", "ge"),
}  # fmt: skip
# Guard helpers that are operations of the language (the lowering put them in place of `*`, `**`, `norm`).
HELPER_OPS = {"_cg_mul": ("mul", "*"), "_cg_pow": ("pow", "**"), "_cg_vector_norm": ("norm", "norm")}
# Calls that never make a tensor from a tensor: they run as they are.
PLAIN_CALLS = frozenset({"range", "len", "enumerate", "zip", "int", "float", "bool", "slice"})
# Methods that are the same operation as an operator or a function (for symbolic rules).
METHOD_KEYS = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "pow": "pow", "neg": "neg", "abs": "abs"}

#: the operator functions capture-mode code calls, by their generated names
OPERATORS = {f"_cg_op_{fn}": getattr(operator, fn) for *_, fn in [*BINARY.values(), *UNARY.values()]}
OPERATORS.update({f"_cg_op_{fn}": getattr(operator, fn) for _, fn in COMPARE.values()})


@dataclass(frozen=True)
class Site:
    """One place in the program: an operation (``key``/``symbol``), a binding or a return."""

    key: str  # "add", "sin", "linear", "bind", "return"
    symbol: str  # what an edge shows: "+", "sin", ".sum()"
    line: int | None  # 1-based, relative to the program's text
    col: int | None  # UTF-8 byte offset, as ast gives it
    end_line: int | None
    end_col: int | None


def _internal(node) -> bool:
    return isinstance(node, ast.Name) and node.id.startswith("_cg_")


class _Instrument(ast.NodeTransformer):
    def __init__(self):
        self.sites: list[Site] = []

    def site(self, node, key: str, symbol: str) -> ast.Constant:
        self.sites.append(Site(key, symbol, getattr(node, "lineno", None), getattr(node, "col_offset", None),
                               getattr(node, "end_lineno", None), getattr(node, "end_col_offset", None)))
        return ast.Constant(len(self.sites) - 1)

    def call(self, helper: str, node, key: str, symbol: str, args: list, keywords=()) -> ast.Call:
        call = ast.Call(ast.Name(helper, ast.Load()), [self.site(node, key, symbol), *args], list(keywords))
        return ast.copy_location(call, node)

    # -- operations
    def visit_BinOp(self, node):
        self.generic_visit(node)
        if isinstance(node.left, ast.Constant) and isinstance(node.right, ast.Constant):
            return node  # literal arithmetic (4 * 8): no tensor can be involved
        key, symbol, fn = BINARY[type(node.op)]
        return self.call("_cg_op", node, key, symbol, [ast.Name(f"_cg_op_{fn}", ast.Load()), node.left, node.right])

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if type(node.op) not in UNARY or isinstance(node.operand, ast.Constant):
            return node  # `not` keeps Python's meaning; -1 is a literal
        key, symbol, fn = UNARY[type(node.op)]
        return self.call("_cg_op", node, key, symbol, [ast.Name(f"_cg_op_{fn}", ast.Load()), node.operand])

    def visit_Compare(self, node):
        self.generic_visit(node)
        if len(node.ops) != 1 or type(node.ops[0]) not in COMPARE or _internal(node.left) \
                or any(_internal(c) for c in node.comparators):
            return node  # chains, `is`, `in` and the loop counters keep Python's meaning
        key, fn = COMPARE[type(node.ops[0])]
        return self.call("_cg_op", node, key, key, [ast.Name(f"_cg_op_{fn}", ast.Load()), node.left,
                                                    node.comparators[0]])

    def visit_Call(self, node):
        func = node.func
        node.args = [self.visit(a) for a in node.args]
        for kw in node.keywords:
            kw.value = self.visit(kw.value)
        if isinstance(func, ast.Attribute):  # a method: x.sum(dim=0)
            obj = self.visit(func.value)
            key = METHOD_KEYS.get(func.attr, func.attr)
            return self.call("_cg_method", node, key, f".{func.attr}()", [obj, ast.Constant(func.attr), *node.args],
                             node.keywords)
        if isinstance(func, ast.Name):
            if func.id in HELPER_OPS:
                key, symbol = HELPER_OPS[func.id]
            elif func.id.startswith("_cg_") or func.id in PLAIN_CALLS:
                return node
            else:
                key = symbol = func.id
            return self.call("_cg_op", node, key, symbol, [func, *node.args], node.keywords)
        node.func = self.visit(func)  # a module from a container: layers[0](x)
        return self.call("_cg_op", node, "call", "call", [node.func, *node.args], node.keywords)

    def visit_Attribute(self, node):
        self.generic_visit(node)
        if not isinstance(node.ctx, ast.Load):
            return node
        return self.call("_cg_attr", node, node.attr, f".{node.attr}", [node.value, ast.Constant(node.attr)])

    def visit_Subscript(self, node):
        self.generic_visit(node)
        if not isinstance(node.ctx, ast.Load):
            return node
        index = _slices_as_calls(node.slice)
        return self.call("_cg_op", node, "getitem", "[]", [ast.Name("_cg_op_getitem", ast.Load()), node.value, index])

    # -- bindings
    def visit_Assign(self, node):
        self.generic_visit(node)
        return [node] + self.bindings(node, node.targets)

    def visit_For(self, node):
        self.generic_visit(node)
        node.body = self.bindings(node, [node.target]) + node.body
        return node

    def visit_Return(self, node):
        self.generic_visit(node)
        if node.value is not None:
            node.value = self.call("_cg_return", node.value, "return", "return", [node.value])
        return node

    # -- control flow: which conditions read tensor values, how often they ran
    def visit_If(self, node):
        self.generic_visit(node)
        node.test = self.branch(node.test, "if")
        return node

    def visit_While(self, node):
        self.generic_visit(node)
        node.test = self.branch(node.test, "while")
        return node

    def visit_IfExp(self, node):
        self.generic_visit(node)
        node.test = self.branch(node.test, "ifexp")
        return node

    def branch(self, test, kind: str):
        if isinstance(test, ast.Compare) and _internal(test.left):
            return test  # the lowering's own loop-cap check, not the user's condition
        for n in ast.walk(test):  # the lowering turned every compared tensor into _cg_scalar(t)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "_cg_scalar" and n.args:
                n.args[0] = self.call("_cg_read", n.args[0], "read", "read", [n.args[0]])
        return self.call("_cg_branch", test, kind, kind, [test])

    def visit_ListComp(self, node):
        # comprehension variables name nothing in the graph: only the operations are reported
        self.generic_visit(node)
        return node

    def bindings(self, at, targets) -> list[ast.stmt]:
        out = []
        for target in targets:
            for n in ast.walk(target):
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and not n.id.startswith("_cg_"):
                    call = self.call("_cg_bind", n, "bind", "=", [ast.Constant(n.id), ast.Name(n.id, ast.Load())])
                    out.append(ast.copy_location(ast.Expr(call), at))
        return out


def _slices_as_calls(index):
    """``a:b`` is only legal inside brackets: as an argument it becomes ``slice(a, b)``."""
    if isinstance(index, ast.Slice):
        parts = [p if p is not None else ast.Constant(None) for p in (index.lower, index.upper, index.step)]
        return ast.copy_location(ast.Call(ast.Name("slice", ast.Load()), parts, []), index)
    if isinstance(index, ast.Tuple):
        return ast.copy_location(ast.Tuple([_slices_as_calls(e) for e in index.elts], ast.Load()), index)
    return index


def instrument(tree: ast.Module) -> tuple[ast.Module, list[Site]]:
    """The capture-mode program and its sites (positions relative to the program's text)."""
    inst = _Instrument()
    body = []
    for stmt in tree.body:
        new = inst.visit(stmt)
        body.extend(new if isinstance(new, list) else [new])
    tree.body = body
    return tree, inst.sites


OPERATORS["_cg_op_getitem"] = operator.getitem

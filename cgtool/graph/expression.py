"""Evaluating a ``cgtool grad`` expression with autograd, recording its value graph with names.

The expression is parsed and checked by :mod:`cgtool.lang` (the language of spec
forwards) and then run here, statement by statement, over float64 tensors. Every
operation that reads a tracked value becomes a node of a :class:`ValueGraph`, and
each operand slot an edge. Each slot is handed to the operation as its own
identity view (``t.view_as(t)``), so autograd can give the derivative through
that one slot: ``w * w`` has two edges to ``w``, hence two paths.

Names: a leaf is a free name; a value assigned to a name takes the name (an
unnamed intermediate is shown by its source text, ``(x1 + w)``); assigning a
value that already has a name is an alias and adds no node (``h0 = w``); a name
assigned more than once is shown with its version (``c#2``), so paths stay
unambiguous.

Only what the checker accepted runs: allow-listed functions and attributes,
creation functions with their size caps, guarded integer arithmetic, loop caps,
and a cap on the number of operations.
"""
from __future__ import annotations

import ast
import json
import operator
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import CgError, Loc, did_you_mean
from ..lang import CONSTANT_NAMES, DEFAULT_LIMITS, FUNCTIONS, Limits, Program, Source, make_guards, parse
from .model import Node, ValueGraph

DTYPE = torch.float64
MAX_OPERATIONS = 100_000  # operations one evaluation may record (loops included)
MAX_LABEL = 60  # characters of source text shown for an unnamed value

BINARY = {
    ast.Add: ("add", "+", operator.add),
    ast.Sub: ("sub", "-", operator.sub),
    ast.Mult: ("mul", "*", operator.mul),
    ast.Div: ("div", "/", operator.truediv),
    ast.FloorDiv: ("floordiv", "//", operator.floordiv),
    ast.Mod: ("mod", "%", operator.mod),
    ast.Pow: ("pow", "**", operator.pow),
    ast.MatMult: ("matmul", "@", operator.matmul),
}
UNARY = {
    ast.USub: ("neg", "-", operator.neg),
    ast.UAdd: ("pos", "+", operator.pos),
    ast.Not: ("not", "not", operator.not_),
    ast.Invert: ("invert", "~", operator.invert),
}
COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}  # fmt: skip
# Methods that are the same operation as a function or operator (for symbolic rules).
METHOD_OPS = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "pow": "pow", "neg": "neg", "abs": "abs"}


@dataclass
class Val:
    """A tracked value: a node of the graph (anything else the program holds is a constant)."""

    node: Node


@dataclass
class OpInfo:
    """What made a node: the operation and its operands (Nodes or numbers) in argument order."""

    key: str  # "add", "sin", "matmul", ...
    operands: list | None  # None when the call has keyword or nested arguments
    text: str  # the user's source text of the operation


@dataclass
class Evaluation:
    program: Program
    graph: ValueGraph
    root: Node
    root_name: str  # as the user names it: usually the root's label; "y" when y is an alias of a
    leaves: dict[str, Node]  # free names, in order of first use
    names: dict[str, Node]  # every label a user may type for --wrt / --root, versions and aliases included
    aliases: dict[str, str]  # alias label -> label of the node it names
    numeric: bool  # False when leaves had no values (placeholders; only symbolic forms are meaningful)
    has_control_flow: bool = False


class _Return(Exception):
    def __init__(self, value, node):
        self.value, self.node = value, node


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


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
        raise CgError(f"{value!r} is not a rectangular list of numbers ({_first_line(e)})", place,
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


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


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
    _check_values(program, leaves, values)
    numeric = bool(values)
    control = any(isinstance(n, (ast.If, ast.While, ast.IfExp, ast.BoolOp)) for n in ast.walk(program.tree))
    if not numeric and control:
        raise CgError("the graph depends on the values (if / while): give every leaf a value with --at",
                      program.source.loc(1), hint=f"leaves: {', '.join(leaves)}" if leaves else None)
    ev = _Evaluator(program, limits, numeric)
    for i, name in enumerate(leaves):
        if numeric:
            tensor = to_tensor(values[name], f"--at {name}")
        else:
            # Placeholder values only trace the graph's structure; nothing numeric is shown.
            tensor = torch.tensor(0.7 + 0.13 * i, dtype=DTYPE)
        ev.add_leaf(name, tensor.requires_grad_(True))
    returned = ev.run()
    return ev.finish(returned, root, numeric, control)


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


# --------------------------------------------------------------------------- the evaluator


class _Evaluator:
    def __init__(self, program: Program, limits: Limits, numeric: bool = True):
        self.program = program
        self.src: Source = program.source
        self.text = self.src.text.replace("\t", "    ")  # what the positions refer to
        self.line_starts = [0]
        for line in self.text.splitlines(keepends=True):
            self.line_starts.append(self.line_starts[-1] + len(line))
        self.limits = limits
        self.numeric = numeric
        self.graph = ValueGraph()
        self.env: dict[str, object] = {}
        self.leaves: dict[str, Node] = {}
        self.assignments: Counter[str] = Counter()
        self.named: dict[int, tuple[str, int]] = {}  # node id -> (name, version)
        self.alias_events: list[tuple[str, int, Node]] = []
        self.last_assigned: str | None = None
        self.operations = 0
        guards = make_guards(limits)
        self.guards = guards
        self.functions = dict(FUNCTIONS)
        self.functions.update({k: v for k, v in guards.items() if not k.startswith("_")})
        self.functions["range"] = guards["_cg_range"]
        self.functions["dropout"] = lambda x, p=0.5, training=False, inplace=False: F.dropout(x, p, training)
        self.allowed_callables = {id(f) for f in self.functions.values()}

    # -- positions and labels
    def loc(self, node) -> Loc:
        return self.src.loc(node)

    def _offset(self, line: int, col_bytes: int) -> int:
        start = self.line_starts[line - 1]
        end = self.line_starts[line] if line < len(self.line_starts) else len(self.text)
        line_text = self.text[start:end]
        return start + len(line_text.encode("utf-8")[:col_bytes].decode("utf-8", errors="ignore"))

    def label(self, node) -> str:
        """The user's text of *node*, with the parentheses they put around it."""
        try:
            a = self._offset(node.lineno, node.col_offset)
            b = self._offset(node.end_lineno, node.end_col_offset)
        except (AttributeError, TypeError, IndexError):
            return _clip(ast.unparse(node))
        t = self.text
        while True:
            i, j = a - 1, b
            while i >= 0 and t[i] in " \n":
                i -= 1
            while j < len(t) and t[j] in " \n":
                j += 1
            if i < 0 or j >= len(t) or t[i] != "(" or t[j] != ")":
                break
            k = i - 1
            while k >= 0 and t[k] in " \n":
                k -= 1
            if k >= 0 and (t[k].isalnum() or t[k] in "_)]."):
                break  # the parentheses of a call, not of grouping
            a, b = i, j + 1
        return _clip(" ".join(t[a:b].split()))

    # -- leaves and names
    def add_leaf(self, name: str, tensor: torch.Tensor) -> None:
        node = self.graph.add_node(name, tensor, None, OpInfo("leaf", None, name))
        self.leaves[name] = node
        self.env[name] = Val(node)

    def bind(self, target, value, stmt) -> None:
        if isinstance(target, ast.Name):
            name = target.id
            self.assignments[name] += 1
            version = self.assignments[name]
            if isinstance(value, Val):
                node = value.node
                if node.id not in self.named and node.info.key != "leaf":
                    self.named[node.id] = (name, version)
                else:
                    self.alias_events.append((name, version, node))
            self.env[name] = value
            self.last_assigned = name
            return
        if isinstance(target, (ast.Tuple, ast.List)):
            items = self.unpack(value, len(target.elts), stmt)
            for t, v in zip(target.elts, items):
                self.bind(t, v, stmt)
            return
        raise CgError(f"cannot assign to {ast.unparse(target)} in a grad expression", self.loc(target),
                      hint="assign to plain names; tensors are not changed in place here")

    def unpack(self, value, n: int, at) -> list:
        if isinstance(value, Val):
            value = self.apply("unbind", "unbind", torch.unbind, [value], {}, at)
        try:
            items = list(value)
        except TypeError:
            raise CgError(f"cannot unpack a {type(value).__name__}", self.loc(at)) from None
        if len(items) != n:
            raise CgError(f"expected {n} values to unpack, got {len(items)}", self.loc(at))
        return items

    # -- running
    def run(self):
        try:
            self.block(self.program.tree.body)
        except _Return as r:
            return r
        except (_Break, _Continue):  # pragma: no cover - the parser rejects them outside loops
            raise CgError("break/continue outside a loop", self.loc(self.program.tree)) from None
        return None

    def block(self, stmts) -> None:
        for s in stmts:
            self.stmt(s)

    def loop_body(self, stmts) -> bool:
        """Run one iteration of a loop body; False when it ended with `break`."""
        try:
            self.block(stmts)
        except _Break:
            return False
        except _Continue:
            pass
        return True

    def stmt(self, s) -> None:
        if isinstance(s, ast.Assign):
            value = self.eval(s.value)
            for t in s.targets:
                self.bind(t, value, s)
        elif isinstance(s, ast.AugAssign):
            if not isinstance(s.target, ast.Name):
                raise CgError(f"cannot assign to {ast.unparse(s.target)} in a grad expression", self.loc(s.target),
                              hint="assign to plain names; tensors are not changed in place here")
            key, symbol, fn = BINARY[type(s.op)]
            current = self.lookup(s.target.id, s.target)
            value = self.binary(key, symbol, fn, current, self.eval(s.value), s)
            self.bind(s.target, value, s)
        elif isinstance(s, ast.Expr):
            self.eval(s.value)
        elif isinstance(s, ast.Return):
            if s.value is None:
                raise CgError("return needs a value", self.loc(s), hint="return the root, e.g. `return y`")
            raise _Return(self.eval(s.value), s.value)
        elif isinstance(s, ast.If):
            self.block(s.body if self.truth(self.eval(s.test), s.test) else s.orelse)
        elif isinstance(s, ast.While):
            n = 0
            while self.truth(self.eval(s.test), s.test):
                n += 1
                if n > self.limits.max_loop_iterations:
                    raise CgError(f"the while loop ran more than {self.limits.max_loop_iterations:,} iterations",
                                  self.loc(s), hint="the loop may never end; raise the cap with --max-iterations "
                                  "if it really needs more")
                if not self.loop_body(s.body):
                    break
        elif isinstance(s, ast.For):
            for item in self.iterate(self.eval(s.iter), s.iter):
                self.bind(s.target, item, s)
                if not self.loop_body(s.body):
                    break
        elif isinstance(s, ast.Break):
            raise _Break()
        elif isinstance(s, ast.Continue):
            raise _Continue()
        elif isinstance(s, ast.Pass):
            pass
        else:  # pragma: no cover - the checker lets nothing else through
            raise CgError(f"{type(s).__name__} is not supported in grad expressions", self.loc(s))

    def iterate(self, value, at) -> list:
        if isinstance(value, Val):
            value = self.apply("unbind", "unbind", torch.unbind, [value], {}, at)
        try:
            items = list(value) if not isinstance(value, range) else value
        except TypeError:
            raise CgError(f"cannot loop over a {type(value).__name__}", self.loc(at)) from None
        if len(items) > self.limits.max_loop_iterations:
            raise CgError(f"the loop has {len(items):,} steps, over the cap of {self.limits.max_loop_iterations:,}",
                          self.loc(at))
        return items

    def truth(self, value, at) -> bool:
        v = value.node.value if isinstance(value, Val) else value
        try:
            return bool(v)
        except (RuntimeError, ValueError) as e:
            raise CgError(f"cannot use `{self.label(at)}` as a condition: {_first_line(e)}", self.loc(at),
                          hint="a condition needs one number; reduce the tensor, e.g. with sum(...) or .all()") from None

    def lookup(self, name: str, at):
        if name in self.env:
            return self.env[name]
        if name in CONSTANT_NAMES:
            return CONSTANT_NAMES[name]
        if name in self.functions:
            return self.functions[name]
        raise CgError(f"{name} is used before it is assigned", self.loc(at),
                      hint=f"assign {name} before this line")

    # -- expressions
    def eval(self, e):
        if isinstance(e, ast.Constant):
            return e.value
        if isinstance(e, ast.Name):
            return self.lookup(e.id, e)
        if isinstance(e, ast.BinOp):
            key, symbol, fn = BINARY[type(e.op)]
            return self.binary(key, symbol, fn, self.eval(e.left), self.eval(e.right), e)
        if isinstance(e, ast.UnaryOp):
            key, symbol, fn = UNARY[type(e.op)]
            if isinstance(e.op, ast.Not):
                return not self.truth(self.eval(e.operand), e.operand)
            return self.apply(key, symbol, fn, [self.eval(e.operand)], {}, e)
        if isinstance(e, ast.BoolOp):
            want = isinstance(e.op, ast.Or)
            value = None
            for v in e.values:
                value = self.eval(v)
                if self.truth(value, v) == want:
                    return value
            return value
        if isinstance(e, ast.Compare):
            left = self.eval(e.left)
            result = True
            for i, (op, comp) in enumerate(zip(e.ops, e.comparators)):
                right = self.eval(comp)
                fn = COMPARE[type(op)]
                if isinstance(op, (ast.Is, ast.IsNot)):
                    result = fn(_raw(left), _raw(right))
                else:
                    result = self.apply("compare", type(op).__name__.lower(), fn, [left, right], {}, e)
                if i < len(e.ops) - 1 and not self.truth(result, e):
                    return result  # a < b < c stops at the first false link, as in Python
                left = right
            return result
        if isinstance(e, ast.Call):
            return self.call(e)
        if isinstance(e, ast.Attribute):
            obj = self.eval(e.value)
            attr = e.attr
            return self.apply(attr, f".{attr}", lambda t: getattr(t, attr), [obj], {}, e)
        if isinstance(e, ast.Subscript):
            obj = self.eval(e.value)
            index = self.eval(e.slice)
            return self.apply("getitem", "[]", operator.getitem, [obj, index], {}, e)
        if isinstance(e, ast.Slice):
            return slice(*(self.eval(p) if p is not None else None for p in (e.lower, e.upper, e.step)))
        if isinstance(e, ast.Tuple):
            return tuple(self.eval(x) for x in e.elts)
        if isinstance(e, ast.List):
            return [self.eval(x) for x in e.elts]
        if isinstance(e, ast.IfExp):
            return self.eval(e.body) if self.truth(self.eval(e.test), e.test) else self.eval(e.orelse)
        if isinstance(e, ast.ListComp):
            return self.comprehension(e)
        raise CgError(f"{type(e).__name__} is not supported in grad expressions", self.loc(e))  # pragma: no cover

    def comprehension(self, e: ast.ListComp) -> list:
        out: list = []
        saved = dict(self.env)

        def gen(i: int):
            if i == len(e.generators):
                out.append(self.eval(e.elt))
                self.count_operation(e)
                return
            g = e.generators[i]
            for item in self.iterate(self.eval(g.iter), g.iter):
                self.bind_quiet(g.target, item, g)
                if all(self.truth(self.eval(c), c) for c in g.ifs):
                    gen(i + 1)

        try:
            gen(0)
        finally:
            self.env = saved
        return out

    def bind_quiet(self, target, value, at) -> None:
        """Bind a comprehension variable: it names nothing in the graph."""
        if isinstance(target, ast.Name):
            self.env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            for t, v in zip(target.elts, self.unpack(value, len(target.elts), at)):
                self.bind_quiet(t, v, at)
        else:
            raise CgError(f"cannot assign to {ast.unparse(target)}", self.loc(target))

    def call(self, e: ast.Call):
        args = [self.eval(a) for a in e.args]
        kwargs = {k.arg: self.eval(k.value) for k in e.keywords}
        if isinstance(e.func, ast.Attribute):
            obj = self.eval(e.func.value)
            attr = e.func.attr
            return self.apply(METHOD_OPS.get(attr, attr), f".{attr}()",
                              lambda t, *a, **k: getattr(t, attr)(*a, **k), [obj] + args, kwargs, e)
        if isinstance(e.func, ast.Name):
            fn = self.lookup(e.func.id, e.func)
            if not callable(fn) or id(fn) not in self.allowed_callables:
                raise CgError(f"{e.func.id} is not a function", self.loc(e.func),
                              hint=did_you_mean(e.func.id, self.functions))
            name = e.func.id if e.func.id in self.functions else next(
                (k for k, v in self.functions.items() if v is fn), e.func.id)
            return self.apply(name, name, fn, args, kwargs, e)
        raise CgError(f"cannot call {ast.unparse(e.func)}", self.loc(e.func))  # pragma: no cover

    def binary(self, key, symbol, fn, left, right, at):
        if not isinstance(left, Val) and not isinstance(right, Val):
            if key == "pow":
                fn = self.guards["_cg_pow"]
            elif key == "mul":
                fn = self.guards["_cg_mul"]
        return self.apply(key, symbol, fn, [left, right], {}, at)

    def count_operation(self, at) -> None:
        self.operations += 1
        if self.operations > MAX_OPERATIONS:
            raise CgError(f"the expression ran more than {MAX_OPERATIONS:,} operations", self.loc(at),
                          hint="make the loops shorter")

    def apply(self, key: str, symbol: str, fn, args: list, kwargs: dict, at):
        """Run one operation; record a node (and its edges) when it reads tracked values."""
        self.count_operation(at)
        slots: list[tuple[Node, torch.Tensor, int]] = []  # (operand, its identity view, argument position)
        simple = not kwargs and all(isinstance(a, (Val, int, float)) or _is_number_tensor(a) for a in args)

        def wrap(v, position):
            if isinstance(v, Val):
                t = v.node.value
                view = t.view_as(t)
                slots.append((v.node, view, position))
                return view
            if isinstance(v, (list, tuple)) and not hasattr(v, "_fields"):
                return type(v)(wrap(x, position) for x in v)
            return v

        targs = [wrap(a, i) for i, a in enumerate(args)]
        tkwargs = {k: wrap(v, len(args)) for k, v in kwargs.items()}
        try:
            result = fn(*targs, **tkwargs)
        except CgError as err:
            raise err.with_place(self.loc(at)) from None
        except (RuntimeError, TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, OverflowError,
                AttributeError, NotImplementedError) as err:
            hint = None if self.numeric else \
                "without --at values every leaf is a number; give tensor leaves their values, e.g. --at x='[1, 2]'"
            raise CgError(f"cannot compute `{self.label(at)}`: {_first_line(err)}", self.loc(at), hint) from None
        except MemoryError:
            raise CgError(f"`{self.label(at)}` needs more memory than there is", self.loc(at)) from None
        self._check_size(result, at)
        if not slots:
            return _constant(result)
        operands = None
        if simple:
            operands = [a.node if isinstance(a, Val) else (a.item() if isinstance(a, torch.Tensor) else a)
                        for a in args]
        label = self.label(at)
        if isinstance(result, torch.Tensor):
            return self._record(result, label, key, symbol, operands, slots, at)
        if isinstance(result, (tuple, list)):
            items = [self._record(r, f"{label}[{i}]", f"{key}[{i}]", symbol, None, slots, at)
                     if isinstance(r, torch.Tensor) else _constant(r) for i, r in enumerate(result)]
            try:  # lists, tuples and torch's named results (max(x, 0).values) keep their type
                return type(result)(items)
            except TypeError:
                return tuple(items)
        return _constant(result)

    def _check_size(self, result, at) -> None:
        tensors = [result] if isinstance(result, torch.Tensor) else \
            [r for r in result if isinstance(r, torch.Tensor)] if isinstance(result, (tuple, list)) else []
        for t in tensors:
            if t.numel() > self.limits.max_elements:
                raise CgError(f"`{self.label(at)}` made a tensor of {t.numel():,} elements, over the cap of "
                              f"{self.limits.max_elements:,}", self.loc(at))

    def _record(self, out: torch.Tensor, label, key, symbol, operands, slots, at):
        if not out.requires_grad or not (out.is_floating_point() or out.is_complex()):
            return _constant(out)
        views = [v for _, v, _ in slots]
        grads = torch.autograd.grad(_weighted(out, None), views, retain_graph=True, allow_unused=True)
        node = self.graph.add_node(label, out, symbol, OpInfo(key, operands, label))
        scalar_out = out.numel() == 1
        for i, ((operand, view, position), g) in enumerate(zip(slots, grads)):
            if g is None:
                continue  # the result does not depend on this slot
            derivative = float(g.reshape(-1)[0]) if scalar_out and view.numel() == 1 else None
            slot = position if operands is not None else i
            self.graph.add_edge(node, operand, slot, symbol, _slot_vjp(out, view), derivative)
        return Val(node)

    # -- the end
    def finish(self, returned: _Return | None, root: str | None, numeric: bool, control: bool) -> Evaluation:
        graph = self.graph
        for node_id, (name, version) in self.named.items():
            graph.nodes[node_id].label = name if self.assignments[name] == 1 else f"{name}#{version}"
        names: dict[str, Node] = dict(self.leaves)
        for node_id in self.named:
            names[graph.nodes[node_id].label] = graph.nodes[node_id]
        aliases: dict[str, str] = {}
        for name, version, node in self.alias_events:
            label = name if self.assignments[name] == 1 else f"{name}#{version}"
            aliases[label] = node.label
            names.setdefault(label, node)
        for name, value in self.env.items():  # a bare versioned name means its last version
            if isinstance(value, Val) and name not in names and name in self.assignments:
                names[name] = value.node

        if root is not None:
            if root not in names:
                known = [n for n in names if n not in self.leaves]
                hint = did_you_mean(root, known)
                raise CgError(f"no value named {root!r} in the expression", f"--root {root}",
                              hint=hint or f"names: {', '.join(known) or 'none'}")
            value, at = Val(names[root]), None
            root_name = root if root in aliases else names[root].label
        elif returned is not None:
            value, at = returned.value, returned.node
            root_name = value.node.label if isinstance(value, Val) else self.label(at)
        elif self.last_assigned is not None:
            name = self.last_assigned
            value = self.env[name]
            root_name = name if self.assignments[name] == 1 else f"{name}#{self.assignments[name]}"
            at = None
            if isinstance(value, Val) and root_name not in aliases:
                root_name = value.node.label
        else:
            raise CgError("the expression assigns nothing, so it has no root", self.src.loc(1),
                          hint='assign the result to a name, e.g. "y = (x1 + w) * (x2 + w)"')
        where = self.loc(at) if at is not None else self.src.loc(1)
        if not isinstance(value, Val):
            raise CgError(f"the root {root_name} does not depend on any leaf", where,
                          hint="the root must be computed from the leaves (free names) with differentiable operations")
        node = value.node
        if node.value.numel() != 1:
            shape = list(node.value.shape)
            raise CgError(f"the root {root_name} has shape {shape}, not a single number: gradients need a scalar root",
                          where, hint=f"reduce it, e.g. `sum({root_name})` or `mean({root_name})`, or pick --root")
        return Evaluation(self.program, graph, node, root_name, dict(self.leaves), names, aliases, numeric, control)


def _slot_vjp(out: torch.Tensor, view: torch.Tensor):
    def vjp(cotangent: torch.Tensor) -> torch.Tensor:
        (g,) = torch.autograd.grad(_weighted(out, cotangent), view, retain_graph=True, allow_unused=True)
        return torch.zeros_like(view) if g is None else g

    return vjp


def _weighted(out: torch.Tensor, cotangent: torch.Tensor | None) -> torch.Tensor:
    """A scalar whose gradient is the VJP of *cotangent* (None: all ones).

    ``sum(out * cotangent)`` rather than ``grad_outputs=cotangent``: torch's check of
    grad_outputs imports sympy on first use, a quarter of a second of start-up that
    this command would pay on every run. The gradient of the product is exactly the
    cotangent, so nothing changes numerically.
    """
    if cotangent is None:
        return out if out.numel() == 1 else out.sum()
    return (out * cotangent).sum()


def _is_number_tensor(v) -> bool:
    return isinstance(v, torch.Tensor) and v.numel() == 1 and not v.requires_grad


def _raw(v):
    return v.node.value if isinstance(v, Val) else v


def _constant(value):
    """A value that does not depend on a leaf: tensors are detached so they stay constants."""
    if isinstance(value, torch.Tensor) and value.requires_grad:
        return value.detach()
    return value


def _clip(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def autograd_gradients(ev: Evaluation, wrt: list[Node]) -> list[torch.Tensor]:
    """Autograd's own gradients of the root with respect to *wrt* (zeros where it does not depend)."""
    grads = torch.autograd.grad(ev.root.value, [n.value for n in wrt], retain_graph=True, allow_unused=True)
    return [torch.zeros_like(n.value) if g is None else g for n, g in zip(wrt, grads)]


"""The forward language: a small, safe subset of Python, parsed once and checked.

One parser serves spec forwards and ``cgtool grad`` expressions. The source is
parsed with :mod:`ast`, then walked by :class:`Checker`, which accepts only the
constructs listed in ``STATEMENTS`` / ``EXPRESSIONS``, names that are defined,
functions on the allow-list (:data:`FUNCTIONS`) and attributes on the allow-list
(:data:`ATTRIBUTES`). The language, not the namespace, is the wall: a checked
program can only name what the checker let through, so the compiled function may
keep the real ``__builtins__`` that torch's C code needs.

Positions: every node keeps its line and column *in the user's file* (the spec's
YAML file, or ``<expr>``), so compiled code raises errors at the spec's lines.
"""
from __future__ import annotations

import ast
import builtins
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .errors import CgError, Loc, did_you_mean

# --------------------------------------------------------------------------- limits


@dataclass
class Limits:
    """Caps that keep a stranger's program from exhausting the machine."""

    max_loop_iterations: int = 10_000  # per `while` loop, and per `range(...)`
    max_elements: int = 100_000_000  # a tensor created in the forward (zeros, rand, arange, ...)
    max_int_bits: int = 4_096  # Python integers built by `**` / `*` on ints
    max_sequence: int = 100_000  # a list/str/tuple repeated with `*`
    max_source_chars: int = 200_000


DEFAULT_LIMITS = Limits()


# --------------------------------------------------------------------------- runtime guards
# Called from compiled code. They cost one Python call and keep arithmetic on
# plain Python values (not tensors) from building enormous integers or sequences.


def _numel(size) -> int:
    n = 1
    for s in size:
        n *= int(s)
    return n


def _size_args(args):
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(args[0])
    return tuple(args)


def _scalar(v):
    """A one-element tensor as a Python number (for comparisons in tests); anything else as is."""
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_meta:
        return v.item()
    return v


def make_guards(limits: Limits):
    """The helper functions compiled code calls, bound to *limits*."""

    def check_elements(n, what):
        if n > limits.max_elements:
            raise CgError(
                f"{what} would create a tensor of {n:,} elements, over the cap of {limits.max_elements:,}",
                hint="make the tensor smaller or raise the element cap",
            )

    def creator(fn, name):
        def create(*size, **kw):
            check_elements(_numel(_size_args(size)), f"{name}(...)")
            return fn(*size, **kw)

        create.__name__ = name
        return create

    def full(size, fill_value, **kw):
        check_elements(_numel(_size_args((size,))), "full(...)")
        return torch.full(tuple(size) if not isinstance(size, int) else (size,), fill_value, **kw)

    def arange(*args, **kw):
        nums = [float(a) for a in args]
        if len(nums) == 1:
            start, end, step = 0.0, nums[0], 1.0
        else:
            start, end = nums[0], nums[1]
            step = nums[2] if len(nums) > 2 else float(kw.get("step", 1))
        if step != 0:
            check_elements(max(0, math.ceil((end - start) / step)), "arange(...)")
        return torch.arange(*args, **kw)

    def eye(n, m=None, **kw):
        check_elements(int(n) * int(m if m is not None else n), "eye(...)")
        return torch.eye(n, m, **kw) if m is not None else torch.eye(n, **kw)

    def guarded_range(*args):
        r = range(*args)
        if len(r) > limits.max_loop_iterations:
            raise CgError(
                f"range(...) has {len(r):,} steps, over the loop cap of {limits.max_loop_iterations:,}",
                hint="use a smaller range or raise the loop cap (--max-iterations)",
            )
        return r

    def pow_(a, b):
        if type(a) is int and type(b) is int and b > 0 and a not in (0, 1, -1):
            if a.bit_length() * b > limits.max_int_bits:
                raise CgError(
                    f"{a} ** {b} is too large a number", hint="numbers in specs must stay reasonably small"
                )
        return a**b

    def mul(a, b):
        ta, tb = type(a), type(b)
        if ta is torch.Tensor or tb is torch.Tensor or torch.nn.Parameter in (ta, tb):
            return a * b
        if ta is int and tb is int:
            if a.bit_length() + b.bit_length() > limits.max_int_bits:
                raise CgError("the product is too large a number")
        elif isinstance(a, (str, list, tuple)) or isinstance(b, (str, list, tuple)):
            seq, n = (a, b) if isinstance(a, (str, list, tuple)) else (b, a)
            if isinstance(n, int) and len(seq) * n > limits.max_sequence:
                raise CgError(f"repeating a sequence {n:,} times is over the cap of {limits.max_sequence:,} items")
        return a * b

    def loop_limit():
        raise CgError(
            f"while loop ran more than {limits.max_loop_iterations:,} iterations",
            hint="the loop may never end; raise the cap with --max-iterations if it really needs more",
        )

    return {
        "_cg_range": guarded_range,
        "_cg_pow": pow_,
        "_cg_mul": mul,
        "_cg_loop_limit": loop_limit,
        "_cg_limit": limits.max_loop_iterations,
        "_cg_vector_norm": torch.linalg.vector_norm,
        "_cg_scalar": _scalar,
        "zeros": creator(torch.zeros, "zeros"),
        "ones": creator(torch.ones, "ones"),
        "rand": creator(torch.rand, "rand"),
        "randn": creator(torch.randn, "randn"),
        "empty": creator(torch.zeros, "empty"),  # never hand out uninitialised memory
        "full": full,
        "arange": arange,
        "eye": eye,
    }


# --------------------------------------------------------------------------- allow-lists


def _reduce(torch_fn, py_fn):
    """``sum``/``max``/``min``: torch's on tensors, Python's on lists and numbers."""

    def fn(*args, **kw):
        if args and isinstance(args[0], torch.Tensor):
            return torch_fn(*args, **kw)
        return py_fn(*args, **kw)

    fn.__name__ = torch_fn.__name__
    return fn


def _dropout(training, x, p=0.5, training_=None, inplace=False):
    return F.dropout(x, p, training if training_ is None else training_, inplace)


def _norm(x, *args, **kw):
    return torch.linalg.vector_norm(x, *args, **kw) if not args and not kw else torch.norm(x, *args, **kw)


# Functions a program may call by name. Creation functions (zeros, rand, ...) come
# from make_guards() so their sizes are capped. One line per function.
FUNCTIONS: dict[str, object] = {
    # activations
    "relu": torch.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "elu": F.elu,
    "leaky_relu": F.leaky_relu,
    "softplus": F.softplus,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softmax": F.softmax,
    "log_softmax": F.log_softmax,
    # elementwise
    "exp": torch.exp,
    "log": torch.log,
    "log1p": torch.log1p,
    "expm1": torch.expm1,
    "sin": torch.sin,
    "cos": torch.cos,
    "tan": torch.tan,
    "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt,
    "erf": torch.erf,
    "sign": torch.sign,
    "floor": torch.floor,
    "ceil": torch.ceil,
    "clamp": torch.clamp,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "pow": torch.pow,
    "where": torch.where,
    # reductions
    "sum": _reduce(torch.sum, builtins.sum),
    "max": _reduce(torch.max, builtins.max),
    "min": _reduce(torch.min, builtins.min),
    "mean": torch.mean,
    "prod": torch.prod,
    "norm": _norm,
    "amax": torch.amax,
    "amin": torch.amin,
    "argmax": torch.argmax,
    "argmin": torch.argmin,
    "logsumexp": torch.logsumexp,
    "cumsum": torch.cumsum,
    # linear algebra
    "mm": torch.mm,
    "matmul": torch.matmul,
    "bmm": torch.bmm,
    "einsum": torch.einsum,
    "outer": torch.outer,
    "dot": torch.dot,
    "linear": F.linear,
    # shapes
    "cat": torch.cat,
    "stack": torch.stack,
    "reshape": torch.reshape,
    "flatten": torch.flatten,
    "transpose": torch.transpose,
    "permute": torch.permute,
    "unsqueeze": torch.unsqueeze,
    "squeeze": torch.squeeze,
    "chunk": torch.chunk,
    "split": torch.split,
    "tril": torch.tril,
    "triu": torch.triu,
    "masked_fill": torch.masked_fill,
    "zeros_like": torch.zeros_like,
    "ones_like": torch.ones_like,
    "rand_like": torch.rand_like,
    "randn_like": torch.randn_like,
    "full_like": torch.full_like,
    # neural-network functions
    "dropout": _dropout,  # rewritten to pass the module's training flag
    "layer_norm": F.layer_norm,
    "conv2d": F.conv2d,
    "max_pool2d": F.max_pool2d,
    "avg_pool2d": F.avg_pool2d,
    "adaptive_avg_pool2d": F.adaptive_avg_pool2d,
    "scaled_dot_product_attention": F.scaled_dot_product_attention,
    "embedding": F.embedding,
    "one_hot": F.one_hot,
    "cross_entropy": F.cross_entropy,
    "mse_loss": F.mse_loss,
    # plain Python helpers
    "len": len,
    "enumerate": enumerate,
    "zip": zip,
    "int": int,
    "float": float,
    "bool": bool,
    "abs": abs,
    "round": round,
    "range": range,  # compiled as the capped _cg_range
    # creation (capped versions bound by make_guards)
    "zeros": torch.zeros,
    "ones": torch.ones,
    "rand": torch.rand,
    "randn": torch.randn,
    "full": torch.full,
    "arange": torch.arange,
    "eye": torch.eye,
}

CONSTANT_NAMES = {"pi": math.pi, "inf": math.inf, "e": math.e}

# Attribute names a program may read (x.shape) or call (x.sum()). No name here
# reaches the interpreter from any object a program can hold: tensors, modules,
# numbers, tuples, strings, dtypes.
ATTRIBUTES = frozenset(
    """
    shape T mT H ndim dtype device data real imag is_floating_point
    sum mean std var max min amax amin argmax argmin prod cumsum norm logsumexp all any
    abs exp log log1p sqrt rsqrt pow sin cos tan tanh sigmoid relu softmax log_softmax clamp clip
    neg reciprocal sign floor ceil round square
    add sub mul div matmul mm bmm dot
    eq ne lt le gt ge
    view reshape flatten transpose permute unsqueeze squeeze contiguous size dim numel t
    expand expand_as view_as reshape_as chunk split unbind narrow flip roll
    tril triu masked_fill gather index_select topk sort
    float double half long int bool type_as detach clone item
    weight bias in_features out_features num_embeddings embedding_dim
    items keys values
    """.split()
)

STATEMENTS = {
    ast.Assign: None,
    ast.AugAssign: None,
    ast.Return: None,
    ast.If: None,
    ast.While: None,
    ast.For: None,
    ast.Break: None,
    ast.Continue: None,
    ast.Pass: None,
    ast.Expr: None,
}

EXPRESSIONS = (
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.Call,
    ast.Attribute,
    ast.Subscript,
    ast.Slice,
    ast.Tuple,
    ast.List,
    ast.Constant,
    ast.Name,
    ast.IfExp,
    ast.ListComp,
    ast.comprehension,
    ast.keyword,
)

OPERATORS = (
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.MatMult,
    ast.UAdd, ast.USub, ast.Not, ast.Invert, ast.And, ast.Or,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Is, ast.IsNot, ast.In, ast.NotIn,
    ast.Load, ast.Store,
)  # fmt: skip

# What a forbidden construct is called in an error message.
FORBIDDEN = {
    ast.Import: "import",
    ast.ImportFrom: "import",
    ast.Lambda: "lambda",
    ast.FunctionDef: "def",
    ast.AsyncFunctionDef: "def",
    ast.ClassDef: "class",
    ast.With: "with",
    ast.AsyncWith: "with",
    ast.Try: "try",
    ast.Global: "global",
    ast.Nonlocal: "nonlocal",
    ast.Delete: "del",
    ast.Raise: "raise",
    ast.Assert: "assert",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Await: "await",
    ast.NamedExpr: "the := operator",
    ast.JoinedStr: "f-strings",
    ast.Dict: "dict literals",
    ast.Set: "set literals",
    ast.DictComp: "dict comprehensions",
    ast.SetComp: "set comprehensions",
    ast.GeneratorExp: "generator expressions",
    ast.Starred: "* unpacking",
    ast.AnnAssign: "annotations",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
}
if hasattr(ast, "TryStar"):
    FORBIDDEN[ast.TryStar] = "try"
if hasattr(ast, "Match"):
    FORBIDDEN[ast.Match] = "match"


# --------------------------------------------------------------------------- parsing and checking


@dataclass
class Source:
    """Where a program's text lives: its file and the file position of its first character."""

    text: str
    file: str = "<expr>"
    line: int = 1  # file line of the text's first line
    col: int = 0  # columns added to every line (block-scalar indentation)

    def loc(self, node_or_line, col: int | None = None) -> Loc:
        if isinstance(node_or_line, ast.AST):
            line = getattr(node_or_line, "lineno", None)
            col = getattr(node_or_line, "col_offset", None)
            col = None if col is None else col + 1
        else:
            line = node_or_line
        if line is None:
            return Loc(self.file)
        return Loc(self.file, line + self.line - 1, None if col is None else col + self.col)

    def segment(self, node: ast.AST) -> str:
        """The user's text of *node* (positions are still relative to the text)."""
        text = ast.get_source_segment(self.text, node)
        return text if text is not None else ast.unparse(node)


@dataclass
class Program:
    """A checked program: its AST (positions relative to ``source.text``) and what it names."""

    tree: ast.Module
    source: Source
    assigned: list[str] = field(default_factory=list)  # names assigned, in source order, unique
    free: list[str] = field(default_factory=list)  # names read but never defined (grad's leaves)
    calls: set[str] = field(default_factory=set)  # allow-listed functions it calls
    has_return: bool = False


def parse(
    source: Source,
    known: set[str] | None = None,
    *,
    reserved: dict[str, str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Program:
    """Parse and check *source*.

    ``known`` holds the names the program may read besides the functions
    (inputs, modules, constants, args). With ``known=None`` unknown names are
    allowed and collected in ``Program.free`` (the leaves of an expression).
    ``reserved`` maps names that may be read but not rebound to what they name.
    """
    if len(source.text) > limits.max_source_chars:
        raise CgError(f"program is {len(source.text):,} characters, over the cap of {limits.max_source_chars:,}",
                      source.loc(1))
    try:
        tree = ast.parse(source.text.replace("\t", "    "), filename=source.file, mode="exec")
    except SyntaxError as e:
        bad = f" in `{e.text.strip()}`" if e.text and e.text.strip() else ""
        raise CgError(f"syntax error: {e.msg}{bad}", source.loc(e.lineno or 1, e.offset),
                      hint="the forward language is a small subset of Python") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise CgError(f"cannot parse program: {e}", source.loc(1)) from None
    checker = Checker(source, known, reserved or {})
    checker.check(tree)
    return Program(tree, source, checker.assigned, checker.free, checker.calls, checker.has_return)


class Checker(ast.NodeVisitor):
    """Accepts the language and nothing else; raises CgError at the first offence."""

    def __init__(self, source: Source, known: set[str] | None, reserved: dict[str, str] | None = None):
        self.source = source
        self.known = known
        self.reserved = reserved or {}
        self.assigned: list[str] = []
        self.free: list[str] = []
        self.calls: set[str] = set()
        self.has_return = False
        self.depth = 0

    # -- helpers
    def fail(self, node, message, hint=None):
        raise CgError(message, self.source.loc(node), hint)

    def check(self, tree: ast.Module):
        # Names assigned anywhere count as defined: a name read before it is
        # assigned on every path is caught when the program runs.
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                if node.id not in self.assigned:
                    self.assigned.append(node.id)
        for stmt in tree.body:
            self.visit(stmt)

    def generic_visit(self, node):
        kind = type(node)
        if kind in FORBIDDEN:
            self.fail(node, f"{FORBIDDEN[kind]} is not allowed in the forward language",
                      hint="allowed: assignments, return, if/elif/else, while, for, break, continue, "
                      "arithmetic, comparisons and calls of allow-listed functions")
        if kind not in STATEMENTS and not isinstance(node, EXPRESSIONS) and not isinstance(node, OPERATORS) \
                and not isinstance(node, (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)):
            self.fail(node, f"{kind.__name__} is not allowed in the forward language")
        if isinstance(node, (ast.operator, ast.unaryop, ast.cmpop, ast.boolop)) and not isinstance(node, OPERATORS):
            self.fail(node, f"operator {kind.__name__} is not allowed")
        self.depth += 1
        if self.depth > 200:
            self.fail(node, "program is nested too deeply")
        super().generic_visit(node)
        self.depth -= 1

    # -- statements
    def visit_Assign(self, node):
        for t in node.targets:
            self.check_target(t)
        self.visit(node.value)

    def visit_AugAssign(self, node):
        if not isinstance(node.target, (ast.Name, ast.Subscript)):
            self.fail(node.target, "augmented assignment needs a name")
        self.check_target(node.target)
        self.generic_visit(node.op)
        self.visit(node.value)

    def check_target(self, t):
        if isinstance(t, ast.Name):
            self.check_name(t)
            if t.id in self.reserved:
                self.fail(t, f"cannot assign to {t.id!r}: it names {self.reserved[t.id]}",
                          hint="choose another variable name")
        elif isinstance(t, (ast.Tuple, ast.List)):
            for e in t.elts:
                self.check_target(e)
        elif isinstance(t, ast.Subscript):
            self.visit(t)
        else:
            self.fail(t, f"cannot assign to {ast.unparse(t)}", hint="assign to a plain name")

    def visit_Return(self, node):
        self.has_return = True
        if node.value is not None:
            self.visit(node.value)

    def visit_For(self, node):
        if node.orelse:
            self.fail(node, "for ... else is not allowed")
        self.check_target(node.target)
        self.visit(node.iter)
        for s in node.body:
            self.visit(s)

    def visit_While(self, node):
        if node.orelse:
            self.fail(node, "while ... else is not allowed")
        self.visit(node.test)
        for s in node.body:
            self.visit(s)

    def visit_Expr(self, node):
        if not isinstance(node.value, ast.Call):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return  # a docstring-like comment
            self.fail(node, "an expression on its own does nothing", hint="assign it to a name or return it")
        self.visit(node.value)

    # -- expressions
    def check_name(self, node: ast.Name):
        if node.id.startswith("_"):
            self.fail(node, f"names starting with '_' are reserved: {node.id!r}", hint="rename it")
        if node.id == "self":
            self.fail(node, "'self' is not available in the forward language",
                      hint="refer to modules, constants and parameters by their spec names")

    def visit_Name(self, node: ast.Name):
        self.check_name(node)
        if isinstance(node.ctx, ast.Store):
            return
        name = node.id
        if name in FUNCTIONS or name in CONSTANT_NAMES or name in self.assigned:
            return
        if name in ("True", "False", "None"):
            return
        if self.known is None:
            if name not in self.free:
                self.free.append(name)
            return
        if name in self.known:
            return
        defined = sorted(self.known | set(self.assigned))
        hint = did_you_mean(name, list(self.known) + self.assigned + list(FUNCTIONS))
        listing = ", ".join(defined) if defined else "nothing"
        self.fail(node, f"unknown name {name!r} (defined here: {listing})",
                  hint=hint or "define it in the spec (inputs, modules, constants, parameters, args) or assign it first")

    def visit_Call(self, node: ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id in FUNCTIONS and func.id not in self.assigned \
                and (self.known is None or func.id not in self.known):
            self.calls.add(func.id)
        elif isinstance(func, ast.Name) and self.known is None and func.id not in self.assigned:
            hint = did_you_mean(func.id, FUNCTIONS)
            self.fail(func, f"unknown function {func.id!r}",
                      hint=hint or f"allowed functions: {', '.join(sorted(FUNCTIONS))}")
        for kw in node.keywords:
            if kw.arg is None:
                self.fail(kw, "** unpacking is not allowed")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute):
        if node.attr.startswith("_") or node.attr not in ATTRIBUTES:
            hint = did_you_mean(node.attr, ATTRIBUTES)
            self.fail(node, f"attribute .{node.attr} is not allowed",
                      hint=hint or "allowed attributes include .shape, .T, .sum(), .view(), .reshape(), .mean()")
        self.visit(node.value)

    def visit_Constant(self, node: ast.Constant):
        v = node.value
        if isinstance(v, (bytes, complex)):
            self.fail(node, f"{type(v).__name__} constants are not allowed")
        if isinstance(v, str) and len(v) > 1000:
            self.fail(node, "string constant is too long")

    def visit_ListComp(self, node):
        for gen in node.generators:
            if gen.is_async:
                self.fail(node, "async comprehensions are not allowed")
            self.check_target(gen.target)
            self.visit(gen.iter)
            for cond in gen.ifs:
                self.visit(cond)
        self.visit(node.elt)


def check_forward(source: Source, known: dict[str, str], *, limits: Limits = DEFAULT_LIMITS) -> Program:
    """Parse a spec forward. ``known`` maps each readable name to what it is ('module', 'input', ...)."""
    reserved = {k: f"a {v}" for k, v in known.items() if v in ("module", "constant", "parameter", "container")}
    prog = parse(source, set(known), reserved=reserved, limits=limits)
    if not prog.has_return:
        raise CgError("forward has no return statement", source.loc(max(1, len(source.text.splitlines()))),
                      hint="end the forward with `return <value>`")
    return prog


# --------------------------------------------------------------------------- compilation


class _Lower(ast.NodeTransformer):
    """Rewrites a checked program into the code that runs: guards, caps, dropout's flag."""

    def __init__(self, training_expr: ast.expr | None, shadowed: set[str]):
        self.counter = 0
        self.training_expr = training_expr
        self.shadowed = shadowed  # spec names and variables that hide a function of the same name

    def visit_BinOp(self, node):
        node.left = self.visit(node.left)
        node.right = self.visit(node.right)
        helper = {ast.Pow: "_cg_pow", ast.Mult: "_cg_mul"}.get(type(node.op))
        if helper is None:
            return node
        # Products and powers of literal numbers are safe and common (4 * d): keep them inline.
        if isinstance(node.left, ast.Constant) and isinstance(node.right, ast.Constant) \
                and isinstance(node.right.value, (int, float)) and abs(node.right.value) < 64 \
                and isinstance(node.left.value, (int, float)):
            return node
        call = ast.Call(ast.Name(helper, ast.Load()), [node.left, node.right], [])
        return ast.copy_location(call, node)

    def visit_AugAssign(self, node):
        # `a += b` rebinds `a` to a new value (a = a + b) rather than mutating a tensor
        # in place: no aliasing surprises, and autograd never sees an in-place op on a
        # leaf. An explicit subscript target (x[0] += 1) stays in place.
        self.generic_visit(node)
        if isinstance(node.target, ast.Name):
            binop = ast.copy_location(ast.BinOp(_as_load(node.target), node.op, node.value), node)
            return ast.copy_location(ast.Assign([node.target], self.visit_BinOp(binop)), node)
        helper = {ast.Pow: "_cg_pow", ast.Mult: "_cg_mul"}.get(type(node.op))
        if helper is None:
            return node
        load = _as_load(node.target)
        call = ast.copy_location(ast.Call(ast.Name(helper, ast.Load()), [load, node.value], []), node)
        return ast.copy_location(ast.Assign([node.target], call), node)

    def visit_Call(self, node):
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id not in self.shadowed:
            if node.func.id == "range":
                node.func = ast.copy_location(ast.Name("_cg_range", ast.Load()), node.func)
            elif node.func.id == "norm" and len(node.args) == 1 and not node.keywords:
                # the common `norm(x)`: straight to the C function, no Python wrapper
                node.func = ast.copy_location(ast.Name("_cg_vector_norm", ast.Load()), node.func)
            elif node.func.id == "dropout" and self.training_expr is not None:
                for kw in node.keywords:
                    if kw.arg == "training":
                        kw.arg = "training_"
                node.args.insert(0, self.training_expr)
        return node

    def _scalar_test(self, test):
        # `while norm(x) > 1`: compare Python numbers, not tensors. bool(t > 1) builds a
        # one-element tensor first; t.item() > 1 gives the same answer (multi-element
        # tensors still raise, meta tensors still say they have no values) ~2 µs sooner.
        if isinstance(test, ast.Compare) and all(
                isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)) for op in test.ops):
            wrap = lambda e: e if isinstance(e, ast.Constant) else ast.copy_location(  # noqa: E731
                ast.Call(ast.Name("_cg_scalar", ast.Load()), [e], []), e)
            test.left = wrap(test.left)
            test.comparators = [wrap(c) for c in test.comparators]
        elif isinstance(test, ast.BoolOp):
            test.values = [self._scalar_test(v) for v in test.values]
        elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            test.operand = self._scalar_test(test.operand)
        return test

    def visit_If(self, node):
        self.generic_visit(node)
        node.test = self._scalar_test(node.test)
        return node

    def visit_IfExp(self, node):
        self.generic_visit(node)
        node.test = self._scalar_test(node.test)
        return node

    def visit_While(self, node):
        self.generic_visit(node)
        node.test = self._scalar_test(node.test)
        self.counter += 1
        n = f"_cg_n{self.counter}"
        at = node
        init = ast.copy_location(ast.Assign([ast.Name(n, ast.Store())], ast.Constant(0)), at)
        bump = ast.copy_location(ast.AugAssign(ast.Name(n, ast.Store()), ast.Add(), ast.Constant(1)), at)
        check = ast.copy_location(
            ast.If(
                ast.Compare(ast.Name(n, ast.Load()), [ast.Gt()], [ast.Name("_cg_limit", ast.Load())]),
                [ast.Expr(ast.Call(ast.Name("_cg_loop_limit", ast.Load()), [], []))],
                [],
            ),
            at,
        )
        node.body = [bump, check] + node.body
        return [init, node]


def _as_load(target):
    if isinstance(target, ast.Name):
        return ast.copy_location(ast.Name(target.id, ast.Load()), target)
    node = ast.parse(ast.unparse(target), mode="eval").body
    return ast.copy_location(node, target)


@dataclass
class Compiled:
    """A compiled forward: the function, its readable source and its namespace."""

    fn: object
    code: str
    namespace: dict


def compile_forward(
    program: Program,
    *,
    name: str,
    params: list[str],
    prelude: list[str],
    namespace: dict,
    limits: Limits = DEFAULT_LIMITS,
    with_self: bool = True,
) -> Compiled:
    """Compile *program* into ``def forward(self, *params)``.

    ``prelude`` lines bind spec names to locals once per call (``linear =
    self._modules['linear']``), which is faster than ``self.linear`` and keeps
    buffers current after ``.to()``. ``namespace`` adds globals (args values).
    The code object's filename and line numbers are the spec's own, so a runtime
    error points at the spec.
    """
    src = program.source
    tree = ast.parse(src.text.replace("\t", "    "))  # a fresh copy to lower, positions kept
    training = ast.parse("self.training", mode="eval").body if with_self else None
    shadowed = set(program.assigned) | set(params) | set(namespace) | {line.split(" = ")[0] for line in prelude}
    lowered = _Lower(training, shadowed).visit(tree)
    header_args = (["self"] if with_self else []) + list(params)
    fn_def = ast.parse(f"def forward({', '.join(header_args)}):\n    pass").body[0]
    pre = [ast.parse(line).body[0] for line in prelude]
    first_line = lowered.body[0].lineno if lowered.body else 1
    for stmt in pre:
        for n in ast.walk(stmt):
            if hasattr(n, "lineno"):
                n.lineno = n.end_lineno = first_line
                n.col_offset = n.end_col_offset = 0
    fn_def.body = pre + lowered.body
    fn_def.lineno = first_line
    module = ast.Module(body=[fn_def], type_ignores=[])
    ast.fix_missing_locations(module)
    # shift to the user's file lines
    ast.increment_lineno(module, src.line - 1)
    readable = ast.unparse(ast.Module(body=[fn_def], type_ignores=[]))
    code = compile(module, src.file, "exec")
    glb = {"__builtins__": builtins.__dict__, "__name__": f"cgtool.spec.{name}"}
    glb.update(FUNCTIONS)
    glb.update(CONSTANT_NAMES)
    glb.update(make_guards(limits))
    glb["dropout"] = _dropout
    glb.update(namespace)
    exec(code, glb)  # noqa: S102 - the program passed the Checker; only its names are bound
    fn = glb["forward"]
    fn.__qualname__ = f"{name}.forward"
    return Compiled(fn, readable, glb)


def locate_runtime_error(exc: BaseException, files: set[str]) -> Loc | None:
    """The innermost traceback frame inside one of *files* (compiled spec code)."""
    tb = exc.__traceback__
    found = None
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename in files:
            found = Loc(code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


# --------------------------------------------------------------------------- constant expressions


def eval_constant(text: str, env: dict, place, *, what: str = "value", call=None, limits: Limits = DEFAULT_LIMITS):
    """Evaluate a constant expression (``4 * d``, ``(3, 3)``, ``d // heads``) over *env*.

    Only literals, names from *env*, arithmetic, comparisons, tuples/lists and
    (when *call* is given) calls handled by ``call(name, args, kwargs, node)``.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise CgError(f"cannot parse {what} {text!r}: {e.msg}", place) from None
    except (ValueError, RecursionError, MemoryError):
        raise CgError(f"cannot parse {what} {text!r}", place) from None
    guards = make_guards(limits)
    ops = {
        ast.Add: lambda a, b: a + b,
        ast.Sub: lambda a, b: a - b,
        ast.Mult: guards["_cg_mul"],
        ast.Div: lambda a, b: a / b,
        ast.FloorDiv: lambda a, b: a // b,
        ast.Mod: lambda a, b: a % b,
        ast.Pow: guards["_cg_pow"],
    }
    cmps = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
            ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b}
    helpers = {"int": int, "float": float, "min": min, "max": max, "round": round, "abs": abs}

    def ev(node, depth=0):
        if depth > 100:
            raise CgError(f"{what} {text!r} is nested too deeply", place)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (int, float, str, bool)) or node.value is None:
                return node.value
            raise CgError(f"{type(node.value).__name__} is not allowed in {what} {text!r}", place)
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            if node.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[node.id]
            hint = did_you_mean(node.id, env)
            known = ", ".join(sorted(env)) or "none"
            raise CgError(f"unknown name {node.id!r} in {what} {text!r} (args: {known})", place,
                          hint or "define it under `args:` or pass --arg NAME=VALUE")
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            a, b = ev(node.left, depth + 1), ev(node.right, depth + 1)
            try:
                return ops[type(node.op)](a, b)
            except CgError as e:
                raise e.with_place(place) from None
            except Exception as e:  # noqa: BLE001 - arithmetic on user values
                raise CgError(f"cannot compute {ast.unparse(node)!r}: {e}", place) from None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            v = ev(node.operand, depth + 1)
            try:
                return -v if isinstance(node.op, ast.USub) else (+v if isinstance(node.op, ast.UAdd) else not v)
            except Exception as e:  # noqa: BLE001
                raise CgError(f"cannot compute {ast.unparse(node)!r}: {e}", place) from None
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in cmps:
            return cmps[type(node.ops[0])](ev(node.left, depth + 1), ev(node.comparators[0], depth + 1))
        if isinstance(node, ast.BoolOp):
            values = node.values
            result = ev(values[0], depth + 1)
            for v in values[1:]:
                if isinstance(node.op, ast.And) and not result or isinstance(node.op, ast.Or) and result:
                    return result
                result = ev(v, depth + 1)
            return result
        if isinstance(node, ast.IfExp):
            return ev(node.body, depth + 1) if ev(node.test, depth + 1) else ev(node.orelse, depth + 1)
        if isinstance(node, ast.Tuple):
            return tuple(ev(e, depth + 1) for e in node.elts)
        if isinstance(node, ast.List):
            return [ev(e, depth + 1) for e in node.elts]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [ev(a, depth + 1) for a in node.args if not isinstance(a, ast.Starred)]
            if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
                raise CgError(f"unpacking is not allowed in {what} {text!r}", place)
            kwargs = {k.arg: ev(k.value, depth + 1) for k in node.keywords}
            if node.func.id in helpers and node.func.id not in env:
                try:
                    return helpers[node.func.id](*args, **kwargs)
                except Exception as e:  # noqa: BLE001
                    raise CgError(f"cannot compute {ast.unparse(node)!r}: {e}", place) from None
            if call is not None:
                return call(node.func.id, args, kwargs, node)
        raise CgError(f"{ast.unparse(node)!r} is not allowed in {what} {text!r}", place,
                      hint="use numbers, strings, args names, arithmetic, tuples and lists")

    return ev(tree.body)

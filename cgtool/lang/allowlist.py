"""What the forward language allows: functions, attributes, statements, expressions, operators.
"""
from __future__ import annotations
import ast
import builtins
import math
import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------- allow-lists


def _tensor_or_python(torch_fn, py_fn):
    """``sum``/``max``/``min``/``round``: torch's on tensors, Python's on lists and numbers."""

    def fn(*args, **kw):
        if args and isinstance(args[0], torch.Tensor):
            return torch_fn(*args, **kw)
        return py_fn(*args, **kw)

    fn.__name__ = torch_fn.__name__
    return fn


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# Why math refused a Python number, by function: the hint of the error (the values are in its message).
_NUMBER_DOMAINS = {
    "sqrt": "sqrt of a Python number needs one >= 0",
    "log": "log of a Python number needs one > 0",
    "log1p": "log1p of a Python number needs one > -1",
    "pow": "pow of Python numbers has no real value for a negative number to a fractional power or 0 to a "
           "negative power, and none over the largest float (about 1.8e308)",
    "exp": "exp of a Python number over about 709.78 is over the largest float (about 1.8e308)",
    "expm1": "expm1 of a Python number over about 709.78 is over the largest float (about 1.8e308)",
}


def number_math(name: str, math_fn, args: tuple):
    """*math_fn* on Python numbers; its domain and range errors as a CgError that names the values."""
    try:
        return math_fn(*args)
    except (ValueError, OverflowError, ZeroDivisionError) as e:
        from ..errors import CgError

        shown = ", ".join(repr(a) for a in args)
        why = _NUMBER_DOMAINS.get(name, f"{name} of a Python number is math's, which has no value for these")
        raise CgError(f"{name}({shown}) on Python numbers: {e}",
                      hint=f"{why}: check the args and constants {name}'s argument is computed from "
                      "(on a tensor it would give nan or inf instead)") from None


def _math_or_torch(torch_fn, math_fn, name: str | None = None, arity: int = 1):
    """``sqrt``/``exp``/``log``/``tanh``/``pow``/...: math's on Python numbers (``sqrt(2 / pi)``, a float, as in
    the reference code's ``math.sqrt``), torch's on tensors. *arity*: how many arguments math's takes."""
    name = name or torch_fn.__name__
    if arity == 1:
        def fn(x, *args, **kw):
            if not args and not kw and isinstance(x, (int, float)) and not isinstance(x, bool):
                return number_math(name, math_fn, (x,))
            return torch_fn(x, *args, **kw)
    elif arity == 2:
        def fn(*args, **kw):
            if not kw and len(args) == 2 and _is_number(args[0]) and _is_number(args[1]):
                return number_math(name, math_fn, args)
            return torch_fn(*args, **kw)
    else:
        raise ValueError(f"arity {arity}")

    fn.__name__ = name
    fn.__wrapped__ = torch_fn  # what plain PyTorch calls it on tensors (export --to python)
    return fn


def _dropout(training, x, p=0.5, training_=None, inplace=False):
    # never in place: the tensor given may be a parameter (inplace=... is refused by the checker; a
    # positional True lands here)
    return F.dropout(x, p, training if training_ is None else training_, False)


def _not_in_place(fn, *positional):
    """*fn* (F.elu, ...) with its in-place switch off, whether given by keyword or by position."""

    def call(*args, **kw):
        kw.pop("inplace", None)
        n = len(positional) + 1  # the input, then the positional options before `inplace`
        return fn(*args[:n], **kw)

    call.__name__ = fn.__name__
    call.__wrapped__ = fn  # what plain PyTorch calls it (export --to python)
    return call


def _embedding(input, weight, padding_idx=None, *rest, **kw):
    # max_norm (4th) renormalises the weight in place: never from a forward (the keyword is refused by
    # the checker; by position it is refused here)
    if rest or kw.get("max_norm") is not None:
        from ..errors import CgError

        raise CgError("embedding(..., max_norm) renormalises the weight in place, which a forward may not do",
                      hint="give embedding(ids, weight) or embedding(ids, weight, padding_idx) only; declare an "
                      "Embedding(..., max_norm=...) layer in the spec for max_norm")
    return F.embedding(input, weight, padding_idx, **kw)


_embedding.__wrapped__ = F.embedding


def _norm(x, *args, **kw):
    return torch.linalg.vector_norm(x, *args, **kw) if not args and not kw else torch.norm(x, *args, **kw)


# Functions a program may call by name. Creation functions (zeros, rand, ...) come
# from make_guards() so their sizes are capped. One line per function.
FUNCTIONS: dict[str, object] = {
    # activations
    "relu": torch.relu,
    "gelu": F.gelu,
    "silu": _not_in_place(F.silu),
    "elu": _not_in_place(F.elu, "alpha"),
    "leaky_relu": _not_in_place(F.leaky_relu, "negative_slope"),
    "softplus": F.softplus,
    "sigmoid": torch.sigmoid,
    "tanh": _math_or_torch(torch.tanh, math.tanh),
    "softmax": F.softmax,
    "log_softmax": F.log_softmax,
    # elementwise
    "exp": _math_or_torch(torch.exp, math.exp),
    "log": _math_or_torch(torch.log, math.log),
    "log1p": _math_or_torch(torch.log1p, math.log1p),
    "expm1": _math_or_torch(torch.expm1, math.expm1),
    "sin": _math_or_torch(torch.sin, math.sin),
    "cos": _math_or_torch(torch.cos, math.cos),
    "tan": _math_or_torch(torch.tan, math.tan),
    "sqrt": _math_or_torch(torch.sqrt, math.sqrt),
    "rsqrt": torch.rsqrt,
    "erf": _math_or_torch(torch.erf, math.erf),
    "sign": torch.sign,
    "floor": _math_or_torch(torch.floor, math.floor),
    "ceil": _math_or_torch(torch.ceil, math.ceil),
    "clamp": torch.clamp,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "pow": _math_or_torch(torch.pow, math.pow, arity=2),
    "where": torch.where,
    # reductions
    "sum": _tensor_or_python(torch.sum, builtins.sum),
    "max": _tensor_or_python(torch.max, builtins.max),
    "min": _tensor_or_python(torch.min, builtins.min),
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
    "addmm": torch.addmm,  # HF's Conv1D: addmm(bias, x, weight)
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
    "embedding": _embedding,
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
    "round": _tensor_or_python(torch.round, builtins.round),
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

# The allow-listed functions that compute math's on Python numbers (torch's on tensors), as math.NAME
NUMBER_FUNCTIONS = frozenset({"sqrt", "exp", "log", "log1p", "expm1", "tanh", "sin", "cos", "tan", "erf", "floor",
                              "ceil", "pow"})

# PyTorch spellings of the same functions: `torch.flatten(x, 1)`, `F.relu(x)`. A qualified name
# reaches exactly the allow-listed function of that name, and only where the real namespace has
# it too (`F.mm` is no PyTorch), so code pasted from a module means what it meant there. The
# Python helpers are not torch's: `torch.range` counts to its end inclusive, unlike `range`; and
# `torch.embedding(weight, ids)` takes its arguments the other way round from F.embedding.
_PYTHON_ONLY = frozenset({"len", "enumerate", "zip", "int", "float", "bool", "range"})
_TORCH = frozenset(n for n in FUNCTIONS if n not in _PYTHON_ONLY | {"embedding"} and hasattr(torch, n))
_FUNCTIONAL = frozenset(n for n in FUNCTIONS if n not in _PYTHON_ONLY and hasattr(F, n))
# `dtype=torch.long`, `x.to(torch.float32)`-style constants: dtypes, which a program already holds
# (`x.dtype`). Reached only as torch.NAME: a bare `float`/`int`/`bool` stays Python's.
TORCH_DTYPES: dict[str, torch.dtype] = {
    n: getattr(torch, n)
    for n in ("float32 float64 float16 bfloat16 float double half int64 int32 int16 int8 uint8 long int short bool"
              ).split()
}
QUALIFIED: dict[str, frozenset[str]] = {
    "torch": _TORCH,
    "F": _FUNCTIONAL,
    "nn.functional": _FUNCTIONAL,
    "torch.nn.functional": _FUNCTIONAL,
    # `math.sqrt(head_size)`, `math.pi` as in ported code: the same functions, on numbers math's (and on
    # tensors torch's, as the unqualified name); the constants. Nothing else of math is reachable.
    "math": NUMBER_FUNCTIONS,
}

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



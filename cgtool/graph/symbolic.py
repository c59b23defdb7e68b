"""Symbolic forms of local derivatives and of paths, keeping the expression's structure.

sympy's canonical form reorders and merges terms (``x2 + w`` prints as ``w + x2``),
which hides the lesson: a path's product should read ``b · 1 = x2 + w`` and the
total ``(x2 + w) + (x1 + w)``, in the order the user wrote. So forms are built as
small :class:`Sym` trees that print as written, with only the obvious
simplifications (``· 1`` and ``+ 0`` dropped, ``a ** 1`` is ``a``), and convert to
sympy with :meth:`Sym.to_sympy` for checking against ``sympy.diff``.

Trees share subtrees, so building the leaf form of a 40-step chain is linear, but
its printed size is exponential: every node carries its printed size (a Python
int, exact), and nothing over a cap is printed.

Derivative rules live in :data:`RULES`, one line per operation. An operation
without a rule has no symbolic form; the caller says so.
"""
from __future__ import annotations

import math
import re

# Printing precedence: higher binds tighter.
_ADD, _MUL, _NEG, _POW, _ATOM = 1, 2, 3, 4, 5
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(#\d+)?$")

DEFAULT_MAX_SIZE = 400  # tree nodes a printed form may have; beyond it forms are omitted


class Sym:
    """An expression tree node: ``num``, ``ref`` (a value by its label), an operator, a call,
    or ``group`` (parentheses kept on purpose)."""

    __slots__ = ("kind", "args", "value", "size")

    def __init__(self, kind: str, args: tuple = (), value=None):
        self.kind = kind
        self.args = args
        self.value = value  # the number (num), the label (ref) or the function name (call)
        self.size = 1 + sum(a.size for a in args)  # printed tree size, shared subtrees counted each time

    # -- printing
    def prec(self) -> int:
        if self.kind == "num":
            return _NEG if self.value < 0 else _ATOM
        if self.kind == "ref":
            return _label_prec(self.value)
        return {"add": _ADD, "sub": _ADD, "mul": _MUL, "div": _MUL, "neg": _NEG, "pow": _POW}.get(self.kind, _ATOM)

    def __str__(self) -> str:
        k, a = self.kind, self.args
        if k == "num":
            return _fmt_num(self.value)
        if k == "ref":
            return self.value
        if k == "call":
            return f"{self.value}({', '.join(str(x) for x in a)})"
        if k == "group":
            return f"({a[0]})"
        if k == "neg":
            return "-" + _wrap(a[0], a[0].prec() < _NEG or a[0].kind == "neg")
        op = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}[k]
        p = self.prec()
        if k == "pow":  # right-associative; -a ** 2 means -(a ** 2)
            return f"{_wrap(a[0], a[0].prec() <= _POW)} ** {_wrap(a[1], a[1].prec() < _POW)}"
        left = _wrap(a[0], a[0].prec() < p)
        right = _wrap(a[1], a[1].prec() <= p if k in ("sub", "div") else a[1].prec() < p)
        return f"{left} {op} {right}"

    def __repr__(self) -> str:
        return f"Sym({self})"

    def is_num(self, v=None) -> bool:
        return self.kind == "num" and (v is None or self.value == v)

    # -- sympy, for checks
    def to_sympy(self, symbols: dict | None = None):
        """The sympy expression (``symbols`` maps labels to sympy symbols; made real on demand)."""
        import sympy as sp

        symbols = {} if symbols is None else symbols
        memo: dict[int, object] = {}

        def conv(s: Sym):
            if id(s) in memo:
                return memo[id(s)]
            k = s.kind
            if k == "num":
                r = sp.nsimplify(s.value) if isinstance(s.value, float) and s.value.is_integer() else sp.sympify(s.value)
            elif k == "ref" and s.value in ("pi", "e"):  # the language's constants
                r = sp.pi if s.value == "pi" else sp.E
            elif k == "ref":
                if s.value not in symbols:
                    symbols[s.value] = sp.Symbol(s.value, real=True)
                r = symbols[s.value]
            else:
                xs = [conv(x) for x in s.args]
                if k == "add":
                    r = xs[0] + xs[1]
                elif k == "sub":
                    r = xs[0] - xs[1]
                elif k == "mul":
                    r = xs[0] * xs[1]
                elif k == "div":
                    r = xs[0] / xs[1]
                elif k == "pow":
                    r = xs[0] ** xs[1]
                elif k == "neg":
                    r = -xs[0]
                elif k == "group":
                    r = xs[0]
                else:
                    r = _SYMPY_FUNCTIONS[s.value](sp, *xs)
            memo[id(s)] = r
            return r

        return conv(self)


def _fmt_num(v) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return repr(v)
    return str(v)


def _wrap(s: Sym, parens: bool) -> str:
    return f"({s})" if parens else str(s)


def _label_prec(label: str) -> int:
    """A label is a name or a call (atoms), or the user's source text of an unnamed value,
    which is wrapped in parentheses inside any operator: it names one value."""
    if _IDENT.match(label) or _fully_parenthesised(label):
        return _ATOM
    import ast

    try:
        node = ast.parse(label, mode="eval").body
    except (SyntaxError, ValueError):
        return 0
    return _ATOM if isinstance(node, (ast.Call, ast.Name, ast.Subscript, ast.Attribute, ast.Constant)) else 0


def operand(label: str) -> str:
    """*label* as an operand of a notation such as ∂y/∂(h * h)."""
    return label if _label_prec(label) == _ATOM else f"({label})"


def _fully_parenthesised(text: str) -> bool:
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i < len(text) - 1:
            return False
    return True


# --------------------------------------------------------------------------- constructors
# Each applies only the simplifications that keep what the user wrote recognisable.


def num(v) -> Sym:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        v = int(v)
    return Sym("num", (), v)


def ref(label: str) -> Sym:
    return Sym("ref", (), label)


ONE, ZERO = num(1), num(0)


def add(a: Sym, b: Sym) -> Sym:
    if a.is_num(0):
        return b
    if b.is_num(0):
        return a
    if a.is_num() and b.is_num():
        return num(a.value + b.value)
    return Sym("add", (a, b))


def sub(a: Sym, b: Sym) -> Sym:
    if b.is_num(0):
        return a
    if a.is_num(0):
        return neg(b)
    if a.is_num() and b.is_num():
        return num(a.value - b.value)
    return Sym("sub", (a, b))


def mul(a: Sym, b: Sym) -> Sym:
    if a.is_num(0) or b.is_num(0):
        return ZERO
    if a.is_num(1):
        return b
    if b.is_num(1):
        return a
    if a.is_num(-1):
        return neg(b)
    if b.is_num(-1):
        return neg(a)
    if a.is_num() and b.is_num():
        return num(a.value * b.value)
    if a.kind == "neg":
        return neg(mul(a.args[0], b))
    if b.kind == "neg":
        return neg(mul(a, b.args[0]))
    return Sym("mul", (a, b))


def div(a: Sym, b: Sym) -> Sym:
    if b.is_num(1):
        return a
    if a.is_num(0):
        return ZERO
    return Sym("div", (a, b))


def power(a: Sym, b: Sym) -> Sym:
    if b.is_num(1):
        return a
    if b.is_num(0):
        return ONE
    return Sym("pow", (a, b))


def neg(a: Sym) -> Sym:
    if a.kind == "num":
        return num(-a.value)
    if a.kind == "neg":
        return a.args[0]
    return Sym("neg", (a,))


def call(name: str, *args: Sym) -> Sym:
    return Sym("call", tuple(args), name)


def product(factors: list[Sym]) -> Sym:
    """The factors multiplied left to right (``· 1`` dropped, a zero wins)."""
    result = ONE
    for f in factors:
        result = mul(result, f)
    return result


def total(terms: list[Sym]) -> Sym:
    """Path forms added in order; each sum kept in its own parentheses: ``(x2 + w) + (x1 + w)``."""
    terms = [t for t in terms if not t.is_num(0)]
    if len(terms) == 1:
        return terms[0]
    result = ZERO
    for t in terms:
        result = _grouped(t) if result.is_num(0) else Sym("add", (result, _grouped(t)))
    return result


def _grouped(t: Sym) -> Sym:
    # A sum inside a sum of paths keeps its parentheses, so each path stays visible.
    return Sym("group", (t,)) if t.kind in ("add", "sub", "neg") else t


def _sub1(b: Sym) -> Sym:
    return num(b.value - 1) if b.is_num() else sub(b, ONE)


# --------------------------------------------------------------------------- rules
# op -> (forward, (d/d slot 0, d/d slot 1, ...)). Derivatives take the operands' forms.
# `pos`, `sum` and `mean` are identities on scalars (symbolic forms are given for scalar graphs).

RULES: dict[str, tuple] = {
    "add": (add, (lambda a, b: ONE, lambda a, b: ONE)),
    "sub": (sub, (lambda a, b: ONE, lambda a, b: num(-1))),
    "mul": (mul, (lambda a, b: b, lambda a, b: a)),
    "div": (div, (lambda a, b: div(ONE, b), lambda a, b: neg(div(a, power(b, num(2)))))),
    "pow": (power, (lambda a, b: mul(b, power(a, _sub1(b))), lambda a, b: mul(power(a, b), call("log", a)))),
    "neg": (neg, (lambda a: num(-1),)),
    "pos": (lambda a: a, (lambda a: ONE,)),
    "sum": (lambda a: call("sum", a), (lambda a: ONE,)),
    "mean": (lambda a: call("mean", a), (lambda a: ONE,)),
    "sin": (lambda a: call("sin", a), (lambda a: call("cos", a),)),
    "cos": (lambda a: call("cos", a), (lambda a: neg(call("sin", a)),)),
    "tan": (lambda a: call("tan", a), (lambda a: add(ONE, power(call("tan", a), num(2))),)),
    "exp": (lambda a: call("exp", a), (lambda a: call("exp", a),)),
    "expm1": (lambda a: call("expm1", a), (lambda a: call("exp", a),)),
    "log": (lambda a: call("log", a), (lambda a: div(ONE, a),)),
    "log1p": (lambda a: call("log1p", a), (lambda a: div(ONE, add(ONE, a)),)),
    "sqrt": (lambda a: call("sqrt", a), (lambda a: div(ONE, mul(num(2), call("sqrt", a))),)),
    "rsqrt": (lambda a: call("rsqrt", a), (lambda a: neg(div(call("rsqrt", a), mul(num(2), a))),)),
    "tanh": (lambda a: call("tanh", a), (lambda a: sub(ONE, power(call("tanh", a), num(2))),)),
    "sigmoid": (lambda a: call("sigmoid", a), (lambda a: mul(call("sigmoid", a), sub(ONE, call("sigmoid", a))),)),
    "softplus": (lambda a: call("softplus", a), (lambda a: call("sigmoid", a),)),
    "relu": (lambda a: call("relu", a), (lambda a: call("step", a),)),
    "abs": (lambda a: call("abs", a), (lambda a: call("sign", a),)),
    "square": (lambda a: call("square", a), (lambda a: mul(num(2), a),)),
    "reciprocal": (lambda a: call("reciprocal", a), (lambda a: neg(div(ONE, power(a, num(2)))),)),
    "erf": (lambda a: call("erf", a), (lambda a: mul(div(num(2), call("sqrt", ref("pi"))), call("exp", neg(power(a, num(2))))),)),
}

# How the calls above read in sympy (step is relu's derivative: 0 at 0, as in torch).
_SYMPY_FUNCTIONS = {
    "sin": lambda sp, a: sp.sin(a),
    "cos": lambda sp, a: sp.cos(a),
    "tan": lambda sp, a: sp.tan(a),
    "exp": lambda sp, a: sp.exp(a),
    "expm1": lambda sp, a: sp.exp(a) - 1,
    "log": lambda sp, a: sp.log(a),
    "log1p": lambda sp, a: sp.log(1 + a),
    "sqrt": lambda sp, a: sp.sqrt(a),
    "rsqrt": lambda sp, a: 1 / sp.sqrt(a),
    "tanh": lambda sp, a: sp.tanh(a),
    "sigmoid": lambda sp, a: 1 / (1 + sp.exp(-a)),
    "softplus": lambda sp, a: sp.log(1 + sp.exp(a)),
    "relu": lambda sp, a: sp.Max(0, a),
    "step": lambda sp, a: sp.Heaviside(a, 0),
    "abs": lambda sp, a: sp.Abs(a),
    "sign": lambda sp, a: sp.sign(a),
    "square": lambda sp, a: a**2,
    "reciprocal": lambda sp, a: 1 / a,
    "erf": lambda sp, a: sp.erf(a),
    "sum": lambda sp, a: a,
    "mean": lambda sp, a: a,
}


def forward(op: str, operands: list[Sym]) -> Sym | None:
    """The form of ``op`` applied to *operands*, or None when there is no rule for it."""
    rule = RULES.get(op)
    if rule is None or len(rule[1]) != len(operands):
        return None
    return rule[0](*operands)


def derivative(op: str, operands: list[Sym], slot: int) -> Sym | None:
    """∂ op(operands) / ∂ operands[slot], or None when there is no rule for it."""
    rule = RULES.get(op)
    if rule is None or len(rule[1]) != len(operands):
        return None
    return rule[1][slot](*operands)


def shown(s: Sym | None, max_size: int = DEFAULT_MAX_SIZE) -> str | None:
    """The printed form, or None when it is over the size cap."""
    if s is None or s.size > max_size:
        return None
    return str(s)


def constant(value) -> Sym | None:
    """A number as a form; None for anything else (tensors, strings)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return ref(repr(value))
    return num(value)

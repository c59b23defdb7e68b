"""Spec values (`4 * d`, `(3, 3)`, `Linear(d, 4 * d)`): expressions of the forward language over the spec's args.

A value is the program ``return <value>``: parsed and checked by the language's checker
(:func:`cgtool.lang.parse`, allowed to call only the functions a value may call), compiled by
its compiler (:func:`cgtool.lang.compile_forward`, with the same guards on huge numbers and
sequences as a forward) and run once per use. A value uses a part of the language: literals,
the spec's args, arithmetic, comparisons, boolean ops, conditional expressions, tuples, lists
and calls of plain names; no attributes, subscripts or comprehensions. Compiled values are
kept by text, so a value repeated across layers and specs compiles once.
"""
from __future__ import annotations
import ast
import re
import dataclasses
import functools
from dataclasses import dataclass
from .. import lang
from ..errors import CgError, did_you_mean
from ..lang.limits import DEFAULT_LIMITS, Limits


# Functions any value may call (an arg of the same name hides one). With a `call` callback,
# every other name a value calls is a layer constructor, handed to the callback.
HELPERS = {"int": int, "float": float, "min": min, "max": max, "round": round, "abs": abs}

# The part of the language a value may use.
_EXPRESSIONS = (ast.Constant, ast.Name, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp,
                ast.IfExp, ast.Tuple, ast.List, ast.Call, ast.keyword, ast.Subscript, ast.Slice)
_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.UAdd, ast.USub, ast.Not,
              ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.And, ast.Or)
_GRAMMAR = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)  # checked with their node
_CONSTANTS = (int, float, str, bool, type(None))
_MAX_DEPTH = 100
_HINT = "use numbers, strings, args names, arithmetic, tuples, lists and indexing (channels[0])"
_FILE = "<spec value>"  # the compiled code's file name, to find its frame in a traceback
_MAX_COMPILED = 4096


# --------------------------------------------------------------------------- reading a value


@dataclass(frozen=True)
class _Reading:
    """A value's text read once (as one expression): its tree, or why it does not read."""

    tree: ast.Expression | None
    syntax_error: str | None = None  # ": <message>" or ""
    outside: tuple[str, str | None] | None = None  # what it may not use and a hint; ("", None): too deep
    names: tuple[str, ...] = ()  # names read as values, in order
    called: frozenset[str] = frozenset()  # names called


@functools.lru_cache(maxsize=_MAX_COMPILED)
def _read(text: str) -> _Reading:
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        return _Reading(None, f": {e.msg}")
    except (ValueError, RecursionError, MemoryError):
        return _Reading(None, "")
    return _scan(tree)


def _scan(tree: ast.Expression) -> _Reading:
    """One pass over *tree*: the first part a value may not use, the names it reads and calls."""
    outside, names, called = None, {}, set()
    stack = [(tree.body, 0)]
    while stack:
        node, depth = stack.pop()
        if outside is None and depth > _MAX_DEPTH:
            outside = "", None
        elif outside is None and not _allowed(node):
            outside = _refused(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            called.add(node.func.id)
            children = [*node.args, *node.keywords]
        else:
            if isinstance(node, ast.Name):
                names[node.id] = None
            children = [c for c in ast.iter_child_nodes(node) if not isinstance(c, _GRAMMAR)]
        below = depth if isinstance(node, ast.keyword) else depth + 1  # `k=v`: v is one level below the call
        stack.extend((child, below) for child in reversed(children))
    return _Reading(tree, None, outside, tuple(names), frozenset(called))


def _refused(node: ast.AST) -> tuple[str, str | None]:
    if isinstance(node, ast.Constant):
        return type(node.value).__name__, None
    if isinstance(node, ast.Starred) or isinstance(node, ast.keyword) and node.arg is None:
        return "unpacking", None
    return repr(ast.unparse(node)), _HINT


def _allowed(node: ast.AST) -> bool:
    if not isinstance(node, _EXPRESSIONS):
        return False
    if isinstance(node, ast.Constant):
        return isinstance(node.value, _CONSTANTS)
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name)
    if isinstance(node, ast.keyword):
        return node.arg is not None
    if isinstance(node, ast.Compare):
        return len(node.ops) == 1 and isinstance(node.ops[0], _OPERATORS)
    if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.BoolOp)):
        return isinstance(node.op, _OPERATORS)
    return True


# --------------------------------------------------------------------------- evaluating a value


_NN_PREFIX = re.compile(r"(?<![\w.])(?:torch\.)?nn\.([A-Z]\w*)")


def plain_nn(text: str) -> str:
    """``nn.ReLU6`` and ``torch.nn.Linear(...)`` as reference code writes them: the class names a spec uses
    (``ReLU6``, ``Linear(...)``). Only torch.nn module classes lose the prefix; anything else stays as written
    (and is refused as an attribute)."""
    if "nn." not in text:
        return text
    return _NN_PREFIX.sub(lambda m: m.group(1) if is_layer_class(m.group(1)) else m.group(0), text)


class ArgText(str):
    """An arg's value as typed on the command line (``--arg d=64``): read as the spec reads its own values. Any
    other string given for an arg (the Python API, an include's evaluated args) is that string."""


def string_value(text: str, env: dict, place, *, what: str = "value", limits: Limits = DEFAULT_LIMITS):
    """A string in a spec: `4 * d` → a number; `relu` (not an arg) → the string itself; `4 * dd` → an error."""
    if "nn." in text:
        plain = plain_nn(text)
        if plain != text:  # `act: nn.ReLU6` is the class name ReLU6
            return string_value(plain, env, place, what=what, limits=limits)
    reading = _read(text.strip())
    body = reading.tree.body if reading.tree is not None else None
    if text.strip().endswith((".yaml", ".yml")) and " " not in text.strip():
        return str(text)  # a spec file's name, for spec(block, ...)
    if body is None or isinstance(body, ast.Name) and body.id not in env:
        return str(text)  # a plain word: a string argument such as `same` or `relu`
    if isinstance(body, ast.Constant):
        if getattr(text, "quoted", False) and not isinstance(body.value, str):
            return str(text)  # YAML quotes make a string: "1_0" is the string 1_0, not the number 10
        return body.value  # a number, True/False/None, or a string literal ('1_0' is 1_0)
    if not reading.names and not reading.called and not isinstance(body, (ast.BinOp, ast.UnaryOp, ast.Tuple,
                                                                           ast.List)):
        return str(text)
    return eval_constant(text, env, place, what=what, limits=limits)


def eval_constant(text: str, env: dict, place, *, what: str = "value", call=None, limits: Limits = DEFAULT_LIMITS):
    """Evaluate a spec value (``4 * d``, ``(3, 3)``, ``d // heads``) over the args in *env*.

    With *call*, every name the value calls other than the helpers is a layer constructor:
    ``call(name, args, kwargs)`` builds what the value holds for it, innermost call first.
    """
    stripped = plain_nn(text.strip())
    reading = _read(stripped)
    if reading.tree is None:
        raise CgError(f"cannot parse {what} {text!r}{reading.syntax_error}", place)
    if reading.outside == ("", None):
        raise CgError(f"{what} {text!r} is nested too deeply", place)
    if reading.outside is not None:
        subject, hint = reading.outside
        raise CgError(f"{subject} is not allowed in {what} {text!r}", place, hint=hint)
    classes = _class_names(reading, env) if call is not None else {}
    env = {k: v for k, v in env.items() if k not in classes}
    params = tuple(n for n in (*reading.names, *sorted(reading.called)) if n in env)
    try:
        compiled = _compiled(stripped, reading.called if call is not None else frozenset(), params, limits,
                             tuple(sorted(classes.items())))
    except CgError as e:  # what the language's checker refused
        raise CgError(f"{e.message} in {what} {text!r}", place, e.hint) from None
    _check_names(reading, {**env, **classes}, what, text, place)
    value = _run(compiled, [env[n] for n in params], place)
    return value if call is None else _finish(value, call)


def is_layer_class(name: str) -> bool:
    """Whether *name* is a torch.nn module class: what a layer constructor may name (the builder checks it)."""
    import torch.nn as nn

    obj = getattr(nn, name, None) if name[:1].isupper() else None
    return isinstance(obj, type) and issubclass(obj, nn.Module)


def _class_names(reading: _Reading, env: dict) -> dict[str, str]:
    """Classes as arguments, in a value with layer constructors: an arg holding a class name and called
    (`activation_layer(inplace=True)` with activation_layer: ReLU6) constructs that class; a torch.nn class
    named as a value (`norm_layer=BatchNorm2d`) is its name. Only names: the builder constructs torch.nn classes
    and nothing else."""
    out = {n: env[n] for n in reading.called if n in env and isinstance(env[n], str) and env[n].isidentifier()}
    out.update({n: n for n in reading.names if n not in env and is_layer_class(n)})
    return out


def _check_names(reading: _Reading, env, what, text, place):
    for name in reading.names:
        if name not in env:
            hint = did_you_mean(name, env)
            if name == "training":
                hint = ("`training` is the module's flag, read in the forward only (dropout_p=p if training else 0.0):"
                        " what a module holds cannot depend on it")
            known = ", ".join(sorted(env)) or "none"
            raise CgError(f"unknown name {name!r} in {what} {text!r} (args: {known})", place,
                          hint or "define it under `args:` or pass --arg NAME=VALUE")


# --------------------------------------------------------------------------- compiling and running


@dataclass(frozen=True)
class _Compiled:
    fn: object  # fn(*values of params) -> the value
    tree: ast.Module  # the checked program, to name the part that failed


_COMPILED: dict[tuple, _Compiled] = {}


def _compiled(text: str, constructors: frozenset[str], params: tuple[str, ...], limits: Limits,
              classes: tuple = ()) -> _Compiled:
    """The value's compiled program, from the cache when the same text was compiled before."""
    key = (text, constructors, params, tuple(getattr(limits, f.name) for f in dataclasses.fields(limits)), classes)
    found = _COMPILED.get(key)
    if found is None:
        if len(_COMPILED) >= _MAX_COMPILED:
            _COMPILED.clear()
        found = _COMPILED[key] = _compile(text, constructors, params, limits, dict(classes))
    return found


def _compile(text: str, constructors: frozenset[str], params: tuple[str, ...], limits: Limits,
             classes: dict | None = None) -> _Compiled:
    """``return <text>`` checked and compiled into ``fn(*params)``; args hide functions of the same name."""
    functions = {name: fn for name, fn in HELPERS.items() if name not in params}
    functions.update({name: _constructor(cls) for name, cls in (classes or {}).items()})
    functions.update({name: _constructor(name) for name in constructors if name not in functions
                      and name not in params})
    program = lang.parse(lang.Source(f"return {text}", file=_FILE), None, limits=limits, functions=functions)
    compiled = lang.compile_forward(program, name="value", params=list(params), prelude=[], namespace=functions,
                                    limits=limits, with_self=False)
    return _Compiled(compiled.fn, program.tree)


def _run(compiled: _Compiled, values: list, place):
    try:
        return compiled.fn(*values)
    except CgError as e:
        raise e.with_place(place) from None
    except Exception as e:  # noqa: BLE001 - arithmetic on user values
        raise CgError(f"cannot compute {_failed_part(e, compiled.tree)!r}: {e}", place) from None


def _failed_part(exc: BaseException, tree: ast.Module) -> str:
    """The text of the operation that raised *exc* inside a compiled value (the whole value if unknown)."""
    position = None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == _FILE and hasattr(code, "co_positions"):
            position = list(code.co_positions())[tb.tb_lasti // 2]
        tb = tb.tb_next
    value = tree.body[0].value
    for node in ast.walk(value):
        if isinstance(node, ast.expr) and position == (node.lineno, node.end_lineno, node.col_offset,
                                                       node.end_col_offset):
            return ast.unparse(node)
    return ast.unparse(value)


# --------------------------------------------------------------------------- layer constructor calls


class _Construction:
    """A constructor call a value made; the caller's `call` turns it into its own record."""

    __slots__ = ("name", "args", "kwargs")

    def __init__(self, name: str, args: tuple, kwargs: dict):
        self.name, self.args, self.kwargs = name, args, kwargs


def _constructor(name: str):
    def construct(*args, **kwargs):
        return _Construction(name, args, kwargs)

    construct.__name__ = name
    construct.cg_class = name  # passed on as a value (`norm_layer=BatchNorm2d`), it is the class's name
    return construct


def _finish(value, call):
    """*value* with each constructor call handed to *call*, innermost first."""
    if isinstance(value, _Construction):
        return call(value.name, [_finish(a, call) for a in value.args],
                    {k: _finish(v, call) for k, v in value.kwargs.items()})
    if isinstance(value, list):
        return [_finish(v, call) for v in value]
    if type(value) is tuple:
        return tuple(_finish(v, call) for v in value)
    if callable(value) and isinstance(getattr(value, "cg_class", None), str):
        return value.cg_class
    return value


# --------------------------------------------------------------------------- generated layer lists

_PYTHON_HELPERS = ("range", "len", "enumerate", "zip")
MAX_GENERATED = 10_000  # entries of one generated layer list


_APPEND = re.compile(r"^(\s*)layers\.(append|extend)\(")


def _appends_as_adds(body: str) -> str:
    """``layers.append(X)`` / ``layers.extend(X)`` on one line, as reference code writes them, read as
    ``layers += [X]`` / ``layers += X`` (the language has no methods); every other column stays where it was,
    so errors point at the text as written. The call's end is found by Python's tokenizer (a comment or a string
    may hold brackets); a call of another shape (two arguments, text after it) is left as written."""
    out = []
    for line in body.split("\n"):
        m = _APPEND.match(line)
        end = _call_end(line, m.end() - 1) if m is not None else None
        if end is not None:
            indent, method = m.group(1), m.group(2)
            inner, tail = line[m.end():end], line[end + 1:]
            line = (f"{indent}layers +=    [{inner}]{tail}" if method == "append"
                    else f"{indent}layers +=     {inner} {tail}")
        out.append(line)
    return "\n".join(out)


def _call_end(line: str, opening: int) -> int | None:
    """The column of the `)` closing the `(` at *opening*, when one argument is between them and nothing but a
    comment follows; else None."""
    import io
    import tokenize

    depth, end = 0, None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(line[opening:]).readline):
            if end is not None:
                if tok.type not in (tokenize.COMMENT, tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
                    return None
                continue
            if tok.type == tokenize.OP and tok.string in "([{":
                depth += 1
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth -= 1
                if depth == 0:
                    end = opening + tok.start[1]
            elif tok.type == tokenize.OP and tok.string == "," and depth == 1:
                return None  # append(a, b): Python's error, not two entries
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    return end


def generate(text: str, env: dict, source: "lang.Source", place, *, call, limits: Limits = DEFAULT_LIMITS) -> list:
    """A layer list written as the reference code builds it, over the args: one expression (``[Linear(d, d) for _
    in range(n)]``) or statements that add to ``layers`` (``layers += [Conv2d(c, v, 3), ReLU()]``), checked by the
    language's checker and run with its guards. Every other name called is a layer constructor, handed to *call*."""
    body = plain_nn(_appends_as_adds(source.text))
    try:
        ast.parse(body.strip(), mode="eval")
        program_text, prelude = f"return {' '.join(body.split())}", []
    except SyntaxError:
        program_text, prelude = f"{body.rstrip()}\nreturn layers", ["layers = []"]
        if "layers" in env:
            raise CgError("an arg named `layers` would hide the list the program builds", place,
                          hint="rename the arg (depths, n_layers), or write the list as one comprehension") from None
    try:
        called = {n.func.id for n in ast.walk(ast.parse(program_text)) if isinstance(n, ast.Call)
                  and isinstance(n.func, ast.Name)}
        names = {n.id for n in ast.walk(ast.parse(program_text)) if isinstance(n, ast.Name)}
    except (SyntaxError, ValueError, RecursionError):
        called, names = set(), set()  # the checker reports it, at its place
    classes = {n: env[n] for n in called if n in env and isinstance(env[n], str) and env[n].isidentifier()}
    classes.update({n: n for n in names if n not in env and is_layer_class(n)})
    params = [n for n in env if n not in classes and n in names]
    functions = {n: fn for n, fn in HELPERS.items() if n not in params}
    functions.update({n: lang.FUNCTIONS[n] for n in _PYTHON_HELPERS if n not in params})
    functions.update({n: _constructor(c) for n, c in classes.items()})
    functions.update({n: _constructor(n) for n in called if n not in functions and n not in params})
    src = lang.Source(program_text, file=source.file, line=source.line, col=source.col)
    try:
        program = lang.parse(src, None, limits=limits, functions=functions)
    except CgError as e:
        if e.message in ("attribute .append is not allowed", "attribute .extend is not allowed"):
            raise CgError(e.message, e.place, "layers.append(X) and layers.extend([X, Y]) take one argument, on a "
                          "line of their own; or write layers += [X, Y]") from None
        raise
    unknown = [n for n in program.free if n not in params and n != "layers"]
    if unknown:
        hint = did_you_mean(unknown[0], env)
        raise CgError(f"unknown name {unknown[0]!r} in the generated layers (args: {', '.join(sorted(env)) or 'none'})",
                      place, hint or "define it under `args:`, or assign it in the program first")
    compiled = lang.compile_forward(program, name="layers", params=params, prelude=prelude,
                                    namespace=functions, limits=limits, with_self=False)
    try:
        value = compiled.fn(*[env[n] for n in params])
    except CgError as e:
        raise e.with_place(place) from None
    except Exception as e:  # noqa: BLE001 - arithmetic on user values
        where = lang.locate_runtime_error(e, {source.file})
        raise CgError(f"cannot generate the layers: {type(e).__name__}: {e}", where or place,
                      hint="the program runs on the args' values: check the ones this line reads") from None
    if not isinstance(value, (list, tuple)):
        found = f"{value.name}(...)" if isinstance(value, _Construction) else type(value).__name__
        raise CgError(f"generated layers must be a list, found {found}", place,
                      hint="end with a list of layer calls, or add to `layers` (layers += [Linear(d, d)]); named "
                           "entries are a YAML mapping (or repeat: {count, names})")
    if len(value) > MAX_GENERATED:
        raise CgError(f"{len(value):,} generated layers, over the cap of {MAX_GENERATED:,}", place)
    return _shared_as_refs(list(value), call, place)


def _shared_as_refs(value: list, call, place) -> list:
    """The entries, with Python's sharing kept: one layer object listed again (``[Linear(d, d)] * 3``, or
    ``l = Linear(d, d)`` then ``[l, ReLU(), l]``) is the same module, as a ``{ref: N}`` to its first place
    (counted after None entries are left out, as the list's indices are). One object inside another layer's
    arguments as well is refused: the builder could not share it."""
    first: dict[int, int] = {}  # id of a construction listed -> its index among the entries kept
    out, kept = [], 0
    for v in value:
        if isinstance(v, _Construction) and id(v) in first:
            out.append({"ref": str(first[id(v)])})
        else:
            if isinstance(v, _Construction):
                first[id(v)] = kept
            out.append(_finish(v, call))
        kept += v is not None
    seen: set[int] = set()
    stack = [a for v in value if isinstance(v, _Construction) for a in (*v.args, *v.kwargs.values())]
    while stack:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, _Construction):
            if id(v) in seen or id(v) in first:
                raise CgError(f"one {v.name}(...) object is used twice, inside another layer's arguments: Python "
                              "would share it, and the spec cannot", place,
                              hint="list it once and share it with {ref: N}, or construct it twice")
            seen.add(id(v))
            stack.extend((*v.args, *v.kwargs.values()))
    return out

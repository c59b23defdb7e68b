"""Parsing and checking: the language, and nothing else, gets through.
"""
from __future__ import annotations
import ast
import warnings
from dataclasses import dataclass, field
from ..errors import CgError, Loc, did_you_mean
from .allowlist import (ATTRIBUTES, CONSTANT_NAMES, EXPRESSIONS, FORBIDDEN, FUNCTIONS, OPERATORS, QUALIFIED,
                        STATEMENTS, TORCH_DTYPES)
from .limits import DEFAULT_LIMITS, Limits


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


QUOTE_CHARS = 80  # of a line quoted in a syntax error


def parse(
    source: Source,
    known: set[str] | None = None,
    *,
    reserved: dict[str, str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    functions: dict[str, object] | None = None,
    self_names: set[str] | None = None,
) -> Program:
    """Parse and check *source*.

    ``known`` holds the names the program may read besides the functions
    (inputs, modules, constants, args). With ``known=None`` unknown names are
    allowed and collected in ``Program.free`` (the leaves of an expression).
    ``reserved`` maps names that may be read but not rebound to what they name.
    ``functions`` are the names the program may call (default: all of ``FUNCTIONS``).
    ``self_names`` are the names a forward may also read as ``self.NAME`` (None: no ``self``).
    ``F.NAME``, ``torch.NAME`` and ``torch.nn.functional.NAME`` reach the allow-listed functions;
    ``Program.tree`` has them, and ``self.NAME``, resolved to the language's own names.
    """
    if len(source.text) > limits.max_source_chars:
        raise CgError(f"program is {len(source.text):,} characters, over the cap of {limits.max_source_chars:,}",
                      source.loc(1))
    try:
        with warnings.catch_warnings():  # Python's own SyntaxWarnings are not for the user's terminal
            warnings.simplefilter("ignore")
            tree = ast.parse(source.text.replace("\t", "    "), filename=source.file, mode="exec")
    except SyntaxError as e:
        # Quote the program's own line: e.text may have been read from the file named by
        # source.file, whose line e.lineno is some other line (the YAML around a forward).
        lines = source.text.splitlines()
        text = (lines[e.lineno - 1] if e.lineno and 0 < e.lineno <= len(lines) else "").strip()
        if len(text) > QUOTE_CHARS:  # a long line is quoted around the error, not whole
            at = max(0, min(len(text) - QUOTE_CHARS, (e.offset or 1) - 1 - QUOTE_CHARS // 2))
            text = ("…" if at else "") + text[at:at + QUOTE_CHARS] + ("…" if at + QUOTE_CHARS < len(text) else "")
        bad = f" in `{text}`" if text else ""
        raise CgError(f"syntax error: {e.msg}{bad}", source.loc(e.lineno or 1, e.offset),
                      hint="the forward language is a small subset of Python") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise CgError(f"cannot parse program: {e}", source.loc(1)) from None
    checker = Checker(source, known, reserved or {}, functions=functions, self_names=self_names)
    checker.check(tree)
    tree = _Resolve(checker.resolved).visit(tree)
    return Program(tree, source, checker.assigned, checker.free, checker.calls, checker.has_return)


def _dotted(node: ast.expr) -> list[str] | None:
    """``['torch', 'nn', 'functional', 'relu']`` for that chain of plain names; None otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


SELF_MODULE = "_cg_self_module"  # the local that holds a submodule named `self`


class _Resolve(ast.NodeTransformer):
    """Replaces each checked ``self.NAME`` / ``F.NAME`` / ``torch.NAME`` (and a bare ``training``) by the name it
    reads."""

    def __init__(self, resolved: dict[int, str]):
        self.resolved = resolved

    def visit_Name(self, node):
        name = self.resolved.get(id(node))
        return node if name is None else ast.copy_location(ast.Name(name, ast.Load()), node)

    def visit_Attribute(self, node):
        name = self.resolved.get(id(node))
        if name is None:
            return self.generic_visit(node)
        resolved = ast.copy_location(ast.Name(name, ast.Load()), node)
        if isinstance(node.value, ast.Name) and node.value.id == "math":
            resolved.cg_math = True  # written math.NAME: export --to python writes it so
        return resolved


class Checker(ast.NodeVisitor):
    """Accepts the language and nothing else; raises CgError at the first offence."""

    def __init__(self, source: Source, known: set[str] | None, reserved: dict[str, str] | None = None,
                 functions: dict[str, object] | None = None, self_names: set[str] | None = None):
        self.source = source
        self.self_names = self_names
        self.resolved: dict[int, str] = {}  # id of a self.NAME / F.NAME node -> the name it reads
        self.functions = FUNCTIONS if functions is None else functions
        self.known = known
        self.reserved = reserved or {}
        self.assigned: list[str] = []
        self.bound: set[str] = set()  # names assigned so far, in the order the program runs them
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
            what = FORBIDDEN[kind]
            verb = "are" if what.endswith("s") and what != "class" else "is"  # f-strings, dict literals, ...
            self.fail(node, f"{what} {verb} not allowed in the forward language",
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
        self.visit(node.value)  # the value is read before the targets are bound: `x = x * 2`
        for t in node.targets:
            self.check_target(t)

    def visit_AugAssign(self, node):
        if not isinstance(node.target, (ast.Name, ast.Subscript)):
            self.fail(node.target, "augmented assignment needs a name")
        if isinstance(node.target, ast.Name):
            self.visit_Name(ast.copy_location(ast.Name(node.target.id, ast.Load()), node.target))
        self.generic_visit(node.op)
        self.visit(node.value)
        self.check_target(node.target)

    def check_target(self, t):
        if isinstance(t, ast.Name) and t.id == "_":
            return  # a throwaway target (`x, _ = attn(x, x, x)`); reading `_` stays refused
        if isinstance(t, ast.Name):
            self.check_name(t)
            self.bound.add(t.id)
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
        self.visit(node.iter)
        self.check_target(node.target)
        self._loop_body(node.body)

    def visit_While(self, node):
        if node.orelse:
            self.fail(node, "while ... else is not allowed")
        self.visit(node.test)
        self._loop_body(node.body)

    def _loop_body(self, body):
        self.loops = getattr(self, "loops", 0) + 1
        try:
            for s in body:
                self.visit(s)
        finally:
            self.loops -= 1

    def visit_Break(self, node):
        if not getattr(self, "loops", 0):
            self.fail(node, "`break` outside a loop", hint="break ends a for or while loop; use return to end the forward")

    def visit_Continue(self, node):
        if not getattr(self, "loops", 0):
            self.fail(node, "`continue` outside a loop", hint="continue goes on with the next turn of a for or while loop")

    def visit_Expr(self, node):
        if not isinstance(node.value, ast.Call):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return  # a docstring-like comment
            self.fail(node, "an expression on its own does nothing", hint="assign it to a name or return it")
        self.visit(node.value)

    # -- expressions
    def check_name(self, node: ast.Name):
        if node.id.startswith("_"):
            if node.id == "_":
                self.fail(node, "`_` cannot be read: it is the throwaway target",
                          hint="`_` is write-only, for a value to drop (`x, _ = attn(x, x, x)`); to use the "
                          "value, give it a name: `x, weights = attn(x, x, x)`")
            self.fail(node, f"names starting with '_' are reserved: {node.id!r}", hint="rename it")
        if node.id == "self":
            if self.self_names is None:
                self.fail(node, "'self' is not available here", hint="refer to values by their names")
            self.fail(node, "'self' is not available on its own in the forward language",
                      hint="read the spec's modules, constants and parameters as self.NAME or NAME")

    def visit_Name(self, node: ast.Name):
        self.check_name(node)
        if isinstance(node.ctx, ast.Store):
            return
        name = node.id
        if name in ("True", "False", "None"):
            return
        if self.known is None:
            # An expression's leaves are the names read before they are assigned (`x = x * 2`
            # reads the leaf x and binds its second version), functions and constants aside.
            if name not in self.bound and name not in self.free and name not in self.functions \
                    and name not in CONSTANT_NAMES:
                self.free.append(name)
            return
        if name in self.functions or name in CONSTANT_NAMES or name in self.assigned:
            return
        if name in self.known:
            return
        if name == "training" and self.self_names is not None:  # the module's mode, as self.training
            self.resolved[id(node)] = "_cg_training"
            return
        defined = sorted(self.known | set(self.assigned))
        hint = did_you_mean(name, list(self.known) + self.assigned + list(self.functions))
        if name == "math":  # math on its own: only math.NAME reaches anything
            hint = "math is read as math.NAME: " + ", ".join(
                sorted(n for n in QUALIFIED["math"] if n in self.functions) + sorted(CONSTANT_NAMES))
        listing = ", ".join(defined) if defined else "nothing"
        self.fail(node, f"unknown name {name!r} (defined here: {listing})",
                  hint=hint or "define it in the spec (inputs, modules, constants, parameters, args) or assign it first")

    def visit_Call(self, node: ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id in self.functions and func.id not in self.assigned \
                and (self.known is None or func.id not in self.known):
            self.calls.add(func.id)
        elif isinstance(func, ast.Name) and self.known is None and func.id not in self.assigned:
            hint = did_you_mean(func.id, self.functions)
            self.fail(func, f"unknown function {func.id!r}",
                      hint=hint or f"allowed functions: {', '.join(sorted(self.functions))}")
        seen = set()
        for kw in node.keywords:
            if kw.arg is None:
                self.fail(kw, "** unpacking is not allowed")
            if kw.arg in seen:  # Python's parser lets it through; its compiler would fail
                self.fail(kw, f"keyword argument {kw.arg}= is given twice", hint=f"keep one {kw.arg}=")
            seen.add(kw.arg)
            # a layer class (ReLU(inplace=True) in generated layers, act(inplace=True) with act: ReLU6) configures
            # the layer it makes, whose forward is the model's own; an allow-listed function or a tensor method
            # called with out= or inplace= writes into an existing tensor
            constructor = isinstance(func, ast.Name) and func.id not in FUNCTIONS
            if kw.arg in _WRITING_KEYWORDS and not constructor and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value in (False, None)):
                self.fail(kw, f"{kw.arg}= writes into an existing tensor, which a forward may not do",
                          hint=_WRITING_KEYWORDS[kw.arg])
        self.generic_visit(node)

    def defines(self, name: str) -> bool:
        """Whether the program or the spec gives *name* a value (which then hides ``torch``, ``F``, ...)."""
        return name in self.assigned or (self.known is not None and name in self.known)

    def visit_Attribute(self, node: ast.Attribute):
        parts = _dotted(node)
        if parts is not None and parts[0] == "self" and len(parts) == 2 and self.self_names is not None:
            return self.check_self(node)
        if parts is not None and parts[0] in _NAMESPACE_ROOTS and not self.defines(parts[0]):
            return self.check_qualified(node, parts)
        if node.attr.startswith("_") or node.attr not in ATTRIBUTES:
            hint = _ATTRIBUTE_HINTS.get(node.attr) or did_you_mean(node.attr, ATTRIBUTES)
            self.fail(node, f"attribute .{node.attr} is not allowed",
                      hint=hint or "allowed attributes include .shape, .T, .sum(), .view(), .reshape(), .mean()")
        self.visit(node.value)

    def check_self(self, node: ast.Attribute):
        """``self.linear``: a module, constant, parameter or arg of the spec, as in a PyTorch module."""
        name = node.attr
        if name.startswith("_"):
            self.fail(node, f"names starting with '_' are reserved: self.{name}",
                      hint="read the spec's modules, constants and parameters as self.NAME or NAME")
        if name in self.self_names:
            # a submodule named `self` (BERT's attention.self) is read under a name of its own
            self.resolved[id(node)] = SELF_MODULE if name == "self" else name
            return
        if name == "training":  # F.dropout(x, p, training=self.training), as in PyTorch
            self.resolved[id(node)] = "_cg_training"
            return
        defined = ", ".join(sorted(self.self_names)) or "nothing"
        hint = did_you_mean(name, self.self_names)
        if hint is None:
            hint = (f"declare it in the spec, e.g. under modules: `{name}: MaxPool2d(2, 2)`, then call "
                    f"self.{name}(x) or {name}(x)")
        self.fail(node, f"self.{name}: the spec defines no module, constant or parameter {name!r} "
                  f"(defined: {defined})", hint=hint)

    def check_qualified(self, node: ast.Attribute, parts: list[str]):
        """``F.relu``, ``torch.flatten``, ``torch.nn.functional.relu``: the allow-listed function of that name."""
        prefix, name, full = ".".join(parts[:-1]), parts[-1], ".".join(parts)
        if name.startswith("_"):
            self.fail(node, f"names starting with '_' are reserved: {full}", hint="call an allow-listed function")
        reach = QUALIFIED.get(prefix)
        if prefix == "torch" and name in TORCH_DTYPES:
            self.resolved[id(node)] = f"_cg_dtype_{name}"
            return
        if prefix == "math" and name in CONSTANT_NAMES:  # math.pi: the language's pi, whatever the spec calls pi
            self.resolved[id(node)] = f"_cg_const_{name}" if self.defines(name) else name
            return
        if parts[0] == "math" and not (prefix == "math" and name in QUALIFIED["math"] and name in self.functions):
            reachable = sorted(n for n in QUALIFIED["math"] if n in self.functions) + sorted(CONSTANT_NAMES)
            hint = f"after math. the language has {', '.join(reachable)}"
            if name in self.functions:
                hint += f"; {name} is a tensor function: write {name}(...)"
            self.fail(node, f"{full} is not allowed in the forward language", hint=hint)
        if reach is not None and name in reach and name in self.functions:
            # The program's own `linear` (a module, a variable) hides the function `linear`; the
            # qualified name still means the function, under a name no program can write.
            self.resolved[id(node)] = f"_cg_fn_{name}" if self.defines(name) else name
            self.calls.add(name)
            return
        if name in self.functions:
            also = [f"{p}.{name}(...)" for p in ("torch", "F") if name in QUALIFIED[p]]
            hint = f"write {' or '.join([f'{name}(...)'] + also)}"
        elif name[:1].isupper() or prefix in ("nn", "torch.nn"):
            hint = (f"declare the layer in the spec (under modules: `name: {name}(...)`) and call it by its "
                    "name, self.name(x) or name(x)")
        else:
            near = did_you_mean(name, sorted(reach if reach is not None else QUALIFIED["torch"]))
            layer = _layer_for(name)
            if layer is not None:  # F.max_pool1d -> a MaxPool1d layer
                hint = (f"declare a {layer} layer in the spec (under modules: `pool: {layer}(...)`) and call it, "
                        f"self.pool(x)" + (f"; or {near}" if near else ""))
            else:
                hint = near or ("a forward may call the allow-listed functions (relu, mm, flatten, softmax, ...) "
                                "as NAME(...), F.NAME(...) or torch.NAME(...), and the spec's layers; see "
                                "cgtool/lang/allowlist.py and `cgtool layers`")
        self.fail(node, f"{full} is not allowed in the forward language", hint=hint)

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
            self.visit(gen.iter)
            self.check_target(gen.target)
            for cond in gen.ifs:
                self.visit(cond)
        self.visit(node.elt)


# Keywords with which torch functions write into a tensor they are given (a parameter, say).
_WRITING_KEYWORDS = {
    "out": "use the returned value: y = exp(x), not exp(x, out=y)",
    "inplace": "use the returned value: y = elu(x), without inplace=",
    "max_norm": "embedding(..., max_norm=) renormalises the weight in place; declare an "
                "Embedding(..., max_norm=...) layer in the spec instead",
}

_NAMESPACE_ROOTS = frozenset(p.split(".")[0] for p in QUALIFIED)

def _layer_for(function: str) -> str | None:
    """The torch.nn layer class that does what F.NAME does (max_pool1d -> MaxPool1d), if there is one."""
    import torch.nn as nn

    key = function.replace("_", "").lower()
    return next((n for n in dir(nn) if n[:1].isupper() and n.lower() == key), None)


# What to write instead of tensor methods that PyTorch code often calls but a forward may not.
_ATTRIBUTE_HINTS = {
    "to": "convert with .float(), .double(), .half(), .long(), .int(), .bool() or .type_as(y); "
          "devices are chosen with --device",
    "cuda": "choose the device with --device cuda", "cpu": "choose the device with --device",
    "numpy": "return the tensor: cgtool run saves outputs with -o FILE.npy",
    "tolist": "return the tensor, or read one value with .item()",
    "new_zeros": "write zeros(shape, dtype=x.dtype) or zeros_like(x)",
    "new_ones": "write ones(shape, dtype=x.dtype) or ones_like(x)",
    "new_empty": "write zeros(shape, dtype=x.dtype)",
    "fill_": "write full_like(x, value)",
    "zero_": "write zeros_like(x)",
    "add_": "write x = x + y (in-place updates are not part of the language)",
    "mul_": "write x = x * y (in-place updates are not part of the language)",
    "relu_": "write relu(x)",
}


def check_forward(source: Source, known: dict[str, str], *, limits: Limits = DEFAULT_LIMITS) -> Program:
    """Parse a spec forward. ``known`` maps each readable name to what it is ('module', 'input', ...)."""
    reserved = {k: f"a {v}" for k, v in known.items() if v in ("module", "constant", "parameter", "container")}
    # A pasted PyTorch forward reads its modules as self.NAME: the same names.
    self_names = {k for k, v in known.items() if v in ("module", "constant", "parameter", "container", "arg")}
    prog = parse(source, set(known), reserved=reserved, limits=limits, self_names=self_names)
    if not prog.has_return:
        raise CgError("forward has no return statement", source.loc(max(1, len(source.text.splitlines()))),
                      hint="end the forward with `return <value>`")
    return prog



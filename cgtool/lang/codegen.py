"""Code generation: a checked program becomes a real Python function with guards and caps.
"""
from __future__ import annotations
import ast
import warnings
import copy
import builtins
import itertools
import re
import sys
import types
from dataclasses import dataclass, field
from ..errors import Loc
from .allowlist import CONSTANT_NAMES, FUNCTIONS, TORCH_DTYPES, _dropout
from .check import Program
from .instrument import OPERATORS, instrument
from .limits import DEFAULT_LIMITS, Limits, make_guards


# --------------------------------------------------------------------------- compilation


class _Lower(ast.NodeTransformer):
    """Rewrites a checked program into the code that runs: guards, caps, dropout's flag."""

    def __init__(self, training_expr: ast.expr | None, shadowed: set[str]):
        self.training_expr = training_expr
        self.shadowed = shadowed  # spec names and variables that hide a function of the same name

    def visit_Name(self, node):
        if node.id == "_cg_training":  # self.training: the module's mode (False in an expression)
            return ast.copy_location(copy.deepcopy(self.training_expr or ast.Constant(False)), node)
        return node

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
        if isinstance(node.func, ast.Attribute) and node.func.attr in MODULE_CONVERSIONS:
            # x.half() converts a tensor; layer.half() would convert the model's parameters in place
            node.func.value = ast.copy_location(
                ast.Call(ast.Name("_cg_not_module", ast.Load()), [node.func.value, ast.Constant(node.func.attr)], []),
                node.func.value)
        if isinstance(node.func, ast.Name) and node.func.id not in self.shadowed:
            if node.func.id == "range":
                node.func = ast.copy_location(ast.Name("_cg_range", ast.Load()), node.func)
            elif node.func.id == "norm" and len(node.args) == 1 and not node.keywords:
                # the common `norm(x)`: straight to the C function, no Python wrapper
                node.func = ast.copy_location(ast.Name("_cg_vector_norm", ast.Load()), node.func)
            elif node.func.id in ("dropout", "_cg_fn_dropout") and self.training_expr is not None:
                for kw in node.keywords:
                    if kw.arg == "training":
                        kw.arg = "training_"
                node.args.insert(0, copy.deepcopy(self.training_expr))  # a node of its own at each use
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
        step = ast.copy_location(ast.Expr(ast.Call(ast.Name("_cg_step", ast.Load()), [], [])), node)
        node.body = [step] + node.body
        return node

    def visit_For(self, node):
        # every item a loop step: all loops of one call share the loop cap, and a tensor is not unbound whole
        self.generic_visit(node)
        node.iter = ast.copy_location(ast.Call(ast.Name("_cg_each", ast.Load()), [node.iter], []), node.iter)
        return node

    def visit_comprehension(self, node):
        self.generic_visit(node)
        node.iter = ast.copy_location(ast.Call(ast.Name("_cg_each", ast.Load()), [node.iter], []), node.iter)
        return node

    def visit_Subscript(self, node):
        # `t[i] = v`, `t[i] += v`: the written object must not be the model (a parameter, a buffer, a view
        # of one, a module container); _cg_writable checks it at run time and returns it unchanged
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Store):
            with_self = self.training_expr is not None and not isinstance(self.training_expr, ast.Constant)
            owner = ast.Name("self", ast.Load()) if with_self else ast.Constant(None)
            node.value = ast.copy_location(ast.Call(ast.Name("_cg_writable", ast.Load()), [node.value, owner], []),
                                           node.value)
        return node


#: tensor methods that are also nn.Module methods converting the model in place
MODULE_CONVERSIONS = frozenset({"half", "float", "double"})


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
    sites: list = field(default_factory=list)  # capture mode: what each recorder call reports
    call: object = None  # with fast calls: the class's __call__ (the forward without nn.Module.__call__'s frames)


def compile_forward(
    program: Program,
    *,
    name: str,
    params: list[str],
    prelude: list[str],
    namespace: dict,
    limits: Limits = DEFAULT_LIMITS,
    with_self: bool = True,
    capture: bool = False,
    fast: dict | None = None,
) -> Compiled:
    """Compile *program* into ``def forward(self, *params)``.

    ``prelude`` lines bind spec names to locals once per call (``linear =
    self._modules['linear']``), which is faster than ``self.linear`` and keeps
    buffers current after ``.to()``. ``namespace`` adds globals (args values).
    The code object's filename and line numbers are the spec's own, so a runtime
    error points at the spec.

    With ``capture``, the code reports every operation and binding to the ``_cg_*``
    recorder functions that ``namespace`` must supply (:mod:`cgtool.lang.instrument`).

    ``fast`` maps module names to how they may be called when nothing watches
    (:mod:`cgtool.lang.fast`); never in capture mode, whose recorder sees module calls.
    """
    src = program.source
    # The same forward text compiled again (repeated blocks with other args, the meta and the real build,
    # validate of many specs): only the namespace differs, so the code object is reused.
    key = None if capture else (src.text, src.file, src.line, src.col, tuple(params), tuple(prelude),
                                frozenset(namespace), with_self, tuple(sorted((fast or {}).items())), fast is None)
    cached = _CODE.get(key) if key is not None else None
    if cached is None:
        cached = _generate(program, params, prelude, namespace, with_self, capture, fast)
        if key is not None:
            if len(_CODE) >= _CODE_ENTRIES:
                del _CODE[next(iter(_CODE))]
            _CODE[key] = cached
    code, readable, sites, extra = cached
    code = _own(code)  # torch.compile keys its caches (and the resume functions it adds to globals) on code objects
    glb = _globals(name, limits, namespace, capture, importable=with_self and not capture)
    glb.update(extra)
    exec(code, glb)  # noqa: S102 - the program passed the Checker; only its names are bound
    fn = glb["forward"]
    fn.__qualname__ = f"{name}.forward"
    call = glb.get("__call__")
    if call is not None:
        call.__qualname__ = f"{name}.__call__"
    return Compiled(fn, readable, glb, sites, call)


def _own(code: types.CodeType) -> types.CodeType:
    """A copy of *code* and of the functions' code inside it: the compiled forward of each namespace its own."""
    return code.replace(co_consts=tuple(_own(c) if isinstance(c, types.CodeType) else c for c in code.co_consts))


_CODE: dict = {}  # (program text and place, names, options) -> (code, readable, sites, extra globals)
_CODE_ENTRIES = 256


def _generate(program: Program, params, prelude, namespace, with_self, capture, fast):
    """The code object of a compiled forward (and its readable source, capture sites, extra globals)."""
    src = program.source
    tree = copy.deepcopy(program.tree)  # a copy to lower: self.NAME and F.NAME resolved, positions kept
    # dropout is told the module's mode; a program without a module (an expression) is never training
    training = ast.parse("self.training", mode="eval").body if with_self else ast.Constant(False)
    shadowed = set(program.assigned) | set(params) | set(namespace) | {line.split(" = ")[0] for line in prelude}
    lowered = _Lower(training, shadowed).visit(tree)
    prelude_plain = list(prelude)
    sites = []
    readable_tree = lowered
    extra, call_prelude = {}, None
    if capture:
        lowered, sites = instrument(lowered)
    elif fast is not None:
        from . import fast as _fast

        readable_tree = copy.deepcopy(lowered)  # what `build --code` shows: the calls as written
        rewriter = _fast.FastCalls(fast, set(program.assigned) | set(params), lowered)
        lowered = rewriter.visit(lowered)
        flags = rewriter.prelude()
        extra = _fast.GLOBALS
        if with_self:  # model(x) without nn.Module.__call__'s frames when nothing watches
            call_prelude = [_fast.call_guard(list(params))] + prelude + [_fast.WATCHED_CHECKED] + flags[1:]
        prelude = prelude + flags
    # _cg_enter() starts the call's loop budget and refuses a container calling itself: a module's forward
    # without loops needs neither (torch operations check the time limit when cgtool runs it), and skips the cost
    enter = not with_self or _has_loops(lowered) or any(line in ("layers = self", "modules = self") for line in prelude)
    fn_def = _function(lowered, (["self"] if with_self else []) + list(params), prelude, enter=enter)
    defs = [fn_def]
    if call_prelude is not None:
        defs.append(_function(copy.deepcopy(lowered), ["self"] + list(params), call_prelude, "__call__", enter=enter))
    module = ast.Module(body=defs, type_ignores=[])
    ast.fix_missing_locations(module)
    ast.increment_lineno(module, src.line - 1)  # to the user's file lines
    readable = ast.unparse(_function(readable_tree, (["self"] if with_self else []) + list(params), prelude_plain,
                                     enter=enter))
    with warnings.catch_warnings():  # `1[0]`: Python's compiler warns on stderr; the run says it as an error
        warnings.simplefilter("ignore", SyntaxWarning)
        code = compile(module, src.file, "exec")
    return code, readable, sites, extra


def _function(lowered: ast.Module, args: list[str], prelude: list[str], name: str = "forward",
              enter: bool = True) -> ast.FunctionDef:
    """``def forward(*args)``: the prelude lines (placed at the body's first line), then the body.

    *enter*: start with ``_cg_enter()`` (the call's loop budget, the time limit, a container calling itself)."""
    fn_def = ast.parse(f"def {name}({', '.join(args)}):\n    pass").body[0]
    pre = [ast.parse(line).body[0] for line in prelude]
    first_line = lowered.body[0].lineno if lowered.body else 1
    for stmt in pre:
        for n in ast.walk(stmt):
            if hasattr(n, "lineno"):
                n.lineno = n.end_lineno = first_line
                n.col_offset = n.end_col_offset = 0
    start = ast.Expr(ast.Call(ast.Name("_cg_enter", ast.Load()), [], []))  # the call's loop budget, the time limit
    start.lineno = start.end_lineno = first_line
    start.col_offset = start.end_col_offset = 0
    fn_def.body = ([start] if enter else []) + pre + lowered.body
    fn_def.lineno = first_line
    # the def spans its body: a forward that starts with comment lines starts its body below line 2
    fn_def.end_lineno = max([first_line] + [getattr(s, "end_lineno", None) or first_line for s in lowered.body])
    return fn_def


def _has_loops(tree: ast.AST) -> bool:
    return any(isinstance(n, (ast.For, ast.While, ast.comprehension)) for n in ast.walk(tree))


_serial = itertools.count(1)


def _globals(name: str, limits: Limits, namespace: dict, capture: bool, importable: bool = False) -> dict:
    """What compiled code may name: the allow-listed functions and constants, the guards, the caller's names.

    *importable*: the namespace of a module in ``sys.modules`` (``cgtool.generated.NAME_N``), which
    ``torch.compile`` imports when it inlines a forward called from another (nested specs); the
    builder removes it when the class is collected (:func:`forget_module`)."""
    if importable:
        module = types.ModuleType(f"cgtool.generated.{name}_{next(_serial)}")
        sys.modules[module.__name__] = module
        glb = module.__dict__
        glb["__builtins__"] = builtins.__dict__
    else:
        glb = {"__builtins__": builtins.__dict__, "__name__": f"cgtool.spec.{name}"}
    glb.update(FUNCTIONS)
    glb.update(CONSTANT_NAMES)
    glb.update(make_guards(limits))
    glb["dropout"] = _dropout
    # F.linear where the program's own `linear` (a module) hides the function: see check.check_qualified
    glb.update({f"_cg_fn_{n}": glb[n] for n in FUNCTIONS})
    glb.update({f"_cg_dtype_{n}": dtype for n, dtype in TORCH_DTYPES.items()})  # torch.long, torch.float32
    glb.update({f"_cg_const_{n}": v for n, v in CONSTANT_NAMES.items()})  # math.pi where the spec has its own pi
    if capture:
        glb.update(OPERATORS)
    glb.update(namespace)
    return glb


def forget_module(name: str) -> None:
    """Drop a compiled forward's namespace from ``sys.modules`` (its class was collected)."""
    if name.startswith("cgtool.generated."):
        sys.modules.pop(name, None)


def locate_runtime_error(exc: BaseException, files: set[str]) -> Loc | None:
    """Where the innermost traceback frame inside one of *files* (compiled spec code) is."""
    tb = _spec_frame(exc, files)
    return Loc(tb.tb_frame.f_code.co_filename, tb.tb_lineno) if tb is not None else None


def _spec_frame(exc: BaseException, files: set[str]):
    """The innermost traceback entry inside one of *files* (compiled spec code), or None."""
    tb, found = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename in files:
            found = tb
        tb = tb.tb_next
    return found


def _names_at(tb) -> list[str]:
    """The names the failing expression of traceback entry *tb* reads, in order (those of its line when
    Python has no columns)."""
    import dis

    code = tb.tb_frame.f_code
    instructions = list(dis.get_instructions(code))
    at = next((i for i in instructions if i.offset == tb.tb_lasti), None)
    span = getattr(at, "positions", None)
    names = []
    for i in instructions:
        if i.opname not in ("LOAD_FAST", "LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF") or not isinstance(i.argval, str):
            continue
        p = getattr(i, "positions", None)
        if span is not None and p is not None and span.lineno is not None and None not in (
                span.col_offset, span.end_col_offset, p.lineno, p.col_offset):
            inside = (span.lineno, span.col_offset) <= (p.lineno, p.col_offset) and \
                (p.end_lineno, p.end_col_offset) <= (span.end_lineno, span.end_col_offset)
        else:
            inside = i.positions.lineno == tb.tb_lineno if p is not None else False
        if inside and i.argval not in names:
            names.append(i.argval)
    return names


def explain_runtime_error(exc: BaseException, files: set[str], loc: Loc | None):
    """A CgError for the run-time failures of a compiled forward that the language itself can explain, or None:
    a submodule that is None (an optional one these args leave out) called or read, and Python-number math
    (``1 / 0``, ``10.0 ** 400``) out of its domain."""
    from ..errors import CgError, first_line

    message = first_line(exc)
    none_call = isinstance(exc, TypeError) and "'NoneType' object is not callable" in message
    none_read = isinstance(exc, AttributeError) and "'NoneType' object has no attribute" in message
    number = isinstance(exc, (ZeroDivisionError, OverflowError)) or (
        isinstance(exc, ValueError) and "math domain error" in message)
    tensor_only = isinstance(exc, TypeError) and re.search(r"^(\w+)\(\).* must be Tensor, not (int|float)\b", message)
    if tensor_only:
        from .allowlist import NUMBER_FUNCTIONS

        fn = tensor_only.group(1)
        return CgError(f"{fn}() takes a tensor, and gets a Python {tensor_only.group(2)}: {message}", loc,
                       hint=f"on Python numbers the language computes {', '.join(sorted(NUMBER_FUNCTIONS))} "
                       "(math's, also as math.NAME); for other functions make a tensor first: full((), value)")
    if not (none_call or none_read or number):
        return None
    tb = _spec_frame(exc, files)
    if tb is None:
        return None
    try:
        names = _names_at(tb)
    except Exception:  # noqa: BLE001 - an explanation, never a new failure
        names = []
    frame = tb.tb_frame
    values = {**frame.f_globals, **frame.f_locals}
    if none_call or none_read:
        owner = frame.f_locals.get("self")
        modules = getattr(owner, "_modules", None) or {}
        absent = [n for n in names if values.get(n, 0) is None and n in modules and modules[n] is None]
        if not absent:
            return None
        name = absent[0]
        doing = "called" if none_call else "read"
        return CgError(f"{name} is None: an optional submodule that these args leave out, {doing} here", loc,
                       hint=f"test it first: `if {name} is not None:` (or `y = {name}(x) if {name} is not None "
                       "else x`), or give args that build it")
    shown = [f"{n} = {values[n]!r}" for n in names
             if isinstance(values.get(n), (int, float)) and not isinstance(values.get(n), bool)]
    involved = f" (values: {', '.join(shown)})" if shown else ""
    what = {ZeroDivisionError: f"{message} on Python numbers",  # division by zero, integer modulo by zero
            OverflowError: "a Python number out of range"}.get(type(exc), f"{message} on Python numbers")
    why = {ZeroDivisionError: "a Python number (an arg, a constant, a size) is divided by zero",
           OverflowError: "the result is over the largest float (about 1.8e308)"}.get(
        type(exc), "math has no real value for these numbers")
    return CgError(f"{what}{involved}", loc,
                   hint=f"{why}: check the args and constants this line computes with (tensors would give inf "
                   "or nan instead)")

"""Meta tensors without importing torch.compile, sympy and symbolic shapes.

On torch 2.x the meta kernels of many operators (``a + b``, ``addmm``, the initialisers) are
Python decompositions, and three imports come with their first call: ``torch._dynamo`` (as long
as ``import torch`` itself), only to wrap the kernel in ``torch._dynamo.disable``, which does
nothing while no ``torch.compile`` runs; sympy, for one ``isinstance(x, sympy.Basic)``; and
``torch.fx.experimental.symbolic_shapes`` (with sympy, a third of ``import torch``), for
``expect_true(a)`` and its kin, which return ``a`` itself when ``a`` is a plain Python value, as
it always is on meta tensors without symbolic shapes. A shape check, a parameter count or a FLOP
count paid all three on every command.

:func:`light_meta` lends stand-ins for the three modules, for the duration of a meta run, with
exactly those answers for plain values (``disable`` returns the kernel itself); and then puts
everything back: the stand-ins leave ``sys.modules``, the kernels handed out by ``disable`` forget
it (the next call under ``torch.compile`` wraps them as torch does), and a module first imported
during the run that kept a stand-in gets the real module. Anything else asked of a stand-in (a
name it lacks, a submodule, a symbolic value) raises :class:`StandInUsed`, and :func:`meta_call`
runs the work again with the real modules. A module already imported is never lent.
Not thread-safe: another thread importing one of them during a meta run would get a stand-in;
the command line runs one thread.
"""
from __future__ import annotations
from contextlib import contextmanager
import importlib
import sys
import types
import torch

_NAME = "torch._dynamo"
_SHAPES = "torch.fx.experimental.symbolic_shapes"


class StandInUsed(BaseException):
    """Something asked a stand-in for more than it has: run again with the real modules.

    A BaseException, so that no ``except Exception`` on the way (the forward's error reporting) hides it."""


class _Submodules:
    """A meta path finder: importing a submodule of a lent module means the stand-in is not enough."""

    def __init__(self, names):
        self.names = tuple(n + "." for n in names)

    def find_spec(self, name, path=None, target=None):  # noqa: ARG002
        if name.startswith(self.names):
            raise StandInUsed(f"{name} was imported during a meta run")
        return None


class _StandIn(types.ModuleType):
    """A module with a few names; any other name raises :class:`StandInUsed`."""

    def __init__(self, name: str, names: dict):
        super().__init__(name)
        self.__dict__.update(names)
        self.__path__ = []  # a package, whose submodules _Submodules refuses

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise StandInUsed(f"{self.__name__}.{name} was asked for during a meta run")


def _plain(value):
    """A stand-in function's argument: a Python value, never a symbolic one (meta runs have none)."""
    if isinstance(value, (torch.SymInt, torch.SymBool, torch.SymFloat)):
        raise StandInUsed("a symbolic value during a meta run")
    return value


def _and(x, *others):
    for y in others:
        x = _plain(x) and _plain(y)
    return _plain(x)


def _or(x, *others):
    for y in others:
        x = _plain(x) or _plain(y)
    return _plain(x)


def _eq(x, y):
    if isinstance(x, (tuple, list)) and isinstance(y, (tuple, list)):
        return len(x) == len(y) and all(_eq(a, b) for a, b in zip(x, y))
    return _plain(x) == _plain(y)


def _dynamo(handed: list) -> _StandIn:
    def disable(fn=None, recursive=True, wrapping=True, **kw):  # noqa: ARG001 - torch's signature
        if fn is None:
            return lambda f: disable(f, recursive, wrapping)
        handed.append(fn)
        return fn

    return _StandIn(_NAME, {"disable": disable})


def _shapes() -> _StandIn:
    """What torch's meta kernels ask of symbolic shapes, for plain (non-symbolic) values: torch's own
    answers for those (``expect_true(a)`` is ``a``, ``guard_size_oblivious(a)`` is ``a``, ...)."""
    def same():  # a function object per name: _rebind finds a kept one by identity
        return lambda a, *rest, **kw: _plain(a)

    names = {n: same() for n in ("expect_true", "guard_size_oblivious", "guard_or_false", "guard_or_true",
                                 "statically_known_true", "guarding_hint_or_throw")}
    return _StandIn(_SHAPES, {**names, "has_guarding_hint": lambda a: True, "is_nested_int": lambda a: False,
                              "sym_and": _and, "sym_or": _or, "sym_eq": _eq})


class _NoSympyValue:
    """``sympy.Basic`` for the meta kernels' ``isinstance`` checks: no value of a meta run is a sympy one."""


def _sympy() -> _StandIn:
    return _StandIn("sympy", {"Basic": _NoSympyValue})


@contextmanager
def light_meta():
    """Meta-tensor work without importing ``torch._dynamo``, sympy and symbolic shapes (see the docstring)."""
    if not hasattr(torch, "_disable_dynamo"):
        yield
        return
    handed: list = []
    makers = {_NAME: lambda: _dynamo(handed), _SHAPES: _shapes, "sympy": _sympy}
    lent = {name: make() for name, make in makers.items() if name not in sys.modules}
    if not lent:
        yield
        return
    before = set(sys.modules)
    finder = _Submodules(lent)
    sys.modules.update(lent)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
        for name, stand_in in lent.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
            parent, _, leaf = name.rpartition(".")
            owner = sys.modules.get(parent)
            if owner is not None and owner.__dict__.get(leaf) is stand_in:
                delattr(owner, leaf)
        for fn in handed:
            if getattr(fn, "__dynamo_disable", None) is fn:
                try:
                    del fn.__dynamo_disable
                except AttributeError:
                    pass
        _rebind(set(sys.modules) - before, lent)


def _rebind(new_modules: set[str], lent: dict) -> None:
    """A module first imported during the run that kept a stand-in (or one of its names) gets the real one."""
    lent_objects = {}
    for name, stand_in in lent.items():
        lent_objects[id(stand_in)] = (name, None)
        for attr, value in stand_in.__dict__.items():
            if not attr.startswith("__"):
                lent_objects[id(value)] = (name, attr)
    for module_name in new_modules:
        module = sys.modules.get(module_name)
        for key, value in list(getattr(module, "__dict__", {}).items()):
            found = lent_objects.get(id(value))
            if found is not None:
                real = importlib.import_module(found[0])
                setattr(module, key, real if found[1] is None else getattr(real, found[1]))


def meta_call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` under :func:`light_meta`; again without it if the stand-ins were not enough.

    For anything that runs torch's Python decompositions: work on meta tensors, and FLOP counting
    (``torch.utils.flop_counter`` dispatches through them on real tensors too)."""
    try:
        with light_meta():
            return fn(*args, **kwargs)
    except StandInUsed:
        pass
    return fn(*args, **kwargs)


#: initialisers and the in-place fills modules run in ``reset_parameters``: they only write values
_VALUE_ONLY = frozenset({
    "uniform_", "normal_", "fill_", "zero_", "constant_", "ones_", "zeros_", "eye_", "dirac_", "trunc_normal_",
    "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "orthogonal_", "sparse_",
    "random_", "bernoulli_", "exponential_", "log_normal_", "cauchy_", "geometric_",
})


class _SkipValues(torch.overrides.TorchFunctionMode):
    """While modules are built on meta: initialisers write no values there, so skip them (the meta kernels
    of ``normal_``, ``fill_`` ... are Python decompositions that import sympy and symbolic shapes)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in _VALUE_ONLY:
            target = args[0] if args else kwargs.get("tensor")
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


@contextmanager
def building_on_meta():
    """Build modules on the meta device: no storage, no initial values (use under :func:`meta_call`)."""
    with torch.device("meta"), _SkipValues():
        yield

"""Meta tensors without importing torch.compile.

On torch 2.x the meta kernels of many operators (``a + b``, ``addmm``, the initialisers) are
Python decompositions wrapped in ``torch._disable_dynamo``, whose first call imports
``torch._dynamo`` — as long as ``import torch`` itself (1.4 s here) — only to wrap the kernel in
``torch._dynamo.disable``, which does nothing while no ``torch.compile`` is running. A shape
check, a parameter count or a FLOP count on meta tensors paid that import on every command.

:func:`light_meta` lends those wrappers a stand-in for ``torch._dynamo`` whose ``disable``
returns the kernel itself, for the duration of a meta run, and then puts everything back: the
stand-in leaves ``sys.modules``, and the kernels it handed out forget it, so the next call after
(under ``torch.compile``, say) imports the real ``torch._dynamo`` and wraps them as torch does.
If anything asks the stand-in for more than ``disable``, the run is repeated without it
(:func:`meta_call`). When ``torch._dynamo`` is already imported, nothing is lent.
Not thread-safe: another thread importing ``torch._dynamo`` during a meta run would get the
stand-in; the command line runs one thread.
"""
from __future__ import annotations
from contextlib import contextmanager
import sys
import types
import torch

_NAME = "torch._dynamo"


class StandInUsed(BaseException):
    """Something asked the stand-in for more than ``disable``: run again with the real module.

    A BaseException, so that no ``except Exception`` on the way (the forward's error reporting) hides it."""


class _Submodules:
    """A meta path finder: ``import torch._dynamo.anything`` during a meta run means the stand-in is not enough."""

    def find_spec(self, name, path=None, target=None):  # noqa: ARG002
        if name.startswith(_NAME + "."):
            raise StandInUsed(f"{name} was imported during a meta run")
        return None


class _StandIn(types.ModuleType):
    def __init__(self, handed: list):
        super().__init__(_NAME)
        self._handed = handed

    def disable(self, fn=None, recursive=True, wrapping=True, **kw):  # noqa: ARG002 - torch's signature
        if fn is None:
            return lambda f: self.disable(f, recursive, wrapping)
        self._handed.append(fn)
        return fn

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise StandInUsed(f"torch._dynamo.{name} was asked for during a meta run")


@contextmanager
def light_meta():
    """Meta-tensor work without importing ``torch._dynamo`` (see the module's docstring)."""
    if _NAME in sys.modules or not hasattr(torch, "_disable_dynamo"):
        yield
        return
    handed: list = []
    stand_in = _StandIn(handed)
    stand_in.__path__ = []  # a package, whose submodules _Submodules refuses
    finder = _Submodules()
    sys.modules[_NAME] = stand_in
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
        if sys.modules.get(_NAME) is stand_in:
            del sys.modules[_NAME]
        if torch.__dict__.get("_dynamo") is stand_in:
            del torch._dynamo
        for fn in handed:
            if getattr(fn, "__dynamo_disable", None) is fn:
                try:
                    del fn.__dynamo_disable
                except AttributeError:
                    pass


def meta_call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` under :func:`light_meta`; again without it if the stand-in was not enough.

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

"""Caps on a stranger's program and the runtime guards compiled code calls to enforce them.
"""
from __future__ import annotations
import math
import sys
from dataclasses import dataclass
import torch
from .. import budget
from ..errors import CgError
from . import protect


# --------------------------------------------------------------------------- limits


@dataclass
class Limits:
    """Caps that keep a stranger's program from exhausting the machine."""

    max_loop_iterations: int = 10_000  # loop steps of one forward call, all loops together (and per `range(...)`)
    max_elements: int = 100_000_000  # a tensor created in the forward (zeros, rand, arange, ...)
    max_int_bits: int = 4_096  # Python integers built by `**` / `*` on ints
    max_sequence: int = 100_000  # a list/str/tuple repeated with `*`
    max_source_chars: int = 200_000
    max_operations: int = 100_000  # operations one captured run may record (loops included)


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


class Guards:
    """The runtime guards for one :class:`Limits`: a method per guard, read at call time."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.steps = 0

    def check_elements(self, n, what):
        if n > self.limits.max_elements:
            raise CgError(
                f"{what} would create a tensor of {n:,} elements, over the cap of {self.limits.max_elements:,}",
                hint="make the tensor smaller: the cap bounds every tensor a forward or expression creates",
            )

    def creator(self, fn, name):
        """*fn* (torch.zeros, ...) behind the element cap, under the name spec code calls it by."""

        def create(*size, **kw):
            given = size if size or "size" not in kw else (kw["size"],)  # zeros(size=(n, m)) too
            self.check_elements(_numel(_size_args(given)), f"{name}(...)")
            return fn(*size, **kw)

        create.__name__ = name
        return create

    def like(self, fn, name):
        """*fn* (zeros_like, ...) behind the element cap: the model tensor may be an expanded view (no memory)."""

        def create(input, *args, **kw):
            if isinstance(input, torch.Tensor):
                self.check_elements(input.numel(), f"{name}(...)")
            return fn(input, *args, **kw)

        create.__name__ = name
        return create

    def full(self, size, fill_value, **kw):
        self.check_elements(_numel(_size_args((size,))), "full(...)")
        return torch.full(tuple(size) if not isinstance(size, int) else (size,), fill_value, **kw)

    def arange(self, *args, **kw):
        # arange(end), arange(start, end[, step]), and any of them by keyword: arange(0, end=n)
        named = dict(zip(("start", "end", "step") if len(args) != 1 else ("end",), args))
        named.update({k: kw[k] for k in ("start", "end", "step") if k in kw})
        start, end, step = (float(named.get(k, d)) for k, d in (("start", 0), ("end", 0), ("step", 1)))
        if step != 0:
            self.check_elements(max(0, math.ceil((end - start) / step)), "arange(...)")
        return torch.arange(*args, **kw)

    def eye(self, n, m=None, **kw):
        self.check_elements(int(n) * int(m if m is not None else n), "eye(...)")
        return torch.eye(n, m, **kw) if m is not None else torch.eye(n, **kw)

    def guarded_range(self, *args):
        r = range(*args)
        if len(r) > self.limits.max_loop_iterations:
            raise CgError(
                f"range(...) has {len(r):,} steps, over the loop cap of {self.limits.max_loop_iterations:,}",
                hint="use a smaller range or raise the loop cap (--max-iterations)",
            )
        return r

    def pow_(self, a, b):
        if type(a) is int and type(b) is int and b > 0 and a not in (0, 1, -1):
            if a.bit_length() * b > self.limits.max_int_bits:
                raise CgError(
                    f"{a} ** {b} is too large a number", hint="numbers in specs must stay reasonably small"
                )
        return a**b

    def mul(self, a, b):
        ta, tb = type(a), type(b)
        if ta is torch.Tensor or tb is torch.Tensor or torch.nn.Parameter in (ta, tb):
            return a * b
        if ta is int and tb is int:
            if a.bit_length() + b.bit_length() > self.limits.max_int_bits:
                raise CgError("the product is too large a number")
        elif isinstance(a, (str, list, tuple)) or isinstance(b, (str, list, tuple)):
            seq, n = (a, b) if isinstance(a, (str, list, tuple)) else (b, a)
            if isinstance(n, int) and len(seq) * n > self.limits.max_sequence:
                raise CgError(f"repeating a sequence {n:,} times is over the cap of {self.limits.max_sequence:,} items")
        return a * b

    def loop_limit(self):
        raise CgError(
            f"loops ran more than {self.limits.max_loop_iterations:,} iterations in one call (all loops together)",
            hint="a loop may never end, or nested loops multiply; raise the cap with --max-iterations if it "
            "really needs more",
        )

    # One budget of loop steps per forward call, shared by all its loops (nested loops do not multiply
    # the cap): _cg_enter() starts a call, _cg_step() counts a `while` turn, _cg_each() a `for` or
    # comprehension item. Each also checks the run's time limit (cgtool.budget).
    # Under torch.compile / torch.export (dynamo traces the forward) the guards step aside: the trace is of the
    # model, not of cgtool's bookkeeping, which dynamo cannot trace without breaking the graph.
    def enter(self):
        if torch.compiler.is_compiling():
            return
        self.steps = 0
        budget.tick()
        # A forward that runs again inside itself calls its own module: a container's forward calling the
        # container (modules(x), layers[0:1](x), a slice is a copy of the container). Specs cannot include
        # themselves, so this is never a model's structure: refuse it before it recurses (2^depth calls).
        # Between a forward and a forward it calls lie nn.Module.__call__'s frames (at most six, with hooks and
        # cgtool's __call__): looking ten frames up finds any self-call, at a cost that does not grow with the
        # caller's stack.
        code = sys._getframe(1).f_code
        frame = sys._getframe(2)
        for _ in range(10):
            if frame is None:
                break
            if frame.f_code is code:
                raise CgError("the forward calls its own module (the container itself, or a slice of it such as "
                              "layers[0:1]): it would call itself without end",
                              hint="call the layers it holds: layers[0](x), or `for layer in layers: x = layer(x)`")
            frame = frame.f_back

    def step(self):
        if torch.compiler.is_compiling():
            return
        self.steps += 1
        if self.steps > self.limits.max_loop_iterations:
            self.loop_limit()
        budget.tick()

    def each(self, iterable):
        """The items of a `for` loop or comprehension, each counted as a loop step."""
        if torch.compiler.is_compiling():
            return iterable
        if isinstance(iterable, torch.Tensor):
            # iterating a tensor makes every row at once (about 650 bytes each): refuse before, not after
            rows = iterable.shape[0] if iterable.dim() else 0
            if rows > self.limits.max_loop_iterations:
                raise CgError(f"iterating a tensor of {rows:,} rows is over the loop cap of "
                              f"{self.limits.max_loop_iterations:,}",
                              hint="work on the whole tensor (x.sum(0), x[i:j]) instead of looping over its rows")
        elif hasattr(iterable, "__len__") and not isinstance(iterable, torch.nn.Module):
            n = len(iterable)
            if n > self.limits.max_loop_iterations:
                raise CgError(f"a loop over {n:,} items is over the loop cap of {self.limits.max_loop_iterations:,}",
                              hint="loop over fewer items, or raise the cap with --max-iterations")
        return self._counted(iterable)

    def _counted(self, iterable):
        for item in iterable:
            self.step()
            yield item

    def namespace(self) -> dict:
        """The globals compiled code gets, by the names the compiler and spec code use."""
        return {
            "_cg_range": self.guarded_range,
            "_cg_pow": self.pow_,
            "_cg_mul": self.mul,
            "_cg_enter": self.enter,
            "_cg_step": self.step,
            "_cg_each": self.each,
            "_cg_writable": protect.writable,
            "_cg_not_module": protect.not_module,
            "range": self.guarded_range,  # `r = range; r(10**12)`: the name itself is the capped range
            "_cg_vector_norm": torch.linalg.vector_norm,
            "_cg_scalar": _scalar,
            "zeros": self.creator(torch.zeros, "zeros"),
            "ones": self.creator(torch.ones, "ones"),
            "rand": self.creator(torch.rand, "rand"),
            "randn": self.creator(torch.randn, "randn"),
            "empty": self.creator(torch.zeros, "empty"),  # never hand out uninitialised memory
            "full": self.full,
            **{name: self.like(getattr(torch, name), name)
               for name in ("zeros_like", "ones_like", "rand_like", "randn_like", "full_like")},
            "arange": self.arange,
            "eye": self.eye,
        }


def make_guards(limits: Limits):
    """The helper functions compiled code calls, bound to *limits*."""
    guards = Guards(limits)

    # A wrong call from spec code (full(3)) fails with a TypeError that names the function and
    # counts its arguments: "make_guards.<locals>.full() missing 1 required positional argument".
    # A bound method would count self in that message, so these two stay plain functions here.
    def full(size, fill_value, **kw):
        return guards.full(size, fill_value, **kw)

    def eye(n, m=None, **kw):
        return guards.eye(n, m, **kw)

    return {**guards.namespace(), "full": full, "eye": eye}

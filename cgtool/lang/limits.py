"""Caps on a stranger's program and the runtime guards compiled code calls to enforce them.
"""
from __future__ import annotations
import math
from dataclasses import dataclass
import torch
from ..errors import CgError


# --------------------------------------------------------------------------- limits


@dataclass
class Limits:
    """Caps that keep a stranger's program from exhausting the machine."""

    max_loop_iterations: int = 10_000  # per `while` loop, and per `range(...)`
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

    def check_elements(self, n, what):
        if n > self.limits.max_elements:
            raise CgError(
                f"{what} would create a tensor of {n:,} elements, over the cap of {self.limits.max_elements:,}",
                hint="make the tensor smaller or raise the element cap",
            )

    def creator(self, fn, name):
        """*fn* (torch.zeros, ...) behind the element cap, under the name spec code calls it by."""

        def create(*size, **kw):
            self.check_elements(_numel(_size_args(size)), f"{name}(...)")
            return fn(*size, **kw)

        create.__name__ = name
        return create

    def full(self, size, fill_value, **kw):
        self.check_elements(_numel(_size_args((size,))), "full(...)")
        return torch.full(tuple(size) if not isinstance(size, int) else (size,), fill_value, **kw)

    def arange(self, *args, **kw):
        nums = [float(a) for a in args]
        if len(nums) == 1:
            start, end, step = 0.0, nums[0], 1.0
        else:
            start, end = nums[0], nums[1]
            step = nums[2] if len(nums) > 2 else float(kw.get("step", 1))
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
            f"while loop ran more than {self.limits.max_loop_iterations:,} iterations",
            hint="the loop may never end; raise the cap with --max-iterations if it really needs more",
        )

    def namespace(self) -> dict:
        """The globals compiled code gets, by the names the compiler and spec code use."""
        return {
            "_cg_range": self.guarded_range,
            "_cg_pow": self.pow_,
            "_cg_mul": self.mul,
            "_cg_loop_limit": self.loop_limit,
            "_cg_limit": self.limits.max_loop_iterations,
            "_cg_vector_norm": torch.linalg.vector_norm,
            "_cg_scalar": _scalar,
            "zeros": self.creator(torch.zeros, "zeros"),
            "ones": self.creator(torch.ones, "ones"),
            "rand": self.creator(torch.rand, "rand"),
            "randn": self.creator(torch.randn, "randn"),
            "empty": self.creator(torch.zeros, "empty"),  # never hand out uninitialised memory
            "full": self.full,
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

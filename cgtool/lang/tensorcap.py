"""The element cap on every tensor a forward or an expression makes, checked before allocating.

The creation functions a program names are capped by their guards (:mod:`.limits`); but any
operation can make a tensor larger than its inputs: broadcasting (``v.view(-1, 1) + v``),
``outer``, matmuls of expanded views, ``expand(...).contiguous()``, ``repeat``, ``kron``,
``cat``, ``one_hot``, an ``Upsample`` layer. :class:`ElementCap` is a torch function mode, active
while cgtool runs a forward or an expression: an operation that may make a larger tensor than
its inputs runs first on meta tensors (shapes only, nothing allocated), and is refused when its
result would have more elements than the cap; every result is checked after too. Views count
by their shape, not their memory: ``x.expand(10**6, 10**6)`` is a tensor of 10^12 elements to
every operation that reads it. Splitting a tensor into very many pieces (``unbind``, iteration,
``split(x, 1)``) is capped by count, before the pieces are made (each costs ~650 bytes).
Every operation also checks the run's time limit (:mod:`cgtool.budget`).
"""
from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import _disable_current_modes

from .. import budget
from ..errors import CgError

# Operations whose result can have more elements than any input: run on meta first.
GROWING = frozenset("""
    expand expand_as broadcast_to repeat repeat_interleave tile kron outer ger matmul mm bmm einsum
    __matmul__ __rmatmul__ cat concat concatenate stack hstack vstack dstack one_hot interpolate
    upsample upsample_nearest upsample_bilinear pad cartesian_prod meshgrid combinations tril_indices
    triu_indices zeros ones full empty rand randn randint arange linspace logspace eye zeros_like
    ones_like full_like empty_like rand_like randn_like randint_like new_zeros new_ones new_full new_empty
    new_tensor unfold as_strided conv_transpose1d conv_transpose2d conv_transpose3d embedding
    index_select gather take diag diag_embed block_diag
""".split())
# Operations that return many tensors: capped by how many, before they are made.
SPLITTING = frozenset({"unbind", "__iter__", "split", "tensor_split", "split_with_sizes", "unsafe_split", "chunk"})


@contextmanager
def guarded(module=None, *, max_elements: int, max_pieces: int):
    """Around a forward cgtool runs: the time limit, the element cap and (for a model) its protection."""
    from .protect import protect

    with budget.work_budget(), (protect(module) if module is not None else nullcontext()), \
            ElementCap(max_elements, max_pieces):
        yield


def _numel(shape) -> int:
    return math.prod(int(d) for d in shape)


def _tensors(value, out):
    if isinstance(value, torch.Tensor):
        out.append(value)
    elif isinstance(value, (list, tuple)) and value and isinstance(value[0], (torch.Tensor, list, tuple)):
        for v in value:  # a list of tensors (cat); a shape (ints) is not looked into
            _tensors(v, out)
    return out


def _to_meta(value):
    if isinstance(value, torch.Tensor):
        if value.is_meta:
            return value
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
    if isinstance(value, (list, tuple)):
        return type(value)(_to_meta(v) for v in value) if not hasattr(value, "_fields") else value
    return value


class ElementCap(TorchFunctionMode):
    """Refuse any tensor of more than *max_elements* elements, and any split into more than *max_pieces*."""

    def __init__(self, max_elements: int, max_pieces: int):
        super().__init__()
        self.max_elements = max_elements
        self.max_pieces = max_pieces

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        budget.tick()
        name = getattr(func, "__name__", "")
        inputs = _tensors(args, [])
        _tensors(list(kwargs.values()), inputs)
        if name in SPLITTING:
            self._check_pieces(name, args, kwargs)
        elif (name in GROWING or (name == "__getitem__" and len(inputs) > 1) or self._broadcasts(inputs)) \
                and not (inputs and all(t.is_meta for t in inputs)):  # on meta inputs the run itself is the check
            self._check_on_meta(func, name, args, kwargs)
        out = func(*args, **kwargs)
        for t in _tensors(out, []):
            if t.numel() > self.max_elements:
                self._refuse(t.numel(), name)
        return out

    def _broadcasts(self, inputs) -> bool:
        """Two inputs of different shapes whose broadcast would be over the cap."""
        if len(inputs) < 2:
            return False
        first = inputs[0].shape
        if all(t.shape == first for t in inputs):
            return False
        # a bound on the broadcast result (the largest size of each aligned dimension), without torch's checks
        sizes: list[int] = []
        for t in inputs:
            shape = t.shape
            if len(shape) > len(sizes):
                sizes = [1] * (len(shape) - len(sizes)) + sizes
            offset = len(sizes) - len(shape)
            for i, d in enumerate(shape):
                if d > sizes[offset + i]:
                    sizes[offset + i] = d
        return _numel(sizes) > self.max_elements

    def _check_on_meta(self, func, name, args, kwargs):
        meta_kwargs = {k: _to_meta(v) for k, v in kwargs.items()}
        if "device" in meta_kwargs or not any(isinstance(a, torch.Tensor) for a in _tensors(args, [])):
            meta_kwargs["device"] = "meta"
        try:
            # shapes only, and unseen by dispatch modes that watch the run (summary's FLOP counter)
            with _disable_current_modes(), torch.device("meta"):
                out = func(*_to_meta(args), **meta_kwargs)
        except Exception:  # noqa: BLE001 - no shape rule on meta (or a mistake torch reports on the real run)
            return
        for t in _tensors(out, []):
            if t.numel() > self.max_elements:
                self._refuse(t.numel(), name)

    def _check_pieces(self, name, args, kwargs):
        if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() == 0:
            return
        t, rest = args[0], list(args[1:])
        if name in ("unbind", "__iter__"):
            dim, count = kwargs.get("dim", rest[0] if rest else 0), None
        else:  # split(t, size_or_sizes, dim), tensor_split(t, sections_or_indices, dim), chunk(t, chunks, dim)
            count = rest[0] if rest else next((v for k, v in kwargs.items() if k != "dim"), None)
            dim = kwargs.get("dim", rest[1] if len(rest) > 1 else 0)
        try:
            length = t.shape[int(dim)]
        except (TypeError, ValueError, IndexError):
            return
        if count is None:
            pieces = length
        elif isinstance(count, (list, tuple)):
            pieces = len(count) + (name == "tensor_split")
        elif isinstance(count, int) and count > 0:
            pieces = -(-length // count) if name in ("split", "unsafe_split") else min(count, max(length, 1))
        else:
            return
        if pieces > self.max_pieces:
            raise CgError(f"{name.strip('_')}(...) would make {pieces:,} tensors, over the cap of "
                          f"{self.max_pieces:,}", hint="work on the whole tensor, or on fewer, larger pieces")

    def _refuse(self, n, name):
        what = f"{name.strip('_')}(...)" if name else "an operation"
        raise CgError(f"{what} would make a tensor of {n:,} elements, over the cap of {self.max_elements:,}",
                      hint="use smaller shapes (broadcasting, expand, repeat, outer products and matmuls multiply "
                      "sizes); a model's cap is half of --max-memory when that is larger")

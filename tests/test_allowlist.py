"""Every allow-listed function and tensor attribute, called from a compiled forward, against torch.

Each name in ``lang.FUNCTIONS`` and ``lang.ATTRIBUTES`` has at least one case here (a test fails
when one has none, so a new name needs a case). A case is a forward expression and the same
computation written in plain torch; the compiled program must give the same value (float64
inputs) and, where torch's value carries gradients, the same gradients w.r.t. every tensor input.
Creation functions are also checked against the element cap.
"""
from __future__ import annotations

import ast
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cgtool import lang
from cgtool.errors import CgError

# --------------------------------------------------------------------------- inputs, by parameter name
# A case's reference is a lambda; its parameter names pick its inputs (and the forward's parameters).

_g = torch.Generator().manual_seed(20240607)


def _randn(*shape):
    return torch.randn(*shape, generator=_g, dtype=torch.float64)


def _pos(*shape):  # inputs of log, sqrt, ...: in [0.5, 1.5)
    return torch.rand(*shape, generator=_g, dtype=torch.float64) + 0.5


INPUTS = {
    "x": _randn(2, 3),
    "y": _randn(2, 3),
    "p": _pos(2, 3),
    "v": _randn(3),
    "u": _randn(3),
    "w": _randn(4),
    "a": _randn(2, 3),
    "b": _randn(3, 4),
    "s": _randn(1, 3, 1),
    "ba": _randn(2, 2, 3),
    "bb": _randn(2, 3, 4),
    "img": _randn(1, 2, 6, 6),
    "kernel": _randn(3, 2, 3, 3),
    "kbias": _randn(3),
    "q": _randn(1, 2, 4, 3),
    "k": _randn(1, 2, 4, 3),
    "vv": _randn(1, 2, 4, 3),
    "lw": _randn(4, 3),
    "lb": _randn(4),
    "table": _randn(5, 3),
    "logits": _randn(3, 5),
    "idx": torch.tensor([[0, 2], [4, 1]]),
    "target": torch.tensor([1, 0, 4]),
    "cols": torch.tensor([[2, 0], [1, 1]]),
    "pick": torch.tensor([2, 0]),
    "z": torch.complex(_randn(2, 3), _randn(2, 3)),
    "lin": nn.Linear(3, 4, dtype=torch.float64),
    "emb": nn.Embedding(5, 3, dtype=torch.float64),
    "d": {"first": _randn(2), "second": _randn(2)},
}


def compile_program(body: str, params: list[str], limits=lang.DEFAULT_LIMITS, with_self=False):
    prog = lang.check_forward(lang.Source(body, "<test>"), {p: "input" for p in params}, limits=limits)
    compiled = lang.compile_forward(prog, name="T", params=params, prelude=[], namespace={}, limits=limits,
                                    with_self=with_self)
    return prog, compiled.fn


def _leaf(value):
    """A fresh copy of an input: float tensors become leaves that require grad."""
    if isinstance(value, torch.Tensor):
        value = value.detach().clone()
        return value.requires_grad_(value.is_floating_point())
    if isinstance(value, dict):
        return {k: _leaf(v) for k, v in value.items()}
    return value  # modules: their parameters are the leaves


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, nn.Module):
        return list(value.parameters())
    return []


def assert_same(got, want, where="value"):
    """Equal structure, types, shapes and dtypes; values equal (floats within float64 tolerance)."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), (where, got)
        torch.testing.assert_close(got.detach(), want.detach(), msg=lambda m: f"{where}: {m}")
    elif isinstance(want, (tuple, list)):
        assert type(got) is type(want) and len(got) == len(want), (where, got, want)
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert type(got) is float and got == pytest.approx(want, rel=1e-12, abs=1e-12), (where, got, want)
    else:
        assert type(got) is type(want) and got == want, (where, got, want)


def run_against_torch(body: str, reference, *, seed: int = 0, **compile_kw):
    """Compile ``body`` (or ``return body``), run it and ``reference`` on the same inputs, compare."""
    params = list(inspect.signature(reference).parameters)
    if "return" not in body:
        body = f"return {body}"
    prog, fn = compile_program(body, params, **compile_kw)
    leaves = {name: _leaf(INPUTS[name]) for name in params}
    self_ = compile_kw.get("with_self") and [_Training()] or []
    torch.manual_seed(seed)  # random functions draw the same numbers in both
    got = fn(*self_, *leaves.values())
    torch.manual_seed(seed)
    want = reference(**leaves)
    assert_same(got, want)

    # gradients: wherever torch's value carries them, the compiled value must carry the same
    outs_want = [t for t in _tensors(want) if t.requires_grad]
    outs_got = [t for t in _tensors(got) if t.requires_grad]
    assert len(outs_got) == len(outs_want), "the compiled value is differentiable where torch's is not (or v.v.)"
    inputs = [t for v in leaves.values() for t in _tensors(v) if t.requires_grad]
    if outs_want and inputs:
        weights = [torch.randn(t.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
                   for i, t in enumerate(outs_want)]  # not plain sums: softmax's sum has no gradient

        def loss(outs):
            return sum((o.to(torch.float64) * wt).sum() for o, wt in zip(outs, weights))

        g_want = torch.autograd.grad(loss(outs_want), inputs, allow_unused=True)
        g_got = torch.autograd.grad(loss(outs_got), inputs, allow_unused=True)
        for i, (gg, gw) in enumerate(zip(g_got, g_want)):
            if gw is None or gg is None:
                assert gg is None and gw is None, f"gradient {i}: {gg} vs {gw}"
            else:
                torch.testing.assert_close(gg, gw, msg=lambda m: f"gradient {i}: {m}")
    return prog


class _Training:
    """What a compiled forward reads from ``self``: the training flag (dropout)."""

    training = True


# --------------------------------------------------------------------------- functions

FUNCTION_CASES: dict[str, list[tuple[str, object]]] = {
    # activations
    "relu": [("relu(x)", lambda x: torch.relu(x))],
    "gelu": [("gelu(x)", lambda x: F.gelu(x)), ("gelu(x, approximate='tanh')", lambda x: F.gelu(x, approximate="tanh"))],
    "silu": [("silu(x)", lambda x: F.silu(x))],
    "elu": [("elu(x, alpha=0.5)", lambda x: F.elu(x, alpha=0.5))],
    "leaky_relu": [("leaky_relu(x, 0.1)", lambda x: F.leaky_relu(x, 0.1))],
    "softplus": [("softplus(x, beta=2)", lambda x: F.softplus(x, beta=2))],
    "sigmoid": [("sigmoid(x)", lambda x: torch.sigmoid(x))],
    "tanh": [("tanh(x)", lambda x: torch.tanh(x))],
    "softmax": [("softmax(x, dim=-1)", lambda x: F.softmax(x, dim=-1))],
    "log_softmax": [("log_softmax(x, 0)", lambda x: F.log_softmax(x, 0))],
    # elementwise
    "exp": [("exp(x)", lambda x: torch.exp(x)), ("exp(1.0)", lambda: math.exp(1.0))],  # numbers fold: math's
    "log": [("log(p)", lambda p: torch.log(p)), ("log(2)", lambda: math.log(2))],
    "log1p": [("log1p(p)", lambda p: torch.log1p(p))],
    "expm1": [("expm1(x)", lambda x: torch.expm1(x))],
    "sin": [("sin(x)", lambda x: torch.sin(x))],
    "cos": [("cos(x)", lambda x: torch.cos(x))],
    "tan": [("tan(x)", lambda x: torch.tan(x))],
    "sqrt": [("sqrt(p)", lambda p: torch.sqrt(p)), ("sqrt(2 / pi)", lambda: math.sqrt(2 / math.pi))],
    "rsqrt": [("rsqrt(p)", lambda p: torch.rsqrt(p))],
    "erf": [("erf(x)", lambda x: torch.erf(x))],
    "sign": [("sign(x) * x", lambda x: torch.sign(x) * x)],
    "floor": [("floor(x * 3)", lambda x: torch.floor(x * 3))],
    "ceil": [("ceil(x * 3)", lambda x: torch.ceil(x * 3))],
    "clamp": [("clamp(x, -0.5, 0.5)", lambda x: torch.clamp(x, -0.5, 0.5)),
              ("clamp(x, min=0.1)", lambda x: torch.clamp(x, min=0.1))],
    "maximum": [("maximum(x, y)", lambda x, y: torch.maximum(x, y))],
    "minimum": [("minimum(x, y)", lambda x, y: torch.minimum(x, y))],
    "pow": [("pow(x, 3)", lambda x: torch.pow(x, 3)), ("pow(p, y)", lambda p, y: torch.pow(p, y))],
    "where": [("where(x > 0, x, y)", lambda x, y: torch.where(x > 0, x, y))],
    # reductions
    "sum": [("sum(x)", lambda x: torch.sum(x)), ("sum(x, dim=1)", lambda x: torch.sum(x, dim=1)),
            ("sum([x, y])", lambda x, y: x + y), ("sum([1, 2, 3])", lambda: 6)],
    "max": [("max(x)", lambda x: torch.max(x)), ("max(x, dim=1)", lambda x: torch.max(x, dim=1)),
            ("max(x, y)", lambda x, y: torch.max(x, y)), ("max(x.shape)", lambda x: 3)],
    "min": [("min(x)", lambda x: torch.min(x)), ("min(x, 0)", lambda x: torch.min(x, 0)),
            ("min(3, 1, 2)", lambda: 1)],
    "mean": [("mean(x)", lambda x: torch.mean(x)), ("mean(x, dim=0, keepdim=True)",
                                                     lambda x: torch.mean(x, dim=0, keepdim=True))],
    "prod": [("prod(x)", lambda x: torch.prod(x)), ("prod(x, 1)", lambda x: torch.prod(x, 1))],
    "norm": [("norm(x)", lambda x: torch.linalg.vector_norm(x)), ("norm(x, dim=1)", lambda x: torch.norm(x, dim=1)),
             ("norm(x, 1)", lambda x: torch.norm(x, 1))],
    "amax": [("amax(x, dim=1)", lambda x: torch.amax(x, dim=1))],
    "amin": [("amin(x, 0)", lambda x: torch.amin(x, 0))],
    "argmax": [("argmax(x)", lambda x: torch.argmax(x)), ("argmax(x, dim=1)", lambda x: torch.argmax(x, dim=1))],
    "argmin": [("argmin(x, 0)", lambda x: torch.argmin(x, 0))],
    "logsumexp": [("logsumexp(x, dim=1)", lambda x: torch.logsumexp(x, dim=1))],
    "cumsum": [("cumsum(x, dim=1)", lambda x: torch.cumsum(x, dim=1))],
    # linear algebra
    "mm": [("mm(a, b)", lambda a, b: torch.mm(a, b))],
    "addmm": [("addmm(mm(a, b), a, b)", lambda a, b: torch.addmm(torch.mm(a, b), a, b))],
    "matmul": [("matmul(a, b)", lambda a, b: torch.matmul(a, b)), ("matmul(ba, bb)", lambda ba, bb: ba @ bb)],
    "bmm": [("bmm(ba, bb)", lambda ba, bb: torch.bmm(ba, bb))],
    "einsum": [("einsum('ij,jk->ik', a, b)", lambda a, b: torch.einsum("ij,jk->ik", a, b))],
    "outer": [("outer(v, w)", lambda v, w: torch.outer(v, w))],
    "dot": [("dot(v, u)", lambda v, u: torch.dot(v, u))],
    "linear": [("linear(x, lw, lb)", lambda x, lw, lb: F.linear(x, lw, lb)),
               ("linear(x, lw)", lambda x, lw: F.linear(x, lw))],
    # shapes
    "cat": [("cat([x, y], dim=1)", lambda x, y: torch.cat([x, y], dim=1)), ("cat((x, y))", lambda x, y: torch.cat((x, y)))],
    "stack": [("stack([x, y], dim=1)", lambda x, y: torch.stack([x, y], dim=1))],
    "reshape": [("reshape(x, (3, 2))", lambda x: torch.reshape(x, (3, 2))), ("reshape(x, [-1])", lambda x: x.reshape(-1))],
    "flatten": [("flatten(ba, 1)", lambda ba: torch.flatten(ba, 1))],
    "transpose": [("transpose(ba, 0, 2)", lambda ba: torch.transpose(ba, 0, 2))],
    "permute": [("permute(ba, (2, 0, 1))", lambda ba: torch.permute(ba, (2, 0, 1)))],
    "unsqueeze": [("unsqueeze(x, 1)", lambda x: torch.unsqueeze(x, 1))],
    "squeeze": [("squeeze(s)", lambda s: torch.squeeze(s)), ("squeeze(s, 0)", lambda s: torch.squeeze(s, 0))],
    "chunk": [("chunk(x, 3, dim=1)", lambda x: torch.chunk(x, 3, dim=1))],
    "split": [("split(x, [1, 2], dim=1)", lambda x: torch.split(x, [1, 2], dim=1)),
              ("split(x, 1)", lambda x: torch.split(x, 1))],
    "tril": [("tril(x)", lambda x: torch.tril(x))],
    "triu": [("triu(x, 1)", lambda x: torch.triu(x, 1))],
    "masked_fill": [("masked_fill(x, y > 0, -1.5)", lambda x, y: torch.masked_fill(x, y > 0, -1.5))],
    "zeros_like": [("zeros_like(x)", lambda x: torch.zeros_like(x)),
                   ("zeros_like(idx)", lambda idx: torch.zeros_like(idx))],
    "ones_like": [("ones_like(x, dtype=idx.dtype)", lambda x, idx: torch.ones_like(x, dtype=idx.dtype))],
    "rand_like": [("rand_like(x)", lambda x: torch.rand_like(x))],
    "randn_like": [("randn_like(x)", lambda x: torch.randn_like(x))],
    "full_like": [("full_like(x, 2.5)", lambda x: torch.full_like(x, 2.5))],
    # neural-network functions (dropout: its own tests below, it reads the module's training flag)
    "dropout": [("dropout(x, 0.0)", lambda x: F.dropout(x, 0.0, True))],
    "layer_norm": [("layer_norm(x, (3,))", lambda x: F.layer_norm(x, (3,))),
                   ("layer_norm(x, [3], v, u, eps=0.01)", lambda x, v, u: F.layer_norm(x, [3], v, u, eps=0.01))],
    "conv2d": [("conv2d(img, kernel, kbias, padding=1)", lambda img, kernel, kbias: F.conv2d(img, kernel, kbias, padding=1)),
               ("conv2d(img, kernel, stride=2)", lambda img, kernel: F.conv2d(img, kernel, stride=2))],
    "max_pool2d": [("max_pool2d(img, 2)", lambda img: F.max_pool2d(img, 2))],
    "avg_pool2d": [("avg_pool2d(img, 3, stride=1)", lambda img: F.avg_pool2d(img, 3, stride=1))],
    "adaptive_avg_pool2d": [("adaptive_avg_pool2d(img, (2, 1))", lambda img: F.adaptive_avg_pool2d(img, (2, 1)))],
    "scaled_dot_product_attention": [
        ("scaled_dot_product_attention(q, k, vv)", lambda q, k, vv: F.scaled_dot_product_attention(q, k, vv)),
        ("scaled_dot_product_attention(q, k, vv, is_causal=True)",
         lambda q, k, vv: F.scaled_dot_product_attention(q, k, vv, is_causal=True))],
    "embedding": [("embedding(idx, table)", lambda idx, table: F.embedding(idx, table))],
    "one_hot": [("one_hot(target, 5)", lambda target: F.one_hot(target, 5))],
    "cross_entropy": [("cross_entropy(logits, target)", lambda logits, target: F.cross_entropy(logits, target)),
                      ("cross_entropy(logits, target, label_smoothing=0.1)",
                       lambda logits, target: F.cross_entropy(logits, target, label_smoothing=0.1))],
    "mse_loss": [("mse_loss(x, y)", lambda x, y: F.mse_loss(x, y))],
    # plain Python helpers
    "len": [("len(x)", lambda x: 2), ("len([x, y, x])", lambda x, y: 3)],
    "enumerate": [("[t * i for i, t in enumerate([x, y])]", lambda x, y: [x * 0, y * 1])],
    "zip": [("[a * b for a, b in zip([x, y], [y, x])]", lambda x, y: [x * y, y * x])],
    "int": [("int(2.7)", lambda: 2), ("int(x.shape[1] / 2)", lambda x: 1)],
    "float": [("float(idx.sum())", lambda idx: 7.0), ("float(3)", lambda: 3.0)],
    "bool": [("bool(x.sum() > 100)", lambda x: False), ("bool(1)", lambda: True)],
    "abs": [("abs(x)", lambda x: torch.abs(x)), ("abs(-3)", lambda: 3)],
    "round": [("round(2.567, 2)", lambda: 2.57), ("round(x.sum().item(), 3)", lambda x: round(x.sum().item(), 3)),
              ("round(x * 10)", lambda x: torch.round(x * 10))],
    "range": [("[i * 2 for i in range(1, 9, 3)]", lambda: [2, 8, 14]),
              ("s = x\nfor i in range(3):\n    s = s * x\nreturn s", lambda x: x * x * x * x)],
    # creation: shapes, dtypes and (under the same seed) values; the cap is tested below
    "zeros": [("zeros(2, 3)", lambda: torch.zeros(2, 3)), ("zeros((2, 3), dtype=x.dtype)",
                                                           lambda x: torch.zeros((2, 3), dtype=x.dtype))],
    "ones": [("ones(4)", lambda: torch.ones(4)), ("ones([1, 2], dtype=idx.dtype)",
                                                  lambda idx: torch.ones([1, 2], dtype=idx.dtype))],
    "rand": [("rand(2, 3)", lambda: torch.rand(2, 3)), ("rand(3, dtype=x.dtype)", lambda x: torch.rand(3, dtype=x.dtype))],
    "randn": [("randn(2, 3)", lambda: torch.randn(2, 3)), ("randn((5,), dtype=x.dtype)",
                                                           lambda x: torch.randn((5,), dtype=x.dtype))],
    "full": [("full((2, 3), 1.5)", lambda: torch.full((2, 3), 1.5)), ("full(4, 2)", lambda: torch.full((4,), 2)),
             ("full([2], 0.5, dtype=x.dtype)", lambda x: torch.full([2], 0.5, dtype=x.dtype))],
    "arange": [("arange(5)", lambda: torch.arange(5)), ("arange(1, 4, 0.5)", lambda: torch.arange(1, 4, 0.5)),
               ("arange(0, 10, step=3)", lambda: torch.arange(0, 10, step=3)),
               ("arange(3, dtype=x.dtype)", lambda x: torch.arange(3, dtype=x.dtype))],
    "eye": [("eye(3)", lambda: torch.eye(3)), ("eye(2, 4)", lambda: torch.eye(2, 4))],
}

FUNCTION_PARAMS = [(name, i) for name in sorted(FUNCTION_CASES) for i in range(len(FUNCTION_CASES[name]))]


def test_every_function_has_a_case():
    missing = sorted(set(lang.FUNCTIONS) - set(FUNCTION_CASES))
    assert not missing, f"allow-listed functions without a case in FUNCTION_CASES: {missing}"
    stale = sorted(set(FUNCTION_CASES) - set(lang.FUNCTIONS))
    assert not stale, f"cases for names that are not allow-listed: {stale}"


@pytest.mark.parametrize("name,i", FUNCTION_PARAMS, ids=[f"{n}-{i}" for n, i in FUNCTION_PARAMS])
def test_function_matches_torch(name, i):
    body, reference = FUNCTION_CASES[name][i]
    prog = run_against_torch(body, reference, with_self=name == "dropout")  # dropout reads self.training
    assert name in prog.calls, f"the case for {name} does not call it"


# --------------------------------------------------------------------------- creation: the element cap

SMALL = lang.Limits(max_elements=12)
CAPPED = {  # (at the cap: allowed, one over: refused)
    "zeros": ("zeros(3, 4)", "zeros((13,))"),
    "ones": ("ones([12])", "ones(2, 7)"),
    "rand": ("rand(12)", "rand(13)"),
    "randn": ("randn(2, 2, 3)", "randn(1, 13)"),
    "full": ("full((4, 3), 1.0)", "full(13, 1.0)"),
    "arange": ("arange(0, 6, 0.5)", "arange(-1, 12)"),
    "eye": ("eye(3, 4)", "eye(1, 13)"),
}


def test_every_creation_function_is_capped():
    created = {"zeros", "ones", "rand", "randn", "full", "arange", "eye"}
    assert created <= set(lang.FUNCTIONS) and set(CAPPED) == created


@pytest.mark.parametrize("name", sorted(CAPPED))
def test_creation_cap(name):
    ok, over = CAPPED[name]
    _, fn = compile_program(f"return {ok}", [], limits=SMALL)
    assert fn().numel() == SMALL.max_elements
    _, fn = compile_program(f"return {over}", [], limits=SMALL)
    with pytest.raises(CgError, match=rf"{name}\(\.\.\.\) would create a tensor of 1[34] elements, over the cap of 12"):
        fn()


def test_the_default_cap_refuses_before_allocating():
    _, fn = compile_program("return zeros(100000, 100000) + ones(2)", [])
    with pytest.raises(CgError, match="10,000,000,000 elements"):
        fn()


@pytest.mark.parametrize("name", ["zeros_like", "ones_like", "rand_like", "randn_like", "full_like"])
def test_like_functions_respect_the_cap(name):
    extra = ", 1.0" if name == "full_like" else ""
    _, fn = compile_program(f"return {name}(v.expand(13, 3){extra})", ["v"], limits=lang.Limits(max_elements=12))
    with pytest.raises(CgError):
        fn(torch.ones(3))


# --------------------------------------------------------------------------- dropout and the training flag


def test_dropout_follows_the_modules_training_flag():
    prog, fn = compile_program("return dropout(x, 0.5) + dropout(x, p=0.3, training=False)", ["x"], with_self=True)
    holder, x = _Training(), torch.ones(200, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(3)
    got = fn(holder, x)
    torch.manual_seed(3)
    want = F.dropout(x, 0.5, True) + x
    torch.testing.assert_close(got, want)
    assert 40 < int((got == 1).sum()) < 160  # some dropped, some kept (doubled, plus 1)
    holder.training = False
    torch.testing.assert_close(fn(holder, x), 2 * x)
    torch.testing.assert_close(torch.autograd.grad(fn(holder, x).sum(), x)[0], torch.full_like(x, 2.0))


def test_dropout_without_self_is_evaluation_mode():
    # a program without a module (a grad expression) is never training: dropout is the identity
    _, fn = compile_program("return dropout(x, 0.9)", ["x"])
    x = torch.rand(50) + 1
    assert torch.equal(fn(x), x)


# --------------------------------------------------------------------------- tensor methods and attributes

ATTRIBUTE_CASES: dict[str, tuple[str, object]] = {
    "shape": ("x.shape", lambda x: x.shape),
    "T": ("x.T", lambda x: x.T),
    "mT": ("ba.mT", lambda ba: ba.mT),
    "H": ("z.H", lambda z: z.H),
    "ndim": ("ba.ndim", lambda ba: 3),
    "dtype": ("x.dtype", lambda x: torch.float64),
    "device": ("x.device", lambda x: torch.device("cpu")),
    "data": ("x.data * 2", lambda x: x.data * 2),
    "real": ("z.real", lambda z: z.real),
    "imag": ("z.imag", lambda z: z.imag),
    "is_floating_point": ("x.is_floating_point()", lambda x: True),
    "sum": ("x.sum(1)", lambda x: x.sum(1)),
    "mean": ("x.mean()", lambda x: x.mean()),
    "std": ("x.std(0)", lambda x: x.std(0)),
    "var": ("x.var()", lambda x: x.var()),
    "max": ("x.max(dim=1)", lambda x: x.max(dim=1)),
    "min": ("x.min()", lambda x: x.min()),
    "amax": ("x.amax(0)", lambda x: x.amax(0)),
    "amin": ("x.amin(1)", lambda x: x.amin(1)),
    "argmax": ("x.argmax(1)", lambda x: x.argmax(1)),
    "argmin": ("x.argmin()", lambda x: x.argmin()),
    "prod": ("x.prod(0)", lambda x: x.prod(0)),
    "cumsum": ("x.cumsum(0)", lambda x: x.cumsum(0)),
    "norm": ("x.norm(dim=0)", lambda x: x.norm(dim=0)),
    "logsumexp": ("x.logsumexp(1)", lambda x: x.logsumexp(1)),
    "all": ("(x > -10).all()", lambda x: (x > -10).all()),
    "any": ("(x > 0).any(1)", lambda x: (x > 0).any(1)),
    "abs": ("x.abs()", lambda x: x.abs()),
    "exp": ("x.exp()", lambda x: x.exp()),
    "log": ("p.log()", lambda p: p.log()),
    "log1p": ("p.log1p()", lambda p: p.log1p()),
    "sqrt": ("p.sqrt()", lambda p: p.sqrt()),
    "rsqrt": ("p.rsqrt()", lambda p: p.rsqrt()),
    "pow": ("x.pow(2)", lambda x: x.pow(2)),
    "sin": ("x.sin()", lambda x: x.sin()),
    "cos": ("x.cos()", lambda x: x.cos()),
    "tan": ("x.tan()", lambda x: x.tan()),
    "tanh": ("x.tanh()", lambda x: x.tanh()),
    "sigmoid": ("x.sigmoid()", lambda x: x.sigmoid()),
    "relu": ("x.relu()", lambda x: x.relu()),
    "softmax": ("x.softmax(-1)", lambda x: x.softmax(-1)),
    "log_softmax": ("x.log_softmax(dim=0)", lambda x: x.log_softmax(dim=0)),
    "clamp": ("x.clamp(min=-0.3)", lambda x: x.clamp(min=-0.3)),
    "clip": ("x.clip(-0.2, 0.4)", lambda x: x.clip(-0.2, 0.4)),
    "neg": ("x.neg()", lambda x: x.neg()),
    "reciprocal": ("p.reciprocal()", lambda p: p.reciprocal()),
    "sign": ("x.sign()", lambda x: x.sign()),
    "floor": ("x.floor()", lambda x: x.floor()),
    "ceil": ("x.ceil()", lambda x: x.ceil()),
    "round": ("(x * 10).round()", lambda x: (x * 10).round()),
    "square": ("x.square()", lambda x: x.square()),
    "add": ("x.add(y, alpha=2)", lambda x, y: x.add(y, alpha=2)),
    "sub": ("x.sub(y)", lambda x, y: x.sub(y)),
    "mul": ("x.mul(y)", lambda x, y: x.mul(y)),
    "div": ("x.div(p)", lambda x, p: x.div(p)),
    "matmul": ("a.matmul(b)", lambda a, b: a.matmul(b)),
    "mm": ("a.mm(b)", lambda a, b: a.mm(b)),
    "bmm": ("ba.bmm(bb)", lambda ba, bb: ba.bmm(bb)),
    "dot": ("v.dot(u)", lambda v, u: v.dot(u)),
    "eq": ("x.eq(x)", lambda x: x.eq(x)),
    "ne": ("x.ne(y)", lambda x, y: x.ne(y)),
    "lt": ("x.lt(y)", lambda x, y: x.lt(y)),
    "le": ("x.le(0)", lambda x: x.le(0)),
    "gt": ("x.gt(y)", lambda x, y: x.gt(y)),
    "ge": ("x.ge(y)", lambda x, y: x.ge(y)),
    "view": ("x.view(3, 2)", lambda x: x.view(3, 2)),
    "reshape": ("x.reshape(-1)", lambda x: x.reshape(-1)),
    "flatten": ("ba.flatten()", lambda ba: ba.flatten()),
    "transpose": ("x.transpose(0, 1)", lambda x: x.transpose(0, 1)),
    "permute": ("ba.permute(1, 2, 0)", lambda ba: ba.permute(1, 2, 0)),
    "unsqueeze": ("x.unsqueeze(0)", lambda x: x.unsqueeze(0)),
    "squeeze": ("s.squeeze(2)", lambda s: s.squeeze(2)),
    "contiguous": ("x.t().contiguous()", lambda x: x.t().contiguous()),
    "size": ("x.size(1) + x.size()[0]", lambda x: 5),
    "dim": ("x.dim()", lambda x: 2),
    "numel": ("x.numel()", lambda x: 6),
    "t": ("x.t()", lambda x: x.t()),
    "expand": ("v.expand(2, 3)", lambda v: v.expand(2, 3)),
    "expand_as": ("v.expand_as(x)", lambda v, x: v.expand_as(x)),
    "view_as": ("x.view_as(y.T)", lambda x, y: x.view_as(y.T)),
    "reshape_as": ("x.reshape_as(y.T)", lambda x, y: x.reshape_as(y.T)),
    "chunk": ("x.chunk(2, 1)", lambda x: x.chunk(2, 1)),
    "split": ("x.split([2, 1], dim=1)", lambda x: x.split([2, 1], dim=1)),
    "unbind": ("x.unbind(1)", lambda x: x.unbind(1)),
    "narrow": ("x.narrow(1, 1, 2)", lambda x: x.narrow(1, 1, 2)),
    "flip": ("x.flip(0, 1)", lambda x: x.flip(0, 1)),
    "roll": ("x.roll(1, 1)", lambda x: x.roll(1, 1)),
    "tril": ("x.tril(-1)", lambda x: x.tril(-1)),
    "triu": ("x.triu()", lambda x: x.triu()),
    "masked_fill": ("x.masked_fill(y < 0, 0.25)", lambda x, y: x.masked_fill(y < 0, 0.25)),
    "gather": ("x.gather(1, cols)", lambda x, cols: x.gather(1, cols)),
    "index_select": ("x.index_select(1, pick)", lambda x, pick: x.index_select(1, pick)),
    "topk": ("x.topk(2)", lambda x: x.topk(2)),
    "sort": ("x.sort(1, descending=True)", lambda x: x.sort(1, descending=True)),
    "float": ("x.float()", lambda x: x.float()),
    "double": ("x.float().double()", lambda x: x.float().double()),
    "half": ("x.half()", lambda x: x.half()),
    "long": ("(x * 10).long()", lambda x: (x * 10).long()),
    "int": ("(x * 10).int()", lambda x: (x * 10).int()),
    "bool": ("x.bool()", lambda x: x.bool()),
    "type_as": ("idx.type_as(x)", lambda idx, x: idx.type_as(x)),
    "detach": ("x.detach() * y", lambda x, y: x.detach() * y),
    "clone": ("x.clone()", lambda x: x.clone()),
    "item": ("x.sum().item()", lambda x: x.sum().item()),
    # not tensor attributes: modules' and containers'
    "weight": ("lin.weight * 2", lambda lin: lin.weight * 2),
    "bias": ("lin.bias", lambda lin: lin.bias),
    "in_features": ("lin.in_features", lambda lin: 3),
    "out_features": ("lin.out_features", lambda lin: 4),
    "num_embeddings": ("emb.num_embeddings", lambda emb: 5),
    "embedding_dim": ("emb.embedding_dim", lambda emb: 3),
    "items": ("[v * len(k) for k, v in d.items()]", lambda d: [d["first"] * 5, d["second"] * 6]),
    "keys": ("[k for k in d.keys()]", lambda d: ["first", "second"]),
    "values": ("[v * 2 for v in d.values()]", lambda d: [d["first"] * 2, d["second"] * 2]),
}


def test_every_attribute_has_a_case():
    missing = sorted(set(lang.ATTRIBUTES) - set(ATTRIBUTE_CASES))
    assert not missing, f"allow-listed attributes without a case in ATTRIBUTE_CASES: {missing}"
    assert set(ATTRIBUTE_CASES) <= set(lang.ATTRIBUTES)


@pytest.mark.parametrize("name", sorted(ATTRIBUTE_CASES))
def test_attribute_matches_torch(name):
    body, reference = ATTRIBUTE_CASES[name]
    prog = run_against_torch(body, reference)
    assert any(isinstance(n, ast.Attribute) and n.attr == name for n in ast.walk(prog.tree)), \
        f"the case for .{name} does not use it"


def test_constants():
    _, fn = compile_program("return [pi, e, inf, x * pi]", ["x"])
    x = torch.ones(2, dtype=torch.float64)
    got = fn(x)
    assert got[:3] == [math.pi, math.e, math.inf] and torch.equal(got[3], x * math.pi)

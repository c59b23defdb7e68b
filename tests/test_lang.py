"""The forward language: every construct against plain torch (values and gradients), and its walls."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cgtool import lang
from cgtool.errors import CgError


def compile_fn(body: str, params=("x", "y"), known=None, limits=lang.DEFAULT_LIMITS):
    known = known or {p: "input" for p in params}
    prog = lang.check_forward(lang.Source(body, "<test>"), known, limits=limits)
    return lang.compile_forward(prog, name="T", params=list(params), prelude=[], namespace={}, limits=limits,
                                with_self=False).fn


# (forward source, the same in plain torch)
CASES = [
    ("return x + y * 2 - x / 3", lambda x, y: x + y * 2 - x / 3),
    ("return x ** 2 + abs(y)", lambda x, y: x**2 + y.abs()),
    ("return x @ y.T", lambda x, y: x @ y.T),
    ("return matmul(x, y.transpose(0, 1))", lambda x, y: x @ y.T),
    ("return mm(x, y.T)", lambda x, y: torch.mm(x, y.T)),
    ("return relu(x) + gelu(y) + sigmoid(x) * tanh(y)",
     lambda x, y: torch.relu(x) + torch.nn.functional.gelu(y) + torch.sigmoid(x) * torch.tanh(y)),
    ("return softmax(x, dim=-1) + log_softmax(y, dim=1)",
     lambda x, y: torch.softmax(x, -1) + torch.log_softmax(y, 1)),
    ("return exp(x) + log(abs(y) + 1) + sin(x) * cos(y) + sqrt(abs(x))",
     lambda x, y: x.exp() + (y.abs() + 1).log() + x.sin() * y.cos() + x.abs().sqrt()),
    ("return sum(x) + mean(y) + norm(x)", lambda x, y: x.sum() + y.mean() + x.norm()),
    ("return x.sum(dim=1) + y.mean(1)", lambda x, y: x.sum(1) + y.mean(1)),
    ("return cat([x, y], dim=1)", lambda x, y: torch.cat([x, y], 1)),
    ("return stack([x, y]).sum(0)", lambda x, y: torch.stack([x, y]).sum(0)),
    ("return reshape(x, (3, 2)) + y.view(3, 2)", lambda x, y: x.reshape(3, 2) + y.view(3, 2)),
    ("return flatten(x) + y.flatten()", lambda x, y: x.flatten() + y.flatten()),
    ("return x[:, 1:] * y[0, 0]", lambda x, y: x[:, 1:] * y[0, 0]),
    ("return x[..., -1] + y[:, 1]", lambda x, y: x[..., -1] + y[:, 1]),
    ("a = x\na += y\na *= 2\nreturn a", lambda x, y: (x + y) * 2),
    ("return x if x.sum() > y.sum() else y", lambda x, y: x if x.sum() > y.sum() else y),
    ("return -x + (+y)", lambda x, y: -x + y),
    ("s = 0\nfor i in range(3):\n    s = s + x * i\nreturn s", lambda x, y: x * 0 + x * 1 + x * 2),
    ("s = x\nfor t in [x, y]:\n    s = s + t\nreturn s", lambda x, y: x + x + y),
    ("s = x\nfor i, t in enumerate([x, y]):\n    s = s + t * i\nreturn s", lambda x, y: x + y),
    ("n = 0\nwhile n < 4:\n    n += 1\n    if n == 2:\n        continue\n    if n == 3:\n        break\n"
     "    x = x * 2\nreturn x", lambda x, y: x * 2),
    ("if x.sum() > 100:\n    z = x\nelif y.sum() > 100:\n    z = y\nelse:\n    z = x - y\nreturn z",
     lambda x, y: x - y),
    ("return x.shape[0] * y + x.ndim", lambda x, y: x.shape[0] * y + x.ndim),
    ("return clamp(x, -0.5, 0.5) + where(y > 0, x, y)",
     lambda x, y: x.clamp(-0.5, 0.5) + torch.where(y > 0, x, y)),
    ("return maximum(x, y) - minimum(x, y)", lambda x, y: torch.maximum(x, y) - torch.minimum(x, y)),
    ("return [a * 2 for a in [x, y]][1]", lambda x, y: y * 2),
    ("return x.unsqueeze(0).squeeze(0).permute(1, 0).contiguous()", lambda x, y: x.permute(1, 0)),
    ("a, b = x.chunk(2, dim=0)\nreturn a - b", lambda x, y: x[:1] - x[1:]),
    ("return tril(x @ y.T) + triu(y @ x.T, 1)", lambda x, y: torch.tril(x @ y.T) + torch.triu(y @ x.T, 1)),
    ("return x * pi", lambda x, y: x * math.pi),
    ("return x % 0.7 + (x // 0.3).detach()", lambda x, y: x % 0.7 + (x // 0.3).detach()),
    ("return zeros_like(x) + ones(2, 3) * y", lambda x, y: torch.zeros_like(x) + torch.ones(2, 3) * y),
    ("return x.max() + max(y) + min(x) + x.min()", lambda x, y: x.max() + y.max() + x.min() + x.min()),
]


@pytest.mark.parametrize("body,reference", CASES, ids=[c[0].splitlines()[0][:40] for c in CASES])
def test_construct_matches_torch(body, reference):
    fn = compile_fn(body)
    torch.manual_seed(0)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    got, want = fn(x, y), reference(x, y)
    torch.testing.assert_close(got, want)
    if got.requires_grad:
        g1 = torch.autograd.grad(got.sum(), (x, y), allow_unused=True)
        g2 = torch.autograd.grad(want.sum(), (x, y), allow_unused=True)
        for a, b in zip(g1, g2):
            if a is None or b is None:
                assert a is None and b is None
            else:
                torch.testing.assert_close(a, b)


@pytest.mark.parametrize("body,fragment", [
    ("import os\nreturn x", "import is not allowed"),
    ("from os import path\nreturn x", "import is not allowed"),
    ("f = lambda: 1\nreturn x", "lambda is not allowed"),
    ("def f():\n    return 1\nreturn x", "def is not allowed"),
    ("class A:\n    pass\nreturn x", "class is not allowed"),
    ("with x:\n    pass\nreturn x", "with is not allowed"),
    ("try:\n    pass\nexcept Exception:\n    pass\nreturn x", "try is not allowed"),
    ("global g\nreturn x", "global is not allowed"),
    ("return x.__class__", "attribute .__class__ is not allowed"),
    ("return x.grad_fn", "attribute .grad_fn is not allowed"),
    ("return __import__('os')", "reserved"),
    ("return open('f')", "unknown name 'open'"),
    ("return eval('1')", "unknown name 'eval'"),
    ("return getattr(x, 'sum')", "unknown name 'getattr'"),
    ("return self", "'self' is not available"),
    ("return _x", "reserved"),
    ("return {1: x}", "dict literals"),
    ("return f'{x}'", "f-strings"),
    ("return x << 1", "<<"),
    ("return (y := x)", ":= operator"),
    ("del x\nreturn y", "del is not allowed"),
    ("return relu(*[x])", "* unpacking"),
    ("return x.sum(**{})", "** unpacking"),
    ("return [x for x in (lambda: 1)()]", "lambda"),
    ("x = 1", "no return"),
    ("return x +", "syntax error"),
])
def test_outside_the_language_is_refused(body, fragment):
    with pytest.raises(CgError) as err:
        compile_fn(body)
    assert fragment in str(err.value) + (err.value.hint or "")


def test_error_positions_are_file_positions():
    src = lang.Source("y = x\nreturn zz", file="m.yaml", line=10, col=4)
    with pytest.raises(CgError) as err:
        lang.check_forward(src, {"x": "input"})
    assert err.value.place == "m.yaml:11:12"


def test_runtime_errors_point_at_the_spec_line():
    src = lang.Source("y = x * 2\nz = y @ y\nreturn z", file="model.yaml", line=20)
    prog = lang.check_forward(src, {"x": "input"})
    fn = lang.compile_forward(prog, name="T", params=["x"], prelude=[], namespace={}, with_self=False).fn
    with pytest.raises(RuntimeError) as err:
        fn(torch.ones(2, 3))
    assert lang.locate_runtime_error(err.value, {"model.yaml"}).line == 21


def test_while_loop_is_capped():
    limits = lang.Limits(max_loop_iterations=50)
    fn = compile_fn("while True:\n    x = x + 1\nreturn x", limits=limits)
    with pytest.raises(CgError, match="more than 50 iterations"):
        fn(torch.zeros(1), torch.zeros(1))


def test_range_and_created_tensors_are_capped():
    fn = compile_fn("for i in range(10 ** 9):\n    x = x + 1\nreturn x")
    with pytest.raises(CgError, match="loop cap"):
        fn(torch.zeros(1), torch.zeros(1))
    fn = compile_fn("return zeros(100000, 100000)")
    with pytest.raises(CgError, match="over the cap"):
        fn(torch.zeros(1), torch.zeros(1))
    fn = compile_fn("return x + arange(10 ** 12)")
    with pytest.raises(CgError, match="over the cap"):
        fn(torch.zeros(1), torch.zeros(1))


def test_huge_python_numbers_and_sequences_are_refused():
    fn = compile_fn("n = 10 ** 10 ** 10\nreturn x")
    with pytest.raises(CgError, match="too large"):
        fn(torch.zeros(1), torch.zeros(1))
    fn = compile_fn("s = [x] * 10 ** 9\nreturn x")
    with pytest.raises(CgError, match="over the cap"):
        fn(torch.zeros(1), torch.zeros(1))


def test_torch_works_inside_compiled_code():
    # torch's C code imports through the calling frame's builtins: they must be there
    fn = compile_fn("return x.float().double().sum() + norm(y)")
    assert fn(torch.ones(2), torch.ones(2)).item() == pytest.approx(2 + math.sqrt(2))


def test_compiled_code_is_readable():
    prog = lang.check_forward(lang.Source("x = relu(x)\nreturn x * 2"), {"x": "input"})
    code = lang.compile_forward(prog, name="T", params=["x"], prelude=[], namespace={}).code
    assert code.startswith("def forward(self, x):") and "relu(x)" in code


def test_expressions_share_the_parser():
    prog = lang.parse(lang.Source("a = x1 + w; b = x2 + w; y = a * b"))
    assert prog.assigned == ["a", "b", "y"] and prog.free == ["x1", "w", "x2"]
    with pytest.raises(CgError, match="did you mean 'sin'"):
        try:
            lang.parse(lang.Source("y = sinn(x)"))
        except CgError as e:
            raise CgError(e.message + " " + (e.hint or ""), e.place)


names = st.sampled_from(["x", "y"])
ops = st.sampled_from(["+", "-", "*"])


@st.composite
def expressions(draw, depth=0):
    if depth > 3 or draw(st.booleans()):
        return draw(st.one_of(names, st.integers(1, 5).map(str)))
    kind = draw(st.sampled_from(["bin", "fn", "paren"]))
    if kind == "bin":
        return f"{draw(expressions(depth + 1))} {draw(ops)} {draw(expressions(depth + 1))}"
    if kind == "fn":
        inner = f"{draw(names)} {draw(ops)} {draw(expressions(depth + 1))}"  # torch functions take tensors
        return f"{draw(st.sampled_from(['sin', 'cos', 'tanh', 'relu', 'exp']))}({inner})"
    return f"({draw(expressions(depth + 1))})"


@settings(max_examples=60, deadline=None)
@given(expressions())
def test_random_expressions_compile_and_match_python_eval(expr):
    fn = compile_fn(f"return {expr}")
    x = torch.tensor([0.3, -0.7], dtype=torch.float64)
    y = torch.tensor([1.1, 0.2], dtype=torch.float64)
    env = {"x": x, "y": y, "sin": torch.sin, "cos": torch.cos, "tanh": torch.tanh, "relu": torch.relu,
           "exp": torch.exp}
    want = eval(expr, {"__builtins__": {}}, env)  # noqa: S307 - the test's own generated expression
    torch.testing.assert_close(torch.as_tensor(fn(x, y), dtype=torch.float64),
                               torch.as_tensor(want, dtype=torch.float64))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_parser_never_crashes_on_arbitrary_text(text):
    try:
        lang.parse(lang.Source(text))
    except CgError:
        pass


def test_spec_names_shadow_functions():
    # a module called `norm` (LLaMA's final RMSNorm) is called, not the norm() function
    prog = lang.check_forward(lang.Source("return norm(x) + range(x) + dropout(x)"),
                              {"x": "input", "norm": "module", "range": "module", "dropout": "module"})
    fn = lang.compile_forward(prog, name="T", params=["x"], prelude=["norm = self.norm", "range = self.range",
                                                                     "dropout = self.dropout"],
                              namespace={}).fn

    class Holder:
        norm = staticmethod(lambda x: x * 2)
        range = staticmethod(lambda x: x * 3)
        dropout = staticmethod(lambda x: x * 4)
        training = True

    assert fn(Holder(), torch.ones(2)).tolist() == [9.0, 9.0]


def test_tests_compare_numbers_with_the_same_answers():
    fn = compile_fn("n = 0\nwhile norm(x) > 1 and not x.sum() == 0:\n    x = x / 2\n    n += 1\n"
                    "if y is y and x.shape[0] >= 2:\n    n = n + 100\nreturn n")
    assert fn(torch.full((2,), 3.0), torch.ones(1)) == 3 + 100
    with pytest.raises(RuntimeError, match="ambiguous"):
        compile_fn("if x > 0:\n    x = x + 1\nreturn x")(torch.ones(3), torch.ones(1))


def test_a_forward_may_start_with_comment_lines():
    # two comment lines before the first statement put the body below the def's own last line: an internal
    # error ("AST node line range (10, 9) is not valid") before the fix
    import cgtool

    spec = ("name: T\nkind: module\ninputs: {x: [2, 4]}\nmodules:\n  lin: Linear(4, 4)\nforward: |\n"
            "  # one\n  # two\n  # three\n  h = lin(x)\n  return h\n")
    built = cgtool.build_model(spec, file="t.yaml")
    x = torch.randn(2, 4)
    torch.testing.assert_close(built.module(x), built.module.lin(x))

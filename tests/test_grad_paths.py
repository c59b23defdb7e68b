"""The path engine, the expression evaluator and the symbolic forms of `cgtool grad`.

Numbers are checked against torch autograd (computed here independently, with plain
torch code) and symbolic forms against ``sympy.diff``.
"""
from __future__ import annotations

import math
import random
import re

import pytest
import sympy as sp
import torch

from cgtool.graph import paths as P
from cgtool.graph import symbolic as S
from cgtool.errors import CgError
from cgtool.lang import Limits
from cgtool.graph.expression import evaluate, parse_expression
from cgtool.graph.gradients import explain

# --------------------------------------------------------------------------- helpers

SYMPY_LOCALS = {
    "sigmoid": lambda a: 1 / (1 + sp.exp(-a)),
    "relu": lambda a: sp.Max(0, a),
    "step": lambda a: sp.Heaviside(a, 0),
    "softplus": lambda a: sp.log(1 + sp.exp(a)),
    "log1p": lambda a: sp.log(1 + a),
    "expm1": lambda a: sp.exp(a) - 1,
    "rsqrt": lambda a: 1 / sp.sqrt(a),
    "square": lambda a: a**2,
    "reciprocal": lambda a: 1 / a,
    "sum": lambda a: a,
    "mean": lambda a: a,
    "abs": sp.Abs,
    "sign": sp.sign,
}


def sympy_of(text: str, leaves: list[str]):
    """The root of a straight-line expression as a sympy expression of its leaves."""
    ns = dict(SYMPY_LOCALS)
    ns.update({name: sp.Symbol(name, real=True) for name in leaves})
    text = re.sub(r"(\w+)\.pow\(([^)]*)\)", r"\1 ** (\2)", text)  # x.pow(3) -> x ** (3)
    text = re.sub(r"(\w+)\.(\w+)\(\)", r"\2(\1)", text)  # x.sin() -> sin(x)
    last = None
    for stmt in text.replace("\n", ";").split(";"):
        stmt = stmt.strip()
        if not stmt:
            continue
        for op in ("+=", "-=", "*=", "/="):
            if op in stmt:
                name, rhs = stmt.split(op)
                stmt = f"{name.strip()} = {name.strip()} {op[0]} ({rhs})"
                break
        name, rhs = stmt.split("=", 1)
        ns[name.strip()] = sp.sympify(rhs, locals=ns)
        last = name.strip()
    return ns[last], ns


def form_to_sympy(text: str, ns: dict):
    return sp.sympify(text, locals={**SYMPY_LOCALS, **{k: v for k, v in ns.items() if isinstance(v, sp.Symbol)}})


def numeric(expr, values: dict[str, float]) -> float:
    subs = {sp.Symbol(k, real=True): v for k, v in values.items()}
    return float(sp.N(expr.subs(subs), 30))


def brute_force_paths(graph: P.Graph, root: int, target: int) -> list[tuple[int, ...]]:
    out = []

    def walk(v, prefix):
        if v == target:
            out.append(prefix)
            return
        for e in graph.operands[v]:
            walk(graph.edges[e].dst, prefix + (e,))

    walk(root, ())
    return out


def chain(n: int) -> str:
    return "h = w" + "; h = h + sin(h)" * n


# Expressions with values and the same function in plain torch (the independent reference).
CASES = [
    ("y = (x1 + w) * (x2 + w)", {"x1": 1.5, "x2": -2.0, "w": 0.75},
     lambda x1, x2, w: (x1 + w) * (x2 + w)),
    ("a = x1 + w; b = x2 + w; y = a * b", {"x1": 1.0, "x2": 2.0, "w": 3.0},
     lambda x1, x2, w: (x1 + w) * (x2 + w)),
    ("y = w * w", {"w": 3.0}, lambda w: w * w),
    ("y = (x + w) * (w + 1)", {"x": 2.0, "w": 1.0}, lambda x, w: (x + w) * (w + 1)),
    ("a = sin(w) * x; b = exp(a) / (1 + w ** 2); y = tanh(a + b) - log(b)", {"w": 0.3, "x": -1.2},
     lambda w, x: torch.tanh(torch.sin(w) * x + torch.exp(torch.sin(w) * x) / (1 + w**2))
     - torch.log(torch.exp(torch.sin(w) * x) / (1 + w**2))),
    ("y = sigmoid(w * x) + relu(x - w) + sqrt(abs(w) + 1)", {"w": -0.4, "x": 0.9},
     lambda w, x: torch.sigmoid(w * x) + torch.relu(x - w) + torch.sqrt(torch.abs(w) + 1)),
    ("c = x; c += c + 1; y = c * w", {"x": 0.5, "w": 2.0}, lambda x, w: (x + (x + 1)) * w),
    ("h0 = w; h1 = h0 * h0; y = h1 * h0 + h1", {"w": 1.7}, lambda w: w * w * w + w * w),
    ("y = w ** x + x ** 3 - 2 / w", {"w": 1.3, "x": 0.7}, lambda w, x: w**x + x**3 - 2 / w),
    ("y = -cos(w) * (w - x) / (x * x + 1)", {"w": 0.2, "x": 2.5},
     lambda w, x: -torch.cos(w) * (w - x) / (x * x + 1)),
    ("y = log1p(w * w) + expm1(x) - softplus(w - x)", {"w": 0.6, "x": -0.3},
     lambda w, x: torch.log1p(w * w) + torch.expm1(x) - torch.nn.functional.softplus(w - x)),
    ("y = w.sin() * x.exp() + w.pow(3)", {"w": 0.6, "x": -0.3},
     lambda w, x: w.sin() * x.exp() + w.pow(3)),
    (chain(6), {"w": 0.4}, None),
]


def _reference(fn, values):
    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in values.items()}
    y = fn(**leaves)
    grads = torch.autograd.grad(y, list(leaves.values()), allow_unused=True)
    return float(y.detach()), {k: (0.0 if g is None else float(g)) for k, g in zip(leaves, grads)}


# --------------------------------------------------------------------------- numbers vs autograd


@pytest.mark.parametrize("text,values,fn", CASES, ids=[c[0][:40] for c in CASES])
def test_sum_over_paths_equals_autograd(text, values, fn):
    report = explain(text, values, max_paths=10_000)
    ev = evaluate(parse_expression(text), values)
    if fn is not None:
        value, grads = _reference(fn, values)
        assert report.value == pytest.approx(value, rel=1e-12, abs=1e-12)
    for g in report.gradients:
        assert g.match
        if fn is not None:
            assert g.autograd == pytest.approx(grads[g.wrt], rel=1e-12, abs=1e-12)
        assert g.sum_over_paths == pytest.approx(g.autograd, rel=1e-9, abs=1e-12)
        # every path listed: the contributions add up to the gradient
        assert len(g.paths) == g.path_count
        assert math.fsum(p.contribution for p in g.paths) == pytest.approx(g.autograd, rel=1e-9, abs=1e-12)
        # each contribution is the product of its factors
        for p in g.paths:
            assert p.contribution == pytest.approx(math.prod(f.value for f in p.factors), rel=1e-12, abs=1e-300)
        # the exact count agrees with brute-force enumeration
        target = ev.names[g.wrt]
        assert g.path_count == len(brute_force_paths(ev.graph, ev.root.id, target.id))


@pytest.mark.parametrize("text,values,fn", CASES, ids=[c[0][:40] for c in CASES])
def test_symbolic_sum_equals_sympy_diff(text, values, fn):
    report = explain(text, values, max_paths=10_000, max_symbolic=10_000)
    root, ns = sympy_of(text, list(values))
    for g in report.gradients:
        assert g.symbolic is not None, g.symbolic_note
        expected = sp.diff(root, sp.Symbol(g.wrt, real=True))
        got = form_to_sympy(g.symbolic, ns)
        assert numeric(got, values) == pytest.approx(numeric(expected, values), rel=1e-9, abs=1e-12)
        assert numeric(got, values) == pytest.approx(g.autograd, rel=1e-9, abs=1e-12)
        # each path's symbolic product is that path's contribution
        for p in g.paths:
            assert numeric(form_to_sympy(p.symbolic, ns), values) == pytest.approx(p.contribution, rel=1e-9,
                                                                                     abs=1e-12)


def test_lesson_numbers_exactly():
    report = explain("y = (x + w) * (w + 1)", {"x": 2, "w": 1}, wrt=["w"])
    (g,) = report.gradients
    assert report.value == 6.0
    assert g.autograd == 5.0 and g.sum_over_paths == 5.0 and g.match
    assert g.path_count == 2
    assert sorted(p.contribution for p in g.paths) == [2.0, 3.0]
    assert g.symbolic == "(x + w) + (w + 1)"


def test_lesson_paths_and_symbolic_forms():
    report = explain("a = x1 + w; b = x2 + w; y = a * b", {"x1": 1, "x2": 2, "w": 3}, wrt=["w"])
    (g,) = report.gradients
    assert [p.nodes for p in g.paths] == [["y", "a", "w"], ["y", "b", "w"]]
    first = g.paths[0]
    assert [(f.src, f.dst, f.symbolic, f.value) for f in first.factors] == [("y", "a", "b", 5.0), ("a", "w", "1", 1.0)]
    assert first.product == "b · 1" and first.symbolic == "x2 + w"
    assert g.symbolic == "(x2 + w) + (x1 + w)"
    assert g.autograd == 9.0


def test_without_values_only_symbolic():
    report = explain("y = (x1 + w) * (x2 + w)", wrt=["w"])
    assert not report.numeric and report.value is None
    (g,) = report.gradients
    assert g.autograd is None and g.sum_over_paths is None
    assert [p.nodes for p in g.paths] == [["y", "(x1 + w)", "w"], ["y", "(x2 + w)", "w"]]
    assert all(p.contribution is None for p in g.paths)
    assert g.symbolic == "(x2 + w) + (x1 + w)"


def test_w_times_w_has_two_paths_each_contributing_w():
    report = explain("y = w * w", {"w": 3.0})
    (g,) = report.gradients
    assert g.path_count == 2
    assert [p.nodes for p in g.paths] == [["y", "w"], ["y", "w"]]
    assert [p.contribution for p in g.paths] == [3.0, 3.0]
    assert sorted(p.factors[0].slot for p in g.paths) == [0, 1]
    assert g.autograd == 6.0 and g.symbolic == "w + w"


# --------------------------------------------------------------------------- counting at scale


def test_forty_step_chain_counts_two_to_the_forty():
    report = explain(chain(40), {"w": 0.5}, wrt=["w"], max_paths=5)
    (g,) = report.gradients
    assert g.path_count == 2**40
    assert len(g.paths) == 5 and g.not_listed == 2**40 - 5
    assert g.match
    assert g.symbolic is None and "omitted" in g.symbolic_note
    # listed largest |contribution| first
    mags = [abs(p.contribution) for p in g.paths]
    assert mags == sorted(mags, reverse=True)


def test_forty_step_chain_omits_long_symbolic_forms():
    report = explain(chain(40), wrt=["w"], max_paths=3)
    (g,) = report.gradients
    assert g.path_count == 2**40 and g.symbolic is None and "omitted" in g.symbolic_note
    report = explain(chain(40), {"w": 0.5}, wrt=["w"], max_paths=5)
    g = report.gradients[0]
    assert g.paths[0].product == "1"  # unit factors of a long path are left out
    # the form in the leaves of a path through cos(h#40) is astronomically long: omitted, not built
    assert any(p.symbolic is None and p.product is not None for p in g.paths)


@pytest.mark.parametrize("n", [1, 2, 5, 12])
def test_chain_counts_match_brute_force(n):
    ev = evaluate(parse_expression(chain(n)), {"w": 0.3})
    w = ev.leaves["w"]
    assert P.count_paths(ev.graph, ev.root.id, w.id) == 2**n
    if n <= 12:
        assert len(brute_force_paths(ev.graph, ev.root.id, w.id)) == 2**n


def test_best_first_is_exact_top_k():
    text = "a = w * 3; b = sin(w) + w; c = a * b + exp(a - b); d = c * c - a * w; y = d * b + c / (1 + a * a)"
    values = {"w": 0.37}
    ev = evaluate(parse_expression(text), values)
    root, w = ev.root.id, ev.leaves["w"].id
    everything = brute_force_paths(ev.graph, root, w)
    contributions = sorted((abs(P.contribution(ev.graph, P.Path(p))) for p in everything), reverse=True)
    for k in (1, 3, 7, len(everything)):
        listing = P.top_paths(ev.graph, root, w, k)
        got = [abs(c) for c in listing.contributions]
        assert got == pytest.approx(contributions[:k], rel=1e-12)
        assert listing.exact_order


def test_best_first_on_ties_stays_depth_first():
    # all contributions equal in size: the search must not go breadth-first over 2**30 paths
    text = "h = w" + "; h = h + h" * 30
    report = explain(text, {"w": 1.0}, max_paths=4)
    (g,) = report.gradients
    assert g.path_count == 2**30 and len(g.paths) == 4
    assert all(p.contribution == 1.0 for p in g.paths)


def test_counts_on_random_graphs_match_enumeration():
    rng = random.Random(7)
    for _ in range(30):
        names = ["w", "x"]
        lines = []
        for i in range(rng.randint(1, 7)):
            a, b = rng.choice(names), rng.choice(names)
            op = rng.choice(["+", "*", "-"])
            lines.append(f"v{i} = {a} {op} {b}")
            names.append(f"v{i}")
        lines.append(f"y = {names[-1]} * {rng.choice(names)}")
        text = "; ".join(lines)
        values = {n: rng.uniform(-2, 2) for n in parse_expression(text).free}
        ev = evaluate(parse_expression(text), values)
        for leaf in ev.leaves.values():
            brute = brute_force_paths(ev.graph, ev.root.id, leaf.id)
            assert P.count_paths(ev.graph, ev.root.id, leaf.id) == len(brute)
            total = math.fsum(P.contribution(ev.graph, P.Path(p)) for p in brute)
            grad = torch.autograd.grad(ev.root.value, leaf.value, retain_graph=True, allow_unused=True)[0]
            grad = 0.0 if grad is None else float(grad)
            assert total == pytest.approx(grad, rel=1e-9, abs=1e-9)
            assert P.sum_over_paths(ev.graph, ev.root.id, leaf.id) == pytest.approx(grad, rel=1e-9, abs=1e-9)


# --------------------------------------------------------------------------- tensors


def test_broadcasting_scalar_weight_over_vector():
    report = explain("y = sum(x * w)", {"x": [1.0, 2.0, 3.0], "w": 2.0})
    grads = {g.wrt: g for g in report.gradients}
    assert grads["w"].autograd == 6.0 and grads["w"].match
    assert grads["w"].paths[0].contribution == 6.0
    assert isinstance(grads["x"].autograd, torch.Tensor)
    assert grads["x"].autograd.tolist() == [2.0, 2.0, 2.0]
    assert grads["x"].symbolic is None and "scalar" in grads["x"].symbolic_note


def test_vector_used_twice_has_two_vector_contributions():
    report = explain("y = sum(x * x)", {"x": [1.0, -2.0, 0.5]})
    (g,) = report.gradients
    assert g.path_count == 2
    for p in g.paths:
        assert p.contribution.tolist() == [1.0, -2.0, 0.5]
    assert g.autograd.tolist() == [2.0, -4.0, 1.0] and g.match


def test_matrix_paths_sum_to_autograd():
    W = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]]
    x = [1.0, 2.0, -1.0]
    b = [0.1, -0.2]
    text = "h = tanh(W @ x + b); z = h * h + sigmoid(W @ x); y = sum(z) + mean(W * W)"
    report = explain(text, {"W": W, "x": x, "b": b}, max_paths=100)
    Wt, xt, bt = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (W, x, b))
    h = torch.tanh(Wt @ xt + bt)
    y = (h * h + torch.sigmoid(Wt @ xt)).sum() + (Wt * Wt).mean()
    expected = dict(zip("Wxb", torch.autograd.grad(y, [Wt, xt, bt])))
    for g in report.gradients:
        assert g.match
        assert torch.allclose(g.autograd, expected[g.wrt], rtol=1e-12, atol=1e-12)
        assert len(g.paths) == g.path_count
        total = sum(p.contribution for p in g.paths)
        assert torch.allclose(total, expected[g.wrt], rtol=1e-9, atol=1e-12)
        assert g.autograd.shape == expected[g.wrt].shape


def test_tensor_path_contribution_masks_other_edges():
    # y = sum(a * b) with a = x * 2, b = x + 1: the path through a contributes 2 * b, the one through b a.
    report = explain("a = x * 2; b = x + 1; y = sum(a * b)", {"x": [1.0, 2.0]}, max_paths=10)
    (g,) = report.gradients
    by_nodes = {tuple(p.nodes): p.contribution.tolist() for p in g.paths}
    assert by_nodes == {("y", "a * b", "a", "x"): [4.0, 6.0], ("y", "a * b", "b", "x"): [2.0, 4.0]}


def test_tensor_jacobian_factor_is_shown_when_small():
    report = explain("y = sum(x * w)", {"x": [1.0, 2.0], "w": [3.0, 4.0]}, wrt=["w"])
    f = report.gradients[0].paths[0].factors[1]
    assert (f.src, f.dst) == ("x * w", "w")
    assert f.value.tolist() == [[1.0, 0.0], [0.0, 2.0]]


def test_many_tensor_paths_are_bounded():
    text = "h = x" + "; h = h + tanh(h)" * 14 + "; y = sum(h)"
    report = explain(text, {"x": [0.1, -0.2, 0.3]}, max_paths=5)
    (g,) = report.gradients
    assert g.path_count == 2**14 and len(g.paths) == 5 and g.match
    norms = [float(torch.linalg.vector_norm(p.contribution)) for p in g.paths]
    assert norms == sorted(norms, reverse=True)


# --------------------------------------------------------------------------- names


def test_alias_adds_no_node_and_versions_are_shown():
    report = explain("h0 = w; h1 = h0 * 2; y = h1 + h0", {"w": 1.0})
    labels = [n.label for n in report.nodes]
    assert labels == ["w", "h1", "y"] and report.aliases == {"h0": "w"}
    report = explain("c = x; c += c + 1; y = c * w", {"x": 0.5, "w": 2.0}, wrt=["x"])
    labels = [n.label for n in report.nodes]
    assert "c#2" in labels and "c" not in labels
    assert sorted(p.nodes for p in report.gradients[0].paths) == [["y", "c#2", "c + 1", "x"], ["y", "c#2", "x"]]


def test_root_option_and_wrt_intermediate():
    report = explain("a = x * w; b = a + 1; y = b * b", {"x": 2.0, "w": 3.0}, root="b", wrt=["a", "w"])
    assert report.root == "b" and report.value == 7.0
    grads = {g.wrt: g for g in report.gradients}
    assert grads["a"].autograd == 1.0 and grads["w"].autograd == 2.0
    report = explain("y = x; y = y * 3; y = y + 1", {"x": 1.0}, root="y#2")
    assert report.root == "y#2" and report.value == 3.0


def test_bare_expression_is_its_own_root():
    report = explain("sin(x) * w", {"x": 0.0, "w": 2.0})
    assert report.root == "sin(x) * w"
    assert {g.wrt: g.autograd for g in report.gradients} == {"x": 2.0, "w": 0.0}


def test_control_flow_with_values():
    text = "y = x\nfor i in range(3):\n    if y < 10:\n        y = y * w\n    else:\n        y = y + w"
    report = explain(text, {"x": 1.0, "w": 4.0})
    grads = {g.wrt: g.autograd for g in report.gradients}
    # y = 1*4 = 4; 4*4 = 16; 16 + 4 = 20  ->  dy/dw = x*2w + 1 = 9, dy/dx = w*w = 16
    assert report.value == 20.0 and grads == {"x": 16.0, "w": 9.0}


# --------------------------------------------------------------------------- symbolic rules and caps


@pytest.mark.parametrize("op", sorted(S.RULES))
def test_every_rule_matches_sympy_diff(op):
    a, b = sp.symbols("a b", real=True)
    arity = len(S.RULES[op][1])
    operands = [S.ref("a"), S.ref("b")][:arity]
    f = S.forward(op, operands).to_sympy({"a": a, "b": b})
    points = [{a: 0.7, b: 1.3}, {a: 2.1, b: -0.4}, {a: 0.3, b: 2.0}]
    for slot, sym in enumerate([a, b][:arity]):
        d = S.derivative(op, operands, slot).to_sympy({"a": a, "b": b})
        expected = sp.diff(f, sym)
        for pt in points:
            if op == "pow" and slot == 1 and pt[a] <= 0:
                continue
            assert complex(sp.N(d.subs(pt))) == pytest.approx(complex(sp.N(expected.subs(pt))), rel=1e-12, abs=1e-12)


def test_symbolic_printing_keeps_structure():
    a, b, w, x1, x2 = (S.ref(n) for n in ("a", "b", "w", "x1", "x2"))
    assert str(S.product([b, S.ONE])) == "b"
    assert str(S.total([S.add(x2, w), S.add(x1, w)])) == "(x2 + w) + (x1 + w)"
    assert str(S.sub(a, S.sub(b, a))) == "a - (b - a)"
    assert str(S.power(S.neg(a), S.num(2))) == "(-a) ** 2"
    assert str(S.mul(S.ref("(x1 + w)"), a)) == "(x1 + w) * a"
    assert str(S.mul(S.ref("x1 + w"), a)) == "(x1 + w) * a"
    assert str(S.derivative("pow", [w, S.num(2)], 0)) == "2 * w"


def test_symbolic_size_cap_says_so():
    text = "a = sin(w) * cos(w); b = a * a + exp(a); y = b * b / (1 + b)"
    small = explain(text, {"w": 0.3}, max_symbolic=10)
    (g,) = small.gradients
    assert g.symbolic is None and "size cap" in g.symbolic_note
    big = explain(text, {"w": 0.3}, max_symbolic=100_000)
    assert big.gradients[0].symbolic is not None


def test_size_of_shared_forms_is_counted_not_built():
    ev = evaluate(parse_expression(chain(60)), {"w": 0.5})
    from cgtool.graph.gradients import _Forms

    form = _Forms(ev, ev.graph.reachable(ev.root.id), 400).leaf_form(ev.root)
    assert form.size > 2**60  # the printed tree would be astronomically long
    assert S.shown(form) is None


def test_no_rule_means_no_symbolic_form():
    report = explain("y = clamp(w, 0, 1) * w", {"w": 0.5})
    (g,) = report.gradients
    assert g.match and g.symbolic is None and "no symbolic rule" in g.symbolic_note


def test_cancellation_is_warned():
    report = explain("y = w * a - w * b", {"w": 2.0, "a": 1.0, "b": 1.001}, wrt=["w"])
    (g,) = report.gradients
    assert g.cancellation and "cancel" in g.cancellation
    report = explain("y = w * a + w * b", {"w": 2.0, "a": 1.0, "b": 1.001}, wrt=["w"])
    assert report.gradients[0].cancellation is None


# --------------------------------------------------------------------------- bad input in the library


@pytest.mark.parametrize("text,values,wrt,needle", [
    ("y = x * w", {"x": 1.0}, None, "no value for w"),
    ("y = x * w", {"x": [1.0, 2.0], "w": 1.0}, None, "not a single number"),
    ("y = x * w", {"x": 1.0, "w": 1.0}, ["q"], "no value named 'q'"),
    ("y = x * w", {"x": 1.0, "w": 1.0, "z": 2.0}, None, "z is not a name"),
    ("y = 2 * 3", None, None, "does not depend on any leaf"),
    ("y = sinn(w)", None, None, "unknown function 'sinn'"),
    ("y = (x + ", None, None, "syntax error"),
    ("if x > 0:\n    y = x", None, None, "depends on the values"),
])
def test_bad_input_raises_cg_error(text, values, wrt, needle):
    with pytest.raises(CgError) as info:
        explain(text, values, wrt=wrt)
    assert needle in str(info.value)


def test_operation_cap_stops_nested_loops():
    # the operation cap bounds the whole run (a small cap keeps it fast); nested loops share one loop cap
    text = "h = x\nfor i in range(100):\n    for j in range(100):\n        h = h + 1"
    with pytest.raises(CgError) as info:
        explain(text, {"x": 1.0}, limits=Limits(max_operations=500))
    assert "more than 500 operations" in str(info.value) and info.value.place.startswith("<expr>:4")
    with pytest.raises(CgError, match="loops ran more than 10,000 iterations in one call"):  # 100 + 100 * 100 steps
        explain(text, {"x": 1.0}, limits=Limits(max_operations=20_000))
    assert explain(text, {"x": 1.0}, limits=Limits(max_operations=20_000, max_loop_iterations=10_100)).value == 10_001.0

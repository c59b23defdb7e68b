"""Property tests: random expressions, checked against autograd, sympy.diff and enumeration."""
from __future__ import annotations

import math
import re

import pytest
import sympy as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cgtool.graph import paths as P
from cgtool.graph.expression import evaluate, parse_expression
from cgtool.graph.gradients import explain

LEAVES = ["a", "b", "w"]
UNARY = ["sin", "cos", "tanh", "sigmoid", "exp"]
TORCH = {"sin": torch.sin, "cos": torch.cos, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "exp": torch.exp}
SYMPY = {"sin": sp.sin, "cos": sp.cos, "tanh": sp.tanh, "sigmoid": lambda x: 1 / (1 + sp.exp(-x)), "exp": sp.exp,
         "step": lambda x: sp.Heaviside(x, 0)}


def expressions(depth: int):
    leaf = st.sampled_from(LEAVES)
    if depth == 0:
        return leaf

    sub = expressions(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(st.sampled_from(["+", "-", "*"]), sub, sub).map(lambda t: f"({t[1]} {t[0]} {t[2]})"),
        st.tuples(sub, sub).map(lambda t: f"({t[0]} / (1 + {t[1]} * {t[1]}))"),
        st.tuples(st.sampled_from(UNARY), sub).map(lambda t: f"{t[0]}({t[1]})"),
        sub.map(lambda s: f"({s}) ** 2"),
    )


@st.composite
def programs(draw):
    """A few named statements, each reading leaves and earlier names."""
    lines = []
    names = list(LEAVES)
    for i in range(draw(st.integers(1, 3))):
        expr = draw(expressions(2))
        # now and then read an earlier name instead of a leaf
        for leaf in LEAVES:
            if draw(st.booleans()) and len(names) > len(LEAVES):
                expr = re.sub(rf"\b{leaf}\b", draw(st.sampled_from(names[len(LEAVES):])), expr)
        lines.append(f"v{i} = {expr}")
        names.append(f"v{i}")
    return "; ".join(lines)


values_strategy = st.fixed_dictionaries({n: st.floats(-1.5, 1.5, allow_nan=False).map(lambda v: round(v, 3))
                                         for n in LEAVES})


def torch_reference(text: str, values: dict):
    ns = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in values.items()}
    leaves = dict(ns)
    ns.update(TORCH)
    last = None
    for stmt in text.split(";"):
        name, rhs = stmt.split("=", 1)
        ns[name.strip()] = eval(rhs, {"__builtins__": {}}, ns)  # noqa: S307 - test-generated arithmetic
        last = name.strip()
    y = ns[last]
    return y, leaves


def sympy_reference(text: str):
    ns = {k: sp.Symbol(k, real=True) for k in LEAVES}
    ns.update(SYMPY)
    last = None
    for stmt in text.split(";"):
        name, rhs = stmt.split("=", 1)
        ns[name.strip()] = sp.sympify(rhs, locals=ns)
        last = name.strip()
    return ns[last]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), values_strategy)
def test_random_expressions_sum_over_paths_is_autograd(text, values):
    program = parse_expression(text)
    used = {k: v for k, v in values.items() if k in program.free}
    y, leaves = torch_reference(text, used)
    if not y.requires_grad:
        return
    report = explain(text, used, max_paths=50, max_symbolic=2_000)
    expected = dict(zip(leaves, torch.autograd.grad(y, list(leaves.values()), allow_unused=True)))
    ev = evaluate(program, used)
    for g in report.gradients:
        ref = expected[g.wrt]
        ref = 0.0 if ref is None else float(ref)
        assert g.match
        assert g.autograd == pytest.approx(ref, rel=1e-9, abs=1e-9)
        assert g.sum_over_paths == pytest.approx(ref, rel=1e-7, abs=1e-9)
        count = P.count_paths(ev.graph, ev.root.id, ev.leaves[g.wrt].id)
        assert g.path_count == count
        if count <= 50:
            assert len(g.paths) == count
            assert math.fsum(p.contribution for p in g.paths) == pytest.approx(ref, rel=1e-7, abs=1e-9)
        mags = [abs(p.contribution) for p in g.paths]
        assert mags == sorted(mags, reverse=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), values_strategy)
def test_random_expressions_symbolic_is_sympy_diff(text, values):
    program = parse_expression(text)
    used = {k: v for k, v in values.items() if k in program.free}
    root = sympy_reference(text)
    report = explain(text, used, max_paths=0, max_symbolic=5_000)
    subs = {sp.Symbol(k, real=True): v for k, v in used.items()}
    for g in report.gradients:
        if g.symbolic is None:
            assert g.symbolic_note  # omitted, and it says so
            continue
        ns = {k: sp.Symbol(k, real=True) for k in LEAVES}
        ns.update(SYMPY)
        got = sp.sympify(g.symbolic, locals=ns)
        expected = sp.diff(root, sp.Symbol(g.wrt, real=True))
        assert float(got.subs(subs)) == pytest.approx(float(expected.subs(subs)), rel=1e-9, abs=1e-9)

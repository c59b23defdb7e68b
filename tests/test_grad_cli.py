"""`cgtool grad` end to end: text output, JSON, exit codes, bad input."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cgtool.cli import app

ENV = {"COLUMNS": "100", "NO_COLOR": "1"}
LESSON = "a = x1 + w; b = x2 + w; y = a * b"
CHAIN40 = "h = w" + "; h = h + sin(h)" * 40


def grad(*args, code=0, input=None):
    result = CliRunner().invoke(app, ["grad", *[str(a) for a in args]], env=ENV, input=input)
    assert result.exit_code == code, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def grad_json(*args, code=0):
    return json.loads(grad(*args, "--json", code=code).stdout)


# --------------------------------------------------------------------------- the lesson


def test_lesson_text_output():
    out = grad(LESSON, "--at", "x1=1", "--at", "x2=2", "--at", "w=3", "--wrt", "w").stdout
    for needle in ["Graph", "y (root)", "a * b", "∂y/∂w: 2 paths", "1. y → a → w", "2. y → b → w",
                   "b · 1 = x2 + w", "a · 1 = x1 + w", "∂y/∂a = b = 5", "∂a/∂w = 1",
                   "sum over paths  9", "autograd        9", "✓ they agree", "∂y/∂w = (x2 + w) + (x1 + w)"]:
        assert needle in out, (needle, out)


def test_unnamed_intermediates_show_their_source_text():
    data = grad_json("y = (x1 + w) * (x2 + w)", "--at", "x1=1", "--at", "x2=2", "--at", "w=3", "--wrt", "w")
    assert [p["nodes"] for p in data["gradients"][0]["paths"]] == [["y", "(x1 + w)", "w"], ["y", "(x2 + w)", "w"]]


def test_pytorch_classic_demo_gives_five():
    data = grad_json("y = (x + w) * (w + 1)", "--at", "x=2", "--at", "w=1", "--wrt", "w")
    (g,) = data["gradients"]
    assert data["root"] == "y" and data["value"] == 6.0
    assert g["autograd"] == 5.0 and g["sum_over_paths"] == 5.0 and g["match"] is True and g["path_count"] == 2


def test_json_keys_exactly():
    data = grad_json(LESSON, "--at", "x1=1", "--at", "x2=2", "--at", "w=3")
    assert set(data) == {"root", "value", "gradients"}
    assert [g["wrt"] for g in data["gradients"]] == ["x1", "w", "x2"]
    for g in data["gradients"]:
        assert set(g) == {"wrt", "autograd", "sum_over_paths", "match", "path_count", "paths"}
        for p in g["paths"]:
            assert set(p) == {"nodes", "factors", "contribution", "symbolic"}
            assert p["nodes"][0] == "y"
    w = data["gradients"][1]
    assert w["paths"][0]["nodes"] == ["y", "a", "w"]
    assert w["paths"][0]["contribution"] == 5.0 and w["paths"][0]["symbolic"] == "x2 + w"
    assert [(f["from"], f["to"], f["symbolic"], f["value"]) for f in w["paths"][0]["factors"]] == \
        [("y", "a", "b", 5.0), ("a", "w", "1", 1.0)]


def test_symbolic_alone_without_values():
    r = grad("y = (x1 + w) * (x2 + w)", "--wrt", "w")
    assert "symbolic answer alone" in r.stdout and "∂y/∂w = (x2 + w) + (x1 + w)" in r.stdout
    assert "autograd" not in r.stdout.split("∂y/∂w:")[1]
    data = grad_json("y = (x1 + w) * (x2 + w)", "--wrt", "w")
    (g,) = data["gradients"]
    assert data["value"] is None and g["autograd"] is None
    assert g["sum_over_paths"] == "(x2 + w) + (x1 + w)"
    assert [p["symbolic"] for p in g["paths"]] == ["x2 + w", "x1 + w"]
    assert all(p["contribution"] is None for p in g["paths"])


def test_w_times_w_two_paths():
    data = grad_json("y = w * w", "--at", "w=3")
    (g,) = data["gradients"]
    assert g["path_count"] == 2 and [p["contribution"] for p in g["paths"]] == [3.0, 3.0]
    assert g["autograd"] == 6.0
    out = grad("y = w * w", "--at", "w=3").stdout
    assert "(operand 1 of *)" in out and "(operand 2 of *)" in out


def test_versions_and_aliases():
    data = grad_json("c = x; c += c + 1; y = c * w", "--at", "x=1", "--at", "w=2", "--wrt", "x")
    nodes = sorted(p["nodes"] for p in data["gradients"][0]["paths"])
    assert nodes == [["y", "c#2", "c + 1", "x"], ["y", "c#2", "x"]]
    out = grad("h0 = w; y = h0 * 2", "--at", "w=1").stdout
    assert "aliases (no node of their own): h0 = w" in out


def test_stdin_expression():
    r = grad("-", "--at", "x1=1", "--at", "x2=2", "--at", "w=3", "--wrt", "w", "--json", input=LESSON.replace("; ", "\n"))
    assert json.loads(r.stdout)["gradients"][0]["autograd"] == 9.0


def test_root_option():
    data = grad_json("a = x * w; y = a * a", "--at", "x=2", "--at", "w=3", "--root", "a")
    assert data["root"] == "a" and data["value"] == 6.0
    assert {g["wrt"]: g["autograd"] for g in data["gradients"]} == {"x": 3.0, "w": 2.0}


# --------------------------------------------------------------------------- tensors


def test_tensors_are_nested_lists():
    data = grad_json("y = sum(W @ x * w)", "--at", "W=[[1, 2], [3, 4]]", "--at", "x=[1, -1]", "--at", "w=2")
    grads = {g["wrt"]: g for g in data["gradients"]}
    assert data["value"] == -4.0
    assert grads["W"]["autograd"] == [[2.0, -2.0], [2.0, -2.0]]
    assert grads["x"]["autograd"] == [8.0, 12.0]
    assert grads["w"]["autograd"] == -2.0
    assert all(g["match"] for g in grads.values())
    assert grads["W"]["paths"][0]["contribution"] == [[2.0, -2.0], [2.0, -2.0]]


def test_non_scalar_root_needs_a_reduction():
    r = grad("y = x * w", "--at", "x=[1, 2]", "--at", "w=1", code=1)
    assert r.stderr.startswith("error: ") and "not a single number" in r.stderr and "sum(" in r.stderr


# --------------------------------------------------------------------------- scale


def test_forty_step_chain_exact_count():
    data = grad_json(CHAIN40, "--wrt", "w", "--at", "w=0.5", "--max-paths", "3")
    (g,) = data["gradients"]
    assert g["path_count"] == 2**40 == 1_099_511_627_776
    assert len(g["paths"]) == 3 and g["match"] is True
    out = grad(CHAIN40, "--wrt", "w", "--max-paths", "3").stdout
    assert "1,099,511,627,776 paths" in out and "1,099,511,627,773 more paths not listed" in out
    assert "symbolic forms omitted" in out


def test_forty_step_chain_symbolic_without_values():
    # no --at: placeholders trace the graph; 2^40 paths are still counted exactly, never enumerated
    data = grad_json(CHAIN40, "--wrt", "w", "--max-paths", "2")
    assert data["gradients"][0]["path_count"] == 2**40
    assert len(data["gradients"][0]["paths"]) == 2


def test_max_paths_and_cancellation_warning():
    out = grad("y = w * a - w * b", "--at", "w=2", "--at", "a=1", "--at", "b=1.001", "--wrt", "w").stdout
    assert "warning: contributions cancel" in out
    data = grad_json(CHAIN40, "--wrt", "w", "--at", "w=0.5", "--max-paths", "0")
    assert data["gradients"][0]["paths"] == []


# --------------------------------------------------------------------------- --check


def test_check_passes():
    grad(LESSON, "--at", "x1=1", "--at", "x2=2", "--at", "w=3", "--check")


def test_check_fails_with_exit_3(monkeypatch):
    from cgtool.graph import paths

    real = paths.sum_over_paths

    def off_by_one(*args, **kwargs):
        value = real(*args, **kwargs)
        return value if kwargs.get("absolute") else value + 1.0

    monkeypatch.setattr(paths, "sum_over_paths", off_by_one)
    r = grad(LESSON, "--at", "x1=1", "--at", "x2=2", "--at", "w=3", "--check", code=3)
    assert "✗ they disagree" in r.stdout
    assert "disagrees with autograd" in r.stderr


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("args,needles", [
    (["y = (x1 + w * (x2 + w)"], ["<expr>:1:5", "syntax error", "never closed"]),
    (["y = x +* w"], ["<expr>:1:", "syntax error"]),
    (["y = sinn(w)"], ["unknown function 'sinn'", "did you mean 'sin'"]),
    (["import os"], ["import is not allowed"]),
    (["y = x.__class__"], ["attribute .__class__ is not allowed"]),
    (["y = lambda: 1"], ["lambda is not allowed"]),
    (["y = x * w", "--at", "x=1"], ["no value for w", "--at w="]),
    (["y = x * w", "--at", "x=abc", "--at", "w=1"], ["--at x", "not a number or a JSON list"]),
    (["y = x * w", "--at", "x=[[1, 2], [3]]", "--at", "w=1"], ["not a rectangular list"]),
    (["y = x * w", "--at", "x"], ["expected NAME=VALUE"]),
    (["y = x * w", "--at", "x=1", "--at", "x=2", "--at", "w=1"], ["x is given twice"]),
    (["y = x * w", "--at", "q=1"], ["q is not a name in the expression"]),
    (["y = x * w", "--at", "y=1"], ["y is computed by the expression, not a leaf"]),
    (["y = x * w", "--wrt", "ww"], ["no value named 'ww'", "did you mean 'w'"]),
    (["y = x * w", "--root", "z"], ["no value named 'z'"]),
    (["y = 2 * 3"], ["does not depend on any leaf"]),
    (["y = x @ w", "--at", "x=[1, 2]", "--at", "w=[1, 2, 3]"], ["cannot compute `x @ w`"]),
    ([""], ["the expression is empty"]),
    (["y = zeros(100000, 100000) * x", "--at", "x=1"], ["over the cap"]),
    (["y = 10 ** 10 ** 10 * x"], ["too large a number"]),
    (["y = x\nwhile y < 1e9:\n    y = y * 2", "--at", "x=1", "--max-iterations", "5"], ["more than 5 iterations"]),
    (["if x > 0:\n    y = x"], ["depends on the values", "--at"]),
    (["y = x; y[0] = 1", "--at", "x=[1]"], ["cannot assign to y[0]"]),
])
def test_bad_input_exit_1(args, needles):
    r = grad(*args, code=1)
    assert r.stderr.startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    for needle in needles:
        assert needle in r.stderr, (needle, r.stderr)
    assert r.stdout == ""


def test_bad_input_from_stdin_names_stdin():
    r = grad("-", input="y = sinn(w)\n", code=1)
    assert r.stderr.startswith("error: <stdin>:1:5: unknown function 'sinn'")


def test_negative_max_paths_is_a_usage_error():
    grad("y = w * w", "--max-paths", "-1", code=2)

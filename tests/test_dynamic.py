"""Data-dependent control flow found in the spec before anything runs (issue 10: `cgtool build` marks `dynamic`)."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cgtool.cli import app
from cgtool.lang import Source, check_forward
from cgtool.lang.dynamic import data_dependent

KNOWN = {"x": "input", "n": "arg", "lin": "module", "layers": "container", "w": "constant", "p": "parameter"}


def found(forward: str) -> list[tuple[str, str]]:
    program = check_forward(Source(forward, "<f>"), KNOWN)
    return [(d.kind, d.text) for d in data_dependent(program, KNOWN)]


@pytest.mark.parametrize("forward,want", [
    # the lesson's FancyMLP
    ("x = lin(x)\nwhile norm(x) > 1:\n    x = x / 2\nif norm(x) < 0.8:\n    x = x * 10\nreturn sum(x)",
     [("while", "norm(x) > 1"), ("if", "norm(x) < 0.8")]),
    # shapes, lengths, args and loop indices are static
    ("if x.shape[0] > 1:\n    x = x * 2\nfor i in range(n):\n    x = lin(x)\nreturn x", []),
    ("if x.size(1) == 4 and x.dim() == 2 and len(x) > 0:\n    x = x + 1\nreturn x", []),
    ("for layer in layers:\n    x = layer(x)\nreturn x", []),
    ("for i, layer in enumerate(layers):\n    if i > 0:\n        x = layer(x)\nreturn x", []),
    # values read through a variable, an item(), a parameter, a conditional expression, a loop bound
    ("s = x.sum()\nif s > 0:\n    x = -x\nreturn x", [("if", "s > 0")]),
    ("k = x.max().item()\ny = x * 2 if k > 1 else x\nreturn y", [("ifexp", "k > 1")]),
    ("if p.mean() > 0:\n    x = x + p\nreturn x", [("if", "p.mean() > 0")]),
    ("for i in range(int(x.sum())):\n    x = lin(x)\nreturn x", [("for", "range(int(x.sum()))")]),
    # a static value that becomes data inside a loop is found on the second pass
    ("t = 1\nwhile t < 3:\n    t = t + x.sum()\nreturn x", [("while", "t < 3")]),
    # a condition on a module output
    ("h = lin(x)\nif mean(h) > 0:\n    h = relu(h)\nreturn h", [("if", "mean(h) > 0")]),
    # the same condition in a comprehension's filter
    ("ys = [lin(x) for i in range(n) if i > 0]\nreturn ys[0]", []),
])
def test_data_dependent_conditions(forward, want):
    assert found(forward) == want


def test_lines_point_into_the_spec_file():
    program = check_forward(Source("h = lin(x)\nif norm(h) > 1:\n    h = h / 2\nreturn h", "spec.yaml", line=10, col=2),
                            KNOWN)
    (d,) = data_dependent(program, KNOWN)
    assert d.line == "spec.yaml:11:6" and d.statement == "if"


def cli(*args):
    r = CliRunner().invoke(app, list(args), env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert r.exit_code == 0, r.stderr
    return r.stdout


def test_build_marks_fancy_mlp_dynamic_with_its_lines():
    data = json.loads(cli("build", "configs/fancy_mlp.yaml", "--json"))
    assert data["graph"] == "dynamic"
    assert [(d["kind"], d["line"], d["text"]) for d in data["dynamic"]] == [
        ("while", "configs/fancy_mlp.yaml:14:9", "norm(x) > 1"), ("if", "configs/fancy_mlp.yaml:16:6", "norm(x) < 0.8")]
    text = cli("build", "configs/fancy_mlp.yaml")
    assert "graph: dynamic" in text and "fancy_mlp.yaml:14:9" in text


def test_nesting_a_dynamic_spec_makes_the_whole_dynamic():
    data = json.loads(cli("build", "configs/nest_mlp.yaml", "--json"))
    assert data["graph"] == "dynamic" and data["dynamic"][0]["line"].startswith("configs/fancy_mlp.yaml:14")


@pytest.mark.parametrize("config", ["mlp", "mlp_modulelist", "resnet_block", "gpt2_block", "llama_block",
                                    "resnet110", "transformer_encoder"])
def test_static_configs_are_static(config):
    data = json.loads(cli("build", f"configs/{config}.yaml", "--json", "--device", "meta"))
    assert data["graph"] == "static" and data["dynamic"] == []
